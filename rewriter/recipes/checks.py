"""Round-trip checks: nothing is written unless the rewrite provably did what it declared.

Run on every apply (:func:`rewriter.recipes.engine.apply`), in this order:

``parse-bind``
    The edited text re-parses and binds to the schema (strictly, or leniently when the input
    itself needed ``--lenient``). Only what changed is re-read: the top-level fields an edit did
    not touch are the very same text, so they bind to the very same messages. Within an edited
    layer only its edited fields are re-parsed and re-bound (all fields of the same name
    together, so a duplicated singular field is still caught) and spliced into a copy of the
    layer's message.
``semantic-diff``
    Per changed layer, the protobuf values before and after are compared with DeepDiff; every
    path that differs must lie inside a field path a step declared (``param``,
    ``batch_norm_param.use_global_stats``...). Identical (before, after) pairs, common when one
    step touches hundreds of similar layers, are diffed once.
``structure``
    Caffe's net for TRAIN and for TEST (layers after include/exclude filtering, with their
    types, bottoms and tops; Split layers folded back) equals the original one, transformed by
    the structural changes steps declared (renames, removed layers) and nothing else. When
    every edit changed only ``param`` blocks or BatchNorm's ``batch_norm_param``, the result's
    graph is derived from the input's (:mod:`rewriter.caffe.derive`), unchanged by construction.
``setup``
    The result passes Caffe's set-up checks (:mod:`rewriter.caffe.setup_checks`: shapes, parameter
    sharing...) in every phase where the input passed them; a derived phase sets up as the
    input does (those fields reach no set-up check the derivation does not rule out).
``promises``
    Each step's promise, checked with Caffe's backward analysis on the document it produced.
``idempotence``
    Running the recipe again on its own output changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError
from rewriter.schema.runtime import is_repeated
from rewriter.text.cst import Document, Field, MessageBody
from rewriter.util.record import Record

if TYPE_CHECKING:
    from rewriter.schema.runtime import Schema

    from .select import NetView
    from .steps import Struct, StructChange, StructDigest

__all__ = [
    "CheckFailed",
    "CheckResult",
    "Change",
    "changed_names",
    "rebind",
    "semantic_diff",
    "structure_check",
    "to_py",
]

NET = "caffe.NetParameter"


class CheckResult(Record):
    """One check's verdict (a record, not a dataclass: apply's start-up, rewriter.util.record)."""

    __slots__ = ("name", "ok", "detail", "layer", "skipped")

    def __init__(
        self,
        name: str,
        ok: bool,
        detail: str = "",
        layer: str | None = None,
        skipped: bool = False,
    ) -> None:
        self.name = name
        self.ok = ok
        self.detail = detail
        self.layer = layer
        #: not run (the numeric check without the [onnx] extra): ok, but never "passed"
        self.skipped = skipped

    def as_dict(self) -> dict[str, Any]:
        out = {"check": self.name, "ok": self.ok, "detail": self.detail, "layer": self.layer}
        if self.skipped:
            out["skipped"] = True
        return out

    def render(self) -> str:
        where = f" (layer '{self.layer}')" if self.layer else ""
        verdict = "skipped" if self.skipped else "passed" if self.ok else "FAILED"
        return f"check '{self.name}' {verdict}{where}: {self.detail}"


class CheckFailed(RewriterError):
    """A round-trip check failed: the rewrite is refused and nothing is written."""

    def __init__(self, path: str, failures: Sequence[CheckResult]) -> None:
        self.path = path
        self.failures = list(failures)
        lines = [f"{path}: rewrite refused, nothing written:"]
        lines += ["  " + f.render() for f in failures]
        super().__init__("\n".join(lines))


class Change(Record):
    """One semantic change of one layer (or of the net, ``layer`` None)."""

    __slots__ = ("layer", "index", "path", "old", "new", "kind", "step")

    def __init__(
        self,
        layer: str | None,
        index: int | None,
        path: str,
        old: Any,
        new: Any,
        kind: str = "changed",  # changed | added | removed
        step: str = "",
    ) -> None:
        self.layer = layer
        self.index = index
        self.path = path
        self.old = old
        self.new = new
        self.kind = kind
        self.step = step

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "index": self.index,
            "path": self.path,
            "kind": self.kind,
            "old": self.old,
            "new": self.new,
            "step": self.step,
        }

    def render(self) -> str:
        who = f"{self.layer}: " if self.layer is not None else ""
        if self.kind == "added":
            return f"{who}+ {self.path} = {self.new!r}"
        if self.kind == "removed":
            return f"{who}- {self.path} (was {self.old!r})"
        return f"{who}{self.path}: {self.old!r} -> {self.new!r}"


# --------------------------------------------------------------------------- protobuf -> data


def _scalar(fd: Any, value: Any) -> Any:
    if fd.type == 14:  # enum: by name, as written in prototxt
        ev = fd.enum_type.values_by_number.get(int(value))
        return ev.name if ev is not None else int(value)
    if fd.type == 12:  # bytes
        return bytes(value).decode("utf-8", "surrogateescape")
    if fd.type in (1, 2):
        return float(value)
    return value


def message_to_py(msg: Any) -> dict[str, Any]:
    """A message as plain data: set fields only, enums by name (like MessageToDict, but with
    the prototxt field names and presence kept exactly)."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        out[fd.name] = _value_to_py(fd, value)
    return out


