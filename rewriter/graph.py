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
backward decision itself lives in :mod:`rewriter.netinit`.

The result is a small immutable model: ``graph.layers``, ``graph.layer("conv1")``,
``graph.blobs["conv1"].consumers``, ``graph.outputs``...
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError
from rewriter.layer_params import (
    FILLER_TYPES,
    auto_top_count,
    fillers_used,
    is_loss_layer,
    param_blob_count,
    param_roles,
)
from rewriter.layer_params import allow_force_backward as _allow_force

if TYPE_CHECKING:
    from rewriter.netinit import Backward

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
    "build_graph",
    "upgrade_net_message",
    "v0_to_v1_message",
    "v1_to_v2_message",
]

#: Name Caffe gives to tops it allocates itself (``AutoTopBlobs``).
AUTOMATIC_TOP = "(automatic)"

_PHASES = {0: "TRAIN", 1: "TEST"}


class CaffeError(RewriterError):
    """Caffe would stop here: ``message`` is the text of its FATAL line (after ``] ``)."""

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.message = message
        #: source file of the FATAL line, e.g. ``net.cpp`` or ``insert_splits.cpp``
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass(frozen=True)
class GraphWarning:
    """Something Caffe would accept (or refuse only in some builds) that deserves a look."""

    kind: str
    message: str
    layer: str | None = None
    index: int | None = None


@dataclass(frozen=True)
class Param:
    """One learnable blob of a layer, as ``Net::Init`` / ``AppendParam`` see it."""

    index: int
    role: str
    #: ``param { name }`` ("" when anonymous)
    name: str
    #: effective net-level lr_mult (the owner's entry after sharing; what the solver uses)
    lr_mult: float
    #: effective net-level decay_mult
    decay_mult: float
    #: lr_mult Net::Init tests for ``need_backward``: the layer's own param block, else 1
    local_lr_mult: float
    #: the net's LayerParameter had a ``param`` block for this blob
    explicit: bool
    #: that block set lr_mult itself
    explicit_lr_mult: bool
    #: (owner layer index, owner param index) when the blob is shared by name, else None
    shared_from: tuple[int, int] | None = None
    shared_from_name: str | None = None

    @property
    def updates(self) -> bool:
        """The solver applies updates to this blob (effective lr_mult != 0)."""
        return self.lr_mult != 0


@dataclass(frozen=True)
class Layer:
    """A layer of the initialised net, in Caffe's order (inserted splits included)."""

    name: str
    type: str
    index: int
    #: index in the (upgraded) message's ``layer`` list; None for inserted splits
    source_index: int | None
    inserted_split: bool
    #: blob names as Caffe wired them (after split renaming)
    bottoms: tuple[str, ...]
    #: blob names, including Caffe's automatic tops (``"(automatic)"``)
    tops: tuple[str, ...]
    #: per top, ``Layer::loss(top)`` after SetUp (0 = not a loss)
    loss_weights: tuple[float, ...]
    #: ``propagate_down`` as written (empty when not given)
    propagate_down: tuple[bool, ...]
    params: tuple[Param, ...]
    #: ``AllowForceBackward`` per bottom
    allow_force_backward: tuple[bool, ...]
    #: BatchNorm only: ``batch_norm_param.use_global_stats`` when set, else None
    use_global_stats: bool | None = None
    #: Caffe blob ids of bottoms / tops (in-place tops share the bottom's id)
    bottom_ids: tuple[int, ...] = field(repr=False, default=())
    top_ids: tuple[int, ...] = field(repr=False, default=())

    @property
    def in_place(self) -> bool:
        return any(j < len(self.bottoms) and t == self.bottoms[j] for j, t in enumerate(self.tops))


