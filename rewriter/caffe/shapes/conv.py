"""Shapes of the learned linear layers: Convolution, Deconvolution, Im2col (``base_conv_layer.cpp``,
``im2col_layer.cpp``), InnerProduct and Embed."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .core import (
    Shape,
    _canonical,
    _check,
    _check_eq,
    _check_op,
    _count,
    _cpp_div,
    _Ctx,
    _has,
    _memoized,
    _nonnegative,
    _Result,
    shape_string,
)


def _spatial_param(
    values: Sequence[int],
    has_hw: bool,
    hw: tuple[int, int],
    n_sp: int,
    what: str,
    default: int,
    end: str = ").",
) -> list[int]:
    """Kernel, stride, pad or dilation per spatial axis. ``end``: Im2col's copy of these
    messages ends kernel/stride/pad's count sentence with ``);`` instead of ``).``."""
    if has_hw:
        short = "kernel" if what == "kernel_size" else what
        _check_eq(
            n_sp,
            2,
            "num_spatial_axes_ == 2",
            f"{short}_h & {short}_w can only be used for 2D convolution.",
        )
        _check_eq(
            0,
            len(values),
            f"0 == conv_param.{what}_size()",
            f"Either {what} or {short}_h/w should be specified; not both.",
        )
        return [hw[0], hw[1]]
    n = len(values)
    if n == 1 or n == n_sp or (n == 0 and what != "kernel_size"):
        pass  # valid: the messages below are built only for a failure
    elif what == "kernel_size":
        _check(
            n == 1 or n == n_sp,
            f"Check failed: num_kernel_dims == 1 || num_kernel_dims == num_spatial_axes_ "
            f"kernel_size must be specified once, or once per spatial dimension (kernel_size "
            f"specified {n} times; {n_sp} spatial dims{end}",
        )
    else:
        _check(
            n in (0, 1, n_sp),
            f"Check failed: num_{what}_dims == 0 || num_{what}_dims == 1 || num_{what}_dims == "
            f"num_spatial_axes_ {what} must be specified once, or once per spatial dimension "
            f"({what} specified {n} times; {n_sp} spatial dims{end}",
        )
    return [default if n == 0 else int(values[0 if n == 1 else i]) for i in range(n_sp)]


def _conv_geometry(ctx: _Ctx) -> tuple[int, list[int], list[int], list[int], list[int]]:
    cp = ctx.msg.convolution_param
    bottom = ctx.bottoms[0]
    axis = _canonical(int(cp.axis), bottom)
    n_sp = len(bottom) - axis - 1
    if ctx.type == "Im2col":
        _check_op(n_sp >= 1, n_sp, 1, "num_spatial_axes_ >= 1")
    _check_op(n_sp >= 0, n_sp, 0, "num_spatial_axes_ >= 0")
    end = ");" if ctx.type == "Im2col" else ")."
    kernel = _spatial_param(
        list(cp.kernel_size),
        _has(cp, "kernel_h") or _has(cp, "kernel_w"),
        (int(cp.kernel_h), int(cp.kernel_w)),
        n_sp,
        "kernel_size",
        0,
        end,
    )
    for k in kernel:
        _check_op(k > 0, k, 0, "kernel_shape_data[i] > 0", "Filter dimensions must be nonzero.")
    stride_hw = _has(cp, "stride_h") or _has(cp, "stride_w")
    stride = _spatial_param(
        list(cp.stride),
        stride_hw,
        (int(cp.stride_h), int(cp.stride_w)),
        n_sp,
        "stride",
        1,
        end,
    )
    for s in stride:
        if stride_hw:
            # Caffe checks only stride, not stride_h/stride_w: it divides by zero (SIGFPE)
            _check(
                s > 0,
                "stride_h/stride_w is 0: Caffe does not check this and dies of a division by "
                "zero (SIGFPE) while setting the layer up",
            )
        _check_op(s > 0, s, 0, "stride_data[i] > 0", "Stride dimensions must be nonzero.")
    pad = _spatial_param(
        list(cp.pad),
        _has(cp, "pad_h") or _has(cp, "pad_w"),
        (int(cp.pad_h), int(cp.pad_w)),
        n_sp,
        "pad",
        0,
        end,
    )
    dilation = _spatial_param(list(cp.dilation), False, (0, 0), n_sp, "dilation", 1)
    return axis, kernel, stride, pad, dilation