def _value_to_py(fd: Any, value: Any) -> Any:
    is_msg = fd.message_type is not None
    if is_repeated(fd):
        return [message_to_py(v) if is_msg else _scalar(fd, v) for v in value]
    return message_to_py(value) if is_msg else _scalar(fd, value)


def to_py(msg: Any, names: Iterable[str]) -> dict[str, Any]:
    """The given fields of a message as plain data (unset and unknown names left out)."""
    fields = msg.DESCRIPTOR.fields_by_name
    out: dict[str, Any] = {}
    for name in names:
        fd = fields.get(name)
        if fd is None:
            continue
        if is_repeated(fd):
            value = getattr(msg, name)
            if len(value):
                out[name] = _value_to_py(fd, value)
        elif msg.HasField(name):
            out[name] = _value_to_py(fd, getattr(msg, name))
    return out


# --------------------------------------------------------------------------- what text changed


def changed_names(old: Field, new: Field) -> set[str] | None:
    """Names of the child fields an edit added, removed or rewrote inside one block.

    Edits keep untouched children (the same span of the same text, see ``Field.__eq__``), so
    equality tells what changed. None when the block was rewritten as a whole (compare every
    field then).
    """
    ob, nb = old.body, new.body
    if not isinstance(ob, MessageBody) or not isinstance(nb, MessageBody) or new.pristine:
        return None
    if old.name != new.name:
        return None
    fast = nb.edited_names(ob)
    if fast is not None:
        return fast
    old_kids, new_kids = ob.fields, nb.fields
    old_set, new_set = set(old_kids), set(new_kids)
    names = {c.name for c in new_kids if c not in old_set}
    names.update(c.name for c in old_kids if c not in new_set)
    return names


def _fail(name: str, detail: str, layer: str | None = None) -> CheckResult:
    return CheckResult(name, False, detail, layer)


def _full_bind(doc: Document, lenient: bool, schema: Schema | None, path: str) -> Any:
    """Parse and bind the whole text (the slow, exact path); raise CheckFailed on errors."""
    from rewriter.errors import ParseError
    from rewriter.schema.bind import bind
    from rewriter.text.cst import parse

    try:
        fresh = parse(doc.code, path)
    except ParseError as e:
        raise CheckFailed(path, [_fail("parse-bind", f"the output does not parse: {e}")]) from None
    bound = bind(fresh, schema, NET, lenient)
    if bound.errors:
        raise CheckFailed(
            path,
            [_fail("parse-bind", "the output does not bind to the schema:\n" + str(d.render()))
             for d in bound.errors[:5]],
        )  # fmt: skip
    return bound.message