@dataclass(frozen=True)
class Blob:
    """A Caffe blob: created by ``producer``, rewritten in place by ``writers``."""

    id: int
    name: str
    producer: int | None
    #: layers that rewrite the blob in place, in net order
    writers: tuple[int, ...]
    #: layers reading the blob as a bottom, in net order (in-place writers included)
    consumers: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    net_name: str
    phase: str
    #: effective NetState stages (the file's ``state.stage`` first, then the caller's)
    stages: tuple[str, ...]
    level: int
    force_backward: bool
    layers: tuple[Layer, ...]
    #: blobs by Caffe id (automatic tops included)
    blob_list: tuple[Blob, ...] = field(repr=False)
    #: net inputs (tops of Input layers), in order
    inputs: tuple[str, ...]
    #: net outputs, sorted by name like Caffe's ``std::set``
    outputs: tuple[str, ...]
    warnings: tuple[GraphWarning, ...] = ()
    #: named blobs (automatic tops excluded), by name
    blobs: Mapping[str, Blob] = field(default_factory=dict, repr=False, compare=False)
    _by_name: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.blobs:
            named = {b.name: b for b in self.blob_list if b.name != AUTOMATIC_TOP}
            object.__setattr__(self, "blobs", MappingProxyType(named))
        if not self._by_name:
            index: dict[str, int] = {}
            for layer in self.layers:
                index.setdefault(layer.name, layer.index)
            object.__setattr__(self, "_by_name", MappingProxyType(index))

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
        from rewriter.netinit import analyze

        return analyze(self)


# --------------------------------------------------------------------------- message views


def _has(msg: Any, name: str) -> bool:
    return bool(msg.HasField(name))


@dataclass(frozen=True)
class _Rule:
    phase: str | None
    min_level: int | None
    max_level: int | None
    stages: tuple[str, ...]
    not_stages: tuple[str, ...]

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


@dataclass
class _Spec:
    """A ParamSpec as Caffe reads it."""

    name: str = ""
    lr_mult: float = 1.0
    has_lr_mult: bool = False
    decay_mult: float = 1.0
    has_decay_mult: bool = False
    permissive: bool = False

    @staticmethod
    def of(msg: Any) -> _Spec:
        return _Spec(
            name=str(msg.name),
            lr_mult=float(msg.lr_mult),
            has_lr_mult=_has(msg, "lr_mult"),
            decay_mult=float(msg.decay_mult),
            has_decay_mult=_has(msg, "decay_mult"),
            permissive=int(msg.share_mode) == 1,
        )


class _LayerDef:
    """Mutable working copy of one LayerParameter (what FilterNet/InsertSplits pass on)."""

    __slots__ = (
        "name", "type", "bottoms", "tops", "loss_weights", "params", "propagate_down", "msg",
        "source_index", "inserted_split", "all_tops", "bottom_ids", "top_ids", "loss",
        "n_blobs", "layer_specs", "owners", "shared",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        type: str,
        bottoms: list[str],
        tops: list[str],
        loss_weights: list[float],
        params: list[_Spec],
        propagate_down: list[bool],
        msg: Any,
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
        self.msg = msg  # the LayerParameter (None for inserted splits)
        self.source_index = source_index
        self.inserted_split = inserted_split
        # filled in by build_graph's wiring loop
        self.all_tops: tuple[str, ...] = ()
        self.bottom_ids: tuple[int, ...] = ()
        self.top_ids: tuple[int, ...] = ()
        self.loss: tuple[float, ...] = ()
        self.n_blobs = 0
        self.layer_specs: list[_Spec] = params
        self.owners: list[int] = []
        self.shared: list[tuple[int, int] | None] = []


_NO_SPECS: list[_Spec] = []


def _layer_def(msg: Any, index: int) -> _LayerDef:
    params = msg.param
    loss_weight = msg.loss_weight
    propagate_down = msg.propagate_down
    return _LayerDef(
        msg.name,
        msg.type,
        list(msg.bottom),
        list(msg.top),
        [float(w) for w in loss_weight] if loss_weight else [],
        [_Spec.of(p) for p in params] if params else _NO_SPECS,
        [bool(p) for p in propagate_down] if propagate_down else [],
        msg,
        index,
    )


# --------------------------------------------------------------------------- legacy upgrade

# V1LayerParameter.LayerType -> V2 type string (upgrade_proto.cpp: UpgradeV1LayerType)
_V1_TYPES: dict[str, str] = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}  # fmt: skip

# V0LayerParameter.type -> V1 enum name (upgrade_proto.cpp: UpgradeV0LayerType)
_V0_TYPES: dict[str, str] = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}  # fmt: skip


def _enum_name(msg: Any, field_name: str) -> str:
    fd = msg.DESCRIPTOR.fields_by_name[field_name]
    value = int(getattr(msg, field_name))
    ev = fd.enum_type.values_by_number.get(value)
    return str(ev.name) if ev is not None else str(value)


def _enum_value(msg: Any, field_name: str, name: str) -> int:
    fd = msg.DESCRIPTOR.fields_by_name[field_name]
    return int(fd.enum_type.values_by_name[name].number)


