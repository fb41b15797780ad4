"""Caffe's ``upgrade_proto.cpp`` on messages: legacy nets and solvers as Caffe reads them.

``ReadNetParamsFromTextFileOrDie`` runs ``UpgradeNetAsNeeded`` before ``Net::Init`` sees a net,
so this is part of Caffe's semantics, not of the text upgrade: :func:`upgrade_net_message` is
the in-memory view the graph is built from (V0 -> V1, V1 -> V2, legacy inputs -> ``Input``
layer, the BatchNorm upgrade), :func:`upgrade_net_message_caffe` /
:func:`upgrade_solver_message_caffe` the full port with Caffe's log lines and refusals that the
comment-preserving text upgrade (:mod:`rewriter.upgrade.document`) is checked against.

The V0/V1 layer type tables live here, once, below both the graph and the text upgrade.
"""

from __future__ import annotations

import math
from typing import Any

from rewriter.caffe.errors import CaffeError
from rewriter.errors import RewriterError, did_you_mean
from rewriter.schema.runtime import is_repeated
from rewriter.util.record import Record

__all__ = [
    "MIXED_LAYER_FORMATS",
    "V0_LAYER_TYPES",
    "V1_LAYER_TYPES",
    "MessageUpgrade",
    "Refusal",
    "from_refusal",
    "upgrade_batch_norm",
    "upgrade_net_message",
    "upgrade_net_message_caffe",
    "upgrade_solver_message_caffe",
    "v0_to_v1_message",
    "v1_to_v2_message",
    "with_first_layer",
]


def _has(msg: Any, name: str) -> bool:
    return bool(msg.HasField(name))


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
                raise CaffeError(
                    f"Unknown blob input {blob} to layer {j}",
                    "upgrade_proto.cpp",
                    layer=str(v0.name) if _has(v0, "name") else None,
                    layer_index=i,
                    field="bottom",
                    index=j,
                    hint=did_you_mean(blob, last_top),
                )
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
                raise CaffeError(
                    f"Unknown layer name: {kind}",
                    "upgrade_proto.cpp",
                    layer=str(v0.name) if _has(v0, "name") else None,
                    field="type",
                    hint=did_you_mean(kind, _V0_TYPES),
                )
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
    out = _copy_without(net, ("layers", "layer"))
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
                    f"Unknown V1LayerParameter layer type: {int(v1.type)}",
                    "upgrade_proto.cpp",
                    layer=str(v1.name) if _has(v1, "name") else None,
                    layer_index=len(out.layer) - 1,
                    field="type",
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
    out = _copy_without(net, ("input", "input_shape", "input_dim"))
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        if has_shape and len(net.input_shape) < len(net.input):
            raise CaffeError(
                "Exactly one input_shape must be specified per input.",
                "upgrade_proto.cpp",
                field="input",
                index=len(net.input_shape),
                hint=f"give one input_shape per input ({len(net.input)})",
            )
        if has_dim and not has_shape and len(net.input_dim) < 4 * len(net.input):
            raise CaffeError(
                "Incorrect input blob dimension specifications.",
                "upgrade_proto.cpp",
                field="input_dim",
                hint=f"give 4 input_dim per input ({4 * len(net.input)} in all)",
            )
        alone = len(out.layer) == 0
        layer = out.layer.add() if alone else type(out.layer[0])()
        _fill_input_layer(layer, net)
        if not alone:
            out = with_first_layer(out, layer)
    return out


