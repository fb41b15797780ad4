"""Upgrade legacy Caffe nets and solvers the way Caffe does, without losing a comment.

Caffe's ``upgrade_net_proto_text`` parses a file, runs ``UpgradeNetAsNeeded`` on the message and
re-prints the whole thing: every comment, blank line and the author's field order are gone. This
module makes the *same* upgrade as a set of minimal edits on the lossless tree
(:mod:`rewriter.text.cst`), step by step in Caffe's order (``src/caffe/util/upgrade_proto.cpp``),
re-parsing between steps:

1. ``UpgradeV0Net``: V0 ``layers { layer { ... } bottom top }`` -> flat V1 ``layers``; "padding"
   layers are folded into the convolution / pooling layer that reads them; the flat V0 fields
   (``kernelsize``, ``num_output``, ``meanfile``...) move into the typed ``*_param`` messages;
2. ``UpgradeNetDataTransformation``: ``scale``, ``mean_file``, ``crop_size``, ``mirror`` of V1
   DATA / IMAGE_DATA / WINDOW_DATA layers move into ``transform_param``;
3. ``UpgradeV1Net``: ``layers`` -> ``layer``, enum types -> type strings, ``param: "w"``,
   ``blob_share_mode``, ``blobs_lr`` and ``weight_decay`` -> ``param { name share_mode lr_mult
   decay_mult }`` blocks;
4. ``UpgradeNetInput``: legacy ``input`` / ``input_dim`` / ``input_shape`` -> an ``Input`` layer
   named "input" in front of the net;
5. ``UpgradeNetBatchNorm``: BatchNorm layers with exactly three ``param`` blocks get
   ``lr_mult: 0`` and ``decay_mult: 0`` in each (names and other fields kept);
6. solvers, ``UpgradeSolverType``: ``solver_type: NESTEROV`` -> ``type: "Nesterov"``.

The same steps also exist on protobuf messages (:func:`upgrade_net_message_caffe`,
:func:`upgrade_solver_message_caffe`); they are the reference the text edits are checked against
and what the streaming ``.caffemodel`` upgrade (:mod:`rewriter.upgrade.caffemodel`) runs on its
blob-less layer views. Every upgraded document is verified before it is returned: it must bind to
exactly the message Caffe's upgrade produces (deliberate differences aside), and Caffe's
``Net::Init`` graph of the result must equal the original's for TRAIN and TEST.

Deliberate differences from Caffe are documented in ``docs/upgrade.md`` and reported per file in
:attr:`UpgradeResult.deliberate_differences`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rewriter.caffe.upgrade_proto import (
    MessageUpgrade,
    Refusal,
    _copy,
    upgrade_net_message_caffe,
    upgrade_solver_message_caffe,
    v0_keeps_input_shape,
)
from rewriter.errors import Location, RewriterError, locate
from rewriter.schema.runtime import message_from_wire
from rewriter.text.cst import Document, Field, MessageBody, encode_string, parse
from rewriter.upgrade.batchnorm import _step_bn
from rewriter.upgrade.data import _step_data
from rewriter.upgrade.forks import _fork_v1_types, _set_fork_types
from rewriter.upgrade.inputs import _step_input
from rewriter.upgrade.result import EMBEDDED_NETS, NET, SOLVER, UpgradeError, UpgradeResult
from rewriter.upgrade.splice import (
    _Ctx,
    _file_unit,
    _line_indent,
    _Step,
    _value_texts,
)
from rewriter.upgrade.v0 import _step_v0
from rewriter.upgrade.v1 import _step_v1
from rewriter.upgrade.verify import (
    BuildWarning,
    InputDropped,
    _build_warnings,
    _first_difference,
    _graph_difference,
    check_same_graph,
)

if TYPE_CHECKING:
    from rewriter.schema.runtime import Schema

__all__ = [
    "BuildWarning",
    "InputDropped",
    "MessageUpgrade",
    "Refusal",
    "UpgradeError",
    "UpgradeResult",
    "check_same_graph",
    "needs_upgrade",
    "parse_for_upgrade",
    "upgrade_document",
    "upgrade_net_message_caffe",
    "upgrade_solver_message_caffe",
    "upgrade_text",
]


# ============================================================================ text: the steps


@dataclass(frozen=True)
class _Target:
    """The net being upgraded: the document itself, or a solver's embedded net field."""

    index: int | None = None

    def locate(self, doc: Document, msg: Any) -> tuple[MessageBody, Any, tuple[int, ...], str]:
        if self.index is None:
            return doc.body, msg, (), ""
        f = doc.fields[self.index]
        assert isinstance(f.body, MessageBody)
        occurrence = sum(1 for g in doc.fields[: self.index] if g.name == f.name)
        sub = getattr(msg, f.name)
        if f.name == "test_net_param":
            sub = sub[occurrence]
        return f.body, sub, (self.index,), _line_indent(f)