def v0_to_v1_message(net: Any) -> Any:
    """In-memory ``UpgradeV0Net``: V0 ``layers { layer { ... } }`` -> V1 ``layers``.

    Covers what Net::Init depends on (names, types, wiring, padding layers, blobs_lr,
    weight_decay, bias terms, fillers and the common geometry fields). The comment-preserving
    text upgrader is a separate tool.
    """
    out = type(net)()
    if _has(net, "name"):
        out.name = net.name
    # UpgradeV0PaddingLayers: drop "padding" layers, give their pad to the reading conv/pool.
    last_top: dict[str, int] = {name: -1 for name in net.input}
    kept: list[Any] = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type != "padding":
            kept.append(type(conn)())
            kept[-1].CopyFrom(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise CaffeError(f"Unknown blob input {blob} to layer {j}", "upgrade_proto.cpp")
            src = last_top[blob]
            if src == -1:
                continue
            source = net.layers[src]
            if source.layer.type == "padding":
                if v0.type not in ("conv", "pool"):
                    raise CaffeError(
                        'Check failed: (layer_param.type() == "conv") || (layer_param.type() '
                        '== "pool") Padding layer input to non-convolutional / non-pooling '
                        f"layer type {v0.type}",
                        "upgrade_proto.cpp",
                    )
                kept[-1].layer.pad = source.layer.pad
                kept[-1].bottom[j] = source.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    for conn in kept:
        new = out.layers.add()
        new.bottom.extend(conn.bottom)
        new.top.extend(conn.top)
        if not conn.HasField("layer"):
            continue
        v0 = conn.layer
        if _has(v0, "name"):
            new.name = v0.name
        kind = str(v0.type)
        if _has(v0, "type"):
            if kind not in _V0_TYPES:
                raise CaffeError(f"Unknown layer name: {kind}", "upgrade_proto.cpp")
            new.type = _enum_value(new, "type", _V0_TYPES[kind])
        for b in v0.blobs:
            new.blobs.add().CopyFrom(b)
        new.blobs_lr.extend(v0.blobs_lr)
        new.weight_decay.extend(v0.weight_decay)
        sub = {"conv": "convolution_param", "innerproduct": "inner_product_param"}.get(kind)
        if sub is not None:
            target = getattr(new, sub)
            if _has(v0, "num_output"):
                target.num_output = v0.num_output
            if _has(v0, "biasterm"):
                target.bias_term = v0.biasterm
            if _has(v0, "weight_filler"):
                target.weight_filler.CopyFrom(v0.weight_filler)
            if _has(v0, "bias_filler"):
                target.bias_filler.CopyFrom(v0.bias_filler)
        if kind == "conv":
            cp = new.convolution_param
            if _has(v0, "pad"):
                cp.pad.append(v0.pad)
            if _has(v0, "kernelsize"):
                cp.kernel_size.append(v0.kernelsize)
            if _has(v0, "stride"):
                cp.stride.append(v0.stride)
            if _has(v0, "group"):
                cp.group = v0.group
        elif kind == "pool":
            pp = new.pooling_param
            if _has(v0, "pad"):
                pp.pad = v0.pad
            if _has(v0, "kernelsize"):
                pp.kernel_size = v0.kernelsize
            if _has(v0, "stride"):
                pp.stride = v0.stride
            if _has(v0, "pool"):
                pp.pool = int(v0.pool)
        elif kind == "dropout" and _has(v0, "dropout_ratio"):
            new.dropout_param.dropout_ratio = v0.dropout_ratio
        elif kind == "lrn":
            for name in ("local_size", "alpha", "beta", "k"):
                if _has(v0, name):
                    setattr(new.lrn_param, name, getattr(v0, name))
        elif kind == "concat" and _has(v0, "concat_dim"):
            new.concat_param.concat_dim = v0.concat_dim
        elif kind == "hdf5_output" and _has(v0, "hdf5_output_param"):
            new.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
    out.input.extend(net.input)
    out.input_dim.extend(net.input_dim)
    if _has(net, "force_backward"):
        out.force_backward = net.force_backward
    return out


def v1_to_v2_message(net: Any) -> Any:
    """In-memory ``UpgradeV1Net``: V1 ``layers`` (enum types, blobs_lr...) -> V2 ``layer``.

    Mirrors upgrade_proto.cpp: ``type`` enum -> type string, ``param`` names, ``blob_share_mode``
    -> ``param.share_mode``, ``blobs_lr`` -> ``param.lr_mult``, ``weight_decay`` ->
    ``param.decay_mult``, ``loss_weight``, include/exclude, and every ``*_param`` /
    ``transform_param`` sub-message copied by name. V1 has no ``propagate_down``. Any ``layer``
    entries already present are dropped, as Caffe does.
    """
    out = type(net)()
    out.CopyFrom(net)
    out.ClearField("layers")
    out.ClearField("layer")
    v2_fields = out.layer.add().DESCRIPTOR.fields_by_name
    out.ClearField("layer")
    for v1 in net.layers:
        new = out.layer.add()
        new.bottom.extend(v1.bottom)
        new.top.extend(v1.top)
        if _has(v1, "name"):
            new.name = v1.name
        for rule in v1.include:
            new.include.add().CopyFrom(rule)
        for rule in v1.exclude:
            new.exclude.add().CopyFrom(rule)
        if _has(v1, "type"):
            enum_name = _enum_name(v1, "type")
            if enum_name not in _V1_TYPES:
                raise CaffeError(
                    f"Unknown V1LayerParameter layer type: {int(v1.type)}", "upgrade_proto.cpp"
                )
            new.type = _V1_TYPES[enum_name]
        for b in v1.blobs:
            new.blobs.add().CopyFrom(b)

        def spec(i: int, new: Any = new) -> Any:
            while len(new.param) <= i:
                new.param.add()
            return new.param[i]

        for i, name in enumerate(v1.param):
            spec(i).name = name
        for i, mode in enumerate(v1.blob_share_mode):
            spec(i).share_mode = int(mode)
        for i, lr in enumerate(v1.blobs_lr):
            spec(i).lr_mult = lr
        for i, decay in enumerate(v1.weight_decay):
            spec(i).decay_mult = decay
        new.loss_weight.extend(v1.loss_weight)
        for fd, value in v1.ListFields():
            name = fd.name
            if (name.endswith("_param") and name in v2_fields) and fd.message_type is not None:
                getattr(new, name).CopyFrom(value)
    return out


def _upgrade_inputs(net: Any) -> Any:
    """``UpgradeNetInput``: legacy ``input`` + ``input_dim``/``input_shape`` -> Input layer."""
    out = type(net)()
    out.CopyFrom(net)
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        if has_shape and len(net.input_shape) < len(net.input):
            raise CaffeError(
                "Exactly one input_shape must be specified per input.", "upgrade_proto.cpp"
            )
        if has_dim and not has_shape and len(net.input_dim) < 4 * len(net.input):
            raise CaffeError("Incorrect input blob dimension specifications.", "upgrade_proto.cpp")
        out.ClearField("layer")
        layer = out.layer.add()
        layer.name = "input"
        layer.type = "Input"
        for i, blob in enumerate(net.input):
            layer.top.append(blob)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i : 4 * i + 4])
        for old in net.layer:
            out.layer.add().CopyFrom(old)
    out.ClearField("input")
    out.ClearField("input_shape")
    out.ClearField("input_dim")
    return out