def _copy_without(net: Any, skip: tuple[str, ...]) -> Any:
    """A copy of ``net`` without the fields in ``skip``. (Copying everything and clearing a
    big list afterwards leaves the cleared list's memory with protobuf until the message
    goes: on a V1 net that was the peak of the whole in-memory upgrade.)"""
    out = type(net)()
    for fd, value in net.ListFields():
        if fd.name in skip:
            continue
        if is_repeated(fd):
            getattr(out, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(out, fd.name).CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out


def with_first_layer(net: Any, layer: Any) -> Any:
    """``net`` (a copy of our own) with ``layer`` in front of its ``layer`` list: in place
    where protobuf can insert, without copying the other layers."""
    if hasattr(net.layer, "insert"):
        net.layer.insert(0, layer)
        return net
    out = type(net)()  # protobuf without RepeatedCompositeContainer.insert
    out.layer.add().CopyFrom(layer)
    out.MergeFrom(net)
    return out


MIXED_LAYER_FORMATS = (
    "Refusing to upgrade inconsistent NetParameter input; the definition includes both 'layer' "
    "and 'layers' fields. The current format defines 'layer' fields with string type like "
    "layer { type: 'Layer' ... } and not layers { type: LAYER ... }. Manually switch the "
    "definition to 'layer' format to continue."
)


def upgrade_net_message(net: Any, *, batch_norm: bool = True) -> Any:
    """``UpgradeNetAsNeeded`` in memory: returns the V2 view Caffe would initialise.

    Applies V0 -> V1, V1 -> V2, legacy inputs -> ``Input`` layer and the BatchNorm upgrade
    (exactly three param blocks -> lr_mult 0 / decay_mult 0). The argument is not modified;
    when nothing needs upgrading it is returned as is.

    ``batch_norm=False`` leaves the BatchNorm param blocks as written (no copy of the whole
    net for them), for readers that take the multipliers elsewhere: the graph applies that
    upgrade to its own param specs, the shape rules read no param block.
    """
    if len(net.layers) > 0 and len(net.layer) > 0:
        # Caffe refuses such a file rather than dropping one of the two lists.
        raise CaffeError(MIXED_LAYER_FORMATS, "upgrade_proto.cpp", field="layers")
    if any(layer.HasField("layer") for layer in net.layers):
        # V0 data layers carry source/batchsize/cropsize... that only the full upgrade (the port
        # of upgrade_proto.cpp) moves into data_param/transform_param; shapes need them.
        # It refuses, with Caffe's own CHECK text, what Caffe refuses.
        return upgrade_net_message_caffe(net).message
    if len(net.layers) > 0:
        net = v1_to_v2_message(net)
    if len(net.input) > 0:
        net = _upgrade_inputs(net)
    if batch_norm and _batch_norm_to_upgrade(net):
        copy = type(net)()
        copy.CopyFrom(net)
        upgrade_batch_norm(copy)
        net = copy
    return net


def _batch_norm_to_upgrade(net: Any) -> list[int]:
    """The BatchNorm layers whose three param blocks ``UpgradeNetBatchNorm`` would change:
    those already at an explicit +0 lr_mult and decay_mult are left out, so a net upgraded
    once (:func:`upgrade_batch_norm`) is not copied again."""
    return [
        i
        for i, layer in enumerate(net.layer)
        if layer.type == "BatchNorm"
        and len(layer.param) == 3
        and not all(_plus_zero(p, "lr_mult") and _plus_zero(p, "decay_mult") for p in layer.param)
    ]


def _plus_zero(spec: Any, name: str) -> bool:
    value = getattr(spec, name)
    return bool(spec.HasField(name)) and value == 0 and math.copysign(1.0, value) > 0


def upgrade_batch_norm(net: Any) -> None:
    """``UpgradeNetBatchNorm`` in place (lr_mult and decay_mult 0 on the three param blocks
    of an old-style BatchNorm), for a caller that owns ``net``: :func:`upgrade_net_message`
    then returns it as is instead of copying the whole net (about 5x the file's size)."""
    for i in _batch_norm_to_upgrade(net):
        for p in net.layer[i].param:
            p.lr_mult = 0.0
            p.decay_mult = 0.0


# ============================================================================ Caffe's tables

#: SolverParameter.SolverType -> type string (upgrade_proto.cpp: UpgradeSolverType)
SOLVER_TYPES: dict[str, str] = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

# UpgradeV0LayerParameter, in Caffe's order: V0 field -> {V0 type: (V1 sub-message, field)}.
# "*" applies to every type; an empty sub-message means a field of the V1 layer itself. The
# third element is the name Caffe uses in "Unknown parameter <name> for layer type <type>".
_V0_FIELDS: tuple[tuple[str, dict[str, tuple[str, str]], str], ...] = (
    ("num_output", {"conv": ("convolution_param", "num_output"),
                    "innerproduct": ("inner_product_param", "num_output")}, "num_output"),
    ("biasterm", {"conv": ("convolution_param", "bias_term"),
                  "innerproduct": ("inner_product_param", "bias_term")}, "biasterm"),
    ("weight_filler", {"conv": ("convolution_param", "weight_filler"),
                       "innerproduct": ("inner_product_param", "weight_filler")}, "weight_filler"),
    ("bias_filler", {"conv": ("convolution_param", "bias_filler"),
                     "innerproduct": ("inner_product_param", "bias_filler")}, "bias_filler"),
    ("pad", {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")}, "pad"),
    ("kernelsize", {"conv": ("convolution_param", "kernel_size"),
                    "pool": ("pooling_param", "kernel_size")}, "kernelsize"),
    ("group", {"conv": ("convolution_param", "group")}, "group"),
    ("stride", {"conv": ("convolution_param", "stride"),
                "pool": ("pooling_param", "stride")}, "stride"),
    ("pool", {"pool": ("pooling_param", "pool")}, "pool"),
    ("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio")}, "dropout_ratio"),
    ("local_size", {"lrn": ("lrn_param", "local_size")}, "local_size"),
    ("alpha", {"lrn": ("lrn_param", "alpha")}, "alpha"),
    ("beta", {"lrn": ("lrn_param", "beta")}, "beta"),
    ("k", {"lrn": ("lrn_param", "k")}, "k"),
    ("source", {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
                "images": ("image_data_param", "source"),
                "window_data": ("window_data_param", "source"),
                "infogain_loss": ("infogain_loss_param", "source")}, "source"),
    ("scale", {"*": ("transform_param", "scale")}, "scale"),
    ("meanfile", {"*": ("transform_param", "mean_file")}, "meanfile"),
    ("batchsize", {"data": ("data_param", "batch_size"),
                   "hdf5_data": ("hdf5_data_param", "batch_size"),
                   "images": ("image_data_param", "batch_size"),
                   "window_data": ("window_data_param", "batch_size")}, "batchsize"),
    ("cropsize", {"*": ("transform_param", "crop_size")}, "cropsize"),
    ("mirror", {"*": ("transform_param", "mirror")}, "mirror"),
    ("rand_skip", {"data": ("data_param", "rand_skip"),
                   "images": ("image_data_param", "rand_skip")}, "rand_skip"),
    ("shuffle_images", {"images": ("image_data_param", "shuffle")}, "shuffle"),
    ("new_height", {"images": ("image_data_param", "new_height")}, "new_height"),
    ("new_width", {"images": ("image_data_param", "new_width")}, "new_width"),
    ("concat_dim", {"concat": ("concat_param", "concat_dim")}, "concat_dim"),
    ("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold")},
     "det_fg_threshold"),
    ("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold")},
     "det_bg_threshold"),
    ("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction")},
     "det_fg_fraction"),
    ("det_context_pad", {"window_data": ("window_data_param", "context_pad")},
     "det_context_pad"),
    ("det_crop_mode", {"window_data": ("window_data_param", "crop_mode")}, "det_crop_mode"),
    ("hdf5_output_param", {"hdf5_output": ("", "hdf5_output_param")}, "hdf5_output_param"),
)  # fmt: skip
_V0_BY_FIELD = {name: (targets, log) for name, targets, log in _V0_FIELDS}
#: V0 fields copied to the V1 layer whatever the type
_V0_DIRECT = ("name", "blobs", "blobs_lr", "weight_decay")
#: V0 fields Caffe's upgrade ignores without a word (nothing in V1 takes them)
_V0_IGNORED = ("new_num", "new_channels")
#: NetParameter fields UpgradeV0Net carries over; it drops every other one
_V0_NET_KEEPS = ("name", "layers", "input", "input_dim", "force_backward")

