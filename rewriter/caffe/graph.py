"""Caffe's view of a net after ``Net::Init`` wired it: the graph model.

``build_graph`` reproduces, step by step, what BVLC Caffe does to a ``NetParameter`` before it
decides anything about backward computation:

1. the in-memory upgrade ``ReadNetParamsFromTextFileOrDie`` applies (V0 -> V1 -> V2 layers,
   legacy ``input`` fields -> an ``Input`` layer named ``"input"``, BatchNorm param blocks);
2. ``FilterNet``: include/exclude rules against the NetState (the file's own ``state.stage``
   entries are kept and the caller's stages appended; phase and level come from the caller);
3. ``InsertSplits``: a ``Split`` layer for every top read more than once (a non-zero
   ``loss_weight`` counts as a read), named exactly like Caffe does;
4. the wiring loop of ``Net::Init``: bottoms, tops (in-place, duplicates), automatic tops of
   loss layers, loss weights after ``SetUp``, parameter blobs and their sharing.

Every FATAL check of those steps is reproduced with Caffe's own text (``CaffeError``). The
backward decision itself lives in :mod:`rewriter.caffe.netinit`.

The result is a small immutable model: ``graph.layers``, ``graph.layer("conv1")``,
``graph.blobs["conv1"].consumers``, ``graph.outputs``...
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from rewriter import hints
from rewriter.caffe.errors import CaffeError, GraphWarning
from rewriter.caffe.layer_params import (
    FILLER_TYPES,
    READS_MESSAGE,
    auto_top_count,
    fillers_used,
    is_loss_layer,
    param_blob_count,
    param_roles,
)
from rewriter.caffe.layer_params import allow_force_backward as _allow_force
from rewriter.caffe.upgrade_proto import (
    MIXED_LAYER_FORMATS,
    V0_LAYER_TYPES,
    V1_LAYER_TYPES,
    upgrade_net_message,
    v0_to_v1_message,
    v1_to_v2_message,
)
from rewriter.errors import did_you_mean
from rewriter.schema.runtime import is_repeated
from rewriter.util.lazyseq import LazySequence
from rewriter.util.memory import gc_paused
from rewriter.util.record import FrozenRecord

if TYPE_CHECKING:
    from rewriter.caffe.netinit import Backward

__all__ = [
    "AUTOMATIC_TOP",
    "MIXED_LAYER_FORMATS",
    "V0_LAYER_TYPES",
    "V1_LAYER_TYPES",
    "Blob",
    "CaffeError",
    "Graph",
    "GraphWarning",
    "Layer",
    "Param",
    "analyze_net",
    "build_graph",
    "upgrade_net_message",
    "v0_to_v1_message",
    "v1_to_v2_message",
]

#: Name Caffe gives to tops it allocates itself (``AutoTopBlobs``).
AUTOMATIC_TOP = "(automatic)"

_PHASES = {0: "TRAIN", 1: "TEST"}


class UnknownBottom(CaffeError):
    """A bottom no earlier layer produces. ``filtered_out_by`` names the layer that would
    produce it had the phase/stage rules kept it (the net is phase-specific by design)."""

    def __init__(self, blob: str, layer: str, layer_index: int | None, j: int, where: str) -> None:
        super().__init__(
            f"Unknown bottom blob '{blob}' (layer '{layer}', bottom index {j})",
            where,
            layer=layer,
            layer_index=layer_index,
            field="bottom",
            index=j,
        )
        self.blob = blob
        self.filtered_out_by: str | None = None
        #: the blobs available to this layer (for a did-you-mean)
        self.produced: list[str] = []


def _explain_unknown_bottom(e: UnknownBottom, net: Any, excluded: list[int], phase: str) -> None:
    """Say why the bottom is missing: a typo, a layer the rules leave out, or a later layer."""
    for i in excluded:
        if e.blob in net.layer[i].top:
            e.filtered_out_by = str(net.layer[i].name)
            e.hint = (
                f"'{e.blob}' comes from layer '{e.filtered_out_by}', which the include/exclude "
                f"rules leave out of phase {phase} (pass --phase or --stage to select it)"
            )
            return
    later = [m for m in net.layer[(e.layer_index or 0) + 1 :] if e.blob in m.top]
    if later:
        e.hint = f"'{e.blob}' is produced only later, by layer '{later[0].name}': reorder them"
        return
    e.hint = did_you_mean(e.blob, e.produced) or "no layer before it produces such a top"


# Param, Layer, Blob, _Rule and _Owner are records, not dataclasses: every command that reads
# a net imports this module, and creating a dataclass costs ~1 ms (rewriter.util.record). They
# are read-only by convention (the graph sets a layer's params once, with object.__setattr__).


class Param(FrozenRecord):
    """One learnable blob of a layer, as ``Net::Init`` / ``AppendParam`` see it."""

    __slots__ = (
        "index", "role", "name", "lr_mult", "decay_mult", "local_lr_mult", "explicit",
        "explicit_lr_mult", "shared_from", "shared_from_name",
    )  # fmt: skip

    def __init__(
        self,
        index: int,
        role: str,
        name: str,
        lr_mult: float,
        decay_mult: float,
        local_lr_mult: float,
        explicit: bool,
        explicit_lr_mult: bool,
        shared_from: tuple[int, int] | None = None,
        shared_from_name: str | None = None,
    ) -> None:
        self.index = index
        self.role = role
        #: ``param { name }`` ("" when anonymous)
        self.name = name
        #: effective net-level lr_mult (the owner's entry after sharing; what the solver uses)
        self.lr_mult = lr_mult
        #: effective net-level decay_mult
        self.decay_mult = decay_mult
        #: lr_mult Net::Init tests for ``need_backward``: the layer's own param block, else 1
        self.local_lr_mult = local_lr_mult
        #: the net's LayerParameter had a ``param`` block for this blob
        self.explicit = explicit
        #: that block set lr_mult itself
        self.explicit_lr_mult = explicit_lr_mult
        #: (owner layer index, owner param index) when the blob is shared by name, else None
        self.shared_from = shared_from
        self.shared_from_name = shared_from_name

    @property
    def updates(self) -> bool:
        """The solver applies updates to this blob (effective lr_mult != 0)."""
        return self.lr_mult != 0


class Layer(FrozenRecord):
    """A layer of the initialised net, in Caffe's order (inserted splits included)."""

    __slots__ = (
        "name", "type", "index", "source_index", "inserted_split", "bottoms", "tops",
        "loss_weights", "propagate_down", "params", "allow_force_backward", "use_global_stats",
        "bottom_ids", "top_ids",
    )  # fmt: skip
    _no_repr = ("bottom_ids", "top_ids")

    def __init__(
        self,
        name: str,
        type: str,
        index: int,
        source_index: int | None,
        inserted_split: bool,
        bottoms: tuple[str, ...],
        tops: tuple[str, ...],
        loss_weights: tuple[float, ...],
        propagate_down: tuple[bool, ...],
        params: tuple[Param, ...],
        allow_force_backward: tuple[bool, ...],
        use_global_stats: bool | None = None,
        bottom_ids: tuple[int, ...] = (),
        top_ids: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        self.type = type
        self.index = index
        #: index in the (upgraded) message's ``layer`` list; None for inserted splits
        self.source_index = source_index
        self.inserted_split = inserted_split
        #: blob names as Caffe wired them (after split renaming)
        self.bottoms = bottoms
        #: blob names, including Caffe's automatic tops (``"(automatic)"``)
        self.tops = tops
        #: per top, ``Layer::loss(top)`` after SetUp (0 = not a loss)
        self.loss_weights = loss_weights
        #: ``propagate_down`` as written (empty when not given)
        self.propagate_down = propagate_down
        self.params = params
        #: ``AllowForceBackward`` per bottom
        self.allow_force_backward = allow_force_backward
        #: BatchNorm only: ``batch_norm_param.use_global_stats`` when set, else None
        self.use_global_stats = use_global_stats
        #: Caffe blob ids of bottoms / tops (in-place tops share the bottom's id)
        self.bottom_ids = bottom_ids
        self.top_ids = top_ids

    def with_params(self, params: tuple[Param, ...], use_global_stats: bool | None) -> Layer:
        """This layer with other parameters (rewriter.caffe.derive)."""
        return Layer(
            self.name, self.type, self.index, self.source_index, self.inserted_split,
            self.bottoms, self.tops, self.loss_weights, self.propagate_down, params,
            self.allow_force_backward, use_global_stats, self.bottom_ids, self.top_ids,
        )  # fmt: skip

    @property
    def in_place(self) -> bool:
        return any(j < len(self.bottoms) and t == self.bottoms[j] for j, t in enumerate(self.tops))


class Blob(FrozenRecord):
    """A Caffe blob: created by ``producer``, rewritten in place by ``writers``."""

    __slots__ = ("id", "name", "producer", "writers", "consumers")

    def __init__(
        self,
        id: int,
        name: str,
        producer: int | None,
        writers: tuple[int, ...],
        consumers: tuple[int, ...],
    ) -> None:
        self.id = id
        self.name = name
        self.producer = producer
        #: layers that rewrite the blob in place, in net order
        self.writers = writers
        #: layers reading the blob as a bottom, in net order (in-place writers included)
        self.consumers = consumers


@dataclass(frozen=True)
class Graph:
    net_name: str
    phase: str
    #: effective NetState stages (the file's ``state.stage`` first, then the caller's)
    stages: tuple[str, ...]
    level: int
    force_backward: bool
    layers: tuple[Layer, ...]
    #: blobs by Caffe id (automatic tops included); a sequence that compares like a tuple
    blob_list: Sequence[Blob] = field(repr=False)
    #: net inputs (tops of Input layers), in order
    inputs: tuple[str, ...]
    #: net outputs, sorted by name like Caffe's ``std::set``
    outputs: tuple[str, ...]
    warnings: tuple[GraphWarning, ...] = ()
    #: named blobs (automatic tops excluded), by name
    blobs: Mapping[str, Blob] = field(default_factory=dict, repr=False, compare=False)
    _by_name: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Both maps are built on first use: explain and most checks never look names up, and
        # two dicts with an entry per layer and per blob cost about 0.7x the file size.
        if not isinstance(self.blobs, _NamedBlobs) and not self.blobs:
            object.__setattr__(self, "blobs", _NamedBlobs(self.blob_list))
        if not isinstance(self._by_name, _LayerIndex) and not self._by_name:
            object.__setattr__(self, "_by_name", _LayerIndex(self.layers))

    def layer(self, name: str) -> Layer:
        """The first layer with that name (names need not be unique in Caffe)."""
        return self.layers[self._by_name[name]]

    def producer(self, blob: str) -> Layer | None:
        b = self.blobs[blob]
        return None if b.producer is None else self.layers[b.producer]

    def consumers(self, blob: str) -> list[Layer]:
        return [self.layers[i] for i in self.blobs[blob].consumers]

    @property
    def splits(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.inserted_split]

    def backward(self) -> Backward:
        from rewriter.caffe.netinit import analyze

        return analyze(self)


class _BlobList(LazySequence[Blob]):
    """``Graph.blob_list``: every blob as a few flat int arrays, each :class:`Blob` made when
    read. Blob objects and their consumer tuples would cost about half as much as the layers;
    the backward analysis only counts them, and other callers read a few."""

    __slots__ = ("_names", "_producers", "_cons_at", "_cons", "_wri_at", "_wri")
    _what = "blob"

    def __init__(
        self,
        names: tuple[str, ...],
        producers: array[int],
        cons_at: array[int],
        cons: array[int],
        wri_at: array[int],
        wri: array[int],
    ) -> None:
        self._names = names
        self._producers = producers
        #: consumers of blob i: cons[cons_at[i]:cons_at[i + 1]] (writers likewise)
        self._cons_at = cons_at
        self._cons = cons
        self._wri_at = wri_at
        self._wri = wri

    def _item(self, i: int) -> Blob:
        a, b = self._cons_at[i], self._cons_at[i + 1]
        c, d = self._wri_at[i], self._wri_at[i + 1]
        return Blob(
            i,
            self._names[i],
            self._producers[i],
            tuple(self._wri[c:d]) if d > c else (),
            tuple(self._cons[a:b]) if b > a else (),
        )

    def _slice(self, items: Iterable[Blob]) -> tuple[Blob, ...]:
        return tuple(items)  # (the tuple it replaced sliced to tuples)

    def __len__(self) -> int:
        return len(self._names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _BlobList):
            return (
                self._names == other._names
                and self._producers == other._producers
                and self._cons_at == other._cons_at
                and self._cons == other._cons
                and self._wri_at == other._wri_at
                and self._wri == other._wri
            )
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


class _LazyMap(Mapping[str, Any]):
    """A read-only name map built from the graph's tuples the first time it is read."""

    __slots__ = ("_map", "_items")

    def __init__(self, items: Sequence[Any]) -> None:
        self._items: Sequence[Any] | None = items
        self._map: dict[str, Any] | None = None

    def _build(self, items: Sequence[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _get(self) -> dict[str, Any]:
        m = self._map
        if m is None:
            assert self._items is not None
            m = self._map = self._build(self._items)
            self._items = None
        return m

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


class _NamedBlobs(_LazyMap):
    """``Graph.blobs``: named blobs (automatic tops excluded) by name."""

    __slots__ = ()

    def _build(self, items: Sequence[Any]) -> dict[str, Any]:
        return {b.name: b for b in items if b.name != AUTOMATIC_TOP}


class _LayerIndex(_LazyMap):
    """``Graph._by_name``: the index of the first layer with each name."""

    __slots__ = ()

    def _build(self, items: Sequence[Any]) -> dict[str, Any]:
        index: dict[str, int] = {}
        for layer in items:
            index.setdefault(layer.name, layer.index)
        return index


# --------------------------------------------------------------------------- message views


def _has(msg: Any, name: str) -> bool:
    return bool(msg.HasField(name))


class _Rule(FrozenRecord):
    __slots__ = ("phase", "min_level", "max_level", "stages", "not_stages")

    def __init__(
        self,
        phase: str | None,
        min_level: int | None,
        max_level: int | None,
        stages: tuple[str, ...],
        not_stages: tuple[str, ...],
    ) -> None:
        self.phase = phase
        self.min_level = min_level
        self.max_level = max_level
        self.stages = stages
        self.not_stages = not_stages

    @staticmethod
    def of(msg: Any) -> _Rule:
        return _Rule(
            phase=_PHASES.get(int(msg.phase), str(msg.phase)) if _has(msg, "phase") else None,
            min_level=int(msg.min_level) if _has(msg, "min_level") else None,
            max_level=int(msg.max_level) if _has(msg, "max_level") else None,
            stages=tuple(msg.stage),
            not_stages=tuple(msg.not_stage),
        )

    def met_by(self, phase: str, level: int, stages: frozenset[str]) -> bool:
        if self.phase is not None and self.phase != phase:
            return False
        if self.min_level is not None and level < self.min_level:
            return False
        if self.max_level is not None and level > self.max_level:
            return False
        if any(s not in stages for s in self.stages):
            return False
        return not any(s in stages for s in self.not_stages)


class _Spec(NamedTuple):
    """A ParamSpec as Caffe reads it. A tuple, so that equal specs are shared (``_spec_of``)."""

    name: str = ""
    lr_mult: float = 1.0
    has_lr_mult: bool = False
    decay_mult: float = 1.0
    has_decay_mult: bool = False
    permissive: bool = False
    #: which multiplier is -0.0 (1: lr_mult, 2: decay_mult): -0.0 == 0.0 as a key, yet it
    #: prints as "-0.0" in JSON, so specs differing only there must not be merged
    neg_zero: int = 0


def _neg_zero(value: float) -> bool:
    return value == 0 and math.copysign(1.0, value) < 0


def _spec_of(msg: Any, cache: dict[_Spec, _Spec]) -> _Spec:
    lr, decay = float(msg.lr_mult), float(msg.decay_mult)
    spec = _Spec(
        str(msg.name),
        lr,
        _has(msg, "lr_mult"),
        decay,
        _has(msg, "decay_mult"),
        int(msg.share_mode) == 1,
        (1 if _neg_zero(lr) else 0) | (2 if _neg_zero(decay) else 0),
    )
    return cache.setdefault(spec, spec)


def _batch_norm_upgraded(specs: tuple[_Spec, ...], cache: dict[_Spec, _Spec]) -> tuple[_Spec, ...]:
    """``UpgradeNetBatchNorm`` on a BatchNorm layer's three specs (lr_mult and decay_mult set
    to 0), done here rather than on a copy of the whole net."""
    out = []
    for spec in specs:
        new = _Spec(spec.name, 0.0, True, 0.0, True, spec.permissive, 0)
        out.append(cache.setdefault(new, new))
    return tuple(out)


class _LayerDef:
    """Working copy of one LayerParameter (what FilterNet/InsertSplits pass on). The wiring
    loop frees each one as it turns it into a :class:`Layer`."""

    __slots__ = (
        "name", "type", "bottoms", "tops", "loss_weights", "params", "propagate_down",
        "source_index", "inserted_split",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        type: str,
        bottoms: tuple[str, ...],
        tops: tuple[str, ...],
        loss_weights: tuple[float, ...],
        params: tuple[_Spec, ...],
        propagate_down: tuple[bool, ...],
        source_index: int | None,
        inserted_split: bool = False,
    ) -> None:
        self.name = name
        self.type = type
        self.bottoms = bottoms
        self.tops = tops
        self.loss_weights = loss_weights
        self.params = params
        self.propagate_down = propagate_down
        self.source_index = source_index
        self.inserted_split = inserted_split


class _Shared:
    """One object per distinct name, name tuple and param spec while a graph is built: a
    layer named like its top, a bottom and the top it reads, an in-place layer's bottoms and
    tops and its producer's tops all end up as the same objects in the graph."""

    __slots__ = ("strs", "names", "specs", "spec_bytes", "batch_norm", "layer_names")

    def __init__(self) -> None:
        #: the caller's strings for the layer names, by message index (or None)
        self.layer_names: Sequence[str] | None = None
        # (a dict of this graph's own, not sys.intern: growing the interpreter's table of
        # interned strings costs ~1 MB at once, 5x a 1,000-layer file)
        self.strs: dict[str, str] = {}
        self.names: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.specs: dict[_Spec, _Spec] = {}
        #: a ParamSpec's serialized bytes -> its spec: one C call per param block instead
        #: of six field reads (equal bytes, equal fields: -0.0 and presence included)
        self.spec_bytes: dict[bytes, _Spec] = {}
        #: a BatchNorm layer's written specs -> upgraded ones
        self.batch_norm: dict[tuple[_Spec, ...], tuple[_Spec, ...]] = {}

    def names_of(self, names: Iterable[str]) -> tuple[str, ...]:
        strs = self.strs
        t = tuple([strs.setdefault(s, s) for s in names])
        return self.names.setdefault(t, t)


def _layer_def(msg: Any, index: int, shared: _Shared) -> _LayerDef:
    params = msg.param
    loss_weight = msg.loss_weight
    propagate_down = msg.propagate_down
    strs = shared.strs
    name = msg.name if shared.layer_names is None else shared.layer_names[index]
    layer_type = msg.type
    param_specs: tuple[_Spec, ...] = ()
    if params:
        by_bytes = shared.spec_bytes
        found: list[_Spec] = []
        for p in params:
            key = p.SerializeToString()
            spec = by_bytes.get(key)
            if spec is None:
                spec = by_bytes[key] = _spec_of(p, shared.specs)
            found.append(spec)
        param_specs = tuple(found)
        if len(param_specs) == 3 and layer_type == "BatchNorm":
            done = shared.batch_norm.get(param_specs)
            if done is None:
                done = shared.batch_norm[param_specs] = _batch_norm_upgraded(
                    param_specs, shared.specs
                )
            param_specs = done
    return _LayerDef(
        strs.setdefault(name, name),
        strs.setdefault(layer_type, layer_type),
        shared.names_of(msg.bottom),
        shared.names_of(msg.top),
        tuple([float(w) for w in loss_weight]) if loss_weight else (),
        param_specs,
        tuple([bool(p) for p in propagate_down]) if propagate_down else (),
        index,
    )


# --------------------------------------------------------------------------- Net::Init steps


def _fmt(value: float) -> str:
    """A number as glog prints it (``operator<<``: 6 significant digits)."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".6g")


def _filter_net(
    net: Any, phase: str, level: int, stages: frozenset[str], shared: _Shared
) -> tuple[list[_LayerDef], list[int]]:
    """``Net::FilterNet``: the layers whose include/exclude rules the NetState meets."""
    kept: list[_LayerDef] = []
    excluded: list[int] = []
    for i, msg in enumerate(net.layer):
        raw_include, raw_exclude = msg.include, msg.exclude
        if not raw_include and not raw_exclude:
            kept.append(_layer_def(msg, i, shared))
            continue
        include = [_Rule.of(r) for r in raw_include]
        exclude = [_Rule.of(r) for r in raw_exclude]
        if include and exclude:
            raise CaffeError(
                "Check failed: layer_param.include_size() == 0 || "
                "layer_param.exclude_size() == 0 Specify either include rules or exclude "
                "rules; not both.",
                "net.cpp",
                layer=str(msg.name),
                layer_index=i,
                field="exclude",
                hint="keep either the include or the exclude rules of this layer",
            )
        included = not include
        if included and any(r.met_by(phase, level, stages) for r in exclude):
            included = False
        if not included and any(r.met_by(phase, level, stages) for r in include):
            included = True
        if included:
            kept.append(_layer_def(msg, i, shared))
        else:
            excluded.append(i)
    return kept, excluded


def _insert_splits(layers: list[_LayerDef], shared: _Shared) -> list[_LayerDef]:
    """``InsertSplits``: a Split layer after every top that is read more than once.

    Tops are numbered in net order ("slots": layer i's top j is ``first_slot[i] + j``), so the
    bookkeeping is a few int arrays rather than a tuple and dict entries per top."""
    slot_of: dict[str, int] = {}  # blob name -> slot of the top that wrote it last
    first_slot = array("i")
    slot_layer = array("i")
    sources = array("i")  # the slot every bottom reads, bottom after bottom
    loss_weight: dict[int, float] = {}
    loss_reads: list[int] = []  # a non-zero loss weight counts as a read
    n_slots = 0
    for i, layer in enumerate(layers):
        for j, blob in enumerate(layer.bottoms):
            src = slot_of.get(blob)
            if src is None:
                err = UnknownBottom(blob, layer.name, layer.source_index, j, "insert_splits.cpp")
                err.produced = list(slot_of)
                raise err
            sources.append(src)
        first_slot.append(n_slots)
        for blob in layer.tops:
            slot_of[blob] = n_slots
            slot_layer.append(i)
            n_slots += 1
        for j in range(min(len(layer.loss_weights), len(layer.tops))):
            src = slot_of[layer.tops[j]]
            loss_weight[src] = layer.loss_weights[j]
            if loss_weight[src]:
                loss_reads.append(src)
    del slot_of
    reads = array("i", [0]) * n_slots
    for src in sources:
        reads[src] += 1
    for src in loss_reads:
        reads[src] += 1
    out: list[_LayerDef] = []
    next_split_top = array("i", [0]) * n_slots
    at = 0
    for i, layer in enumerate(layers):
        out.append(layer)  # the filtered defs are fresh objects: rewrite them in place
        bottoms = layer.bottoms
        renamed: list[str] | None = None
        for j in range(len(bottoms)):
            src = sources[at]
            at += 1
            if reads[src] > 1:
                k = next_split_top[src]
                next_split_top[src] = k + 1
                if renamed is None:
                    renamed = list(bottoms)
                owner = slot_layer[src]
                top = src - first_slot[owner]
                renamed[j] = f"{bottoms[j]}_{layers[owner].name}_{top}_split_{k}"
        if renamed is not None:
            layer.bottoms = shared.names_of(renamed)
        slot = first_slot[i]
        for j, blob in enumerate(layer.tops):
            count = reads[slot + j]
            if count <= 1:
                continue
            weight = loss_weight.get(slot + j, 0.0)
            base = f"{blob}_{layer.name}_{j}_split"
            out.append(
                _LayerDef(
                    name=base,
                    type="Split",
                    bottoms=shared.names_of((blob,)),
                    tops=shared.names_of([f"{base}_{k}" for k in range(count)]),
                    loss_weights=(weight, *[0.0] * (count - 1)) if weight else (),
                    params=(),
                    propagate_down=(),
                    source_index=None,
                    inserted_split=True,
                )
            )
            if weight:
                layer.loss_weights = ()
                next_split_top[slot + j] += 1
    return out


#: the one sub-message each type in READS_MESSAGE has its blob count, fillers, param roles
#: and use_global_stats read from (layer_params' functions, _use_global_stats)
_SETUP_FIELD = {
    "Convolution": "convolution_param",
    "Deconvolution": "convolution_param",
    "InnerProduct": "inner_product_param",
    "Embed": "embed_param",
    "BatchNorm": "batch_norm_param",
    "Bias": "bias_param",
    "DummyData": "dummy_data_param",
    "LSTM": "recurrent_param",
    "PReLU": "prelu_param",
    "RNN": "recurrent_param",
    "Scale": "scale_param",
}


class _Setup(NamedTuple):
    """What ``LayerSetUp`` makes of a layer's type and parameters, for the graph."""

    blobs: int | None
    fillers: list[str]
    use_global_stats: bool | None
    #: param_roles by blob count
    roles: dict[int, list[str]]


def _layer_setup(layer_type: str, msg: Any, num_bottoms: int, memo: dict[Any, _Setup]) -> _Setup:
    """Blob count, fillers and use_global_stats of a layer, shared by the layers of one build
    whose type, bottom count and setup sub-message (by its bytes) agree: a deep net sets up
    the same few blocks thousands of times."""
    field = _SETUP_FIELD.get(layer_type) if msg is not None else None
    if field is None and msg is not None:  # a type whose reads are not listed: no sharing
        return _Setup(
            param_blob_count(layer_type, msg, num_bottoms),
            fillers_used(layer_type, msg, num_bottoms),
            _use_global_stats(layer_type, msg),
            {},
        )
    key = (layer_type, num_bottoms, getattr(msg, field).SerializeToString() if field else None)
    found = memo.get(key)
    if found is None:
        found = memo[key] = _Setup(
            param_blob_count(layer_type, msg, num_bottoms),
            fillers_used(layer_type, msg, num_bottoms),
            _use_global_stats(layer_type, msg),
            {},
        )
    return found


def _use_global_stats(layer_type: str, msg: Any) -> bool | None:
    if layer_type != "BatchNorm" or msg is None:
        return None
    bp = msg.batch_norm_param
    return bool(bp.use_global_stats) if _has(bp, "use_global_stats") else None


def _filler_path(msg: Any, filler: str, prefix: str = "") -> str | None:
    """The dotted path of the ``type`` of the filler named ``filler`` inside ``msg``."""
    if msg is None:
        return None
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        for i, sub in enumerate(value if is_repeated(fd) else [value]):
            path = f"{prefix}{fd.name}[{i}]" if is_repeated(fd) else f"{prefix}{fd.name}"
            if fd.message_type.name == "FillerParameter" and sub.type == filler:
                return f"{path}.type"
            found = _filler_path(sub, filler, f"{path}.")
            if found is not None:
                return found
    return None


def _registry_error(layer_type: str, registered: Iterable[str]) -> CaffeError:
    known = ", ".join(sorted(registered))
    return CaffeError(
        "Check failed: registry.count(type) == 1 (0 vs. 1) Unknown layer type: "
        f"{layer_type} (known types: {known})",
        "layer_factory.hpp",
        field="type",
        hint=did_you_mean(layer_type, registered),
    )


class _Owner:
    """A named learnable blob (``learnable_params_`` entry) and its net-level multipliers
    (anonymous blobs are never shared: their own spec is their owner)."""

    __slots__ = ("layer", "param", "lr", "has_lr", "decay", "has_decay")

    def __init__(
        self, layer: int, param: int, lr: float, has_lr: bool, decay: float, has_decay: bool
    ) -> None:
        self.layer = layer
        self.param = param
        self.lr = lr
        self.has_lr = has_lr
        self.decay = decay
        self.has_decay = has_decay


def build_graph(
    net: Any,
    phase: str = "TRAIN",
    stages: Sequence[str] = (),
    level: int = 0,
    param_counts: Mapping[str, int] | None = None,
    registered_types: Iterable[str] | None = None,
    names: Sequence[str] | None = None,
) -> Graph:
    """Wire ``net`` exactly as ``caffe::Net<float>(file, phase, level, &stages)`` does.

    ``net`` is a ``caffe.NetParameter`` message (V0/V1 nets and legacy inputs are upgraded in
    memory first). ``param_counts`` gives the number of learnable blobs of layer types this
    module does not know (default: as many as the layer has ``param`` blocks, with a warning);
    it also overrides known types. With ``registered_types`` (e.g.
    ``layer_params.ORACLE_BUILD_LAYER_TYPES``), a layer type outside it raises Caffe's
    "Unknown layer type" error, as a build without that layer would.

    ``names``: the layers' names as the caller already holds them (``NetView.names``), for
    the graph to share those string objects instead of reading its own.

    Raises :class:`CaffeError` with Caffe's FATAL text where Caffe would stop.
    """
    with gc_paused():
        try:
            return _build_graph(net, phase, stages, level, param_counts, registered_types, names)
        except CaffeError as e:
            e.phase = e.phase or phase
            raise


def _build_graph(
    net: Any,
    phase: str,
    stages: Sequence[str],
    level: int,
    param_counts: Mapping[str, int] | None,
    registered_types: Iterable[str] | None,
    names: Sequence[str] | None = None,
) -> Graph:
    if phase not in ("TRAIN", "TEST"):
        raise ValueError(f"phase must be TRAIN or TEST, not {phase!r}")
    given = net
    net = upgrade_net_message(net, batch_norm=False)  # _layer_def upgrades BatchNorm specs
    file_stages = tuple(net.state.stage) if _has(net, "state") else ()
    all_stages = file_stages + tuple(stages)
    shared = _Shared()
    if names is not None and net is given and len(names) == len(net.layer):
        shared.layer_names = names
    filtered, excluded = _filter_net(net, phase, level, frozenset(all_stages), shared)
    try:
        layers = _insert_splits(filtered, shared)
    except UnknownBottom as e:
        _explain_unknown_bottom(e, net, excluded, phase)
        raise
    del filtered, shared  # its dicts are as large as the graph's name lists
    registry = None if registered_types is None else frozenset(registered_types)
    counts = dict(param_counts or {})

    # The graph lives as long as its caller wants, so it shares what it can: one int object
    # per index, one tuple per distinct bottoms/tops (see _Shared) and flags, id tuples with
    # the producer, one tuple of Params per distinct setting. Tuples are shared only with
    # tuples of the same element type: (1,) == (True,) == (1.0,).
    n_layers = len(layers)
    layer_msgs = net.layer
    ints = list(range(n_layers))
    flag_tuples: dict[tuple[bool, ...], tuple[bool, ...]] = {}
    no_loss: dict[int, tuple[float, ...]] = {}
    param_tuples: dict[Any, tuple[Param, ...]] = {}
    warnings: list[GraphWarning] = []
    out_layers: list[Layer] = []
    pending: list[_PendingParams] = []
    blob_names: list[str] = []
    blob_producer = array("i")
    blob_writers: dict[int, list[int]] = {}
    # consumers: the first per blob, the others (rare after InsertSplits) by blob
    first_consumer: list[int | None] = []
    more_consumers: dict[int, list[int]] = {}
    name_to_id: dict[str, int] = {}
    available: set[str] = set()
    inputs: list[str] = []
    owner_by_name: dict[str, _Owner] = {}
    unknown: dict[str, list[int]] = {}
    setup_memo: dict[Any, _Setup] = {}
    split_setup = _Setup(0, [], None, {})

    for li in ints:
        ld = layers[li]
        layers[li] = _FREED  # the Layer built below replaces it
        bottoms = ld.bottoms
        num_bottoms = len(bottoms)
        if ld.propagate_down and len(ld.propagate_down) != num_bottoms:
            raise CaffeError(
                "Check failed: layer_param.propagate_down_size() == layer_param.bottom_size() "
                f"({len(ld.propagate_down)} vs. {num_bottoms}) propagate_down param must "
                "be specified either 0 or bottom_size times",
                "net.cpp",
                layer=ld.name,
                layer_index=ld.source_index,
                field="propagate_down",
                index=num_bottoms if len(ld.propagate_down) > num_bottoms else 0,
                hint=f"give propagate_down once per bottom ({num_bottoms} times), or not at all",
            )
        if registry is not None and ld.type not in registry:
            err = _registry_error(ld.type, registry)
            err.layer, err.layer_index, err.field = ld.name, ld.source_index, "type"
            raise err
        bottom_ids: list[int] = []
        for j, blob in enumerate(bottoms):
            if blob not in available:
                bad = UnknownBottom(blob, ld.name, ld.source_index, j, "net.cpp")
                bad.produced = sorted(available)
                _explain_unknown_bottom(bad, net, excluded, phase)
                raise bad
            blob_id = name_to_id[blob]
            available.discard(blob)
            bottom_ids.append(blob_id)
            if first_consumer[blob_id] is None:
                first_consumer[blob_id] = li
            else:
                more_consumers.setdefault(blob_id, []).append(li)
        top_ids: list[int] = []
        for j, blob in enumerate(ld.tops):
            if j < num_bottoms and blob == bottoms[j]:
                blob_id = name_to_id[blob]
                blob_writers.setdefault(blob_id, []).append(li)
            elif blob in name_to_id:
                owner = blob_producer[name_to_id[blob]]
                by = out_layers[owner].name if owner < li else ld.name
                raise CaffeError(
                    f"Top blob '{blob}' produced by multiple sources.",
                    "net.cpp",
                    layer=ld.name,
                    layer_index=ld.source_index,
                    field="top",
                    index=j,
                    hint=f"layer '{by}' already produces '{blob}': give this top another name"
                    + (" (or make it in place: top equal to its bottom)" if bottoms else ""),
                )
            else:
                blob_id = len(blob_names)
                if blob_id < n_layers:
                    blob_id = ints[blob_id]
                blob_names.append(blob)
                blob_producer.append(li)
                first_consumer.append(None)
                name_to_id[blob] = blob_id
                if ld.type == "Input":
                    inputs.append(blob)
            top_ids.append(blob_id)
            available.add(blob)
        tops = ld.tops
        n_auto = auto_top_count(ld.type) - len(tops)
        if n_auto > 0:
            tops = tops + (AUTOMATIC_TOP,) * n_auto
            for _ in range(n_auto):
                blob_id = len(blob_names)
                top_ids.append(ints[blob_id] if blob_id < n_layers else blob_id)
                blob_names.append(AUTOMATIC_TOP)
                blob_producer.append(li)
                first_consumer.append(None)

        # ---- Layer::SetUp: LayerSetUp (fillers, BatchNorm specs), then SetLossWeights
        # The LayerParameter is fetched again only for types whose setup reads it: a message
        # object kept per layer holds every sub-message wrapper read from it (about 1x the
        # file size for a conv net).
        msg = None
        if ld.source_index is not None and ld.type in READS_MESSAGE:
            msg = layer_msgs[ld.source_index]
        if ld.inserted_split:
            setup = split_setup
        else:
            setup = _layer_setup(ld.type, msg, num_bottoms, setup_memo)
        known = setup.blobs
        if ld.type in counts:
            n_blobs = counts[ld.type]
        elif known is not None:
            n_blobs = known
            if not ld.inserted_split:
                for filler in setup.fillers:
                    if filler not in FILLER_TYPES:
                        raise CaffeError(
                            f"Check failed: false Unknown filler name: {filler}",
                            "filler.hpp",
                            layer=ld.name,
                            layer_index=ld.source_index,
                            field=_filler_path(msg, filler),
                            hint=did_you_mean(filler, FILLER_TYPES),
                        )
        else:
            n_blobs = len(ld.params)
            unknown.setdefault(ld.type, []).append(li)
        layer_specs = ld.params  # the layer's own copy of its LayerParameter
        if ld.type == "BatchNorm" and ld.type not in counts:
            own = list(layer_specs)
            for i in range(n_blobs):
                if len(own) == i:
                    own.append(_BATCH_NORM_SPEC)
                elif own[i].lr_mult != 0:
                    raise CaffeError(
                        "Check failed: this->layer_param_.param(i).lr_mult() == 0.f "
                        f"({_fmt(own[i].lr_mult)} vs. 0) Cannot configure batch "
                        "normalization statistics as layer parameters.",
                        "batch_norm_layer.cpp",
                        layer=ld.name,
                        layer_index=ld.source_index,
                        field=f"param[{i}].lr_mult",
                        hint="set lr_mult: 0 in the BatchNorm layer's param blocks",
                    )
            layer_specs = tuple(own)
        weights = ld.loss_weights
        if weights:
            if len(weights) != len(tops):
                raise CaffeError(
                    f"Check failed: top.size() == num_loss_weights ({len(tops)} vs. "
                    f"{len(weights)}) loss_weight must be unspecified or specified once per "
                    "top blob.",
                    "layer.hpp",
                    layer=ld.name,
                    layer_index=ld.source_index,
                    field="loss_weight",
                    index=len(tops) if len(weights) > len(tops) else 0,
                    hint=f"give loss_weight once per top ({len(tops)} times), or not at all",
                )
            loss = weights
        elif is_loss_layer(ld.type):
            if len(tops) != 1:
                raise CaffeError(
                    f"Check failed: top.size() == num_loss_weights ({len(tops)} vs. "
                    "1) loss_weight must be unspecified or specified once per top blob.",
                    "layer.hpp",
                    layer=ld.name,
                    layer_index=ld.source_index,
                    field="top",
                    index=1,
                    hint=f"a {ld.type} layer with {len(tops)} tops needs a loss_weight per top "
                    "(e.g. loss_weight: 1 then loss_weight: 0)",
                )
            loss = _UNIT_LOSS
        else:
            loss = no_loss.get(len(tops)) or no_loss.setdefault(len(tops), (0.0,) * len(tops))

        # ---- parameters (Net::Init + AppendParam)
        if len(ld.params) > n_blobs:
            raise CaffeError(
                f"Check failed: param_size <= num_param_blobs ({len(ld.params)} vs. "
                f"{n_blobs}) Too many params specified for layer {ld.name}",
                "net.cpp",
                layer=ld.name,
                layer_index=ld.source_index,
                field="param",
                index=n_blobs,
                hint=f"a {ld.type} layer here has {n_blobs} parameter blob(s): remove the extra "
                "param blocks",
            )
        params: tuple[Param, ...] = ()
        if n_blobs:
            refs: list[_Owner | None] | None = None
            for p in range(n_blobs):
                spec = layer_specs[p] if p < len(layer_specs) else _DEFAULT_SPEC
                if spec.name:
                    if refs is None:
                        refs = [None] * n_blobs
                    refs[p] = _share(owner_by_name, spec, li, p, ld, out_layers)
            roles = setup.roles.get(n_blobs)
            if roles is None:
                roles = setup.roles[n_blobs] = (
                    [f"param {i}" for i in range(n_blobs)]
                    if ld.inserted_split
                    else param_roles(ld.type, msg, num_bottoms, n_blobs)
                )
            if refs is None:
                params = _own_params(roles, ld.params, layer_specs, param_tuples)
            else:  # a later sharer may still set the owner's multipliers
                pending.append(_PendingParams(li, roles, ld.params, layer_specs, refs))

        source = ld.source_index
        if source is not None and source < n_layers:
            source = ints[source]
        # ids: a single bottom is often its producer's only top; in place, tops are bottoms
        bi = tuple(bottom_ids)
        if num_bottoms == 1:
            producer = out_layers[blob_producer[bi[0]]] if blob_producer[bi[0]] < li else None
            if producer is not None and producer.top_ids == bi:
                bi = producer.top_ids
        ti = tuple(top_ids)
        if ti == bi:
            ti = bi
        pd = ld.propagate_down
        out_layers.append(
            Layer(
                ld.name,
                ld.type,
                li,
                source,
                ld.inserted_split,
                bottoms,
                tops,
                loss,
                flag_tuples.setdefault(pd, pd),
                params,
                _allow_force_all(ld.type, num_bottoms),
                setup.use_global_stats,
                bi,
                ti,
            )
        )
    del layers

    for layer_type, where in unknown.items():
        first = out_layers[where[0]]
        listed = ", ".join(out_layers[i].name for i in where[:5]) + (
            ", ..." if len(where) > 5 else ""
        )
        # Python is BVLC's own layer; its parameter blobs are made by the user's setup()
        what = (
            "gets its parameter blobs from user code (BVLC's Python layer)"
            if layer_type == "Python"
            else "is unknown to BVLC Caffe"
        )
        warnings.append(
            GraphWarning(
                "unknown-layer-type",
                f"type '{layer_type}' ({len(where)} layer(s): {listed}) {what}; each is "
                "assumed to have one parameter blob per param block (to override: "
                f"{hints.param_count(layer_type)})",
                first.name,
                where[0],
            )
        )
    for pp in pending:
        object.__setattr__(out_layers[pp.layer], "params", _shared_params(pp, out_layers))
    del pending, owner_by_name, name_to_id, param_tuples
    cons_at = array("i", [0])
    cons = array("i")
    wri_at = array("i", [0])
    wri = array("i")
    for i, head in enumerate(first_consumer):
        if head is not None:
            cons.append(head)
            if i in more_consumers:
                cons.extend(more_consumers[i])
        cons_at.append(len(cons))
        if i in blob_writers:
            wri.extend(blob_writers[i])
        wri_at.append(len(wri))
    del first_consumer, more_consumers, blob_writers
    blobs = _BlobList(tuple(blob_names), blob_producer, cons_at, cons, wri_at, wri)
    return Graph(
        net_name=str(net.name),
        phase=phase,
        stages=all_stages,
        level=level,
        force_backward=bool(net.force_backward),
        layers=tuple(out_layers),
        blob_list=blobs,
        inputs=tuple(inputs),
        outputs=tuple(sorted(available)),
        warnings=tuple(warnings),
    )


_DEFAULT_SPEC = _Spec()
_BATCH_NORM_SPEC = _Spec(lr_mult=0.0, has_lr_mult=True)
_UNIT_LOSS = (1.0,)
_FREED = _LayerDef("", "", (), (), (), (), (), None)
_ALLOW_CACHE: dict[tuple[str, int], tuple[bool, ...]] = {}


def _allow_force_all(layer_type: str, num_bottoms: int) -> tuple[bool, ...]:
    key = (layer_type, num_bottoms)
    flags = _ALLOW_CACHE.get(key)
    if flags is None:
        flags = tuple(_allow_force(layer_type, j) for j in range(num_bottoms))
        if len(_ALLOW_CACHE) < 4096:
            _ALLOW_CACHE[key] = flags
    return flags


def _share(
    owner_by_name: dict[str, _Owner],
    spec: _Spec,
    layer: int,
    p: int,
    ld: _LayerDef,
    done: list[Layer],
) -> _Owner:
    """``AppendParam`` for a named blob: the first use owns it, later ones share it and may
    set (or must match) its multipliers. (``ld`` and ``done`` only name a mismatch.)"""
    pname = spec.name
    owner = owner_by_name.get(pname)
    if owner is None:
        owner = _Owner(layer, p, spec.lr_mult, spec.has_lr_mult, spec.decay_mult,
                       spec.has_decay_mult)  # fmt: skip
        owner_by_name[pname] = owner
        return owner
    if spec.has_lr_mult:
        if owner.has_lr:
            if spec.lr_mult != owner.lr:
                raise CaffeError(
                    "Check failed: param_spec->lr_mult() == "
                    f"params_lr_[learnable_param_id] ({_fmt(spec.lr_mult)} vs. "
                    f"{_fmt(owner.lr)}) Shared param '{pname}' has mismatched lr_mult.",
                    "net.cpp",
                    **_mismatch(ld, p, "lr_mult", owner, done),
                )
        else:
            owner.has_lr, owner.lr = True, spec.lr_mult
    if spec.has_decay_mult:
        if owner.has_decay:
            if spec.decay_mult != owner.decay:
                raise CaffeError(
                    "Check failed: param_spec->decay_mult() == "
                    f"params_weight_decay_[learnable_param_id] ({_fmt(spec.decay_mult)}"
                    f" vs. {_fmt(owner.decay)}) Shared param '{pname}' has mismatched "
                    "decay_mult.",
                    "net.cpp",
                    **_mismatch(ld, p, "decay_mult", owner, done),
                )
        else:
            owner.has_decay, owner.decay = True, spec.decay_mult
    return owner


def _mismatch(ld: _LayerDef, p: int, what: str, owner: _Owner, done: list[Layer]) -> Any:
    """Where a shared param's multiplier disagrees, and with whom."""
    first = done[owner.layer].name if owner.layer < len(done) else ld.name
    value = _fmt(owner.lr if what == "lr_mult" else owner.decay)
    return {
        "layer": ld.name,
        "layer_index": ld.source_index,
        "field": f"param[{p}].{what}",
        "hint": f"layer '{first}' shares this param with {what}: {value}: use the same value "
        "in both (or leave it out here)",
    }


class _PendingParams(NamedTuple):
    """A layer using named blobs: its Params wait until every sharer has been wired."""

    layer: int
    roles: list[str]
    net_specs: tuple[_Spec, ...]
    layer_specs: tuple[_Spec, ...]
    owners: list[_Owner | None]


def _own_params(
    roles: list[str],
    net_specs: tuple[_Spec, ...],
    layer_specs: tuple[_Spec, ...],
    cache: dict[Any, tuple[Param, ...]],
) -> tuple[Param, ...]:
    """The Params of a layer whose blobs are all anonymous (its own specs are the owners),
    shared with every layer set up the same way."""
    n_blobs = len(roles)
    specs = layer_specs[:n_blobs]
    key = (tuple(roles), len(net_specs), specs)
    found = cache.get(key)
    if found is not None:
        return found
    out: list[Param] = []
    for p in range(n_blobs):
        spec = specs[p] if p < len(specs) else _DEFAULT_SPEC
        net_spec = net_specs[p] if p < len(net_specs) else None
        out.append(
            Param(
                index=p,
                role=roles[p],
                name="",
                lr_mult=spec.lr_mult,
                decay_mult=spec.decay_mult,
                local_lr_mult=net_spec.lr_mult if net_spec is not None else 1.0,
                explicit=net_spec is not None,
                explicit_lr_mult=net_spec is not None and net_spec.has_lr_mult,
            )
        )
    params = tuple(out)
    cache[key] = params
    return params


def _shared_params(pp: _PendingParams, layers: list[Layer]) -> tuple[Param, ...]:
    out: list[Param] = []
    for p, owner in enumerate(pp.owners):
        spec = pp.layer_specs[p] if p < len(pp.layer_specs) else _DEFAULT_SPEC
        net_spec = pp.net_specs[p] if p < len(pp.net_specs) else None
        src: tuple[int, int] | None = None
        if owner is None:
            lr, decay = spec.lr_mult, spec.decay_mult
        else:
            lr, decay = owner.lr, owner.decay
            if owner.layer != pp.layer or owner.param != p:
                src = (owner.layer, owner.param)
        out.append(
            Param(
                index=p,
                role=pp.roles[p],
                name=spec.name,
                lr_mult=lr,
                decay_mult=decay,
                local_lr_mult=net_spec.lr_mult if net_spec is not None else 1.0,
                explicit=net_spec is not None,
                explicit_lr_mult=net_spec is not None and net_spec.has_lr_mult,
                shared_from=src,
                shared_from_name=None if src is None else layers[src[0]].name,
            )
        )
    return tuple(out)


def analyze_net(
    net: Any,
    phase: str = "TRAIN",
    stages: Sequence[str] = (),
    level: int = 0,
    param_counts: Mapping[str, int] | None = None,
    registered_types: Iterable[str] | None = None,
) -> Backward:
    """``build_graph`` then ``analyze``."""
    from rewriter.caffe.netinit import analyze

    return analyze(build_graph(net, phase, stages, level, param_counts, registered_types))
