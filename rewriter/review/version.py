"""One version of a file, as the semantic diff holds it: the bound message (parkable as its
bytes), its layer units with a digest of each one's text, and its graph facts per phase,
computed on demand (:func:`_compute_facts`) and, for drawing, rebuilt on each read
(:class:`_LazyFacts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError
from rewriter.review.facts import PHASES, PhaseFacts, phase_facts
from rewriter.review.values import message_to_dict

if TYPE_CHECKING:
    from rewriter.schema.bind import Bound
    from rewriter.schema.runtime import Schema
    from rewriter.text.cst import Document


@dataclass(slots=True)
class _Unit:
    """One top-level ``layer`` (or V1 ``layers``) entry of a net."""

    index: int  # position among the document's units
    name: str
    type: str


def _type_name(msg: Any) -> str:
    value = msg.type
    if isinstance(value, str):
        return value
    fd = msg.DESCRIPTOR.fields_by_name["type"]
    ev = fd.enum_type.values_by_number.get(int(value))
    return str(ev.name) if ev is not None else str(value)


def _digest(text: str) -> bytes:
    import hashlib

    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Message:
    """A bound message that can be parked as its serialized bytes and brought back on demand.

    The live message of a net costs about five times the file's size, its bytes a third of it:
    a diff keeps one side's message parked while it works on the other.
    """

    __slots__ = ("_cls", "_msg", "_data")

    def __init__(self, msg: Any) -> None:
        self._cls = type(msg)
        self._msg: Any = msg
        self._data: bytes | None = None

    def get(self) -> Any:
        if self._msg is None:
            from rewriter.schema.runtime import message_from_wire

            assert self._data is not None
            self._msg = message_from_wire(self._cls, self._data)
        return self._msg

    def park(self) -> None:
        if self._msg is not None:
            if self._data is None:
                self._data = self._msg.SerializePartialToString()
            self._msg = None

    def take(self) -> Any:
        """The message for the caller alone (to change, or to drop when done), this one
        parked."""
        msg = self.get()
        self.park()
        return msg


def _standalone(msg: Any) -> Any:
    """A copy of a sub-message that does not keep its whole parent message alive."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    return copy


class _Version:
    """One side of a diff: the bound message (parkable), the layer units and their digests.

    The tree is dropped as soon as the units are read: nothing after binding needs it.
    """

    def __init__(
        self,
        text: str,
        path: str,
        *,
        lenient: bool,
        schema: Schema | None,
        root: str | None,
    ) -> None:
        from rewriter.schema.bind import bind
        from rewriter.text.cst import parse

        self.path = path
        doc: Document = parse(text, path)
        bound: Bound = bind(doc, schema, root, lenient)
        bound.raise_for_errors()
        message: Any = bound.message
        self.kind = "solver" if bound.root.endswith("SolverParameter") else "net"
        if not bound.root.endswith(("SolverParameter", "NetParameter")):
            self.kind = "other"
        #: per unit (top-level layer entry): its name, its type, and 16 bytes each in
        #: ``digests`` of its text (equal digests: byte-identical entries); units themselves
        #: are made only for the few layers a diff looks at
        self.names: list[str] = []
        self.types: list[str] = []
        self.digests = b""
        self.unit_field = ""
        #: no layer has include/exclude rules: TRAIN and TEST nets are the same net
        self.independent = True
        #: the net's own fields (its layers left out)
        self.top: dict[str, Any] = {}
        if self.kind == "net":
            self.top = message_to_dict(message, ("layer", "layers"))
            self._collect_units(doc, message)
            self.independent = not any(
                len(x.include) or len(x.exclude) for x in message.layer
            ) and not any(len(x.include) or len(x.exclude) for x in message.layers)
        self._message = _Message(message)
        #: unit index -> its message's bytes (see :meth:`pin`), and their class
        self._pinned: dict[int, bytes] = {}
        self._unit_cls: type[Any] = type(None)
        self._facts: dict[str, PhaseFacts | str] = {}

    @property
    def message(self) -> Any:
        return self._message.get()

    def park(self) -> None:
        """Keep the message only as bytes until it is needed again."""
        self._message.park()

    def pin(self, units: Iterable[_Unit]) -> None:
        """Keep these units' messages as their bytes, so they stay readable with the message
        parked. (A standalone copy of a layer costs about 1.4 KB of arena, its bytes a tenth:
        a freeze diff pins tens of thousands.)"""
        msgs = None
        for u in units:
            if u.index not in self._pinned:
                if msgs is None:
                    msgs = getattr(self.message, self.unit_field)
                    self._unit_cls = type(msgs[u.index])
                self._pinned[u.index] = msgs[u.index].SerializePartialToString()

    def unit(self, i: int) -> _Unit:
        return _Unit(i, self.names[i], self.types[i])

    def digest(self, i: int) -> bytes:
        return self.digests[16 * i : 16 * i + 16]

    def unit_msg(self, u: _Unit) -> Any:
        """The unit's message: a fresh copy for a pinned unit, else part of the message."""
        got = self._pinned.get(u.index)
        if got is not None:
            from rewriter.schema.runtime import message_from_wire

            return message_from_wire(self._unit_cls, got)
        return getattr(self.message, self.unit_field)[u.index]

    def _collect_units(self, doc: Document, msg: Any) -> None:
        # Caffe reads V1 ``layers`` when there are any (and then drops ``layer``).
        name = "layers" if len(msg.layers) else "layer"
        self.unit_field = name
        fields = doc.get_all(name)
        msgs = getattr(msg, name)
        if len(fields) != len(msgs):  # cannot happen for a bound document; be safe
            raise RewriterError(f"{self.path}: {name} entries do not match the message")
        types: dict[str, str] = {}  # one string per type name, not one per layer
        digests: list[bytes] = []
        for f, m in zip(fields, msgs, strict=True):
            t = _type_name(m)
            self.names.append(str(m.name))
            self.types.append(types.setdefault(t, t))
            digests.append(_digest(f.value_text))
        self.digests = b"".join(digests)

    def facts(self, phase: str) -> PhaseFacts | str:
        """The phase's graph facts, or the error text Caffe stops with (kept)."""
        got = self._facts.get(phase)
        if got is not None:
            return got
        other = "TEST" if phase == "TRAIN" else "TRAIN"
        result, _ = _compute_facts(self._message, phase, self._facts.get(other), self.independent)
        self._facts[phase] = result
        return result

    def iter_facts(self) -> Iterator[tuple[str, PhaseFacts | str, bool]]:
        """(phase, facts, derived from the previous phase's) for TRAIN then TEST, keeping
        nothing: the message is parked once a graph is built, so at most one graph (and no
        message) is alive while the caller reduces each phase."""
        prev: PhaseFacts | str | None = None
        for phase in PHASES:
            got, derived = _compute_facts(self._message, phase, prev, self.independent, park=True)
            yield phase, got, derived
            prev = got if self.independent else None
        self.park()


