"""One converter per Caffe layer type, registered in :data:`CONVERTERS`.

Each converter reproduces the arithmetic of the layer's ``Forward_cpu``
(``src/caffe/layers/<type>_layer.cpp``) with ONNX operators; where Caffe's rounding rules
differ from ONNX's defaults (ceil-mode pooling, AVE pooling's divisor at the clipped edge) the
conversion makes them explicit. :func:`refusal` says why a layer cannot be exported, before
anything is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import TensorProto

from rewriter.caffe.shapes import _pool_output

from .builder import Converter, Ctx

_FLOAT = TensorProto.FLOAT
_INT64 = TensorProto.INT64


def _has(msg: Any, name: str) -> bool:
    try:
        return bool(msg.HasField(name))
    except ValueError:
        return False


def _axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def _broadcast(c: Ctx, x: str, shape: Sequence[int], axis: int, ndim: int) -> str:
    """``x`` of ``shape`` reshaped to line up with axes ``axis..`` of an ``ndim``-axis blob."""
    target = [*shape, *([1] * (ndim - axis - len(shape)))]
    return x if list(shape) == target else c.reshape(x, target)


# --------------------------------------------------------------------------- convolution


def _geometry(c: Ctx) -> tuple[int, list[int], list[int], list[int], list[int]]:
    from rewriter.caffe.shapes import _conv_geometry, _Ctx, _Options

    sctx = _Ctx(
        c.name,
        c.layer.type,
        c.msg,
        list(c.bottom_shapes),
        len(c.tops),
        _Options(None, None, None, None, {}),
        (),
    )
    axis, kernel, stride, pad, dilation = _conv_geometry(sctx)
    if axis != 1:
        raise c.fail(
            f"convolution over axis {axis}: ONNX convolves over axis 1 only",
            "convolution_param.axis",
        )
    return axis, kernel, stride, pad, dilation


def _conv_op(op: str) -> Converter:
    def convert(c: Ctx) -> None:
        _, kernel, stride, pad, dilation = _geometry(c)
        cp = c.msg.convolution_param
        weights = c.params[: 2 if cp.bias_term else 1]
        for x, top in zip(c.bottoms, c.tops, strict=True):
            c.node(
                op,
                [x, *weights],
                top,
                kernel_shape=kernel,
                strides=stride,
                pads=pad + pad,
                dilations=dilation,
                group=int(cp.group),
            )

    return convert


def _im2col(c: Ctx) -> None:
    """Im2col as a grouped convolution with one-hot filters: output channel
    ``(ch * prod(kernel)) + kernel offset`` is Caffe's column order."""
    _, kernel, stride, pad, dilation = _geometry(c)
    channels = c.bottom_shapes[0][1]
    taps = math.prod(kernel)
    w = np.zeros((channels * taps, 1, *kernel), dtype=np.float32)
    for ch in range(channels):
        for t, idx in enumerate(np.ndindex(*kernel)):
            w[(ch * taps + t, 0) + tuple(idx)] = 1.0
    c.node(
        "Conv",
        [c.bottoms[0], c.const(w)],
        c.tops[0],
        kernel_shape=kernel,
        strides=stride,
        pads=pad + pad,
        dilations=dilation,
        group=channels,
    )


# --------------------------------------------------------------------------- pooling