MIXED_LAYER_FORMATS = (
    "Refusing to upgrade inconsistent NetParameter input; the definition includes both 'layer' "
    "and 'layers' fields. The current format defines 'layer' fields with string type like "
    "layer { type: 'Layer' ... } and not layers { type: LAYER ... }. Manually switch the "
    "definition to 'layer' format to continue."
)


def upgrade_net_message(net: Any) -> Any:
    """``UpgradeNetAsNeeded`` in memory: returns the V2 view Caffe would initialise.

    Applies V0 -> V1, V1 -> V2, legacy inputs -> ``Input`` layer and the BatchNorm upgrade
    (exactly three param blocks -> lr_mult 0 / decay_mult 0). The argument is not modified;
    when nothing needs upgrading it is returned as is.
    """
    if len(net.layers) > 0 and len(net.layer) > 0:
        # Caffe refuses such a file rather than dropping one of the two lists.
        raise CaffeError(MIXED_LAYER_FORMATS, "upgrade_proto.cpp")
    if any(layer.HasField("layer") for layer in net.layers):
        # V0 data layers carry source/batchsize/cropsize... that only the full upgrade (the port
        # of upgrade_proto.cpp) moves into data_param/transform_param; shapes need them.
        # It refuses, with Caffe's own CHECK text, what Caffe refuses.
        from .upgrade import upgrade_net_message_caffe

        return upgrade_net_message_caffe(net).message
    if len(net.layers) > 0:
        net = v1_to_v2_message(net)
    if len(net.input) > 0:
        net = _upgrade_inputs(net)
    bn = [i for i, layer in enumerate(net.layer) if layer.type == "BatchNorm"]
    if any(len(net.layer[i].param) == 3 for i in bn):
        copy = type(net)()
        copy.CopyFrom(net)
        for i in bn:
            layer = copy.layer[i]
            if len(layer.param) == 3:
                for p in layer.param:
                    p.lr_mult = 0.0
                    p.decay_mult = 0.0
        net = copy
    return net


