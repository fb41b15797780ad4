"""One net through the steps (:func:`_upgrade_net_body`): bind it, refuse what Caffe refuses
(located in the text), run Caffe's upgrade of the message as the reference, then each step of
:data:`_NET_STEPS` in Caffe's order, re-parsing between steps, and check the graphs
(:mod:`rewriter.upgrade.verify`).

The net is the document itself or a solver's embedded net (:class:`_Target`), so both the
driver (:mod:`rewriter.upgrade.document`) and the solver step (:mod:`rewriter.upgrade.solver`)
run it; it imports the steps, never either of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rewriter.caffe.upgrade_proto import (
    MessageUpgrade,
    Refusal,
    upgrade_net_message_caffe,
    v0_keeps_input_shape,
)
from rewriter.errors import Location, RewriterError, locate
from rewriter.schema.runtime import message_from_wire
from rewriter.text.cst import Document, Field, MessageBody, parse
from rewriter.upgrade.batchnorm import _step_bn
from rewriter.upgrade.data import _step_data
from rewriter.upgrade.forks import _fork_v1_types, _set_fork_types
from rewriter.upgrade.inputs import _step_input
from rewriter.upgrade.result import UpgradeError
from rewriter.upgrade.splice import _Ctx, _line_indent, _Step, _value_texts
from rewriter.upgrade.v0 import _step_v0
from rewriter.upgrade.v1 import _step_v1
from rewriter.upgrade.verify import InputDropped, _graph_difference
from rewriter.util.record import FrozenRecord, Record

if TYPE_CHECKING:
    from rewriter.schema.runtime import Schema


class _Target(FrozenRecord):
    """The net being upgraded: the document itself, or a solver's embedded net field."""

    __slots__ = ("index",)

    def __init__(self, index: int | None = None) -> None:
        self.index = index

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


class _NetRun(Record):
    """One net through the steps.

    ``expected`` is Caffe's upgrade of the original net, with its ``message`` kept in wire form
    (``wire``, a tenth of its size) while the texts are parsed and bound: see :meth:`message`.
    ``graph_error`` is the graph check's finding (the original net against that upgrade);
    callers raise it only after checking that the upgraded text binds to exactly that upgrade,
    which makes it the check of the text's graph, in the order the checks always ran.
    ``bound`` is the binding of ``doc`` when the last step left one (None otherwise).
    """

    __slots__ = ("doc", "expected", "wire", "graph_error", "bound")

    def __init__(
        self,
        doc: Document,
        expected: MessageUpgrade,
        wire: bytes | None = None,
        graph_error: UpgradeError | None = None,
        bound: Any = None,
    ) -> None:
        self.doc = doc
        self.expected = expected
        self.wire = wire
        self.graph_error = graph_error
        self.bound = bound

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
