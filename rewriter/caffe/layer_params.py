"""What BVLC Caffe's layer classes contribute to ``Net::Init``.

``Net::Init`` asks every layer, after ``LayerSetUp``, how many learnable blobs it made
(``blobs().size()``), whether it is a loss layer (``LossLayer::LayerSetUp`` adds a default
``loss_weight: 1``), whether it wants automatic tops (``AutoTopBlobs``) and, under
``force_backward``, which bottoms may be forced (``AllowForceBackward``). This module answers
those questions from the ``LayerParameter`` alone, the way the BVLC master sources do
(``src/caffe/layers/*.cpp`` and ``include/caffe/layers/*.hpp``).

Everything here reads a protobuf ``LayerParameter`` (any generated or dynamic class) through
attribute access only, so protobuf is never imported.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FILLER_TYPES",
    "ORACLE_BUILD_LAYER_TYPES",
    "BVLC_LAYER_TYPES",
    "LOSS_LAYER_TYPES",
    "is_loss_type",
    "READS_MESSAGE",
    "allow_force_backward",
    "auto_top_count",
    "fillers_used",
    "is_loss_layer",
    "param_blob_count",
    "param_roles",
]

#: Layer types registered in the CPU-only BVLC build the oracle used (no OpenCV, no Python
#: layer), in the order Caffe lists them in its "Unknown layer type" message.
ORACLE_BUILD_LAYER_TYPES: tuple[str, ...] = (
    "AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Clip",
    "Concat", "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout",
    "DummyData", "ELU", "Eltwise", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten",
    "HDF5Data", "HDF5Output", "HingeLoss", "Im2col", "InfogainLoss", "InnerProduct", "Input",
    "LRN", "LSTM", "LSTMUnit", "Log", "MVN", "MemoryData", "MultinomialLogisticLoss", "PReLU",
    "Parameter", "Pooling", "Power", "RNN", "ReLU", "Reduction", "Reshape", "SPP", "Scale",
    "Sigmoid", "SigmoidCrossEntropyLoss", "Silence", "Slice", "Softmax", "SoftmaxWithLoss",
    "Split", "Swish", "TanH", "Threshold", "Tile",
)  # fmt: skip

#: Every layer type of BVLC master (the oracle build plus the OpenCV data layers). ``Python``
#: is deliberately absent: its parameter blobs are decided by user code.
BVLC_LAYER_TYPES: frozenset[str] = frozenset(ORACLE_BUILD_LAYER_TYPES) | {
    "ImageData",
    "WindowData",
}

#: Subclasses of ``LossLayer``: default loss weight 1, one automatic top, no forcing of the
#: label bottom (index 1) unless overridden below.
LOSS_LAYER_TYPES: frozenset[str] = frozenset(
    {
        "ContrastiveLoss",
        "EuclideanLoss",
        "HingeLoss",
        "InfogainLoss",
        "MultinomialLogisticLoss",
        "SigmoidCrossEntropyLoss",
        "SoftmaxWithLoss",
    }
)

#: Filler names ``GetFiller`` (filler.hpp) knows; any other name is a FATAL error.
FILLER_TYPES: frozenset[str] = frozenset(
    {"constant", "gaussian", "positive_unitball", "uniform", "xavier", "msra", "bilinear"}
)

# Layers whose only learnable blobs are "weights" + optional "bias" controlled by bias_term.
_WEIGHT_BIAS_FIELD = {
    "Convolution": "convolution_param",
    "Deconvolution": "convolution_param",
    "InnerProduct": "inner_product_param",
    "Embed": "embed_param",
}


#: Types whose answers below read the ``LayerParameter`` (bias terms, fillers, recurrent
#: inputs) or whose use_global_stats the graph records; for every other type, known or not,
#: these functions need only the type name (and ``msg`` may be None). The graph keeps the
#: message of these layers only.
READS_MESSAGE: frozenset[str] = frozenset(_WEIGHT_BIAS_FIELD) | {
    "BatchNorm",
    "Bias",
    "DummyData",
    "LSTM",
    "PReLU",
    "RNN",
    "Scale",
}


def _bias_term(msg: Any, field: str, default: bool) -> bool:
    sub = getattr(msg, field)
    return bool(sub.bias_term) if sub.HasField("bias_term") else default


def _recurrent_static_input(msg: Any, layer_type: str, num_bottoms: int) -> bool:
    # RecurrentLayer::LayerSetUp: static input when there are more bottoms than x, cont and
    # the exposed hidden states (RNN: h; LSTM: c and h).
    num_recur_blobs = 2 if layer_type == "LSTM" else 1
    exposed = num_recur_blobs if bool(msg.recurrent_param.expose_hidden) else 0
    return num_bottoms > 2 + exposed


def param_blob_count(layer_type: str, msg: Any, num_bottoms: int) -> int | None:
    """Number of learnable blobs a BVLC layer creates in ``LayerSetUp``; None if unknown type."""
    field = _WEIGHT_BIAS_FIELD.get(layer_type)
    if field is not None:
        return 2 if _bias_term(msg, field, True) else 1
    if layer_type == "BatchNorm":
        return 3  # mean, variance, moving-average factor
    if layer_type == "Scale":
        # one bottom: a learned scale; two bottoms: the scale is bottom[1]
        scale = 1 if num_bottoms == 1 else 0
        return scale + (1 if _bias_term(msg, "scale_param", False) else 0)
    if layer_type == "Bias":
        return 1 if num_bottoms == 1 else 0
    if layer_type in ("PReLU", "Parameter"):
        return 1
    if layer_type == "LSTM":  # W_xc, b_c, [W_xc_x_static], W_hc
        return 4 if _recurrent_static_input(msg, layer_type, num_bottoms) else 3
    if layer_type == "RNN":  # W_xh, b_h, [W_xh_x_static], W_hh, W_ho, b_o
        return 6 if _recurrent_static_input(msg, layer_type, num_bottoms) else 5
    if layer_type in BVLC_LAYER_TYPES:
        return 0
    return None


def param_roles(layer_type: str, msg: Any, num_bottoms: int, count: int) -> list[str]:
    """Human names of the parameter blobs, in blob order (``param N`` when unknown)."""
    roles: list[str] = []
    if layer_type in _WEIGHT_BIAS_FIELD:
        roles = ["weights", "bias"]
    elif layer_type == "BatchNorm":
        roles = ["mean", "variance", "moving-average factor"]
    elif layer_type == "Scale":
        roles = (["scale"] if num_bottoms == 1 else []) + ["bias"]
    elif layer_type == "Bias":
        roles = ["bias"]
    elif layer_type == "PReLU":
        roles = ["slope"]
    elif layer_type == "Parameter":
        roles = ["parameter"]
    elif layer_type in ("LSTM", "RNN"):
        static = _recurrent_static_input(msg, layer_type, num_bottoms)
        if layer_type == "LSTM":
            roles = ["W_xc", "b_c"] + (["W_xc_x_static"] if static else []) + ["W_hc"]
        else:
            roles = ["W_xh", "b_h"] + (["W_xh_x_static"] if static else [])
            roles += ["W_hh", "W_ho", "b_o"]
    return [roles[i] if i < len(roles) else f"param {i}" for i in range(count)]


def is_loss_layer(layer_type: str) -> bool:
    return layer_type in LOSS_LAYER_TYPES


def auto_top_count(layer_type: str) -> int:
    """Tops Caffe adds when fewer are given (``AutoTopBlobs``): 1 for loss layers, else 0."""
    return 1 if layer_type in LOSS_LAYER_TYPES else 0


def allow_force_backward(layer_type: str, bottom_index: int) -> bool:
    """``Layer::AllowForceBackward(bottom_index)`` for BVLC layer types."""
    if layer_type == "EuclideanLoss":
        return True
    if layer_type == "ContrastiveLoss":
        return bottom_index != 2
    if layer_type in LOSS_LAYER_TYPES:
        return bottom_index != 1  # labels
    if layer_type in ("LSTM", "RNN"):
        return bottom_index != 1  # sequence continuation indicators
    if layer_type == "LSTMUnit":
        return bottom_index != 2
    return True


def _filler_type(filler: Any) -> str:
    return str(filler.type) if filler.HasField("type") else "constant"


def fillers_used(layer_type: str, msg: Any, num_bottoms: int) -> list[str]:
    """Filler type names the layer hands to ``GetFiller`` during ``LayerSetUp``, in order."""
    field = _WEIGHT_BIAS_FIELD.get(layer_type)
    if field is not None:
        sub = getattr(msg, field)
        out = [_filler_type(sub.weight_filler)]
        if param_blob_count(layer_type, msg, num_bottoms) == 2:
            out.append(_filler_type(sub.bias_filler))
        return out
    if layer_type == "Scale":
        sp = msg.scale_param
        out = []
        if num_bottoms == 1:
            out.append(_filler_type(sp.filler) if sp.HasField("filler") else "constant")
        if _bias_term(msg, "scale_param", False):
            out.append(_filler_type(sp.bias_filler))
        return out
    if layer_type == "Bias":
        return [_filler_type(msg.bias_param.filler)] if num_bottoms == 1 else []
    if layer_type == "PReLU":
        pp = msg.prelu_param
        return [_filler_type(pp.filler) if pp.HasField("filler") else "constant"]
    if layer_type == "DummyData":
        return [_filler_type(f) for f in msg.dummy_data_param.data_filler]
    if layer_type in ("LSTM", "RNN"):
        rp = msg.recurrent_param
        return [_filler_type(rp.weight_filler), _filler_type(rp.bias_filler)]
    return []


def is_loss_type(layer_type: str) -> bool:
    return layer_type in LOSS_LAYER_TYPES or layer_type.endswith("Loss")