# --------------------------------------------------------------------------- Net::Init steps


def _fmt(value: float) -> str:
    """A number as glog prints it (``operator<<``: 6 significant digits)."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".6g")


def _filter_net(
    net: Any, phase: str, level: int, stages: frozenset[str]
) -> tuple[list[_LayerDef], list[int]]:
    """``Net::FilterNet``: the layers whose include/exclude rules the NetState meets."""
    kept: list[_LayerDef] = []
    excluded: list[int] = []
    for i, msg in enumerate(net.layer):
        raw_include, raw_exclude = msg.include, msg.exclude
        if not raw_include and not raw_exclude:
            kept.append(_layer_def(msg, i))
            continue
        include = [_Rule.of(r) for r in raw_include]
        exclude = [_Rule.of(r) for r in raw_exclude]
        if include and exclude:
            raise CaffeError(
                "Check failed: layer_param.include_size() == 0 || "
                "layer_param.exclude_size() == 0 Specify either include rules or exclude "
                "rules; not both.",
                "net.cpp",
            )
        included = not include
        if included and any(r.met_by(phase, level, stages) for r in exclude):
            included = False
        if not included and any(r.met_by(phase, level, stages) for r in include):
            included = True
        if included:
            kept.append(_layer_def(msg, i))
        else:
            excluded.append(i)
    return kept, excluded


def _insert_splits(layers: list[_LayerDef]) -> list[_LayerDef]:
    """``InsertSplits``: a Split layer after every top that is read more than once."""
    last_top: dict[str, tuple[int, int]] = {}
    sources: list[list[tuple[int, int]]] = []
    reads: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(layers):
        srcs: list[tuple[int, int]] = []
        for j, blob in enumerate(layer.bottoms):
            src = last_top.get(blob)
            if src is None:
                raise CaffeError(
                    f"Unknown bottom blob '{blob}' (layer '{layer.name}', bottom index {j})",
                    "insert_splits.cpp",
                )
            srcs.append(src)
            reads[src] = reads.get(src, 0) + 1
        sources.append(srcs)
        for j, blob in enumerate(layer.tops):
            last_top[blob] = (i, j)
        for j in range(min(len(layer.loss_weights), len(layer.tops))):
            src = last_top[layer.tops[j]]
            loss_weight[src] = layer.loss_weights[j]
            if loss_weight[src]:
                reads[src] = reads.get(src, 0) + 1
    out: list[_LayerDef] = []
    next_split_top: dict[tuple[int, int], int] = {}
    for i, layer in enumerate(layers):
        out.append(layer)  # the filtered defs are fresh objects: rewrite them in place
        bottoms = layer.bottoms
        for j, src in enumerate(sources[i]):
            if reads[src] > 1:
                k = next_split_top.get(src, 0)
                next_split_top[src] = k + 1
                bottoms[j] = f"{bottoms[j]}_{layers[src[0]].name}_{src[1]}_split_{k}"
        for j, blob in enumerate(layer.tops):
            count = reads.get((i, j), 0)
            if count <= 1:
                continue
            weight = loss_weight.get((i, j), 0.0)
            base = f"{blob}_{layer.name}_{j}_split"
            out.append(
                _LayerDef(
                    name=base,
                    type="Split",
                    bottoms=[blob],
                    tops=[f"{base}_{k}" for k in range(count)],
                    loss_weights=([weight] + [0.0] * (count - 1)) if weight else [],
                    params=[],
                    propagate_down=[],
                    msg=None,
                    source_index=None,
                    inserted_split=True,
                )
            )
            if weight:
                layer.loss_weights = []
                next_split_top[(i, j)] = next_split_top.get((i, j), 0) + 1
    return out


def _use_global_stats(ld: _LayerDef) -> bool | None:
    if ld.type != "BatchNorm" or ld.msg is None:
        return None
    bp = ld.msg.batch_norm_param
    return bool(bp.use_global_stats) if _has(bp, "use_global_stats") else None


def _registry_error(layer_type: str, registered: Iterable[str]) -> CaffeError:
    known = ", ".join(sorted(registered))
    return CaffeError(
        "Check failed: registry.count(type) == 1 (0 vs. 1) Unknown layer type: "
        f"{layer_type} (known types: {known})",
        "layer_factory.hpp",
    )


@dataclass
class _Owner:
    """A learnable blob (``learnable_params_`` entry) and its net-level multipliers."""

    layer: int
    param: int
    lr: float
    has_lr: bool
    decay: float
    has_decay: bool


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects.

    Building a graph allocates a few objects per layer and frees none; with 100k layers the
    collector would rescan the growing heap over and over (quadratic time). Nothing here makes
    reference cycles, so pausing it is safe; its previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            settle_survivors()
            gc.enable()


def settle_survivors() -> None:
    """File every tracked object as old (``gc.freeze()`` + ``gc.unfreeze()``: two list splices,
    no scan), so the objects a paused bulk step made are not all scanned again by the next
    young collections: with 100k layers that deferred work cost ``rewriter explain`` 6 of its
    13 seconds. They are still collected by the next regular full collection. Skipped when the
    process uses ``gc.freeze`` itself (as rewriter.apply.bulk does)."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def build_graph(
    net: Any,
    phase: str = "TRAIN",
    stages: Sequence[str] = (),
    level: int = 0,
    param_counts: Mapping[str, int] | None = None,
    registered_types: Iterable[str] | None = None,
) -> Graph:
    """Wire ``net`` exactly as ``caffe::Net<float>(file, phase, level, &stages)`` does.

    ``net`` is a ``caffe.NetParameter`` message (V0/V1 nets and legacy inputs are upgraded in
    memory first). ``param_counts`` gives the number of learnable blobs of layer types this
    module does not know (default: as many as the layer has ``param`` blocks, with a warning);
    it also overrides known types. With ``registered_types`` (e.g.
    ``layer_params.ORACLE_BUILD_LAYER_TYPES``), a layer type outside it raises Caffe's
    "Unknown layer type" error, as a build without that layer would.

    Raises :class:`CaffeError` with Caffe's FATAL text where Caffe would stop.
    """
    with gc_paused():
        return _build_graph(net, phase, stages, level, param_counts, registered_types)


