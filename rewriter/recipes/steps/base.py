"""The step catalogue: what each step edits, what it declares, what it promises.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from rewriter.errors import RewriterError
from rewriter.schema.runtime import is_repeated
from rewriter.text.cst import Document, Field, ListBody, MessageBody, encode_string
from rewriter.text.edit import Editor

from ..select import NetView, select

if TYPE_CHECKING:
    from ..recipe import Step

__all__ = [
    "Key",
    "LayerEditor",
    "Plan",
    "StepContext",
    "StepSpec",
    "StructChange",
    "fast_doc",
    "is_idempotent",
    "structure",
]

FieldPath = tuple[str, ...]

# --------------------------------------------------------------------------- key types


@dataclass(frozen=True)
class Key:
    type: str  # str | int | number | bool | strlist | intlist | pair | scalar | choice
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class StepSpec:
    kind: str
    doc: str
    keys: dict[str, Key]
    #: "required": needs a selector; "optional": no selector means every layer; "none"
    selection: str
    plan: Callable[[StepContext], Plan]
    #: after the recipe, report Caffe-analysis warnings about the layers this step touched
    #: (off where the step's own promise rules them out or it reports its own)
    analysis_warnings: bool = True


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


@dataclass
class StructChange:
    """A change to the net's layers/blobs/edges that a step declares."""

    kind: str  # rename-layer | rename-blob | remove-layer | rewrite (checked by the promise)
    old: str
    new: str = ""
    #: remove-layer: the removed layer's bottom and top blob names
    bottom: str = ""
    top: str = ""
    #: relayer (rewriter.recipes.weightsteps): layers removed, and layer ``old``'s new
    # type/bottoms/tops
    removed: tuple[str, ...] = ()
    type: str | None = None
    bottoms: tuple[str, ...] | None = None
    tops: tuple[str, ...] | None = None

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
    graph = view.graph(phase)
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


@dataclass
class Plan:
    """What one step will do to one document."""

    step: Step
    editor: Editor | LayerEditor
    #: document layer index (in the step's input) -> field paths the step may change
    effects: dict[int, frozenset[FieldPath]] = field(default_factory=dict)
    #: top-level (non-layer) fields the step may change
    net_effects: set[FieldPath] = field(default_factory=set)
    structural: list[StructChange] = field(default_factory=list)
    #: document layer indices removed (in the step's input)
    removed: list[int] = field(default_factory=list)
    #: layer indices in the step's OUTPUT of layers the step adds (deploy's Input layer)
    inserted: list[int] = field(default_factory=list)
    selected: list[int] = field(default_factory=list)
    #: checked on the document after the step
    promise: Callable[[NetView], list[Failure]] | None = None
    warnings: list[str] = field(default_factory=list)
    #: why nothing was done, when nothing was done
    note: str = ""
    #: what the step does to the .caffemodel (rewriter.recipes.weightsteps.store.WeightOp), if
    # anything
    weights: Callable[[Any], None] | None = None
    #: the step cannot run without the weights (fold-bn, fc-to-conv)
    needs_weights: bool = False

    def declare(self, k: int, *paths: FieldPath) -> None:
        old = self.effects.get(k)
        new = frozenset(paths) if old is None else old | frozenset(paths)
        # one object per distinct set: a step declares the same paths in thousands of layers
        self.effects[k] = _PATH_SETS.setdefault(new, new)


@dataclass
class StepContext:
    view: NetView
    step: Step
    phase: str
    #: the step's entry in rewriter.recipes.step_table.STEPS (its selection mode, keys, planner)
    spec: StepSpec
    #: re-running on the recipe's own output (idempotence check): missing targets are fine
    rerun: bool = False

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


def _insert_pos(layer: Field, after: Sequence[str]) -> int:
    """Index just after the last child named in ``after`` (0 if none)."""
    pos = 0
    for i, c in enumerate(_children(layer)):
        if c.name in after:
            pos = i + 1
    return pos


