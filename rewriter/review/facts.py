"""Graph facts of one phase of a net, for the semantic diff and the drawings.

:func:`phase_facts` walks Caffe's wired net once and records, per layer, its training state
and, per bottom, where its data comes from (inserted splits resolved) and whether a gradient
flows back through it (:class:`EdgeFact`, packed in flat arrays until read).
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

from rewriter.util.lazyseq import LazySequence

if TYPE_CHECKING:
    from rewriter.caffe.graph import Graph
    from rewriter.caffe.netinit import Backward

#: the phases a diff compares, in order
PHASES = ("TRAIN", "TEST")


@dataclass(frozen=True, slots=True)
class EdgeFact:
    """A bottom of a (non-split) layer and where its data comes from."""

    #: graph index of the layer that wrote the version read (inserted splits skipped)
    source: int | None
    target: int
    bottom: int
    #: the blob's name as written in the file (not Caffe's split names)
    blob: str
    #: "flows" (a gradient is passed), "cut" (upstream would learn from it but this bottom
    #: gets none: propagate_down, or a cut further down), "none" (nothing upstream learns)
    gradient: str


#: EdgeFact.gradient by its code in :class:`_EdgeList`
_GRADIENTS = ("none", "flows", "cut")
_NONE, _FLOWS, _CUT = 0, 1, 2


class _EdgeList(LazySequence[EdgeFact]):
    """``PhaseFacts.edges``: flat arrays, an :class:`EdgeFact` made when one is read. Edge
    objects would cost about half the file's size per phase; the diff reads the arrays.

    Edges are in graph order of their target, then by bottom (a layer's edges are adjacent).
    """

    __slots__ = ("source", "target", "bottom", "blob", "grad")

    def __init__(self) -> None:
        #: graph index of the source layer, -1 for none
        self.source = array("i")
        self.target = array("i")
        self.bottom = array("i")
        self.blob: list[str] = []
        #: index into _GRADIENTS
        self.grad = bytearray()

    _what = "edge"

    def _item(self, i: int) -> EdgeFact:
        s = self.source[i]
        return EdgeFact(None if s < 0 else s, self.target[i], self.bottom[i], self.blob[i],
                        _GRADIENTS[self.grad[i]])  # fmt: skip

    def __len__(self) -> int:
        return len(self.blob)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _EdgeList):
            return (self.source, self.target, self.bottom, self.blob, self.grad) == (
                other.source, other.target, other.bottom, other.blob, other.grad
            )  # fmt: skip
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


class _KeyList(Sequence["tuple[str, int] | None"]):
    """``PhaseFacts.keys``: ``(name, k)`` (the k-th layer of that name) per graph layer, None
    for inserted splits; made when read from the occurrence array."""

    __slots__ = ("_layers", "_occ")

    def __init__(self, layers: Sequence[Any], occ: array[int]) -> None:
        self._layers = layers
        self._occ = occ

    def _key(self, i: int) -> tuple[str, int] | None:
        k = self._occ[i]
        return None if k < 0 else (self._layers[i].name, k)

    def __len__(self) -> int:
        return len(self._occ)

    @overload
    def __getitem__(self, index: int) -> tuple[str, int] | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, int] | None]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[str, int] | None | list[tuple[str, int] | None]:
        if isinstance(index, slice):
            return list(map(self._key, range(*index.indices(len(self._occ)))))
        i = operator.index(index)
        if i < 0:
            i += len(self._occ)
        if not 0 <= i < len(self._occ):
            raise IndexError("key index out of range")
        return self._key(i)

    def __iter__(self) -> Iterator[tuple[str, int] | None]:
        return map(self._key, range(len(self._occ)))


@dataclass
class PhaseFacts:
    graph: Graph
    backward: Backward
    states: list[str]
    edges: Sequence[EdgeFact]
    #: per graph layer: k when it is the k-th (from 0) non-split layer of its name, -1 for
    #: a Split Caffe inserted
    occurrence: array[int] = field(repr=False)

    @property
    def keys(self) -> Sequence[tuple[str, int] | None]:
        """Per graph layer: ``(name, k)``, None for an inserted split."""
        return _KeyList(self.graph.layers, self.occurrence)

    @cached_property
    def by_key(self) -> Mapping[tuple[str, int], int]:
        """``(name, k)`` -> graph index (built when first read)."""
        layers = self.graph.layers
        return {(layers[li].name, k): li for li, k in enumerate(self.occurrence) if k >= 0}


def phase_facts(graph: Graph, backward: Backward) -> PhaseFacts:
    """States, data edges (splits resolved) and gradient state of every bottom.

    One pass in net order: a bottom reads the version of its blob the last earlier writer
    left (its producer or an in-place writer), through inserted splits to what they copy."""
    layers = graph.layers
    n_blobs = len(graph.blob_list)
    verdicts = backward.layers
    # per blob id, the version a reader would see now: the writer (-1: none yet) and, when
    # reached through splits, the name of the blob they copy (None: the blob's own name)
    src_of = array("i", [-1]) * n_blobs
    name_of: list[str | None] = [None] * n_blobs
    # Caffe's forward pass (Net::Init): may a gradient arriving at this blob be used?
    blob_flag = bytearray(n_blobs)
    states = backward.states.layers
    edges = _EdgeList()
    e_src, e_tgt, e_bot, e_blob, e_grad = (
        edges.source, edges.target, edges.bottom, edges.blob, edges.grad
    )  # fmt: skip
    occ = array("i")
    seen: dict[str, int] = {}
    for li, layer in enumerate(layers):
        bids = layer.bottom_ids
        flagged = any(blob_flag[b] for b in bids) or any(p.local_lr_mult != 0 for p in layer.params)
        if layer.inserted_split:
            occ.append(-1)
            b0 = bids[0]
            s, name = src_of[b0], name_of[b0]
            if name is None:
                name = layer.bottoms[0]
            for t in layer.top_ids:
                src_of[t] = s
                name_of[t] = name
                if flagged:
                    blob_flag[t] = 1
            continue
        k = seen.get(layer.name, 0)
        seen[layer.name] = k + 1
        occ.append(k)
        v = verdicts[li]
        bnb = v.bottom_need_backward
        loss = v.contributes_loss
        for j, b in enumerate(bids):
            got = name_of[b]
            e_src.append(src_of[b])
            e_tgt.append(li)
            e_bot.append(j)
            e_blob.append(layer.bottoms[j] if got is None else got)
            if bnb[j]:
                e_grad.append(_FLOWS)
            elif blob_flag[b] and loss:
                e_grad.append(_CUT)
            else:
                e_grad.append(_NONE)
        for t in layer.top_ids:
            src_of[t] = li
            name_of[t] = None
            if flagged:
                blob_flag[t] = 1
    return PhaseFacts(graph, backward, states, edges, occ)