def _pool2d(
    c: Ctx,
    x: str,
    shape: Sequence[int],
    method: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    ceil_mode: bool,
    tops: Sequence[str | None],
) -> list[str]:
    """Caffe's MAX/AVE pooling with its output size, as explicit ONNX pads.

    Caffe sizes the output with ceil and drops a last window that would start in the padding;
    the extra right/bottom pads below make ONNX's floor-mode size equal that. MAX ignores
    padding either way. AVE divides by the window clipped to ``[-pad, size + pad)``: the
    input is zero-padded by ``pad`` first and only the extra pads are excluded from the count.
    """
    _, _, h, w = shape
    out = []
    for size, k, s, p in zip((h, w), kernel, stride, pad, strict=True):
        o = _pool_output(size, p, k, s, ceil_mode)
        if p and (o - 1) * s >= size + p:
            o -= 1
        out.append(o)
    extra = []
    for size, k, s, p, o in zip((h, w), kernel, stride, pad, out, strict=True):
        base = size + 2 * p if method == 1 else size + p
        e = max(0, (o - 1) * s + k - base)
        inner = (base + e - k) // s + 1
        if e >= k:
            raise c.fail(
                f"the last window (kernel {k}, stride {s}, pad {p} over {size}) lies wholly "
                "outside the input, where Caffe writes -FLT_MAX (MAX) or divides by zero "
                "(AVE); not mapped",
                None,
            )
        if inner != o:
            raise c.fail(
                f"pooled size {o} cannot be expressed with ONNX pads (kernel {k}, stride {s}, "
                f"pad {p} over {size})",
                None,
            )
        extra.append(e)
    attrs: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(stride)}
    if method == 0:
        attrs["pads"] = [pad[0], pad[1], extra[0], extra[1]]
        n_out = 2 if len(tops) > 1 else 1
        outs = [t if t is not None else c.b.fresh(f"{c.name}/pool") for t in tops[:1]]
        if n_out == 2:
            outs.append(c.b.fresh(f"{c.name}/indices"))
        c.b.node("MaxPool", [x], outs, name=c.name, **attrs)
        if n_out == 2:
            # ONNX indices count over the whole NCHW tensor, Caffe's mask within a channel
            within = c.node("Mod", [outs[1], c.const(h * w, np.int64)])
            c.node("Cast", [within], tops[1], to=_FLOAT)
        return outs[:1]
    if pad[0] or pad[1]:
        x = c.node("Pad", [x, c.ints([0, 0, pad[0], pad[1], 0, 0, pad[0], pad[1]])])
    attrs["pads"] = [0, 0, extra[0], extra[1]]
    return [c.node("AveragePool", [x], tops[0], count_include_pad=0, **attrs)]


def _pooling(c: Ctx) -> None:
    pp = c.msg.pooling_param
    shape = c.bottom_shapes[0]
    method = int(pp.pool)
    if pp.global_pooling:
        op = "GlobalMaxPool" if method == 0 else "GlobalAveragePool"
        c.node(op, [c.bottoms[0]], c.tops[0])
        if len(c.tops) > 1:
            raise c.fail("a MAX mask of global pooling is not mapped", None)
        return
    if _has(pp, "kernel_size"):
        kernel = (int(pp.kernel_size),) * 2
    else:
        kernel = (int(pp.kernel_h), int(pp.kernel_w))
    pad = (int(pp.pad_h), int(pp.pad_w)) if _has(pp, "pad_h") else (int(pp.pad),) * 2
    stride = (int(pp.stride_h), int(pp.stride_w)) if _has(pp, "stride_h") else (int(pp.stride),) * 2
    ceil_mode = int(getattr(pp, "round_mode", 0)) == 0
    _pool2d(c, c.bottoms[0], shape, method, kernel, stride, pad, ceil_mode, c.tops)


def _spp(c: Ctx) -> None:
    sp = c.msg.spp_param
    shape = c.bottom_shapes[0]
    n, ch, h, w = shape
    height = int(sp.pyramid_height)
    method = int(sp.pool)
    if height == 1:
        _pool2d(c, c.bottoms[0], shape, method, (h, w), (h, w), (0, 0), True, c.tops)
        return
    parts = []
    for level in range(height):
        bins = 2**level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        pooled = _pool2d(c, c.bottoms[0], shape, method, (kh, kw), (kh, kw), (ph, pw), True, [None])
        parts.append(c.node("Flatten", pooled, axis=1))
    c.node("Concat", parts, c.tops[0], axis=1)


def _lrn(c: Ctx) -> None:
    lp = c.msg.lrn_param
    size, alpha, beta = int(lp.local_size), float(lp.alpha), float(lp.beta)
    x = c.bottoms[0]
    if int(lp.norm_region) == 0:  # ACROSS_CHANNELS: scale = k + alpha/size * sum(x^2)
        c.node("LRN", [x], c.tops[0], size=size, alpha=alpha, beta=beta, bias=float(lp.k))
        return
    # WITHIN_CHANNEL: x * (1 + alpha * avg_{size x size, zero-padded}(x^2)) ^ -beta
    p = (size - 1) // 2
    sq = c.node("Mul", [x, x])
    avg = c.node(
        "AveragePool",
        [sq],
        kernel_shape=[size, size],
        strides=[1, 1],
        pads=[p, p, p, p],
        count_include_pad=1,
    )
    base = c.node("Add", [c.node("Mul", [avg, c.const(alpha)]), c.const(1.0)])
    c.node("Mul", [x, c.node("Pow", [base, c.const(-beta)])], c.tops[0])