class _Params:
    """Edits of ``lr_mult`` / ``decay_mult`` in the param blocks of many layers."""

    def __init__(self, ctx: StepContext, plan: Plan) -> None:
        self.ctx = ctx
        self.view = ctx.view
        self.plan = plan
        self.ed = plan.editor
        self.new_blocks: dict[int, dict[int, dict[str, str]]] = {}
        self._blocks: dict[int, list[int]] = {}
        self._groups: dict[str, list[tuple[int, int]]] | None = None
        self._info: dict[int, tuple[int, tuple[str, ...]]] = {}
        self._where: Mapping[int, int] | None = None
        #: (layer, param, field) -> value already planned: a blob shared by name is reached
        #: once per sharer, but its param block must be written once
        self._planned: dict[tuple[int, int, str], float] = {}

    def blocks(self, k: int) -> list[int]:
        """Child indices of the layer's ``param`` blocks (message order)."""
        got = self._blocks.get(k)
        if got is None:
            layer = self.view.field(k)
            body = layer.body
            got = list(body.positions("param")) if isinstance(body, MessageBody) else []
            for i in got:
                if not isinstance(_child(layer, i).body, MessageBody):
                    raise self.ctx.error(
                        f"{self.view.describe(k)}: 'param' written as a list is not supported"
                    )
            if len(got) != len(self.view.layer(k).param):
                raise self.ctx.error(f"{self.view.describe(k)}: param blocks do not match")
            self._blocks[k] = got
        return got

    def info(self, k: int) -> tuple[int, tuple[str, ...]]:
        """(number of parameter blobs, their roles) as Caffe's Net::Init counts them."""
        got = self._info.get(k)
        if got is not None:
            return got
        view = self.view
        if self._where is None:
            self._where = view.graph_layers_of(self.ctx.phase)
        gi = self._where.get(k)
        if gi is not None:
            layer = view.graph(self.ctx.phase).layers[gi]
            got = (len(layer.params), tuple(p.role for p in layer.params))
        else:
            other = "TEST" if self.ctx.phase == "TRAIN" else "TRAIN"
            try:
                gi = view.graph_layers_of(other).get(k)
            except RewriterError:
                gi = None
            if gi is not None:
                layer = view.graph(other).layers[gi]
                got = (len(layer.params), tuple(p.role for p in layer.params))
        if got is None:
            from rewriter.caffe.layer_params import param_blob_count, param_roles

            msg = view.layer(k)
            count = param_blob_count(msg.type, msg, len(msg.bottom))
            if count is None:
                count = len(msg.param)
            got = (count, tuple(param_roles(msg.type, msg, len(msg.bottom), count)))
        self._info[k] = got
        return got

    def groups(self) -> dict[str, list[tuple[int, int]]]:
        if self._groups is None:
            g: dict[str, list[tuple[int, int]]] = {}
            for k, layer in enumerate(self.view.message.layer):
                for j, p in enumerate(layer.param):
                    if p.name:
                        g.setdefault(p.name, []).append((k, j))
            self._groups = g
        return self._groups

    def sharers(self, k: int, j: int) -> list[tuple[int, int]]:
        msg = self.view.layer(k)
        if j >= len(msg.param) or not msg.param[j].name:
            return [(k, j)]
        return self.groups()[msg.param[j].name]

    def current(self, k: int, j: int, name: str) -> float:
        msg = self.view.layer(k)
        if j < len(msg.param) and msg.param[j].HasField(name):
            return float(getattr(msg.param[j], name))
        return 1.0

    def set(self, k: int, j: int, name: str, value: float) -> bool:
        """Set ``param[j].<name>`` of layer k; True if the text changes."""
        view = self.view
        msg = view.layer(k)
        blocks = self.blocks(k)
        value32 = f32(value)
        planned = self._planned.get((k, j, name))
        if planned is not None:
            if planned != value32:
                raise self.ctx.error(
                    f"{view.describe(k)}: param {j} is shared by name and would get {name} "
                    f"{num(planned)} and {num(value)}; give its sharers the same value"
                )
            return False
        self._planned[(k, j, name)] = value32
        if j < len(blocks):
            p = msg.param[j]
            if p.HasField(name):
                if getattr(p, name) == value32:  # float fields hold float32 values already
                    return False
            elif value32 == 1.0:
                return False  # the default already
            layer = view.field(k)
            bpath = view.field_path(k) + (blocks[j],)
            block = _child(layer, blocks[j])
            ci = _last_index(block, name)
            if ci is not None:
                self.ed.set_value(bpath + (ci,), num(value))
            else:
                if name == "lr_mult":
                    at = _insert_pos(block, ("name",))
                else:
                    at = _insert_pos(block, ("name", "lr_mult"))
                self.ed.insert(bpath, at, name, num(value))
            self.plan.declare(k, ("param", name))
            return True
        if f32(value) == 1.0:
            return False
        self.new_blocks.setdefault(k, {}).setdefault(j, {})[name] = num(value)
        self.plan.declare(k, ("param", name))
        return True

    def flush(self) -> None:
        for k, wanted in self.new_blocks.items():
            layer = self.view.field(k)
            blocks = self.blocks(k)
            at = blocks[-1] + 1 if blocks else _insert_pos(layer, _HEADER)
            for j in range(len(blocks), max(wanted) + 1):
                values = wanted.get(j, {})
                items = [(n, values[n]) for n in ("lr_mult", "decay_mult") if n in values]
                if not items:
                    self.plan.declare(k, ("param",))  # an empty 'param {}' keeps positions
                self.ed.insert(self.view.field_path(k), at, "param", items)
        self.new_blocks.clear()


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
            plan.editor.insert(fpath, len(_children(f)), name, value)
            return True
        f = _children(f)[ci]
        fpath = fpath + (ci,)
        if not isinstance(f.body, MessageBody):
            raise ctx.error(f"{view.describe(k)}: '{name}' is not a message block")
    leaf = path[-1]
    ci = _last_index(f, leaf)
    if ci is None:
        plan.editor.insert(fpath, len(_children(f)), leaf, text)
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