_NET_STEPS: tuple[_Step, ...] = (_step_v0, _step_data, _step_v1, _step_input, _step_bn)


# ============================================================================ driver


def _bind(doc: Document, schema: Schema, root: str, internal: bool, lenient: bool = False) -> Any:
    """The message of ``doc``. Lenient: a fork's unknown fields and enum values are left out of
    it, so the upgrade never sees them and its edits never touch their text."""
    from rewriter.schema.bind import bind

    bound = bind(doc, schema, root, lenient)
    if bound.errors:
        if internal:
            detail = bound.errors[0].render()
            raise UpgradeError(f"internal error: the upgraded text does not bind: {detail}")
        bound.raise_for_errors()
    return bound.message


def _locate(doc: Document, body: MessageBody, r: Refusal) -> Location | None:
    """The field a refusal is about, in the document."""
    where = r.where
    fields = list(body.fields)
    conns = [f for f in fields if f.name == "layers"]
    target: Field | None = None
    if where and where[0] in ("mixed", "v1type"):
        target = conns[0] if conns else None
    elif where and where[0] == "layers" and len(where) >= 2 and where[1] < len(conns):
        conn = conns[where[1]]
        target = conn
        cb = conn.body
        if isinstance(cb, MessageBody) and len(where) >= 4 and where[2] == "bottom":
            bottoms = [(g, v) for g in cb.get_all("bottom") for v in _value_texts(g)]
            if where[3] < len(bottoms):
                target = bottoms[where[3]][0]
        elif isinstance(cb, MessageBody) and len(where) >= 3 and where[2] == "type":
            layer = cb.get("layer")
            if layer is not None and isinstance(layer.body, MessageBody):
                target = layer.body.get("type") or layer
    elif where:
        target = next((f for f in fields if f.name == where[0]), None)
    if target is None:
        target = fields[0] if fields else None
    return doc.location(target.name_start) if target is not None else None


def _check_syntax(doc: Document, body: MessageBody) -> None:
    for f in body.fields:
        if f.name in ("layers", "layer") and not isinstance(f.body, MessageBody):
            raise UpgradeError(
                f"cannot upgrade '{f.name}' written as a list or scalar; write one "
                f"'{f.name} {{ ... }}' block per layer",
                doc.location(f.name_start),
            )


@dataclass
class _NetRun:
    """One net through the steps.

    ``expected`` is Caffe's upgrade of the original net, with its ``message`` kept in wire form
    (``wire``, a tenth of its size) while the texts are parsed and bound: see :meth:`message`.
    ``graph_error`` is the graph check's finding (the original net against that upgrade);
    callers raise it only after checking that the upgraded text binds to exactly that upgrade,
    which makes it the check of the text's graph, in the order the checks always ran.
    ``bound`` is the binding of ``doc`` when the last step left one (None otherwise).
    """

    doc: Document
    expected: MessageUpgrade
    wire: bytes | None = None
    graph_error: UpgradeError | None = None
    bound: Any = None

    def message(self) -> Any:
        """Caffe's upgrade of the net, as a message again."""
        if self.wire is not None:
            self.expected.message = message_from_wire(type(self.expected.message), self.wire)
            self.wire = None
        return self.expected.message