def _conv(ctx: _Ctx, deconv: bool) -> _Result:
    cp = ctx.msg.convolution_param
    bottom = ctx.bottoms[0]
    axis, kernel, stride, pad, dilation = _conv_geometry(ctx)
    channels = bottom[axis]
    num_output = int(cp.num_output)
    group = int(cp.group)
    _check_op(num_output > 0, num_output, 0, "num_output_ > 0")
    _check_eq(channels % group, 0, "channels_ % group_ == 0")
    _check_eq(
        num_output % group,
        0,
        "num_output_ % group_ == 0",
        "Number of output should be multiples of group.",
    )
    for j, b in enumerate(ctx.bottoms[1:], 1):
        _check(
            b == bottom,
            "Check failed: bottom[0]->shape() == bottom[bottom_id]->shape() shape mismatch - "
            f"bottom[0]: {shape_string(bottom)} vs. bottom[{j}]: {shape_string(b)}",
        )
    if deconv:
        weight = (channels, num_output // group, *kernel)
    else:
        weight = (num_output, channels // group, *kernel)
    params: list[Shape] = [weight]
    if cp.bias_term:
        params.append((num_output,))
    out: list[int] = []
    for i, size in enumerate(bottom[axis + 1 :]):
        extent = dilation[i] * (kernel[i] - 1) + 1
        if deconv:
            out.append(stride[i] * (size - 1) + extent - 2 * pad[i])
        else:
            out.append(_cpp_div(size + 2 * pad[i] - extent, stride[i]) + 1)
    _nonnegative(out)
    top = (*bottom[:axis], num_output, *out)
    return [top] * ctx.n_tops, params


def _convolution(ctx: _Ctx) -> _Result:
    return _memoized(ctx, "convolution_param", _conv_forward)


def _deconvolution(ctx: _Ctx) -> _Result:
    return _memoized(ctx, "convolution_param", _conv_backward)


def _conv_forward(ctx: _Ctx) -> _Result:
    return _conv(ctx, deconv=False)


def _conv_backward(ctx: _Ctx) -> _Result:
    return _conv(ctx, deconv=True)


def _im2col(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    axis, kernel, stride, pad, dilation = _conv_geometry(ctx)
    out = [
        _cpp_div(size + 2 * pad[i] - (dilation[i] * (kernel[i] - 1) + 1), stride[i]) + 1
        for i, size in enumerate(bottom[axis + 1 :])
    ]
    top = (*bottom[:axis], bottom[axis] * math.prod(kernel), *out)
    return [top], []


def _inner_product(ctx: _Ctx) -> _Result:
    p = ctx.msg.inner_product_param
    bottom = ctx.bottoms[0]
    axis = _canonical(int(p.axis), bottom)
    k = _count(bottom, axis)
    n = int(p.num_output)
    weight = (k, n) if p.transpose else (n, k)
    params: list[Shape] = [weight]
    if p.bias_term:
        params.append((n,))
    return [(*bottom[:axis], n)], params


def _embed(ctx: _Ctx) -> _Result:
    p = ctx.msg.embed_param
    n, k = int(p.num_output), int(p.input_dim)
    _check_op(n > 0, n, 0, "N_ > 0", "EmbedLayer num_output must be positive.")
    _check_op(k > 0, k, 0, "K_ > 0", "EmbedLayer input_dim must be positive.")
    params: list[Shape] = [(k, n)]
    if p.bias_term:
        params.append((n,))
    return [(*ctx.bottoms[0], n)], params


#: This family's shape rule per layer type (merged in :mod:`rewriter.caffe.shapes.table`).
RULES: dict[str, Callable[[_Ctx], _Result]] = {
    "Convolution": _convolution,
    "Deconvolution": _deconvolution,
    "Embed": _embed,
    "Im2col": _im2col,
    "InnerProduct": _inner_product,
}