# --------------------------------------------------------------------------- dense, normalisation


def _inner_product(c: Ctx) -> None:
    ip = c.msg.inner_product_param
    shape = c.bottom_shapes[0]
    axis = _axis(int(ip.axis), len(shape))
    x = c.bottoms[0]
    if not (len(shape) == 2 and axis == 1):
        x = c.node("Flatten", [x], axis=axis)
    ins = [x, c.params[0]] + ([c.params[1]] if ip.bias_term else [])
    top = c.top_shapes[0]
    direct = len(top) == 2
    y = c.node("Gemm", ins, c.tops[0] if direct else None, transB=0 if ip.transpose else 1)
    if not direct:
        c.reshape(y, top, c.tops[0])


def _batch_norm(c: Ctx) -> None:
    bp = c.msg.batch_norm_param
    eps = float(bp.eps)
    x = c.bottoms[0]
    shape = c.bottom_shapes[0]
    channels = shape[1] if len(shape) > 1 else 1
    use_global = c.layer.use_global_stats
    if use_global is None:
        use_global = c.phase == "TEST"
    if not use_global:
        axes = [0, *range(2, len(shape))]
        mean = c.b.reduce("ReduceMean", x, axes, True, name=c.name)
        d = c.node("Sub", [x, mean])
        var = c.b.reduce("ReduceMean", c.node("Mul", [d, d]), axes, True, name=c.name)
        std = c.node("Sqrt", [c.node("Add", [var, c.const(eps)])])
        c.node("Div", [d, std], c.tops[0])
        return
    # Caffe: scale = blob2 == 0 ? 0 : 1 / blob2; mean = blob0 * scale; var = blob1 * scale
    if c.values is not None:
        f = c.values[2].reshape(-1)[0]
        sf = np.float32(0) if f == 0 else np.float32(1) / np.float32(f)
        mean = c.const(c.values[0] * sf)
        var = c.const(c.values[1] * sf)
    else:
        f = c.params[2]
        zero = c.const(0.0)
        sf = c.node("Where", [c.node("Equal", [f, zero]), zero, c.node("Reciprocal", [f])])
        mean = c.node("Mul", [c.params[0], sf])
        var = c.node("Mul", [c.params[1], sf])
    ones, zeros = c.const(np.ones(channels)), c.const(np.zeros(channels))
    c.node("BatchNormalization", [x, ones, zeros, mean, var], c.tops[0], epsilon=eps)


def _scale_or_bias(kind: str) -> Converter:
    def convert(c: Ctx) -> None:
        p = c.msg.scale_param if kind == "Scale" else c.msg.bias_param
        shape = c.bottom_shapes[0]
        ndim = len(shape)
        axis = _axis(int(p.axis), ndim)
        params = list(zip(c.params, c.param_shapes, strict=True))
        first = (c.bottoms[1], c.bottom_shapes[1]) if len(c.bottoms) > 1 else params.pop(0)
        y = c.bottoms[0]
        last = kind == "Bias" or not p.bias_term
        op = "Mul" if kind == "Scale" else "Add"
        y = c.node(
            op, [y, _broadcast(c, first[0], first[1], axis, ndim)], c.tops[0] if last else None
        )
        if not last:
            bias, bshape = params[0]
            c.node("Add", [y, _broadcast(c, bias, bshape, axis, ndim)], c.tops[0])

    return convert


def _mvn(c: Ctx) -> None:
    mp = c.msg.mvn_param
    shape = c.bottom_shapes[0]
    axes = list(range(1 if mp.across_channels else 2, len(shape)))
    x = c.bottoms[0]
    mean = c.b.reduce("ReduceMean", x, axes, True, name=c.name)
    if not mp.normalize_variance:
        c.node("Sub", [x, mean], c.tops[0])
        return
    d = c.node("Sub", [x, mean])
    var = c.b.reduce("ReduceMean", c.node("Mul", [d, d]), axes, True, name=c.name)
    std = c.node("Add", [c.node("Sqrt", [var]), c.const(float(mp.eps))])
    c.node("Div", [d, std], c.tops[0])


def _lstm_rnn(c: Ctx) -> None:
    from .recurrent import unroll

    unroll(c)


# --------------------------------------------------------------------------- wiring


