"""The machinery every step shares: what a step edits, what it declares, what it promises.

Each step lives in its own module of this package (``freeze``, ``set_mult``, ``rename``...,
holding its doc, keys, plan and key check), registered in
:data:`rewriter.recipes.step_table.STEPS`; this module holds what they share: key types, the
:class:`Plan`, the :class:`StepContext`, the per-layer editor, structure digests and the
selection and field helpers (param-block edits are in :mod:`.params`).

A step *plans*: it reads a :class:`~rewriter.recipes.select.NetView` (document + bound message +
Caffe's graphs) and records edits on the lossless tree in an :class:`~rewriter.text.edit.Editor`, so
only the lines it needs change. With the edits it returns a :class:`Plan` declaring

* its **effects**: per layer, the field paths it may change (``("param",)``,
  ``("batch_norm_param", "use_global_stats")``...); the round-trip check refuses any semantic
  change outside them;
* its **structural changes** (renamed layers or blobs, removed layers), so the graph check
  knows the layers, blobs and edges to expect; every other step promises the graph is unchanged;
* a **promise**, checked on the result with Caffe's own backward analysis (``freeze`` promises
  that no parameter of the selected layers is updated any more, ``stop-gradient`` that the
  bottom flag of the cut edge is false...).

Steps never execute anything from a recipe: keys are data, typed by
:data:`rewriter.recipes.step_table.STEPS`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from rewriter.errors import RewriterError
from rewriter.schema.runtime import is_repeated
from rewriter.text.cst import Document, Field, MessageBody
from rewriter.text.edit import Editor
from rewriter.util.record import FrozenRecord, Record

from ..select import NetView, select

if TYPE_CHECKING:
    from rewriter.caffe.graph import Graph

    from ..recipe import Step

__all__ = [
    "Key",
    "LayerEditor",
    "Plan",
    "StepContext",
    "StepSpec",
    "StructChange",
    "fast_doc",
    "graph_structure",
    "is_idempotent",
    "structure",
]

FieldPath = tuple[str, ...]

# --------------------------------------------------------------------------- key types


# Records, not dataclasses: every apply imports this module, and each @dataclass costs ~1 ms
# to create (rewriter.util.record).


class Key(FrozenRecord):
    __slots__ = ("type", "required", "default", "choices", "doc")

    def __init__(
        self,
        type: str,  # str | int | number | bool | strlist | intlist | pair | scalar | choice
        required: bool = False,
        default: Any = None,
        choices: tuple[str, ...] = (),
        doc: str = "",
    ) -> None:
        self.type = type
        self.required = required
        self.default = default
        self.choices = choices
        self.doc = doc


class StepSpec(FrozenRecord):
    __slots__ = ("kind", "doc", "keys", "selection", "plan", "analysis_warnings")

    def __init__(
        self,
        kind: str,
        doc: str,
        keys: dict[str, Key],
        selection: str,
        plan: Callable[[StepContext], Plan],
        analysis_warnings: bool = True,
    ) -> None:
        self.kind = kind
        self.doc = doc
        self.keys = keys
        #: "required": needs a selector; "optional": no selector means every layer; "none"
        self.selection = selection
        self.plan = plan
        #: after the recipe, report Caffe-analysis warnings about the layers this step
        #: touched (off where the step's own promise rules them out or it reports its own)
        self.analysis_warnings = analysis_warnings


def type_ok(key: Key, value: Any) -> Any:
    """The value normalised for its key type, or raise ValueError with what was expected."""
    t = key.type
    if t == "str":
        if isinstance(value, str):
            return value
        raise ValueError("a string")
    if t == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError("an integer")
    if t == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError("a number")
    if t == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError("true or false")
    if t == "strlist":
        if isinstance(value, str):
            return [value] if value else []
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError("a string or a list of strings")
    if t == "intlist":
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return list(value)
        raise ValueError("an integer or a list of integers")
    if t == "pair":
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, str) for v in value)
        ):
            return list(value)
        if value == [] or value == "":
            return []
        raise ValueError("a list of two layer names")
    if t == "scalar":
        if isinstance(value, str | int | float | bool):
            return value
        if isinstance(value, list | tuple) and all(
            isinstance(v, str | int | float | bool) for v in value
        ):
            return list(value)
        raise ValueError("a string, number, bool or a list of them")
    if t == "choice":
        if isinstance(value, str) and value in key.choices:
            return value
        raise ValueError("one of " + ", ".join(key.choices))
    raise ValueError(f"unknown key type {t}")  # pragma: no cover


# --------------------------------------------------------------------------- plans


class StructChange(Record):
    """A change to the net's layers/blobs/edges that a step declares."""

    __slots__ = ("kind", "old", "new", "bottom", "top", "removed", "type", "bottoms", "tops")

    def __init__(
        self,
        kind: str,  # rename-layer | rename-blob | remove-layer | rewrite (checked by the promise)
        old: str,
        new: str = "",
        bottom: str = "",
        top: str = "",
        removed: tuple[str, ...] = (),
        type: str | None = None,
        bottoms: tuple[str, ...] | None = None,
        tops: tuple[str, ...] | None = None,
    ) -> None:
        self.kind = kind
        self.old = old
        self.new = new
        #: remove-layer: the removed layer's bottom and top blob names
        self.bottom = bottom
        self.top = top
        #: relayer (rewriter.recipes.weightsteps): layers removed, and layer ``old``'s new
        #: type/bottoms/tops
        self.removed = removed
        self.type = type
        self.bottoms = bottoms
        self.tops = tops

    def describe(self) -> str:
        if self.kind == "relayer" and self.removed:
            return f"{self.new}: '{self.old}' takes over {', '.join(self.removed)}"
        if self.kind == "relayer":
            return f"{self.new}: '{self.old}' becomes a {self.type}"
        if self.kind == "rewrite":
            return f"{self.old}: the net is rewritten as a whole ({self.new})"
        if self.kind == "remove-layer":
            return f"remove layer '{self.old}' (readers of '{self.top}' read '{self.bottom}')"
        return f"{self.kind} '{self.old}' -> '{self.new}'"