def rebind(
    old: NetView,
    new_doc: Document,
    *,
    lenient: bool,
    schema: Schema | None,
    in_place: bool = False,
    edits: list[tuple[int, set[str] | None]] | None = None,
) -> Any:
    """The message of ``new_doc``, re-reading only what changed since ``old`` (check a).

    Each edited layer contributes the text of its edited fields (every field of an edited
    name); identical texts -- one step making the same edit in hundreds of similar layers --
    are parsed and bound once, as the same text always binds to the same values.

    With ``in_place``, ``old``'s message is edited in place instead of copied (``old`` is
    detached: see :meth:`NetView.detach`); the semantic diff reads the original values from
    the input's text (:class:`OriginalLayers`).

    ``edits`` receives (layer index, names of its edited fields) per edited layer, with a
    ``(-1, None)`` entry when the whole text had to be read again (the layers are unknown).
    """
    path = old.path
    edited = _edited_layers(old, new_doc)
    if edited is None:
        if edits is not None:
            edits.append((-1, None))
        return _full_bind(new_doc, lenient, schema, path)
    parts, targets = edited
    if edits is not None:
        edits.extend((k, names) for k, names, _ in targets)
    if not targets:
        return _detach(old, lenient, schema) if in_place else old.message
    bound_parts = _bind_parts(parts, path, lenient, schema)
    if bound_parts is None:
        if edits is not None:
            edits.append((-1, None))
        return _full_bind(new_doc, lenient, schema, path)
    if in_place:
        msg = _detach(old, lenient, schema)
    else:
        msg = type(old.message)()
        msg.CopyFrom(old.message)
    _splice(msg, bound_parts, targets)
    return msg


#: an edited layer: (its index, the names of its edited fields or None for all, its part)
_Target = tuple[int, set[str] | None, int]


def _edited_layers(old: NetView, new_doc: Document) -> tuple[list[str], list[_Target]] | None:
    """The distinct texts to re-read (the edited fields of each edited layer, wrapped in a
    ``layer { }``) and which layer takes which; None when only a whole re-read will do (a
    field added or removed, a field other than a layer edited)."""
    of, nf = old.doc.fields, new_doc.fields
    if len(of) != len(nf):
        return None
    layer_of: dict[int, int] = {i: k for k, i in enumerate(old.layer_fields)}
    unique: dict[tuple[tuple[str, ...] | None, str], int] = {}
    parts: list[str] = []
    targets: list[_Target] = []
    for i, (a, b) in enumerate(zip(of, nf, strict=True)):
        if a is b:
            continue
        if a.name != "layer" or b.name != "layer" or i not in layer_of:
            return None
        names = changed_names(a, b)
        if names is None:
            text = "\n" + b.code + "\n"
            key: tuple[tuple[str, ...] | None, str] = (None, text)
        else:
            if not names:
                continue
            assert isinstance(b.body, MessageBody)
            body = b.body
            kids = body.code_of(names)
            text = "layer {\n" + kids + "\n}\n"
            key = (tuple(sorted(names)), text)
        slot = unique.get(key)
        if slot is None:
            slot = unique[key] = len(parts)
            parts.append(text)
        targets.append((layer_of[i], names, slot))
    return parts, targets


def _bind_parts(
    parts: list[str], path: str, lenient: bool, schema: Schema | None
) -> list[Any] | None:
    """The bound layers of ``parts``, parsed as one text; None on any doubt (a parse or bind
    error, an unexpected count)."""
    from rewriter.errors import ParseError
    from rewriter.schema.bind import bind
    from rewriter.text.cst import parse

    try:
        part_doc = parse("".join(parts), path)
    except ParseError:
        return None
    bound = bind(part_doc, schema, NET, lenient)
    parts_msg: Any = bound.message
    if bound.errors or len(parts_msg.layer) != len(parts):
        return None
    return list(parts_msg.layer)


def _splice(msg: Any, bound_parts: list[Any], targets: list[_Target]) -> None:
    """Put the re-read fields into ``msg``'s layers."""
    for k, names, slot in targets:
        layer = msg.layer[k]
        part = bound_parts[slot]
        if names is None:
            layer.CopyFrom(part)
            continue
        known = layer.DESCRIPTOR.fields_by_name
        for name in names:
            if name in known:
                layer.ClearField(name)
        layer.MergeFrom(part)