def _eltwise(c: Ctx) -> None:
    ep = c.msg.eltwise_param
    op = int(ep.operation)
    xs = list(c.bottoms)
    if op == 1:  # SUM
        coeffs = [float(v) for v in ep.coeff] or [1.0] * len(xs)
        terms = [
            x if k == 1.0 else c.node("Mul", [x, c.const(k)])
            for x, k in zip(xs, coeffs, strict=True)
        ]
        c.node("Sum", terms, c.tops[0])
    elif op == 0:  # PROD
        y = xs[0]
        for i, x in enumerate(xs[1:], 2):
            y = c.node("Mul", [y, x], c.tops[0] if i == len(xs) else None)
    else:  # MAX
        c.node("Max", xs, c.tops[0])


def _concat(c: Ctx) -> None:
    cp = c.msg.concat_param
    ndim = len(c.bottom_shapes[0])
    axis = int(cp.concat_dim) if _has(cp, "concat_dim") else _axis(int(cp.axis), ndim)
    c.node("Concat", c.bottoms, c.tops[0], axis=axis)


def _slice(c: Ctx) -> None:
    sp = c.msg.slice_param
    ndim = len(c.bottom_shapes[0])
    axis = int(sp.slice_dim) if _has(sp, "slice_dim") else _axis(int(sp.axis), ndim)
    if len(c.tops) == 1:
        c.node("Identity", c.bottoms, c.tops[0])
        return
    sizes = c.ints([s[axis] for s in c.top_shapes])
    c.b.node("Split", [c.bottoms[0], sizes], c.tops, name=c.name, axis=axis)


def _split(c: Ctx) -> None:
    for top in c.tops:
        c.node("Identity", c.bottoms, top)


def _crop(c: Ctx) -> None:
    cp = c.msg.crop_param
    shape = c.bottom_shapes[0]
    axis = _axis(int(cp.axis), len(shape))
    offsets = [int(v) for v in cp.offset]
    axes = list(range(axis, len(shape)))
    starts = [
        offsets[0] if len(offsets) == 1 else offsets[i] if offsets else 0 for i in range(len(axes))
    ]
    ends = [s + c.top_shapes[0][a] for s, a in zip(starts, axes, strict=True)]
    c.node("Slice", [c.bottoms[0], c.ints(starts), c.ints(ends), c.ints(axes)], c.tops[0])


def _reshape(c: Ctx) -> None:
    c.reshape(c.bottoms[0], c.top_shapes[0], c.tops[0])


def _tile(c: Ctx) -> None:
    tp = c.msg.tile_param
    shape = c.bottom_shapes[0]
    repeats = [1] * len(shape)
    repeats[_axis(int(tp.axis), len(shape))] = int(tp.tiles)
    c.node("Tile", [c.bottoms[0], c.ints(repeats)], c.tops[0])


def _gather_rows(c: Ctx) -> None:  # BatchReindex
    idx = c.node("Cast", [c.bottoms[1]], to=_INT64)
    c.node("Gather", [c.bottoms[0], idx], c.tops[0], axis=0)


def _filter(c: Ctx) -> None:
    sel = c.bottoms[-1]
    n = c.bottom_shapes[-1][0]
    keep = c.node("Not", [c.node("Equal", [c.reshape(sel, [n]), c.const(0.0)])])
    for x, top in zip(c.bottoms[:-1], c.tops, strict=True):
        c.node("Compress", [x, keep], top, axis=0)


def _embed(c: Ctx) -> None:
    ep = c.msg.embed_param
    idx = c.node("Cast", [c.bottoms[0]], to=_INT64)
    if not ep.bias_term:
        c.node("Gather", [c.params[0], idx], c.tops[0], axis=0)
        return
    rows = c.node("Gather", [c.params[0], idx], axis=0)
    c.node("Add", [rows, c.params[1]], c.tops[0])


def _silence(c: Ctx) -> None:
    """Silence only consumes its bottoms (so they are not net outputs): no node."""


def _parameter(c: Ctx) -> None:
    c.node("Identity", [c.params[0]], c.tops[0])


# --------------------------------------------------------------------------- heads


def _softmax(c: Ctx) -> None:
    axis = _axis(int(c.msg.softmax_param.axis), len(c.bottom_shapes[0]))
    c.node("Softmax", c.bottoms, c.tops[0], axis=axis)