def _bn_global_stats(ctx: StepContext, plan: Plan, k: int) -> None:
    set_, value = _msg_value(ctx.view.layer(k), ("batch_norm_param", "use_global_stats"))
    _ensure_scalar(
        ctx, plan, k, ("batch_norm_param", "use_global_stats"), "true", bool(set_ and value)
    )


def _graph_layer(view: NetView, phase: str, k: int) -> Any:
    gi = view.graph_layers_of(phase).get(k)
    return None if gi is None else view.graph(phase).layers[gi]


# --------------------------------------------------------------------------- freeze & co.


def plan_freeze(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    zero_decay = bool(step.get("zero_decay", False))
    bn = bool(step.get("batchnorm", True))
    mode = step.get("shared", "unit")
    chosen_set = set(chosen)
    for k in chosen:
        if _is_bn(view, k):
            # Caffe never lets the solver update BatchNorm's blobs (lr_mult is forced to 0);
            # what moves are the running statistics, frozen by use_global_stats.
            if bn:
                _bn_global_stats(ctx, plan, k)
            continue
        count, _ = params.info(k)
        for j in range(count):
            targets = params.sharers(k, j)
            if mode == "reject":
                others = sorted({view.names[kk] for kk, _ in targets if kk not in chosen_set})
                if others:
                    name = view.layer(k).param[j].name
                    raise ctx.error(
                        f"{view.describe(k)} shares param '{name}' with "
                        f"{', '.join(others)}, which {'is' if len(others) == 1 else 'are'} not "
                        'selected; select them too or use shared = "unit"',
                        "shared",
                    )
            for kk, jj in targets:
                params.set(kk, jj, "lr_mult", 0.0)
                if zero_decay:
                    params.set(kk, jj, "decay_mult", 0.0)
    params.flush()
    names = [view.names[k] for k in chosen]
    phase = ctx.phase

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        where = after.graph_layers_of(phase)
        graph = after.graph(phase)
        for k, name in zip(chosen, names, strict=True):
            if after.names[k] != name:
                out.append((name, "layer moved or renamed during the step"))
                continue
            gi = where.get(k)
            if gi is not None:
                # the analysis' param_updates: effective lr_mult != 0 after Net::Init's
                # sharing (Param.updates), read straight from the wired net
                moving = [p.index for p in graph.layers[gi].params if p.updates]
                if moving:
                    out.append((name, f"param(s) {moving} still updated (lr_mult != 0)"))
            if bn and _is_bn(after, k):
                set_, value = _msg_value(after.layer(k), ("batch_norm_param", "use_global_stats"))
                if not (set_ and value):
                    out.append((name, "BatchNorm without use_global_stats: true"))
        return out

    plan.promise = promise
    return plan


def plan_unfreeze(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    value = float(step.get("value", 1.0))
    bias_value = step.get("bias_value")
    bn = bool(step.get("batchnorm", True))
    expected: dict[tuple[int, int], float] = {}
    for k in chosen:
        if _is_bn(view, k):
            if bn:
                _bn_remove_global_stats(ctx, plan, k)
            continue
        _, roles = params.info(k)
        msg = view.layer(k)
        for j, p in enumerate(msg.param):
            if p.HasField("lr_mult") and p.lr_mult == 0:
                role = roles[j] if j < len(roles) else ""
                new = float(bias_value) if bias_value is not None and role == "bias" else value
                for kk, jj in params.sharers(k, j):
                    params.set(kk, jj, "lr_mult", new)
                    expected[(kk, jj)] = new
    params.flush()
    plan.promise = _mult_promise(expected, "lr_mult")
    return plan


def _bn_remove_global_stats(ctx: StepContext, plan: Plan, k: int) -> None:
    view = ctx.view
    plan.declare(k, ("batch_norm_param", "use_global_stats"))
    f = view.field(k)
    bi = _last_index(f, "batch_norm_param")
    if bi is None:
        return
    block = _children(f)[bi]
    ui = _last_index(block, "use_global_stats")
    if ui is None:
        return
    set_, value = _msg_value(view.layer(k), ("batch_norm_param", "use_global_stats"))
    if not (set_ and value):
        return
    if len(_children(block)) == 1:
        plan.editor.remove(view.field_path(k) + (bi,))
    else:
        plan.editor.remove(view.field_path(k) + (bi, ui))


def _mult_promise(
    expected: dict[tuple[int, int], float], name: str
) -> Callable[[NetView], list[Failure]]:
    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for (k, j), value in sorted(expected.items()):
            msg = after.layer(k)
            got = float(getattr(msg.param[j], name)) if j < len(msg.param) else 1.0
            if j < len(msg.param) and not msg.param[j].HasField(name):
                got = 1.0
            if f32(got) != f32(value):
                out.append((after.names[k], f"param {j} {name} is {num(got)}, not {num(value)}"))
        return out

    return promise


def plan_set_mult(ctx: StepContext, name: str, fixed: float | None = None) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    value = step.get("value") if fixed is None else fixed
    scale = step.get("scale")
    indices = step.get("params")
    expected: dict[tuple[int, int], float] = {}
    for k in chosen:
        if _is_bn(view, k):
            continue  # Caffe refuses lr_mult != 0 on BatchNorm; its blobs are statistics
        count, _ = params.info(k)
        for j in indices if indices is not None else range(count):
            if j >= count:
                continue
            new = float(value) if value is not None else params.current(k, j, name) * float(scale)
            new = float(num(new)) if new != int(new) else new
            for kk, jj in params.sharers(k, j):
                params.set(kk, jj, name, new)
                expected[(kk, jj)] = new
    params.flush()
    plan.promise = _mult_promise(expected, name)
    return plan


def plan_set_lr(ctx: StepContext) -> Plan:
    return plan_set_mult(ctx, "lr_mult")


def plan_set_decay(ctx: StepContext) -> Plan:
    return plan_set_mult(ctx, "decay_mult")


def plan_zero_decay(ctx: StepContext) -> Plan:
    return plan_set_mult(ctx, "decay_mult", fixed=0.0)


def plan_zero_decay_frozen(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    phase = ctx.phase
    where = view.graph_layers_of(phase)
    graph = view.graph(phase)
    done: set[str] = set()
    for k in chosen:
        if _is_bn(view, k):
            continue
        msg = view.layer(k)
        gi = where.get(k)
        for j, p in enumerate(msg.param):
            if gi is not None and j < len(graph.layers[gi].params):
                frozen = graph.layers[gi].params[j].lr_mult == 0
            else:
                frozen = p.HasField("lr_mult") and p.lr_mult == 0
            if not frozen:
                continue
            if not p.name:
                params.set(k, j, "decay_mult", 0.0)
                continue
            if p.name in done:
                continue
            done.add(p.name)
            # A shared blob takes the first explicit decay_mult of its group (and Caffe stops
            # on two different explicit values): zero every explicit one, or the owner's.
            group = params.sharers(k, j)
            explicit = [(a, b) for a, b in group if view.layer(a).param[b].HasField("decay_mult")]
            for a, b in explicit or group[:1]:
                params.set(a, b, "decay_mult", 0.0)
    params.flush()

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        w = after.graph_layers_of(phase)
        g = after.graph(phase)
        for k in chosen:
            gi = w.get(k)
            if gi is None or _is_bn(after, k):
                continue
            for p in g.layers[gi].params:
                if p.lr_mult == 0 and p.decay_mult != 0:
                    out.append(
                        (after.names[k], f"param {p.index} has lr_mult 0 but decay_mult "
                         f"{num(p.decay_mult)}")
                    )  # fmt: skip
        return out

    plan.promise = promise
    return plan


def plan_remove_param_blocks(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    for k in chosen:
        plan.declare(k, ("param",))
        layer = view.field(k)
        for bi in params.blocks(k):
            block = _child(layer, bi)
            kids = _children(block)
            path = view.field_path(k) + (bi,)
            if any(c.name == "name" for c in kids):
                # keep the sharing name: drop everything else
                for ci, c in enumerate(kids):
                    if c.name != "name":
                        plan.editor.remove(path + (ci,))
            else:
                plan.editor.remove(path)

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for k in chosen:
            for j, p in enumerate(after.layer(k).param):
                if any(fd.name != "name" for fd, _ in p.ListFields()):
                    out.append((after.names[k], f"param block {j} still sets more than a name"))
        return out

    plan.promise = promise
    return plan


# --------------------------------------------------------------------------- stop-gradient


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


def plan_stop_gradient(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    view.require_current("step 'stop-gradient'")
    src, dst = str(step.get("from")), str(step.get("to"))
    phase = ctx.phase
    graph = view.graph(phase)
    writers = bottom_writers(graph)
    targets = [layer for layer in graph.layers if layer.name == dst]
    if ctx.rerun and (not targets or not any(layer.name == src for layer in graph.layers)):
        plan.note = "its layers were renamed or removed by a later step"
        return plan
    if not targets:
        raise ctx.error(str(view.no_such_layer(dst, phase)).split(": ", 1)[-1], "to")
    if not any(layer.name == src for layer in graph.layers):
        raise ctx.error(str(view.no_such_layer(src, phase)).split(": ", 1)[-1], "from")
    cuts: list[tuple[int, int, list[int]]] = []  # (doc index, graph index, fed bottoms)
    for layer in targets:
        fed = [j for j in range(len(layer.bottoms)) if fed_by(graph, writers, layer.index, j, src)]
        k = view.doc_index(layer.source_index)
        if not fed or k is None:
            continue
        cuts.append((k, layer.index, fed))
    if not cuts:
        feeders = []
        for layer in targets:
            for j in range(len(layer.bottoms)):
                w = writers[layer.index][j]
                while w is not None and graph.layers[w].inserted_split:
                    w = writers[w][0]
                if w is not None:
                    feeders.append(graph.layers[w].name)
        raise ctx.error(
            f"'{src}' does not feed '{dst}' in the {phase} net (its bottoms come from "
            f"{', '.join(dict.fromkeys(feeders)) or 'nothing'})",
            "from",
        )
    for k, gi, fed in cuts:
        _set_propagate_down(ctx, plan, k, len(graph.layers[gi].bottoms), fed)
    plan.selected = [k for k, _, _ in cuts]

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        verdicts = after.backward(phase)
        g = after.graph(phase)
        where = after.graph_layers_of(phase)
        for k, _, fed in cuts:
            gi = where.get(k)
            if gi is None:
                out.append((dst, f"layer is no longer in the {phase} net"))
                continue
            v = verdicts.layers[gi]
            for j in fed:
                if v.bottom_need_backward[j]:
                    why = " (the net sets force_backward: true)" if g.force_backward else ""
                    out.append((dst, f"bottom {j} still gets a gradient{why}"))
        plan.warnings.extend(_above_cut_warnings(after, phase, src, dst))
        return out

    plan.promise = promise
    return plan


def _set_propagate_down(
    ctx: StepContext, plan: Plan, k: int, n_bottoms: int, fed: list[int]
) -> None:
    view = ctx.view
    plan.declare(k, ("propagate_down",))
    msg = view.layer(k)
    current = [bool(x) for x in msg.propagate_down]
    if current and len(current) != n_bottoms:
        raise ctx.error(
            f"{view.describe(k)} has {len(current)} propagate_down entries for {n_bottoms} "
            "bottoms (Caffe needs one per bottom); fix it first"
        )
    wanted = [False if j in fed else (current[j] if current else True) for j in range(n_bottoms)]
    if wanted == current:
        return
    layer = view.field(k)
    kids = _children(layer)
    pd = [i for i, c in enumerate(kids) if c.name == "propagate_down"]
    lists = [i for i in pd if isinstance(kids[i].body, ListBody)]
    path = view.field_path(k)
    text = ["true" if w else "false" for w in wanted]
    if lists:
        for i in pd[1:]:
            plan.editor.remove(path + (i,))
        plan.editor.replace(
            path + (pd[0],), f"propagate_down: [{', '.join(text)}]" + kids[pd[0]].suffix
        )
        return
    if pd:
        for j, i in enumerate(pd):
            if current[j] != wanted[j]:
                plan.editor.set_value(path + (i,), text[j])
        return
    at = _insert_pos(layer, ("name", "type", "bottom", "top"))
    for t in text:
        plan.editor.insert(path, at, "propagate_down", t)


def _above_cut_warnings(view: NetView, phase: str, src: str, dst: str) -> list[str]:
    """Layers above the cut whose weights still change: the trap users fall into."""
    from ..select import graph_edges

    graph = view.graph(phase)
    verdicts = view.backward(phase)
    preds, _ = graph_edges(graph)
    start = [layer.index for layer in graph.layers if layer.name == src]
    seen = set(start)
    stack = list(start)
    while stack:
        for p in preds[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    training: list[str] = []
    decaying: list[str] = []
    states = verdicts.states.layers  # rewriter.caffe.states: the words every command uses
    for li in sorted(seen):
        if states[li] == "trainable":
            training.append(graph.layers[li].name)
        elif states[li] == "decay-only":
            decaying.append(graph.layers[li].name)
    out: list[str] = []
    if training:
        out.append(
            f"stop-gradient {src} -> {dst}: {_names(training)} above the cut still "
            "train (they get a gradient through another path and have lr_mult != 0); freeze "
            "them too if they should not change"
        )
    if decaying:
        out.append(
            f"stop-gradient {src} -> {dst}: {_names(decaying)} above the cut get no "
            "gradient any more but still change through weight decay (lr_mult != 0, "
            "decay_mult != 0); freeze them (lr_mult: 0) or set decay_mult: 0"
        )
    return out


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------- renames


def plan_rename_layer(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    view.require_current("step 'rename-layer'")
    old, new = str(step.get("from")), str(step.get("to"))
    hits = view.by_name.get(old, [])
    if not hits:
        if new in view.by_name:
            plan.note = f"no layer '{old}'; '{new}' exists already (renamed before)"
            return plan
        raise ctx.error(str(view.no_such_layer(old)).split(": ", 1)[-1], "from")
    if new in view.by_name:
        raise ctx.error(f"a layer named '{new}' exists already", "to")
    for k in hits:
        ni = _last_index(view.field(k), "name")
        assert ni is not None
        plan.editor.set_value(view.field_path(k) + (ni,), encode_string(new))
        plan.declare(k, ("name",))
    plan.structural.append(StructChange("rename-layer", old, new))
    plan.selected = list(hits)
    plan.weights = lambda store: store.rename(old, new)  # the .caffemodel's name follows

    def promise(after: NetView) -> list[Failure]:
        return [(old, "not renamed") for k in hits if after.names[k] != new]

    plan.promise = promise
    return plan


def _blob_fields(view: NetView, k: int, blob: str) -> list[tuple[int, str]]:
    out = []
    for i, c in enumerate(_children(view.field(k))):
        if c.name in ("bottom", "top") and c.body is None and c.kind == "s":
            from rewriter.text.cst import decode_string

            if decode_string(c.value_text) == blob:
                out.append((i, c.name))
    return out


def plan_rename_blob(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    view.require_current("step 'rename-blob'")
    old, new = str(step.get("from")), str(step.get("to"))
    blobs: set[str] = set(view.message.input)
    for layer in view.message.layer:
        blobs.update(layer.bottom)
        blobs.update(layer.top)
    if old not in blobs:
        if new in blobs:
            plan.note = f"no blob '{old}'; '{new}' exists already (renamed before)"
            return plan
        raise ctx.error(f"no blob named '{old}'", "from")
    if new in blobs:
        raise ctx.error(f"a blob named '{new}' exists already", "to")
    for k in range(len(view)):
        for ci, name in _blob_fields(view, k, old):
            plan.editor.set_value(view.field_path(k) + (ci,), encode_string(new))
            plan.declare(k, (name,))
            if k not in plan.selected:
                plan.selected.append(k)
    from rewriter.text.cst import decode_string

    for i, f in enumerate(view.doc.fields):
        if f.name == "input" and f.kind == "s" and decode_string(f.value_text) == old:
            plan.editor.set_value((i,), encode_string(new))
            plan.net_effects.add(("input",))
    plan.structural.append(StructChange("rename-blob", old, new))

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for k, layer in enumerate(after.message.layer):
            if old in layer.bottom or old in layer.top:
                out.append((after.names[k], f"still uses blob '{old}'"))
        return out

    plan.promise = promise
    return plan


# --------------------------------------------------------------------------- set-field


_STRUCTURAL_FIELDS = {"name", "type", "bottom", "top", "include", "exclude", "phase", "layer"}


def _field_chain(ctx: StepContext, dotted: str) -> tuple[list[str], Any]:
    """Field names and the leaf FieldInfo, checked against caffe.LayerParameter."""
    from rewriter.schema.bind import field_table
    from rewriter.schema.runtime import default_schema

    names = [n for n in dotted.split(".")]
    if not names or any(not n for n in names):
        raise ctx.error(f"bad field path '{dotted}'", "field")
    if names[0] in _STRUCTURAL_FIELDS:
        raise ctx.error(
            f"'{names[0]}' changes the net's structure; use rename-layer, rename-blob or "
            "remove-layer",
            "field",
        )
    desc = default_schema().descriptor("caffe.LayerParameter")
    info = None
    for depth, name in enumerate(names):
        table = field_table(desc)
        info = table.get(name)
        if info is None:
            from rewriter.recipes.common import _hint

            raise ctx.error(f"{desc.full_name} has no field '{name}'{_hint(name, table)}", "field")
        last = depth == len(names) - 1
        if not last:
            if info.message is None:
                raise ctx.error(f"'{name}' in '{dotted}' is not a message", "field")
            if info.repeated:
                raise ctx.error(f"'{name}' in '{dotted}' is repeated; cannot address it", "field")
            desc = info.message
        elif info.message is not None:
            raise ctx.error(f"'{dotted}' is a message; set one of its scalar fields", "field")
    return names, info


def _render_typed(ctx: StepContext, info: Any, value: Any) -> tuple[str, Any]:
    """(text, python value as the message holds it) for one scalar of the leaf's type."""
    t = info.full_type
    if info.enum_names is not None:
        if isinstance(value, str) and value in info.enum_names:
            return value, info.enum_names[value]
        raise ctx.error(
            f"{info.name} takes one of {', '.join(info.enum_names)}, not {value!r}", "value"
        )
    if t == "bool":
        if isinstance(value, bool):
            return ("true" if value else "false"), value
        raise ctx.error(f"{info.name} takes true or false, not {value!r}", "value")
    if t in ("string", "bytes"):
        if isinstance(value, str):
            return encode_string(value), value
        raise ctx.error(f"{info.name} takes a string, not {value!r}", "value")
    if t in ("float", "double"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return num(float(value)), float(value)
        raise ctx.error(f"{info.name} takes a number, not {value!r}", "value")
    if isinstance(value, int) and not isinstance(value, bool):
        from rewriter.schema.bind import _INT_RANGES

        lo, hi = _INT_RANGES.get(info.type, (-(2**63), 2**64))
        if not lo <= value <= hi:
            raise ctx.error(f"{value} is out of range for {info.name} ({t})", "value")
        return str(value), value
    raise ctx.error(f"{info.name} takes an integer ({t}), not {value!r}", "value")


def plan_set_field(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    names, info = _field_chain(ctx, str(step.get("field")))
    value = step.get("value")
    chosen = _selection(ctx, plan)
    if info.repeated:
        values = value if isinstance(value, list) else [value]
        rendered = [_render_typed(ctx, info, v) for v in values]
    else:
        if isinstance(value, list):
            raise ctx.error(f"'{'.'.join(names)}' is not repeated; give one value", "value")
        rendered = [_render_typed(ctx, info, value)]
    want = [v for _, v in rendered]
    float_leaf = info.full_type in ("float", "double")
    for k in chosen:
        is_set, current = _msg_value(view.layer(k), names)
        if info.repeated:
            same = is_set and _same_values(current, want, float_leaf)
            if same:
                plan.declare(k, tuple(names))
                continue
            _set_repeated(ctx, plan, k, names, [t for t, _ in rendered])
        else:
            same = is_set and _same_values([current], want, float_leaf)
            _ensure_scalar(ctx, plan, k, names, rendered[0][0], same)
    path = tuple(names)

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for k in chosen:
            is_set, got = _msg_value(after.layer(k), path)
            got_list = got if info.repeated else [got]
            if not is_set or not _same_values(got_list, want, float_leaf):
                out.append((after.names[k], f"{'.'.join(path)} is {got!r}, not {value!r}"))
        return out

    plan.promise = promise
    return plan


def _same_values(a: Sequence[Any], b: Sequence[Any], floats: bool) -> bool:
    if len(a) != len(b):
        return False
    if floats:
        return all(f32(float(x)) == f32(float(y)) for x, y in zip(a, b, strict=True))
    return list(a) == list(b)


def _set_repeated(ctx: StepContext, plan: Plan, k: int, names: list[str], texts: list[str]) -> None:
    view = ctx.view
    plan.declare(k, tuple(names))
    f = view.field(k)
    fpath = view.field_path(k)
    for depth, name in enumerate(names[:-1]):
        ci = _last_index(f, name)
        if ci is None:
            inner: list[tuple[str, Any]] = [(names[-1], t) for t in texts]
            value: Any = inner
            for outer in reversed(names[depth + 1 : -1]):
                value = [(outer, value)]
            plan.editor.insert(fpath, len(_children(f)), name, value)
            return
        f = _children(f)[ci]
        fpath = fpath + (ci,)
    leaf = names[-1]
    existing = [i for i, c in enumerate(_children(f)) if c.name == leaf]
    at = existing[0] if existing else len(_children(f))
    for i in existing:
        plan.editor.remove(fpath + (i,))
    for t in texts:
        plan.editor.insert(fpath, at, leaf, t)


# --------------------------------------------------------------------------- remove-layer


def plan_remove_layer(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    msgs = view.message.layer
    removed_names = {view.names[k] for k in chosen}
    for k in chosen:
        m = msgs[k]
        name = view.names[k]
        if len(m.bottom) != 1 or len(m.top) != 1:
            raise ctx.error(
                f"{view.describe(k)} has {len(m.bottom)} bottom(s) and {len(m.top)} top(s); "
                "remove-layer only reconnects layers with one bottom and one top"
            )
        bottom, top = str(m.bottom[0]), str(m.top[0])
        if top != bottom:
            producers = [
                j for j, other in enumerate(msgs)
                if j != k and top in other.top and top not in other.bottom
                and view.names[j] not in removed_names
            ]  # fmt: skip
            if producers:
                raise ctx.error(
                    f"{view.describe(k)}: blob '{top}' is also produced by "
                    f"{', '.join(view.names[j] for j in producers)}; cannot reconnect"
                )
            later = range(k + 1, len(msgs))
            in_place = [j for j in later if top in msgs[j].top and top in msgs[j].bottom]
            readers_of_bottom = [j for j in later if bottom in msgs[j].bottom]
            if in_place and readers_of_bottom:
                raise ctx.error(
                    f"{view.describe(k)}: '{top}' is rewritten in place by "
                    f"{view.names[in_place[0]]} and '{bottom}' is read by "
                    f"{view.names[readers_of_bottom[0]]}; reconnecting would make them share "
                    "one blob"
                )
            for j in later:
                if view.names[j] in removed_names:
                    continue
                for ci, fname in _blob_fields(view, j, top):
                    plan.editor.set_value(view.field_path(j) + (ci,), encode_string(bottom))
                    plan.declare(j, (fname,))
        plan.editor.remove(view.field_path(k))
        plan.removed.append(k)
        plan.declare(k, ("*",))
        plan.structural.append(StructChange("remove-layer", name, "", bottom, top))
    names = sorted(removed_names)

    def promise(after: NetView) -> list[Failure]:
        return [(n, "still present") for n in names if n in after.by_name]

    plan.promise = promise
    return plan


def plan_upgrade(ctx: StepContext) -> Plan:
    """Caffe's legacy upgrade. It runs before the net is read (rewriter.recipes.engine), because the
    other steps need the current format; here, on a current-format net, it has nothing to do."""
    plan = Plan(ctx.step, Editor(ctx.view.doc))
    plan.note = "the net is in the current format"
    return plan


def plan_deploy(ctx: StepContext) -> Plan:
    """train/val -> deploy (rewriter.recipes.deploy): a whole-net rewrite verified by its own
    promise.

    The per-field and per-edge checks cannot describe it (layers are removed, converted and
    added), so the step declares every layer as its effect and promises what a deploy net must
    satisfy: it binds strictly, Caffe's Net::Init builds it and shape inference succeeds.
    """
    from ..deploy import DeployError, deploy_document, verify_deploy

    step, view = ctx.step, ctx.view
    ed = Editor(view.doc)
    keys = {
        k: step.get(k)
        for k in ("batch", "channels", "height", "width", "output", "outputs", "stage")
        if step.get(k) is not None
    }
    for k in ("channels", "height", "width"):
        if keys.get(k) == 0:  # 0: derive it from the net (a recipe option needs a default)
            del keys[k]
    for k in ("strip_params", "strip_fillers", "strip_dropout"):
        keys[k] = bool(step.get(k))
    outputs = keys.get("outputs")
    if isinstance(outputs, list) and len(outputs) == 1 and outputs[0] in ("last", "all"):
        keys["outputs"] = outputs[0]  # the two policies, not blob names
    try:
        result = deploy_document(view.doc, editor=ed, **keys)
    except DeployError as e:
        raise ctx.error(str(e)) from None
    plan = Plan(step, ed)
    if ed.empty:
        plan.note = "already a deploy net"
        return plan
    top_to_layer = {view.field_path(k)[0]: k for k in range(len(view))}
    removed_top = set(ed.removed_children(()))
    plan.removed = [top_to_layer[i] for i in sorted(removed_top) if i in top_to_layer]
    # Output layer index of each inserted layer: kept layers before it plus earlier insertions.
    kept_tops = sorted(i for i in top_to_layer if i not in removed_top)
    n_inserted = 0
    for before, name in ed.inserted_children(()):
        if name == "layer":
            kept_before = sum(1 for i in kept_tops if i < before)
            plan.inserted.append(kept_before + n_inserted)
            n_inserted += 1
    for li in range(len(view)):
        plan.declare(li, ("*",))
    plan.net_effects.add(("*",))
    plan.structural.append(StructChange("rewrite", "deploy", "Net::Init and shapes checked"))

    def promise(after: NetView) -> list[Failure]:
        try:
            verify_deploy(after.doc, result)
        except DeployError as e:
            return [(None, f"the deploy net fails its own check: {e}")]
        return []

    plan.promise = promise
    return plan


# --------------------------------------------------------------------------- value checks


def check_mult_keys(step: Step) -> None:
    has_value = step.get("value") is not None
    has_scale = step.get("scale") is not None
    if has_value == has_scale:
        raise step.error("give exactly one of 'value' (set) or 'scale' (multiply)")


def check_from_to(step: Step) -> None:
    for key in ("from", "to"):
        if not step.get(key):
            raise step.error(f"'{key}' must be a non-empty name", key)
    if step.get("from") == step.get("to"):
        raise step.error("'from' and 'to' are the same", "to")