#: V1 data layer types whose parameters had transformation fields (UpgradeNetDataTransformation)
_DATA_PARAMS = {
    "DATA": "data_param",
    "IMAGE_DATA": "image_data_param",
    "WINDOW_DATA": "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

#: V1LayerParameter fields that become ParamSpec fields, in ParamSpec's field order
_PARAM_SPEC = {
    "param": "name",
    "blob_share_mode": "share_mode",
    "blobs_lr": "lr_mult",
    "weight_decay": "decay_mult",
}
_SPEC_ORDER = ("name", "share_mode", "lr_mult", "decay_mult")

_MIXED = (
    "Refusing to upgrade inconsistent NetParameter input; the definition includes both 'layer' "
    "and 'layers' fields. The current format defines 'layer' fields with string type like "
    "layer { type: 'Layer' ... } and not layers { type: LAYER ... }. Manually switch the "
    "definition to 'layer' format to continue."
)
_SOLVER_BOTH = (
    "Check failed: !solver_param->has_solver_type() || !solver_param->has_type() Failed to "
    "upgrade solver: old solver_type field (enum) and new type field (string) cannot be both "
    "specified in solver proto text."
)
_V0_NOTE = (
    "Note that future Caffe releases will not support V0NetParameter; use "
    "./build/tools/upgrade_net_proto_text for prototxt and ./build/tools/upgrade_net_proto_binary "
    "for model weights upgrade this and any other net protos to the new format."
)


def _v1_types() -> dict[str, str]:
    return _V1_TYPES


def _v0_types() -> dict[str, str]:
    return _V0_TYPES


# ============================================================================ message level


class Refusal(RewriterError):
    """Caffe stops (FATAL / CHECK) or we refuse; ``where`` says which field, for locating it."""

    def __init__(self, message: str, where: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


class MessageUpgrade(Record):
    """The result of Caffe's upgrade on a message.

    ``sources[i]`` is, for layer ``i`` of the upgraded net, the index of the layer it came from
    in the original's ``layers`` (V0/V1) or ``layer`` list; None for the generated Input layer.
    ``notes`` are our own remarks (fields Caffe drops, kept as comments by the text upgrade).
    A Record, not a dataclass: ~1 ms less at every command's start.
    """

    __slots__ = ("message", "log", "sources", "changed", "notes")

    def __init__(
        self,
        message: Any,
        log: list[str],
        sources: list[int | None],
        changed: bool,
        notes: list[str] | None = None,
    ) -> None:
        self.message = message
        self.log = log
        self.sources = sources
        self.changed = changed
        self.notes: list[str] = [] if notes is None else notes


def _copy(msg: Any) -> Any:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


class _PaddingPlan(Record):
    """UpgradeV0PaddingLayers: which connections survive, and the pads / bottoms they take."""

    __slots__ = ("kept", "pad_from", "rewire")

    def __init__(
        self,
        kept: list[int],
        pad_from: dict[int, int],  # conn index -> padding conn index whose pad it takes
        rewire: dict[int, dict[int, str]],  # conn index -> {bottom index: new blob}
    ) -> None:
        self.kept = kept
        self.pad_from = pad_from
        self.rewire = rewire


def v0_padding_plan(net: Any) -> _PaddingPlan:
    """Simulate ``UpgradeV0PaddingLayers`` (Caffe's CHECKs raise :class:`Refusal`)."""
    last_top: dict[str, int] = {name: -1 for name in net.input}
    plan = _PaddingPlan([], {}, {})
    for i, conn in enumerate(net.layers):
        if not conn.HasField("layer"):
            raise Refusal(
                "this V0 net has a 'layers' entry without a nested 'layer' (a V1-style layer): "
                "Caffe's V0 upgrade would keep only its bottoms and tops and drop everything "
                "else; write it as a V0 'layers { layer { ... } }' entry or upgrade the net to "
                "one format first",
                ("layers", i),
            )
        kind = conn.layer.type
        if kind != "padding":
            plan.kept.append(i)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise Refusal(f"Unknown blob input {blob} to layer {j}", ("layers", i, "bottom", j))
            src = last_top[blob]
            if src == -1:
                continue
            source = net.layers[src]
            if source.layer.type != "padding":
                continue
            if kind not in ("conv", "pool"):
                raise Refusal(
                    'Check failed: (layer_param.type() == "conv") || (layer_param.type() == '
                    '"pool") Padding layer input to non-convolutional / non-pooling layer type '
                    f"{kind}",
                    ("layers", i),
                )
            checks = (
                (len(conn.bottom), "layer_connection.bottom_size()",
                 "Conv Layer takes a single blob as input."),
                (len(source.bottom), "source_layer.bottom_size()",
                 "Padding Layer takes a single blob as input."),
                (len(source.top), "source_layer.top_size()",
                 "Padding Layer produces a single blob as output."),
            )  # fmt: skip
            for n, what, text in checks:
                if n != 1:
                    raise Refusal(f"Check failed: {what} == 1 ({n} vs. 1) {text}", ("layers", i))
            plan.pad_from[i] = src
            plan.rewire.setdefault(i, {})[j] = source.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    return plan


def v0_target(field_name: str, v0_type: str) -> tuple[str, str] | None:
    """Where UpgradeV0LayerParameter puts a V0 field for a layer of that V0 type.

    Returns (sub-message, field) with sub-message "" for a field of the V1 layer itself, or None
    when Caffe logs "Unknown parameter ..." (or silently ignores it) and drops the value.
    """
    if field_name in _V0_DIRECT:
        return ("", field_name)
    entry = _V0_BY_FIELD.get(field_name)
    if entry is None:
        return None
    targets = entry[0]
    return targets.get(v0_type) or targets.get("*")


def _v0_unknown(field_name: str, v0_type: str) -> str:
    entry = _V0_BY_FIELD.get(field_name)
    name = entry[1] if entry is not None else field_name
    return f"Unknown parameter {name} for layer type {v0_type}"


def _v0_layer_to_v1(
    conn: Any, pad: int | None, rewire: dict[int, str], v1_cls: type[Any], log: list[str]
) -> tuple[Any, bool]:
    """UpgradeV0LayerParameter on one connection (padding already folded in)."""
    new = v1_cls()
    for j, blob in enumerate(conn.bottom):
        new.bottom.append(rewire.get(j, blob))
    new.top.extend(conn.top)
    v0 = conn.layer
    kind = str(v0.type)
    ok = True
    if v0.HasField("name"):
        new.name = v0.name
    if v0.HasField("type"):
        v1_name = _v0_types().get(kind)
        if v1_name is None:
            raise Refusal(f"Unknown layer name: {kind}", ("v0type",))
        new.type = new.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_name[v1_name].number
    for b in v0.blobs:
        new.blobs.add().CopyFrom(b)
    new.blobs_lr.extend(v0.blobs_lr)
    new.weight_decay.extend(v0.weight_decay)
    for name, _targets, _log in _V0_FIELDS:
        present = v0.HasField(name) or (name == "pad" and pad is not None)
        if not present:
            continue
        target = v0_target(name, kind)
        if target is None:
            log.append(_v0_unknown(name, kind))
            ok = False
            continue
        value = pad if (name == "pad" and pad is not None) else getattr(v0, name)
        sub, fname = target
        container = getattr(new, sub) if sub else new
        fd = container.DESCRIPTOR.fields_by_name[fname]
        if fd.message_type is not None:
            getattr(container, fname).SetInParent()
            getattr(container, fname).CopyFrom(value)
        elif is_repeated(fd):
            getattr(container, fname).append(value)
        else:
            setattr(container, fname, value)
    return new, ok


def _needs_data_upgrade(net: Any) -> bool:
    for layer in net.layers:
        pname = _DATA_PARAMS.get(_enum_name(layer, "type"))
        if pname is None:
            continue
        sub = getattr(layer, pname)
        if any(sub.HasField(f) for f in _TRANSFORM_FIELDS):
            return True
    return False


def _data_upgrade(net: Any) -> None:
    """UpgradeNetDataTransformation, in place (it gives every data layer both sub-messages)."""
    for layer in net.layers:
        pname = _DATA_PARAMS.get(_enum_name(layer, "type"))
        if pname is None:
            continue
        sub = getattr(layer, pname)
        sub.SetInParent()
        layer.transform_param.SetInParent()
        for f in _TRANSFORM_FIELDS:
            if sub.HasField(f):
                setattr(layer.transform_param, f, getattr(sub, f))
                sub.ClearField(f)


def input_upgrade_needed(net: Any) -> bool:
    return len(net.input) > 0


def check_inputs(net: Any) -> None:
    """Refuse legacy inputs Caffe's UpgradeNetInput would read out of range."""
    n = len(net.input)
    if len(net.input_shape) > 0:
        if len(net.input_shape) < n:
            raise Refusal(
                f"Exactly one input_shape must be specified per input ({n} inputs, "
                f"{len(net.input_shape)} input_shape): Caffe's upgrade would read past the end",
                ("input_shape",),
            )
    elif len(net.input_dim) > 0 and len(net.input_dim) < 4 * n:
        raise Refusal(
            f"Incorrect input blob dimension specifications ({n} inputs need {4 * n} input_dim, "
            f"found {len(net.input_dim)}): Caffe's upgrade would read past the end",
            ("input_dim",),
        )


def _input_layer(net: Any, layer_cls: type[Any]) -> Any | None:
    """The Input layer UpgradeNetInput makes, or None (inputs without shapes are just dropped)."""
    if len(net.input_shape) == 0 and len(net.input_dim) == 0:
        return None
    layer = layer_cls()
    _fill_input_layer(layer, net)
    return layer


def _fill_input_layer(layer: Any, net: Any) -> None:
    """Make ``layer`` the Input layer of ``net``'s legacy inputs: one top and one shape per
    ``input``, from ``input_shape`` when given, else four ``input_dim`` each."""
    layer.name = "input"
    layer.type = "Input"
    has_shape = len(net.input_shape) > 0
    for i, blob in enumerate(net.input):
        layer.top.append(blob)
        shape = layer.input_param.shape.add()
        if has_shape:
            shape.CopyFrom(net.input_shape[i])
        else:
            shape.dim.extend(net.input_dim[4 * i : 4 * i + 4])


def bn_upgrade_needed(layer: Any) -> bool:
    return bool(layer.type == "BatchNorm" and len(layer.param) == 3)


def bn_upgrade_layer(layer: Any) -> None:
    for p in layer.param:
        p.lr_mult = 0.0
        p.decay_mult = 0.0


def v0_keeps_input_shape(net: Any) -> bool:
    """A V0 net giving its inputs' shapes only with ``input_shape``: Caffe's UpgradeV0Net drops
    those shapes and UpgradeNetInput then the inputs, leaving layers that read a blob nothing
    produces. The text upgrade keeps them (an ``Input`` layer with that shape) instead."""
    return (
        len(net.input) > 0
        and len(net.input_shape) > 0
        and len(net.input_dim) == 0
        and any(conn.HasField("layer") for conn in net.layers)
    )


def upgrade_net_message_caffe(
    net: Any, param_file: str = "", keep_input_shape: bool = False
) -> MessageUpgrade:
    """``UpgradeNetAsNeeded`` (BVLC master) on a NetParameter message; ``net`` is not modified.

    ``keep_input_shape``: carry a V0 net's ``input_shape`` over (:func:`v0_keeps_input_shape`,
    a deliberate difference of the text upgrade); by default it is dropped as Caffe does, which
    is what ``Net::Init`` sees (``graph.upgrade_net_message``).

    Raises :class:`Refusal` where Caffe stops with a FATAL error, and also (deliberately) for
    inputs Caffe would silently mangle: a net mixing V0 ``layers`` with ``layer``, a V0 net with
    V1-style entries, and legacy inputs with too few shapes or dims.
    """
    log: list[str] = []
    notes: list[str] = []
    changed = False
    n_src = len(net.layers) if len(net.layers) else len(net.layer)
    sources: list[int | None] = list(range(n_src))
    if len(net.layers) and len(net.layer):
        raise Refusal(_MIXED, ("mixed",))
    owned = False  # ``net`` is a copy made here (changed in place from then on)
    if any(conn.HasField("layer") for conn in net.layers):
        changed = True
        log.append(
            f"Attempting to upgrade input file specified using deprecated V0LayerParameter: "
            f"{param_file}"
        )
        plan = v0_padding_plan(net)
        out = type(net)()
        if net.HasField("name"):
            out.name = net.name
        ok = True
        v1_cls = type(net.layers[0])
        for i in plan.kept:
            conn = net.layers[i]
            src = plan.pad_from.get(i)
            pad = int(net.layers[src].layer.pad) if src is not None else None
            try:
                new, layer_ok = _v0_layer_to_v1(conn, pad, plan.rewire.get(i, {}), v1_cls, log)
            except Refusal as r:
                raise Refusal(r.message, ("layers", i, "type")) from None
            ok = ok and layer_ok
            out.layers.add().CopyFrom(new)
        out.input.extend(net.input)
        out.input_dim.extend(net.input_dim)
        keep_shape = keep_input_shape and v0_keeps_input_shape(net)
        if keep_shape:
            out.input_shape.extend(net.input_shape)
        if net.HasField("force_backward"):
            out.force_backward = net.force_backward
        for fd, _value in net.ListFields():
            if keep_shape and fd.name == "input_shape":
                continue
            if fd.name not in _V0_NET_KEEPS:
                notes.append(f"net-level field '{fd.name}' (UpgradeV0Net drops it)")
        if ok:
            log.append("Successfully upgraded file specified using deprecated V0LayerParameter")
        else:
            log.append(
                "Warning: had one or more problems upgrading V0NetParameter to NetParameter "
                "(see above); continuing anyway."
            )
        log.append(_V0_NOTE)
        net, owned = out, True
        sources = [sources[i] for i in plan.kept]
    if _needs_data_upgrade(net):
        changed = True
        log.append(
            "Attempting to upgrade input file specified using deprecated transformation "
            f"parameters: {param_file}"
        )
        if not owned:
            net, owned = _copy(net), True
        _data_upgrade(net)
        log.append(
            "Successfully upgraded file specified using deprecated data transformation parameters."
        )
        log.append(
            "Note that future Caffe releases will only support transform_param messages for "
            "transformation fields."
        )
    if len(net.layers):
        changed = True
        log.append(
            "Attempting to upgrade input file specified using deprecated V1LayerParameter: "
            f"{param_file}"
        )
        try:
            net, owned = v1_to_v2_message(net), True
        except CaffeError as e:
            where = ("v1type",) if e.layer_index is None else ("layers", e.layer_index, "type")
            raise Refusal(e.message, where) from None
        log.append("Successfully upgraded file specified using deprecated V1LayerParameter")
    if input_upgrade_needed(net):
        changed = True
        check_inputs(net)
        log.append(
            f"Attempting to upgrade input file specified using deprecated input fields: "
            f"{param_file}"
        )
        if not owned:
            net, owned = _copy(net), True
        probe = type(net)()
        layer = _input_layer(net, type(probe.layer.add()))
        if layer is not None:
            net = with_first_layer(net, layer)
            sources = [None, *sources]
        net.ClearField("input")
        net.ClearField("input_shape")
        net.ClearField("input_dim")
        log.append("Successfully upgraded file specified using deprecated input fields.")
        log.append(
            "Note that future Caffe releases will only support input layers and not input fields."
        )
    if any(bn_upgrade_needed(layer) for layer in net.layer):
        # Caffe runs (and logs) this step for every such layer, even one already at zero.
        changed = changed or any(
            not (p.HasField(k) and getattr(p, k) == 0)
            for layer in net.layer
            if bn_upgrade_needed(layer)
            for p in layer.param
            for k in ("lr_mult", "decay_mult")
        )
        log.append(f"Attempting to upgrade batch norm layers using deprecated params: {param_file}")
        if not owned:
            net = _copy(net)
        for layer in net.layer:
            if bn_upgrade_needed(layer):
                bn_upgrade_layer(layer)
        log.append("Successfully upgraded batch norm layers using deprecated params.")
    return MessageUpgrade(net, log, sources, changed, notes)


def upgrade_solver_message_caffe(solver: Any, param_file: str = "") -> MessageUpgrade:
    """``UpgradeSolverAsNeeded`` on a SolverParameter (embedded nets are not touched here)."""
    if not solver.HasField("solver_type"):
        return MessageUpgrade(solver, [], [], False)
    log = [
        "Attempting to upgrade input file specified using deprecated 'solver_type' field "
        f"(enum)': {param_file}"
    ]
    if solver.HasField("type"):
        raise Refusal(_SOLVER_BOTH, ("solver_type",))
    name = _enum_name(solver, "solver_type")
    if name not in SOLVER_TYPES:
        raise Refusal(f"Unknown SolverParameter solver_type: {name}", ("solver_type",))
    out = _copy(solver)
    out.type = SOLVER_TYPES[name]
    out.ClearField("solver_type")
    log.append(
        "Successfully upgraded file specified using deprecated 'solver_type' field (enum) to "
        "'type' field (string)."
    )
    log.append("Note that future Caffe releases will only support 'type' field (string) for a "
               "solver's type.")  # fmt: skip
    return MessageUpgrade(out, log, [], True)


def from_refusal(r: RewriterError) -> CaffeError:
    """The in-memory upgrade's :class:`~rewriter.upgrade.document.Refusal` as the CaffeError it
    is."""
    where = tuple(getattr(r, "where", ()))
    layer_index = field = index = None
    if len(where) >= 2 and where[0] == "layers" and isinstance(where[1], int):
        layer_index = where[1]
        if len(where) >= 3:
            field = str(where[2])
        if len(where) >= 4 and isinstance(where[3], int):
            index = where[3]
    elif where and where[0] in ("mixed", "v1type"):
        layer_index = 0
    msg = str(getattr(r, "message", r))
    hint = None
    if msg.startswith("Unknown layer name: "):
        hint = did_you_mean(msg.partition(": ")[2], V0_LAYER_TYPES)
    return CaffeError(
        msg, "upgrade_proto.cpp", layer_index=layer_index, field=field, index=index, hint=hint
    )


#: V1 ``LayerType`` enum name -> Caffe's V2 type string (``UpgradeV1LayerType``).
V1_LAYER_TYPES = _V1_TYPES
#: V0 layer type string -> V1 ``LayerType`` enum name (``UpgradeV0LayerParameter``).
V0_LAYER_TYPES = _V0_TYPES