def _argmax(c: Ctx) -> None:
    ap = c.msg.argmax_param
    k = c.ints([int(ap.top_k)])
    shape = c.bottom_shapes[0]
    x = c.bottoms[0]
    if _has(ap, "axis"):
        axis = _axis(int(ap.axis), len(shape))
        vals, idx = c.b.node("TopK", [x, k], 2, name=c.name, axis=axis)
        if ap.out_max_val:
            c.node("Identity", [vals], c.tops[0])
        else:
            c.node("Cast", [idx], c.tops[0], to=_FLOAT)
        return
    flat = c.node("Flatten", [x], axis=1)
    vals, idx = c.b.node("TopK", [flat, k], 2, name=c.name, axis=1)
    fidx = c.node("Cast", [idx], to=_FLOAT)
    y = c.node("Concat", [fidx, vals], axis=1) if ap.out_max_val else fidx
    c.reshape(y, c.top_shapes[0], c.tops[0])


def _reduction(c: Ctx) -> None:
    rp = c.msg.reduction_param
    shape = c.bottom_shapes[0]
    axis = _axis(int(rp.axis), len(shape))
    op = {1: "ReduceSum", 2: "ReduceL1", 3: "ReduceSumSquare", 4: "ReduceMean"}[int(rp.operation)]
    coeff = float(rp.coeff)
    axes = list(range(axis, len(shape)))
    y = c.bottoms[0] if not axes else c.b.reduce(op, c.bottoms[0], axes, False, name=c.name)
    if coeff != 1.0:
        y = c.node("Mul", [y, c.const(coeff)])
    c.node("Identity", [y], c.tops[0])


# --------------------------------------------------------------------------- element-wise


def _relu(c: Ctx) -> None:
    slope = float(c.msg.relu_param.negative_slope)
    if slope:
        c.node("LeakyRelu", c.bottoms, c.tops[0], alpha=slope)
    else:
        c.node("Relu", c.bottoms, c.tops[0])


def _prelu(c: Ctx) -> None:
    ndim = len(c.bottom_shapes[0])
    slope = c.params[0]
    if not c.msg.prelu_param.channel_shared and ndim > 2:
        slope = _broadcast(c, slope, c.param_shapes[0], 1, ndim)
    c.node("PRelu", [c.bottoms[0], slope], c.tops[0])


def _unary(op: str, **attrs: Any) -> Converter:
    def convert(c: Ctx) -> None:
        c.node(op, c.bottoms, c.tops[0], **attrs)

    return convert


def _elu(c: Ctx) -> None:
    c.node("Elu", c.bottoms, c.tops[0], alpha=float(c.msg.elu_param.alpha))


def _affine(c: Ctx, x: str, scale: float, shift: float) -> str:
    if scale != 1.0:
        x = c.node("Mul", [x, c.const(scale)])
    if shift != 0.0:
        x = c.node("Add", [x, c.const(shift)])
    return x


def _power(c: Ctx) -> None:
    pp = c.msg.power_param
    power, scale, shift = np.float32(pp.power), np.float32(pp.scale), np.float32(pp.shift)
    if power * scale == 0:  # Caffe fills the top with one value
        value = np.float32(1) if power == 0 else np.power(shift, power)
        c.node("Expand", [c.const(value), c.ints(c.top_shapes[0])], c.tops[0])
        return
    y = _affine(c, c.bottoms[0], float(scale), float(shift))
    if power != 1:
        y = c.node("Pow", [y, c.const(power)])
    c.node("Identity", [y], c.tops[0])


def _exp(c: Ctx) -> None:
    ep = c.msg.exp_param
    base, scale, shift = np.float32(ep.base), np.float32(ep.scale), np.float32(ep.shift)
    log_base = np.float32(1) if base == -1 else np.float32(np.log(base))
    inner = log_base * scale
    outer = (
        np.float32(1) if shift == 0 else (np.power(base, shift) if base != -1 else np.exp(shift))
    )
    y = c.node("Exp", [_affine(c, c.bottoms[0], float(inner), 0.0)])
    c.node("Identity", [_affine(c, y, float(outer), 0.0)], c.tops[0])


def _log(c: Ctx) -> None:
    lp = c.msg.log_param
    base, scale, shift = np.float32(lp.base), np.float32(lp.scale), np.float32(lp.shift)
    base_scale = np.float32(1) if base == -1 else np.float32(1) / np.float32(np.log(base))
    y = c.node("Log", [_affine(c, c.bottoms[0], float(scale), float(shift))])
    c.node("Identity", [_affine(c, y, float(base_scale), 0.0)], c.tops[0])