def _build_graph(
    net: Any,
    phase: str,
    stages: Sequence[str],
    level: int,
    param_counts: Mapping[str, int] | None,
    registered_types: Iterable[str] | None,
) -> Graph:
    if phase not in ("TRAIN", "TEST"):
        raise ValueError(f"phase must be TRAIN or TEST, not {phase!r}")
    net = upgrade_net_message(net)
    file_stages = tuple(net.state.stage) if _has(net, "state") else ()
    all_stages = file_stages + tuple(stages)
    filtered, _ = _filter_net(net, phase, level, frozenset(all_stages))
    layers = _insert_splits(filtered)
    registry = None if registered_types is None else frozenset(registered_types)
    counts = dict(param_counts or {})

    warnings: list[GraphWarning] = []
    blob_names: list[str] = []
    blob_producer: list[int] = []
    blob_writers: dict[int, list[int]] = {}
    blob_consumers: list[list[int]] = []
    name_to_id: dict[str, int] = {}
    available: set[str] = set()
    inputs: list[str] = []
    owners: list[_Owner] = []
    owner_by_name: dict[str, int] = {}
    unknown: dict[str, list[int]] = {}

    for li, ld in enumerate(layers):
        bottoms = ld.bottoms
        num_bottoms = len(bottoms)
        if ld.propagate_down and len(ld.propagate_down) != num_bottoms:
            raise CaffeError(
                "Check failed: layer_param.propagate_down_size() == layer_param.bottom_size() "
                f"({len(ld.propagate_down)} vs. {num_bottoms}) propagate_down param must "
                "be specified either 0 or bottom_size times",
                "net.cpp",
            )
        if registry is not None and ld.type not in registry:
            raise _registry_error(ld.type, registry)
        bottom_ids: list[int] = []
        for j, blob in enumerate(bottoms):
            if blob not in available:
                raise CaffeError(
                    f"Unknown bottom blob '{blob}' (layer '{ld.name}', bottom index {j})",
                    "net.cpp",
                )
            blob_id = name_to_id[blob]
            available.discard(blob)
            bottom_ids.append(blob_id)
            blob_consumers[blob_id].append(li)
        top_ids: list[int] = []
        for j, blob in enumerate(ld.tops):
            if j < num_bottoms and blob == bottoms[j]:
                blob_id = name_to_id[blob]
                blob_writers.setdefault(blob_id, []).append(li)
            elif blob in name_to_id:
                raise CaffeError(f"Top blob '{blob}' produced by multiple sources.", "net.cpp")
            else:
                blob_id = len(blob_names)
                blob_names.append(blob)
                blob_producer.append(li)
                blob_consumers.append([])
                name_to_id[blob] = blob_id
                if ld.type == "Input":
                    inputs.append(blob)
            top_ids.append(blob_id)
            available.add(blob)
        tops = ld.tops
        n_auto = auto_top_count(ld.type) - len(tops)
        if n_auto > 0:
            tops = tops + [AUTOMATIC_TOP] * n_auto
            for _ in range(n_auto):
                top_ids.append(len(blob_names))
                blob_names.append(AUTOMATIC_TOP)
                blob_producer.append(li)
                blob_consumers.append([])
        ld.all_tops = tuple(tops)
        ld.bottom_ids = tuple(bottom_ids)
        ld.top_ids = tuple(top_ids)

        # ---- Layer::SetUp: LayerSetUp (fillers, BatchNorm specs), then SetLossWeights
        msg = ld.msg
        known = param_blob_count(ld.type, msg, num_bottoms) if msg is not None else 0
        if ld.type in counts:
            n_blobs = counts[ld.type]
        elif known is not None:
            n_blobs = known
            if msg is not None:
                for filler in fillers_used(ld.type, msg, num_bottoms):
                    if filler not in FILLER_TYPES:
                        raise CaffeError(
                            f"Check failed: false Unknown filler name: {filler}", "filler.hpp"
                        )
        else:
            n_blobs = len(ld.params)
            unknown.setdefault(ld.type, []).append(li)
        layer_specs = ld.params  # the layer's own copy of its LayerParameter
        if ld.type == "BatchNorm" and ld.type not in counts:
            layer_specs = list(layer_specs)
            for i in range(n_blobs):
                if len(layer_specs) == i:
                    layer_specs.append(_Spec(lr_mult=0.0, has_lr_mult=True))
                elif layer_specs[i].lr_mult != 0:
                    raise CaffeError(
                        "Check failed: this->layer_param_.param(i).lr_mult() == 0.f "
                        f"({_fmt(layer_specs[i].lr_mult)} vs. 0) Cannot configure batch "
                        "normalization statistics as layer parameters.",
                        "batch_norm_layer.cpp",
                    )
        weights = ld.loss_weights
        if not weights and is_loss_layer(ld.type):
            weights = [1.0]
        if weights:
            if len(weights) != len(tops):
                raise CaffeError(
                    f"Check failed: top.size() == num_loss_weights ({len(tops)} vs. "
                    f"{len(weights)}) loss_weight must be unspecified or specified once per "
                    "top blob.",
                    "layer.hpp",
                )
            ld.loss = tuple(weights)
        else:
            ld.loss = (0.0,) * len(tops)

        # ---- parameters (Net::Init + AppendParam)
        if len(ld.params) > n_blobs:
            raise CaffeError(
                f"Check failed: param_size <= num_param_blobs ({len(ld.params)} vs. "
                f"{n_blobs}) Too many params specified for layer {ld.name}",
                "net.cpp",
            )
        ld.n_blobs = n_blobs
        ld.layer_specs = layer_specs
        for p in range(n_blobs):
            spec = layer_specs[p] if p < len(layer_specs) else _DEFAULT_SPEC
            pname = spec.name
            if not pname or pname not in owner_by_name:
                if pname:
                    owner_by_name[pname] = len(owners)
                ld.owners.append(len(owners))
                ld.shared.append(None)
                owners.append(
                    _Owner(li, p, spec.lr_mult, spec.has_lr_mult, spec.decay_mult,
                           spec.has_decay_mult)
                )  # fmt: skip
                continue
            oi = owner_by_name[pname]
            owner = owners[oi]
            ld.owners.append(oi)
            ld.shared.append((owner.layer, owner.param))
            if spec.has_lr_mult:
                if owner.has_lr:
                    if spec.lr_mult != owner.lr:
                        raise CaffeError(
                            "Check failed: param_spec->lr_mult() == "
                            f"params_lr_[learnable_param_id] ({_fmt(spec.lr_mult)} vs. "
                            f"{_fmt(owner.lr)}) Shared param '{pname}' has mismatched lr_mult.",
                            "net.cpp",
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
                        )
                else:
                    owner.has_decay, owner.decay = True, spec.decay_mult

    for layer_type, where in unknown.items():
        first = layers[where[0]]
        listed = ", ".join(layers[i].name for i in where[:5]) + (", ..." if len(where) > 5 else "")
        warnings.append(
            GraphWarning(
                "unknown-layer-type",
                f"type '{layer_type}' ({len(where)} layer(s): {listed}) is unknown to BVLC "
                "Caffe; each is assumed to have one parameter blob per param block (pass "
                f"param_counts={{'{layer_type}': N}} to override)",
                first.name,
                where[0],
            )
        )
    out_layers: list[Layer] = []
    for li, ld in enumerate(layers):
        params: tuple[Param, ...] = ()
        if ld.n_blobs:
            params = _params_of(ld, owners, layers)
        out_layers.append(
            Layer(
                ld.name,
                ld.type,
                li,
                ld.source_index,
                ld.inserted_split,
                tuple(ld.bottoms),
                ld.all_tops,
                ld.loss,
                tuple(ld.propagate_down),
                params,
                _allow_force_all(ld.type, len(ld.bottoms)),
                _use_global_stats(ld),
                ld.bottom_ids,
                ld.top_ids,
            )
        )
    no_writers: tuple[int, ...] = ()
    blob_list = tuple(
        Blob(
            i,
            blob_names[i],
            blob_producer[i],
            tuple(blob_writers[i]) if i in blob_writers else no_writers,
            tuple(blob_consumers[i]),
        )
        for i in range(len(blob_names))
    )
    return Graph(
        net_name=str(net.name),
        phase=phase,
        stages=all_stages,
        level=level,
        force_backward=bool(net.force_backward),
        layers=tuple(out_layers),
        blob_list=blob_list,
        inputs=tuple(inputs),
        outputs=tuple(sorted(available)),
        warnings=tuple(warnings),
    )