def _upgrade_net_body(
    ctx: _Ctx, box: list[Document], schema: Schema, root: str, target: _Target, label: str
) -> _NetRun:
    """Run every net step on one net (the document or an embedded one).

    ``box`` hands over the document: when it held the only reference, the tree of each text is
    freed as soon as the next step has rewritten it, and the original net's message once its
    graphs are checked (before the rewritten text is parsed), so no two trees and no two
    generations of messages are alive at once."""
    from rewriter.util.memory import gc_paused

    doc = box.pop()
    path = doc.path
    top = _bind(doc, schema, root, internal=False, lenient=ctx.lenient)
    body, msg, _, _ = target.locate(doc, top)
    _check_syntax(doc, body)
    ctx.fork_types = _fork_v1_types(doc, body, msg, ctx.v1_types) if ctx.lenient else {}
    fork_types = ctx.fork_types
    try:
        expected = upgrade_net_message_caffe(msg, label, keep_input_shape=True)
    except Refusal as r:
        raise UpgradeError(r.message, _locate(doc, body, r)) from None
    if fork_types:
        _set_fork_types(expected.message, fork_types, expected.sources)
    if not expected.changed:
        return _NetRun(doc, expected)
    wire = expected.message.SerializePartialToString()
    expected.message = type(expected.message)()  # for its class, until ``_NetRun.message``

    def upgraded() -> Any:
        return message_from_wire(type(expected.message), wire)

    original: Any = msg  # read, never modified, by the steps and the graph check
    repaired = v0_keeps_input_shape(msg)
    inputs = tuple(msg.input)
    # where each legacy input is named, for the refusal of a net that drops one it reads
    input_at = {g.value_text: g.value_start for g in body.fields if g.name == "input"}
    orig_src = doc.src
    no_nan = re.search("nan", doc.src, re.IGNORECASE) is None
    graph_error: UpgradeError | None = None
    stale = False  # ``top`` is the binding of ``doc`` until a step changes the text
    for step in _NET_STEPS:
        if stale:
            top = _bind(doc, schema, root, internal=True, lenient=ctx.lenient)
            stale = False
        body, msg, base, indent = target.locate(doc, top)
        with gc_paused():  # a few acyclic objects per layer: see memory.gc_paused
            text = step(ctx, doc, body, msg, base, indent)
        if text is None or text == doc.code:
            continue
        del body, msg, doc
        top = None
        if original is not None:
            nets, original = [original], None
            graph_error = _graph_difference(
                nets, upgraded, label, no_nan, repaired, inputs, fork_types
            )
        try:
            doc = parse(ctx.finish(text), path)
        except RewriterError as e:
            raise UpgradeError(f"internal error: the upgraded text does not parse: {e}") from e
        stale = True
    if original is not None:
        graph_error = _graph_difference(
            [original], upgraded, label, no_nan, repaired, inputs, fork_types
        )
    if isinstance(graph_error, InputDropped) and graph_error.blob_text in input_at:
        where = locate(orig_src, input_at[graph_error.blob_text], path)
        graph_error = InputDropped(graph_error.message, graph_error.blob_text, where)
    return _NetRun(doc, expected, wire, graph_error, None if stale else top)


def upgrade_document(
    doc: Document,
    *,
    kind: str | None = None,
    schema: Schema | None = None,
    lenient: bool = False,
    v1_types: Mapping[str, str] | None = None,
) -> UpgradeResult:
    """Upgrade a legacy net or solver with minimal edits (see the module docstring).

    ``kind`` is "net", "solver" or None (detected from the top-level fields). A document that
    needs nothing comes back unchanged (``changed`` False, the very same ``Document``).

    Raises :class:`UpgradeError` (a :class:`~rewriter.errors.RewriterError`) where Caffe refuses
    the upgrade, with ``path:line:col`` and Caffe's own message, and ``SchemaErrors`` when the
    file does not bind to the schema (Caffe fails to parse it too). ``lenient``: a fork's fields
    and enum values unknown to the schema are kept byte for byte, outside what is upgraded;
    ``v1_types`` names the V2 type of a fork's V1 type token (``{"CROP": "Crop"}``).

    Memory: when the caller keeps no reference to ``doc`` (``upgrade_document(parse(...))``, as
    :func:`upgrade_text` does), its tree is freed once the first step has rewritten the text.
    """
    if schema is None:
        from rewriter.schema.runtime import default_schema

        schema = default_schema()
    roots = {"net": NET, "solver": SOLVER}
    if kind is not None and kind not in roots:
        raise UpgradeError(f"kind must be 'net' or 'solver', not {kind!r}")
    from rewriter.schema.bind import detect_kind

    edited: Document | None = None
    if not doc.pristine:  # an Editor result: its nodes point into the text before the edit
        edited = doc
        doc = parse(doc.code, doc.path)
    root = roots[kind] if kind is not None else detect_kind(doc, schema)
    newline = doc.newline
    crlf = newline == "\r\n" and "\n" not in doc.src.replace("\r\n", "")
    ctx = _Ctx(doc.path, _file_unit(doc), crlf, lenient=lenient, v1_types=v1_types or {})
    if root == SOLVER:
        result = _upgrade_solver(ctx, doc, schema)
        if not result.changed:
            result.document = edited if edited is not None else doc
        return result
    old_code, path = doc.code, doc.path
    box = [doc]
    del doc  # from here on ``box`` (then the run) holds the only reference we keep
    run = _upgrade_net_body(ctx, box, schema, NET, _Target(), path)
    new_doc, expected = run.doc, run.expected
    if not expected.changed or new_doc.code == old_code:
        return UpgradeResult(edited if edited is not None else new_doc, False, [], [], "net")
    final = (
        run.bound
        if run.bound is not None
        else _bind(new_doc, schema, NET, internal=True, lenient=lenient)
    )
    run.bound = None
    want = run.message()
    if final != want:
        raise UpgradeError(
            "internal error: the upgraded text differs from Caffe's upgrade: "
            + _first_difference(final, want)
        )
    warnings = _build_warnings([run.graph_error])
    return UpgradeResult(new_doc, True, expected.log, ctx.differences, "net", warnings)