def _threshold(c: Ctx) -> None:
    t = float(c.msg.threshold_param.threshold)
    c.node("Cast", [c.node("Greater", [c.bottoms[0], c.const(t)])], c.tops[0], to=_FLOAT)


def _dropout(c: Ctx) -> None:
    dp = c.msg.dropout_param
    if c.phase != "TEST":
        raise c.fail("Dropout in phase TRAIN is random; export phase TEST (--phase TEST)", None)
    if getattr(dp, "scale_train", True):
        c.node("Identity", c.bottoms, c.tops[0])
    else:
        keep = np.float32(1) - np.float32(dp.dropout_ratio)
        c.node("Mul", [c.bottoms[0], c.const(keep)], c.tops[0])


def _clip(c: Ctx) -> None:
    cp = c.msg.clip_param
    c.node("Clip", [c.bottoms[0], c.const(float(cp.min)), c.const(float(cp.max))], c.tops[0])


def _swish(c: Ctx) -> None:
    beta = float(c.msg.swish_param.beta)
    x = c.bottoms[0]
    s = c.node("Sigmoid", [_affine(c, x, beta, 0.0)])
    c.node("Mul", [x, s], c.tops[0])


CONVERTERS: dict[str, Converter] = {
    "Convolution": _conv_op("Conv"),
    "Deconvolution": _conv_op("ConvTranspose"),
    "Im2col": _im2col,
    "Pooling": _pooling,
    "SPP": _spp,
    "LRN": _lrn,
    "InnerProduct": _inner_product,
    "BatchNorm": _batch_norm,
    "Scale": _scale_or_bias("Scale"),
    "Bias": _scale_or_bias("Bias"),
    "MVN": _mvn,
    "LSTM": _lstm_rnn,
    "RNN": _lstm_rnn,
    "Eltwise": _eltwise,
    "Concat": _concat,
    "Slice": _slice,
    "Split": _split,
    "Crop": _crop,
    "Flatten": _reshape,
    "Reshape": _reshape,
    "Tile": _tile,
    "BatchReindex": _gather_rows,
    "Filter": _filter,
    "Embed": _embed,
    "Parameter": _parameter,
    "Silence": _silence,
    "Softmax": _softmax,
    "ArgMax": _argmax,
    "Reduction": _reduction,
    "ReLU": _relu,
    "PReLU": _prelu,
    "Sigmoid": _unary("Sigmoid"),
    "TanH": _unary("Tanh"),
    "AbsVal": _unary("Abs"),
    "BNLL": _unary("Softplus"),
    "ELU": _elu,
    "Power": _power,
    "Exp": _exp,
    "Log": _log,
    "Threshold": _threshold,
    "Dropout": _dropout,
    "Clip": _clip,
    "Swish": _swish,
}

_TRAINING_ONLY = (
    "a loss or accuracy layer (training/evaluation only): export the deploy net, "
    "e.g. rewriter deploy NET -o deploy.prototxt"
)


def refusal(layer_type: str, msg: Any) -> tuple[str, str | None] | None:
    """Why a layer of this type (and settings) cannot be exported, with the field at fault."""
    from rewriter.caffe.layer_params import is_loss_type

    if layer_type == "Input":
        return None
    if layer_type in ("Data", "ImageData", "WindowData", "MemoryData", "HDF5Data", "DummyData"):
        return (
            f"{layer_type} is a data source, not part of the model: export the deploy net "
            "(rewriter deploy NET -o deploy.prototxt), which has Input layers",
            None,
        )
    if is_loss_type(layer_type) or layer_type == "Accuracy":
        return _TRAINING_ONLY, None
    if layer_type not in CONVERTERS:
        return (
            f"cannot be exported to ONNX: no converter for layer type {layer_type} "
            "(docs/onnx.md lists the supported types)",
            None,
        )
    if layer_type == "Pooling" and msg is not None and int(msg.pooling_param.pool) == 2:
        return (
            "STOCHASTIC pooling is random (and not implemented on CPU in Caffe)",
            "pooling_param.pool",
        )
    if layer_type == "SPP" and msg is not None and int(msg.spp_param.pool) == 2:
        return (
            "STOCHASTIC pooling is random (and not implemented on CPU in Caffe)",
            "spp_param.pool",
        )
    return None