_DEFAULT_SPEC = _Spec()
_ALLOW_CACHE: dict[tuple[str, int], tuple[bool, ...]] = {}


def _allow_force_all(layer_type: str, num_bottoms: int) -> tuple[bool, ...]:
    key = (layer_type, num_bottoms)
    flags = _ALLOW_CACHE.get(key)
    if flags is None:
        flags = tuple(_allow_force(layer_type, j) for j in range(num_bottoms))
        if len(_ALLOW_CACHE) < 4096:
            _ALLOW_CACHE[key] = flags
    return flags


def _params_of(ld: _LayerDef, owners: list[_Owner], layers: list[_LayerDef]) -> tuple[Param, ...]:
    n_blobs = ld.n_blobs
    roles = (
        param_roles(ld.type, ld.msg, len(ld.bottoms), n_blobs)
        if ld.msg is not None
        else [f"param {i}" for i in range(n_blobs)]
    )
    out: list[Param] = []
    for p in range(n_blobs):
        net_spec = ld.params[p] if p < len(ld.params) else None
        owner = owners[ld.owners[p]]
        src = ld.shared[p]
        out.append(
            Param(
                index=p,
                role=roles[p],
                name=ld.layer_specs[p].name if p < len(ld.layer_specs) else "",
                lr_mult=owner.lr,
                decay_mult=owner.decay,
                local_lr_mult=net_spec.lr_mult if net_spec is not None else 1.0,
                explicit=net_spec is not None,
                explicit_lr_mult=net_spec is not None and net_spec.has_lr_mult,
                shared_from=src,
                shared_from_name=None if src is None else layers[src[0]].name,
            )
        )
    return tuple(out)


#: V1 ``LayerType`` enum name -> Caffe's V2 type string (``UpgradeV1LayerType``).
V1_LAYER_TYPES = _V1_TYPES
#: V0 layer type string -> V1 ``LayerType`` enum name (``UpgradeV0LayerParameter``).
V0_LAYER_TYPES = _V0_TYPES