Struct = list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]


def transform(st: Struct, change: StructChange) -> Struct:
    """The structure a net should have after ``change``."""
    if change.kind == "rename-layer":
        return [(change.new if n == change.old else n, t, b, o) for n, t, b, o in st]
    if change.kind == "rename-blob":

        def m(names: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(change.new if x == change.old else x for x in names)

        return [(n, t, m(b), m(o)) for n, t, b, o in st]
    if change.kind == "relayer":
        return [
            (n, change.type or t, change.bottoms or b, change.tops or o) if n == change.old
            else (n, t, b, o)
            for n, t, b, o in st
            if n not in change.removed
        ]  # fmt: skip
    out: Struct = []
    seen = False
    for n, t, b, o in st:
        if n == change.old:
            seen = True
            continue
        if seen and change.top != change.bottom:
            b = tuple(change.bottom if x == change.top else x for x in b)
            o = tuple(change.bottom if x == change.top else x for x in o)
        out.append((n, t, b, o))
    return out


#: step kinds that may change the structure (StructChange); a recipe of other steps keeps
#: only a digest of the input's structure for the check (rewriter.recipes.engine._release_graphs)
STRUCTURAL_KINDS = frozenset(
    {"rename-layer", "rename-blob", "remove-layer", "deploy", "fold-bn", "fc-to-conv"}
)


class StructDigest(NamedTuple):
    """A structure as its length and a hash of its rows: what the structure check needs of
    the input's when no step declares a structural change (the rows are ~0.6x the file)."""

    layers: int
    digest: bytes

    @classmethod
    def of(cls, st: Struct) -> StructDigest:
        import hashlib

        h = hashlib.blake2b(digest_size=32)
        for row in st:
            h.update(repr(row).encode("utf-8", "surrogatepass"))
            h.update(b"\n")
        return cls(len(st), h.digest())


def structure(view: NetView, phase: str) -> Struct:
    """Caffe's net for ``phase`` as (name, type, bottoms, tops), split layers folded back."""
    return graph_structure(view.graph(phase))


def graph_structure(graph: Graph) -> Struct:
    """:func:`structure` of a graph already built."""
    unsplit: dict[str, str] = {}
    for layer in graph.layers:
        if layer.inserted_split:
            for t in layer.tops:
                unsplit[t] = unsplit.get(layer.bottoms[0], layer.bottoms[0])
    if not unsplit:
        return [(layer.name, layer.type, layer.bottoms, layer.tops) for layer in graph.layers]
    return [
        (layer.name, layer.type, tuple(map(unsplit.get, layer.bottoms, layer.bottoms)), layer.tops)
        for layer in graph.layers
        if not layer.inserted_split
    ]


Failure = tuple[str | None, str]  # (layer name or None, message)


_PATH_SETS: dict[frozenset[FieldPath], frozenset[FieldPath]] = {}


class Plan(Record):
    """What one step will do to one document."""

    __slots__ = (
        "step", "editor", "effects", "net_effects", "structural", "removed", "inserted",
        "selected", "promise", "warnings", "note", "weights", "needs_weights",
    )  # fmt: skip

    def __init__(self, step: Step, editor: Editor | LayerEditor) -> None:
        self.step = step
        self.editor = editor
        #: document layer index (in the step's input) -> field paths the step may change
        self.effects: dict[int, frozenset[FieldPath]] = {}
        #: top-level (non-layer) fields the step may change
        self.net_effects: set[FieldPath] = set()
        self.structural: list[StructChange] = []
        #: document layer indices removed (in the step's input)
        self.removed: list[int] = []
        #: layer indices in the step's OUTPUT of layers the step adds (deploy's Input layer)
        self.inserted: list[int] = []
        self.selected: list[int] = []
        #: checked on the document after the step
        self.promise: Callable[[NetView], list[Failure]] | None = None
        self.warnings: list[str] = []
        #: why nothing was done, when nothing was done
        self.note = ""
        #: what the step does to the .caffemodel (rewriter.recipes.weightsteps.store.WeightOp),
        #: if anything
        self.weights: Callable[[Any], None] | None = None
        #: the step cannot run without the weights (fold-bn, fc-to-conv)
        self.needs_weights = False

    def declare(self, k: int, *paths: FieldPath) -> None:
        old = self.effects.get(k)
        new = frozenset(paths) if old is None else old | frozenset(paths)
        # one object per distinct set: a step declares the same paths in thousands of layers
        self.effects[k] = _PATH_SETS.setdefault(new, new)


class StepContext(Record):
    __slots__ = ("view", "step", "phase", "spec", "rerun")

    def __init__(
        self, view: NetView, step: Step, phase: str, spec: StepSpec, rerun: bool = False
    ) -> None:
        self.view = view
        self.step = step
        self.phase = phase
        #: the step's entry in rewriter.recipes.step_table.STEPS (its selection mode, keys,
        #: planner)
        self.spec = spec
        #: re-running on the recipe's own output (idempotence check): missing targets are fine
        self.rerun = rerun

    def error(
        self, message: str, key: str | None = None, reason: str | None = None
    ) -> RewriterError:
        err: RewriterError = self.step.error(f"{self.view.path}: {message}", key, reason=reason)
        return err


def is_idempotent(step: Step) -> bool:
    """False for steps that multiply (``scale``): running them twice multiplies twice."""
    return not (step.kind in ("set-lr", "set-decay") and step.get("scale") is not None)


# --------------------------------------------------------------------------- documents


class _FastDoc(Document):
    """A Document that computes its line ending once (the Editor asks for it per edited block)."""

    __slots__ = ("_newline",)

    @property
    def newline(self) -> str:
        nl: str | None = getattr(self, "_newline", None)
        if nl is None:
            nl = Document.newline.fget(self)  # type: ignore[attr-defined]
            self._newline = nl
        return nl


def fast_doc(doc: Document, newline: str | None = None) -> Document:
    if isinstance(doc, _FastDoc) and newline is None:
        return doc
    out = _FastDoc(doc.src, doc.fields, doc.tail_start, doc.pristine, doc.path)
    if newline is not None:
        out._newline = newline
    elif isinstance(doc, _FastDoc):
        out._newline = doc.newline
    return out


class LayerEditor:
    """The :class:`~rewriter.text.edit.Editor` API, with one Editor per edited top-level field.

    Edits inside a top-level block (a layer) are recorded on an Editor over a document holding
    just that block; top-level edits (removing a layer, renaming a net field) on one Editor
    over the whole document, replayed after the per-block results are spliced in. The result
    is what one Editor over the whole document gives, but the Editor's style lookups (line
    ending, indent unit) then scan one layer instead of the whole file for every edited block,
    which made large unindented files quadratic.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self._blocks: dict[int, Editor] = {}
        self._top: list[tuple[str, tuple[Any, ...]]] = []

    def _mini(self, i: int) -> Editor:
        ed = self._blocks.get(i)
        if ed is None:
            doc = self.doc
            mini = _FastDoc(doc.src, [doc.fields[i]], len(doc.src), False, doc.path)
            mini._newline = doc.newline
            ed = self._blocks[i] = Editor(mini)
        return ed

    def set_value(self, path: tuple[int, ...], value_text: str) -> None:
        if len(path) == 1:
            self._top.append(("set_value", (path, value_text)))
        else:
            self._mini(path[0]).set_value((0, *path[1:]), value_text)

    def rename(self, path: tuple[int, ...], new_name: str) -> None:
        if len(path) == 1:
            self._top.append(("rename", (path, new_name)))
        else:
            self._mini(path[0]).rename((0, *path[1:]), new_name)

    def remove(self, path: tuple[int, ...]) -> None:
        if len(path) == 1:
            self._top.append(("remove", (path,)))
        else:
            self._mini(path[0]).remove((0, *path[1:]))

    def replace(self, path: tuple[int, ...], field_text: str) -> None:
        if len(path) == 1:
            self._top.append(("replace", (path, field_text)))
        else:
            self._mini(path[0]).replace((0, *path[1:]), field_text)

    def insert(self, parent: tuple[int, ...], index: int, name: str, value: Any) -> None:
        if not parent:
            self._top.append(("insert", (parent, index, name, value)))
        else:
            self._mini(parent[0]).insert((0, *parent[1:]), index, name, value)

    @property
    def empty(self) -> bool:
        return not self._top and all(ed.empty for ed in self._blocks.values())

    def apply(self) -> Document:
        doc = self.doc
        if any(not ed.empty for ed in self._blocks.values()):
            fields = list(doc.fields)
            for i, ed in self._blocks.items():
                if not ed.empty:
                    (fields[i],) = ed.apply().fields
            doc = _FastDoc(doc.src, fields, doc.tail_start, False, doc.path)
            doc._newline = self.doc.newline
        if self._top:
            top = Editor(doc)
            for method, args in self._top:
                getattr(top, method)(*args)
            doc = top.apply()
        return doc


# --------------------------------------------------------------------------- helpers

_HEADER = ("name", "type", "bottom", "top", "propagate_down", "loss_weight", "include", "exclude")
_F32 = struct.Struct("<f")


_F32_CACHE: dict[float, float] = {}


def f32(x: float) -> float:
    """``x`` as a float32 (Caffe's multipliers are float fields)."""
    got = _F32_CACHE.get(x)
    if got is None:
        try:
            got = float(_F32.unpack(_F32.pack(x))[0])
        except OverflowError:
            got = x
        if len(_F32_CACHE) < 1024:
            _F32_CACHE[x] = got
    return got


def num(x: float) -> str:
    """A multiplier as short text: 0, 1, 0.1, 2.5e-05."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    text = format(x, ".7g")
    if "e" not in text and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _children(f: Field) -> tuple[Field, ...]:
    body = f.body
    return body.fields if isinstance(body, MessageBody) else ()


def _child(f: Field, i: int) -> Field:
    body = f.body
    assert isinstance(body, MessageBody)
    return body.child(i)


def _last_index(f: Field, name: str) -> int | None:
    body = f.body
    if not isinstance(body, MessageBody):
        return None
    hits = body.positions(name)
    return hits[-1] if hits else None


def _count(f: Field) -> int:
    """The number of children of a message field (without building them)."""
    body = f.body
    return len(body.names()) if isinstance(body, MessageBody) else 0


def _insert_pos(layer: Field, after: Sequence[str]) -> int:
    """Index just after the last child named in ``after`` (0 if none)."""
    body = layer.body
    if not isinstance(body, MessageBody):
        return 0
    pos = 0
    for i, name in enumerate(body.names()):
        if name in after:
            pos = i + 1
    return pos


def _selection(ctx: StepContext, plan: Plan) -> list[int]:
    spec = ctx.spec
    view = ctx.view
    view.require_current(f"step '{ctx.step.kind}'")
    chosen = select(view, ctx.step, ctx.phase, missing_ok=ctx.rerun)
    if chosen is None:
        if spec.selection == "required":
            raise ctx.error(
                "needs a selection: layers, glob, regex, type, upto, after or between",
                reason="no-selection",
            )
        chosen = list(range(len(view)))
    if not chosen and not ctx.step.get("allow_empty", False) and not ctx.rerun:
        raise ctx.error(
            "the selection is empty (set allow_empty = true if that is fine)",
            reason="empty-selection",
        )
    plan.selected = chosen
    return chosen


def _is_bn(view: NetView, k: int) -> bool:
    return bool(view.layer(k).type == "BatchNorm")


def _ensure_scalar(
    ctx: StepContext, plan: Plan, k: int, path: Sequence[str], text: str, present_equal: bool
) -> bool:
    """Set the scalar at ``path`` under layer k to ``text`` (creating blocks); True if changed."""
    view = ctx.view
    plan.declare(k, tuple(path))
    if present_equal:
        return False
    f = view.field(k)
    fpath = view.field_path(k)
    for depth, name in enumerate(path[:-1]):
        ci = _last_index(f, name)
        if ci is None:
            value: Any = text
            for inner in reversed(path[depth + 1 :]):
                value = [(inner, value)]
            plan.editor.insert(fpath, _count(f), name, value)
            return True
        f = _child(f, ci)
        fpath = fpath + (ci,)
        if not isinstance(f.body, MessageBody):
            raise ctx.error(f"{view.describe(k)}: '{name}' is not a message block")
    leaf = path[-1]
    ci = _last_index(f, leaf)
    if ci is None:
        plan.editor.insert(fpath, _count(f), leaf, text)
    else:
        plan.editor.set_value(fpath + (ci,), text)
    return True


def _msg_value(msg: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """(is set, value) of a dotted path in a message."""
    for name in path[:-1]:
        if not msg.HasField(name):
            return False, None
        msg = getattr(msg, name)
    leaf = path[-1]
    fd = msg.DESCRIPTOR.fields_by_name[leaf]
    if is_repeated(fd):
        values = list(getattr(msg, leaf))
        return bool(values), values
    return msg.HasField(leaf), getattr(msg, leaf)


def _graph_layer(view: NetView, phase: str, k: int) -> Any:
    gi = view.graph_layers_of(phase).get(k)
    return None if gi is None else view.graph(phase).layers[gi]


# --------------------------------------------------------------------------- graph helpers


def bottom_writers(graph: Any) -> list[list[int | None]]:
    """Per graph layer and bottom: the layer that wrote the blob version the bottom reads."""
    last: dict[int, int] = {}
    out: list[list[int | None]] = []
    for layer in graph.layers:
        out.append([last.get(bid) for bid in layer.bottom_ids])
        for tid in layer.top_ids:
            last[tid] = layer.index
    return out


def fed_by(graph: Any, writers: list[list[int | None]], li: int, j: int, source: str) -> bool:
    """Is bottom j of layer li fed by the layer named ``source``?

    Yes when the blob version it reads was last written by ``source``, possibly through Split
    layers Caffe inserted and through layers that rewrite the blob in place (a ReLU after a
    convolution): the gradient cut there would otherwise have reached ``source``.
    """
    layers = graph.layers
    bid = layers[li].bottom_ids[j]
    w = writers[li][j]
    hops = 0
    while w is not None and hops <= len(layers):
        hops += 1
        layer = layers[w]
        if layer.name == source:
            return True
        if layer.inserted_split:
            bid = layer.bottom_ids[0]
            w = writers[w][0]
            continue
        if bid in layer.bottom_ids and bid in layer.top_ids:
            w = writers[w][layer.bottom_ids.index(bid)]
            continue
        return False
    return False


# --------------------------------------------------------------------------- blob fields


def _blob_fields(view: NetView, k: int, blob: str) -> list[tuple[int, str]]:
    out = []
    for i, c in enumerate(_children(view.field(k))):
        if c.name in ("bottom", "top") and c.body is None and c.kind == "s":
            from rewriter.text.cst import decode_string

            if decode_string(c.value_text) == blob:
                out.append((i, c.name))
    return out


# --------------------------------------------------------------------------- value checks


def check_from_to(step: Step) -> None:
    for key in ("from", "to"):
        if not step.get(key):
            raise step.error(f"'{key}' must be a non-empty name", key)
    if step.get("from") == step.get("to"):
        raise step.error("'from' and 'to' are the same", "to")