def _detach(view: NetView, lenient: bool, schema: Schema | None) -> Any:
    """Take ``view``'s message to edit it in place; ``view`` binds its text again if asked."""
    doc, path = view.doc, view.path
    return view.detach(lambda: _full_bind(doc, lenient, schema, path))


class OriginalLayers:
    """The input's layers as the semantic diff compares them, bound again from the input's
    text: its message was edited in place by the steps (:func:`rebind`). Only the fields
    compared are read (``layer { <those fields> }``), and each distinct text is bound once, so
    one step's same edit in thousands of layers costs one small bind, not a saved copy per
    layer (at 100k layers those copies were ~2x the file)."""

    def __init__(self, orig: NetView, lenient: bool, schema: Schema | None) -> None:
        self.orig = orig
        self.lenient = lenient
        self.schema = schema
        self._memo: dict[str, Any] = {}

    def layer(self, ko: int, names: Sequence[str] | None) -> Any:
        """Input layer ``ko`` with (at least) the fields ``names`` (None: all of them)."""
        f = self.orig.field(ko)
        if names is None:
            text = "\n" + f.code + "\n"
        else:
            text = "layer {\n" + _kids_text(f, names, "\n") + "\n}\n"
        found = self._memo.get(text)
        if found is None:
            found = self._memo[text] = self._bind(text)
        return found

    def _bind(self, text: str) -> Any:
        layers = _bind_parts([text], self.orig.path, self.lenient, self.schema)
        if layers is None:  # (it bound as part of the input)
            raise RewriterError(f"{self.orig.path}: an input layer does not bind on its own")
        return layers[0]


# --------------------------------------------------------------------------- semantic diff


def _covered(path: Sequence[str | int], value: Any, effects: AbstractSet[tuple[str, ...]]) -> bool:
    if ("*",) in effects:
        return True
    names = tuple(p for p in path if isinstance(p, str))
    for e in effects:
        if names[: len(e)] == e:
            return True
    # An added/removed block that holds only declared fields (batch_norm_param { use_global_stats })
    if any(e[: len(names)] == names and len(e) > len(names) for e in effects):
        return all(_covered(tuple(path) + sub, None, effects) for sub in _leaves(value))
    return False


def _leaves(value: Any) -> list[tuple[str | int, ...]]:
    if isinstance(value, dict):
        if not value:
            return [()]
        return [(k,) + rest for k, v in value.items() for rest in _leaves(v)]
    if isinstance(value, list):
        if not value:
            return [()]
        return [(i,) + rest for i, v in enumerate(value) for rest in _leaves(v)]
    return [()]