def _compute_facts(
    source: _Message,
    phase: str,
    prev: PhaseFacts | str | None,
    independent: bool,
    park: bool = False,
) -> tuple[PhaseFacts | str, bool]:
    """One phase's facts (or Caffe's error) and whether they were derived from ``prev``, the
    other phase's: a net without include/exclude rules has the same layers and verdicts in both
    phases, only the TRAIN-only warnings differ."""
    from rewriter.caffe.graph import build_graph
    from rewriter.caffe.netinit import Backward
    from rewriter.util.memory import gc_paused

    try:
        with gc_paused():
            if isinstance(prev, PhaseFacts) and independent:
                graph = replace(prev.graph, phase=phase)
                bw = prev.backward
                if phase == "TRAIN":
                    bw = graph.backward()
                else:
                    bw = Backward(graph=graph, layers=bw.layers, warnings=graph.warnings)
                # states again: BatchNorm's statistics move by default in TRAIN only
                return replace(prev, graph=graph, backward=bw, states=bw.states.layers), True
            if park:
                # Ours alone: upgraded in place, so build_graph need not copy the whole net
                # (an old-style BatchNorm's three param blocks) while this one is alive too.
                from rewriter.caffe.upgrade_proto import upgrade_batch_norm

                msg = source.take()
                upgrade_batch_norm(msg)
                graph = build_graph(msg, phase=phase)
                del msg
            else:
                graph = build_graph(source.get(), phase=phase)
            return phase_facts(graph, graph.backward()), False
    except RewriterError as e:
        return str(e), False


class _LazyFacts(Mapping[str, PhaseFacts]):
    """One side's phase facts for drawing, built again from the parked message on each read.

    Only the drawing renderers (Markdown, HTML) read them, once; keeping both nets' graphs
    alive in every diff result would more than double a diff's peak memory.
    """

    def __init__(self, source: _Message, independent: bool, phases: tuple[str, ...]) -> None:
        self._source = source
        self._independent = independent
        self._phases = phases

    def __getitem__(self, phase: str) -> PhaseFacts:
        if phase not in self._phases:
            raise KeyError(phase)
        prev: PhaseFacts | str | None = None
        if phase == "TEST" and self._independent:
            prev, _ = _compute_facts(self._source, "TRAIN", None, True, park=True)
        got, _ = _compute_facts(self._source, phase, prev, self._independent, park=True)
        assert isinstance(got, PhaseFacts)
        return got

    def __contains__(self, phase: object) -> bool:
        return phase in self._phases

    def __iter__(self) -> Iterator[str]:
        return iter(self._phases)

    def __len__(self) -> int:
        return len(self._phases)