def _upgrade_solver(ctx: _Ctx, doc: Document, schema: Schema) -> UpgradeResult:
    solver = _bind(doc, schema, SOLVER, internal=False, lenient=ctx.lenient)
    try:
        expected = upgrade_solver_message_caffe(solver, doc.path)
    except Refusal as r:
        raise UpgradeError(r.message, _locate(doc, doc.body, r)) from None
    messages = list(expected.log)
    want = _copy(expected.message)
    changed = expected.changed
    graph_errors: list[UpgradeError] = []
    for i, f in enumerate(doc.fields):
        if f.name not in EMBEDDED_NETS or not isinstance(f.body, MessageBody):
            continue
        label = f"{doc.path} ({f.name})"
        run = _upgrade_net_body(ctx, [doc], schema, SOLVER, _Target(i), label)
        doc, net_up = run.doc, run.expected
        if not net_up.changed:
            continue
        run.message()
        changed = True
        messages.extend(net_up.log)
        occurrence = sum(1 for g in doc.fields[:i] if g.name == f.name)
        if f.name == "test_net_param":
            want.test_net_param[occurrence].CopyFrom(net_up.message)
        else:
            getattr(want, f.name).CopyFrom(net_up.message)
        if run.graph_error is not None:
            graph_errors.append(run.graph_error)
        which = f"{f.name}[{occurrence}]" if f.name == "test_net_param" else f.name
        ctx.differences.append(
            f"{which}: the embedded net was upgraded too; Caffe's upgrade_solver_proto_text "
            "leaves it as it is (and current Caffe then builds that net with no layers)"
        )
    if not changed:
        return UpgradeResult(doc, False, [], [], "solver")
    if expected.changed:
        from rewriter.text.edit import Editor

        ed = Editor(doc)
        new_type = encode_string(str(expected.message.type))
        for j, f in enumerate(doc.fields):
            if f.name == "solver_type":
                ed.rename((j,), "type")
                ed.set_value((j,), new_type)
        doc = parse(ctx.finish(ed.apply().code), doc.path)
    final = _bind(doc, schema, SOLVER, internal=True, lenient=ctx.lenient)
    if final != want:
        raise UpgradeError("internal error: the upgraded solver differs from Caffe's upgrade")
    # Checked against Caffe's upgrade of each net, which ``final`` was just held to.
    warnings = _build_warnings(graph_errors)
    return UpgradeResult(doc, True, messages, ctx.differences, "solver", warnings)


def parse_for_upgrade(
    text: str, path: str = "<string>", *, kind: str | None = None, lenient: bool = False
) -> Document:
    """Parse text for :func:`upgrade_document`. On a syntax error, the schema errors of the part
    before it are reported first, in file order, as protobuf (and so Caffe) would."""
    from rewriter.errors import ParseError, SchemaErrors

    try:
        return parse(text, path)
    except ParseError:
        from rewriter.schema.bind import diagnose

        root = {"net": NET, "solver": SOLVER}.get(kind or "")
        _, diags = diagnose(text, path, None, root, lenient)
        raise SchemaErrors([d for d in diags if d.severity == "error"]) from None


def upgrade_text(
    text: str,
    path: str = "<string>",
    *,
    kind: str | None = None,
    lenient: bool = False,
    v1_types: Mapping[str, str] | None = None,
) -> UpgradeResult:
    """:func:`upgrade_document` on text (``result.document.code`` is the upgraded text)."""
    doc = parse_for_upgrade(text, path, kind=kind, lenient=lenient)
    return upgrade_document(doc, kind=kind, lenient=lenient, v1_types=v1_types)


def needs_upgrade(doc: Document, *, kind: str | None = None) -> bool:
    """True when :func:`upgrade_document` would change the document."""
    return upgrade_document(doc, kind=kind).changed