def _path_text(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


_KIND = {
    "values_changed": "changed",
    "type_changes": "changed",
    "dictionary_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_added": "added",
    "iterable_item_removed": "removed",
}


def _deepdiff(
    old: dict[str, Any], new: dict[str, Any]
) -> list[tuple[tuple[str | int, ...], str, Any, Any]]:
    """deepdiff's reports (default threshold), sorted by path; rewriter.util.plaindiff computes
    them without importing deepdiff for what it models (every step's usual edits)."""
    from rewriter.util.plaindiff import plain_diff

    out = [(p, _KIND.get(report, "changed"), t1, t2) for p, report, t1, t2 in plain_diff(old, new)]
    out.sort(key=lambda x: [str(p) for p in x[0]])
    return out


#: key of ``effects`` under which a step declares that it adds layers
ADDED = -1


#: one layer's DeepDiff reports: (path, path as text, kind, before, after)
_Diffs = list[tuple[tuple[str | int, ...], str, str, Any, Any]]


def semantic_diff(
    orig: NetView,
    final: NetView,
    origin: Sequence[int | None],
    effects: Mapping[int, AbstractSet[tuple[str, ...]]],
    net_effects: set[tuple[str, ...]],
    removed: Iterable[int],
    step_of: Mapping[int, Mapping[tuple[str, ...], str]] | None = None,
    lenient: bool = False,
    schema: Schema | None = None,
) -> tuple[list[Change], list[CheckResult]]:
    """Changes between the original and final messages, and any outside declared effects.
    The original layers are read from the input's text (``lenient`` as it was bound)."""
    # Layers whose edited fields read the same before and after (the same text binds to the
    # same values) share one DeepDiff: keyed by the texts.
    memo: dict[tuple[Any, ...], _Diffs] = {}
    verdicts: dict[tuple[Any, ...], list[tuple[bool, str]]] = {}
    changes: list[Change] = []
    failures: list[CheckResult] = []
    originals = OriginalLayers(orig, lenient, schema)
    for kf, ko in enumerate(origin):
        if ko is None:  # a layer a step added
            name = final.names[kf]
            if ("*",) not in effects.get(ADDED, set()):
                failures.append(_fail("semantic-diff", "layer added but no step declared it", name))
            changes.append(Change(name, kf, "layer", None, message_to_py(final.layer(kf)), "added"))
            continue
        diffs = _layer_diffs(originals, final, ko, kf, memo)
        if not diffs:
            continue
        verdict = _verdict(diffs, ko, effects, step_of, verdicts)
        name = final.names[kf]
        for (_, text, kind, t1, t2), (ok, label) in zip(diffs, verdict, strict=True):
            if not ok:
                failures.append(
                    _fail(
                        "semantic-diff",
                        f"{text} changed ({t1!r} -> {t2!r}) but no step declared it",
                        name,
                    )
                )
            changes.append(Change(name, kf, text, t1, t2, kind, label))
    for ko in removed:
        name = orig.names[ko]
        if ("*",) not in effects.get(ko, set()):
            failures.append(_fail("semantic-diff", "layer removed but no step declared it", name))
        was = message_to_py(originals.layer(ko, None))
        changes.append(Change(name, None, "layer", was, None, "removed"))
    _net_field_diff(orig, final, net_effects, changes, failures)
    return changes, failures


def _layer_diffs(
    originals: OriginalLayers,
    final: NetView,
    ko: int,
    kf: int,
    memo: dict[tuple[Any, ...], _Diffs],
) -> _Diffs:
    """DeepDiff of input layer ``ko`` and output layer ``kf`` on the fields whose text changed
    ([] when the layer is the same field), once per distinct change."""
    fo, ff = originals.orig.field(ko), final.field(kf)
    if fo is ff:
        return []
    names = changed_names(fo, ff)
    order = None if names is None else tuple(sorted(names))
    if order is None:
        key: tuple[Any, ...] = (ko, kf)
    else:
        key = (order, _kids_text(fo, order), _kids_text(ff, order))
    diffs = memo.get(key)
    if diffs is None:
        om, nm = originals.layer(ko, order), final.layer(kf)
        if names is None:
            names = {fd.name for fd, _ in om.ListFields()} | {fd.name for fd, _ in nm.ListFields()}
        a, b = to_py(om, names), to_py(nm, names)
        diffs = [(p, _path_text(p), kind, t1, t2) for p, kind, t1, t2 in
                 (_deepdiff(a, b) if a != b else [])]  # fmt: skip
        memo[key] = diffs
    return diffs


def _verdict(
    diffs: _Diffs,
    ko: int,
    effects: Mapping[int, AbstractSet[tuple[str, ...]]],
    step_of: Mapping[int, Mapping[tuple[str, ...], str]] | None,
    verdicts: dict[tuple[Any, ...], list[tuple[bool, str]]],
) -> list[tuple[bool, str]]:
    """Per report of ``diffs``: is it declared for input layer ``ko``, and by which step;
    computed once per (diffs, declarations, declaring steps) combination."""
    declared = effects.get(ko, set())
    steps_here = step_of.get(ko) if step_of else None
    vkey = (id(diffs), frozenset(declared), tuple(steps_here.items()) if steps_here else ())
    verdict = verdicts.get(vkey)
    if verdict is None:
        verdict = [
            (
                _covered(p, t2 if kind == "added" else t1, declared),
                _step_for(step_of, ko, p),
            )
            for p, _, kind, t1, t2 in diffs
        ]
        verdicts[vkey] = verdict
    return verdict


def _net_field_diff(
    orig: NetView,
    final: NetView,
    net_effects: set[tuple[str, ...]],
    changes: list[Change],
    failures: list[CheckResult],
) -> None:
    """The changes of the top-level fields other than layers, checked against the steps'
    declared net effects."""
    o_other = [f for f in orig.doc.fields if f.name != "layer"]
    n_other = [f for f in final.doc.fields if f.name != "layer"]
    oid = {id(f) for f in o_other}
    nid = {id(f) for f in n_other}
    names = {f.name for f in n_other if id(f) not in oid} | {
        f.name for f in o_other if id(f) not in nid
    }
    if names:
        a, b = to_py(orig.message, names), to_py(final.message, names)
        for p, kind, t1, t2 in _deepdiff(a, b) if a != b else []:
            if not _covered(p, t2 if kind == "added" else t1, net_effects):
                failures.append(
                    _fail("semantic-diff", f"net field {_path_text(p)} changed undeclared")
                )
            changes.append(Change(None, None, _path_text(p), t1, t2, kind))


def _kids_text(f: Field, names: Sequence[str], sep: str = "\x00") -> str:
    body = f.body
    assert isinstance(body, MessageBody)
    return body.code_of(names, sep)


def _step_for(
    step_of: Mapping[int, Mapping[tuple[str, ...], str]] | None,
    ko: int,
    path: Sequence[str | int],
) -> str:
    """The first step that declared a field path covering (or inside) this change."""
    if not step_of or ko not in step_of:
        return ""
    names = tuple(p for p in path if isinstance(p, str))
    declared = step_of[ko]
    for n in range(len(names), 0, -1):
        hit = declared.get(names[:n])
        if hit:
            return hit
    for p, label in declared.items():
        if p[: len(names)] == names or p == ("*",):
            return label
    return ""


# --------------------------------------------------------------------------- structure


def phase_independent(view: NetView) -> bool:
    """No include/exclude rule and no NetState: both phases see the same layers."""
    got = view.phase_free
    if got is None:
        msg = view.message
        got = not msg.HasField("state") and not any(
            len(layer.include) or len(layer.exclude) for layer in msg.layer
        )
        view.phase_free = got
    return got


def structure_check(
    orig: NetView,
    final: NetView,
    changes: Sequence[StructChange],
    before: Mapping[str, Struct | StructDigest] | None = None,
) -> list[CheckResult]:
    """Check (c): both phases' nets equal the original ones transformed by ``changes``.

    ``before`` holds the original's structures already read (by phase), so that its graphs
    need not be kept, or built again, until the new ones are; a digest of one is compared
    with the new structure's digest when no change is declared (else, or when they differ,
    the original's structure is read again, for the change or the message).
    """
    from .steps import StructDigest, structure, transform

    results: list[CheckResult] = []
    rewrites = [c for c in changes if c.kind == "rewrite"]
    if rewrites:
        # A whole-net rewrite (deploy) cannot be described layer by layer; its step's promise
        # checks the result (binds, Net::Init, shapes) and the promises check reports it.
        what = "; ".join(c.describe() for c in rewrites)
        return [CheckResult("structure", True, f"{what}; verified by the step's promise")]
    same_phases = phase_independent(orig) and phase_independent(final)
    for phase in ("TRAIN", "TEST"):
        if phase == "TEST" and same_phases:
            results.append(
                CheckResult("structure", True, "TEST: no include/exclude rules, same as TRAIN")
            )
            continue
        if phase in final.derived_from_input and not changes:
            # its graph is the input's with parameters set up again (rewriter.caffe.derive),
            # which it does only when the edits changed nothing the wiring reads
            n = sum(1 for lay in final.graph(phase).layers if not lay.inserted_split)
            detail = f"{phase}: {n} layers, unchanged (only param, batch_norm_param edited)"
            results.append(CheckResult("structure", True, detail))
            continue
        known = before.get(phase) if before else None
        if isinstance(known, StructDigest) and not changes:
            try:
                after = structure(final, phase)
            except RewriterError as e:
                results.append(_fail("structure", f"{phase}: the new net does not build: {e}"))
                continue
            if StructDigest.of(after) == known:
                results.append(
                    CheckResult("structure", True, f"{phase}: {len(after)} layers, unchanged")
                )
                continue
            known = None  # differs: read the original's rows again to say where
        try:
            expected = known if isinstance(known, list) else structure(orig, phase)
        except RewriterError as e:
            results.append(
                CheckResult("structure", True, f"{phase}: the original net does not build ({e})")
            )
            continue
        for c in changes:
            expected = transform(expected, c)
        try:
            after = structure(final, phase)
        except RewriterError as e:
            results.append(_fail("structure", f"{phase}: the new net does not build: {e}"))
            continue
        if after == expected:
            what = "; ".join(c.describe() for c in changes) or "unchanged"
            results.append(CheckResult("structure", True, f"{phase}: {len(after)} layers, {what}"))
            continue
        results.append(_struct_mismatch(phase, expected, after))
    return results


def setup_check(
    orig: NetView,
    final: NetView,
    lenient: bool = False,
    schema: Schema | None = None,
    param_counts: Mapping[str, int] | None = None,
) -> list[CheckResult]:
    """The result passes Net::Init's set-up checks wherever the input did.

    Only the result is set up first; the input (re-read from its unchanged text: the steps
    edited its message) only when the result fails, to tell a new failure from an old one.
    A phase whose graph the engine derived from the input's (``final.derived_from_input``: every
    edit changed only unshared param blocks, within the layers' blob counts, or BatchNorm's
    batch_norm_param) sets up exactly as the input does: Caffe's set-up reads those only in
    the checks :mod:`rewriter.caffe.derive` made sure cannot fire.
    """
    results: list[CheckResult] = []
    same_phases = phase_independent(orig) and phase_independent(final)
    for phase in ("TRAIN", "TEST"):
        if phase == "TEST" and same_phases:
            results.append(CheckResult("setup", True, "TEST: same layers as TRAIN"))
            continue
        if phase in final.derived_from_input:
            detail = (
                f"{phase}: sets up as the input does (only unshared param blocks and "
                "BatchNorm's batch_norm_param were edited: no set-up check reads them)"
            )
            results.append(CheckResult("setup", True, detail))
            continue
        from rewriter.caffe.setup_checks import check_setup
        from rewriter.schema.bind import bind

        try:
            built: Any = final.graph(phase)  # the structure check's, when it built one
        except RewriterError:
            built = None  # check_setup finds the error itself
        opts: dict[str, Any] = {
            "stages": final.stages,
            "level": final.level,
            "param_counts": param_counts,
        }
        after = check_setup(final.message, phase, graph=built, **opts)
        err = after.error
        if err is None:
            note = f", {len(after.skipped)} layer(s) skipped ({after.skipped_reason})"
            detail = f"{phase}: every set-up check passes" + (note if after.skipped else "")
            results.append(CheckResult("setup", True, detail))
            continue
        message = bind(orig.doc, schema, NET, lenient).message
        before = check_setup(message, phase, **opts)
        if before.error is not None:
            detail = f"{phase}: the input is refused as well ({before.error.message})"
            results.append(CheckResult("setup", True, detail))
            continue
        # an edited document's records point into their own texts: place it in a fresh parse
        from rewriter.text.cst import parse

        where = after.diagnostics(parse(final.doc.code, final.doc.path))[0]
        results.append(
            _fail(
                "setup",
                f"{phase}: the input passes Caffe's set-up but the result does not: "
                f"{where.render()}",
                after.layer,
            )
        )
    return results


def _struct_mismatch(phase: str, expected: list[Any], after: list[Any]) -> CheckResult:
    for i, (e, a) in enumerate(zip(expected, after, strict=False)):
        if e != a:
            return _fail(
                "structure",
                f"{phase}: layer {i} is {a[0]} ({a[1]}, bottoms {list(a[2])}, tops "
                f"{list(a[3])}) but {e[0]} ({e[1]}, bottoms {list(e[2])}, tops {list(e[3])}) "
                "was expected",
                a[0],
            )
    return _fail("structure", f"{phase}: {len(after)} layers where {len(expected)} were expected")


__all__ += ["phase_independent", "message_to_py", "setup_check"]
