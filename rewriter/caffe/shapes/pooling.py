"""Shapes of the windowed layers: Pooling, SPP and LRN."""

from __future__ import annotations

from collections.abc import Callable

from .core import (
    _check,
    _check_eq,
    _check_op,
    _Ctx,
    _has,
    _legacy,
    _legacy_dim,
    _Result,
)


def _pool_output(size: int, pad: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    num = size + 2 * pad - kernel
    # static_cast<int>(ceil(float(num) / stride)) + 1 (or floor)
    q = -((-num) // stride) if ceil_mode else num // stride
    return q + 1


def _pooling(ctx: _Ctx) -> _Result:
    pp = ctx.msg.pooling_param
    bottom = ctx.bottoms[0]
    global_pooling = bool(pp.global_pooling)
    if global_pooling:
        _check(
            not (_has(pp, "kernel_size") or _has(pp, "kernel_h") or _has(pp, "kernel_w")),
            "Check failed: !(pool_param.has_kernel_size() || pool_param.has_kernel_h() || "
            "pool_param.has_kernel_w()) With Global_pooling: true Filter size cannot specified",
        )
    else:
        _check(
            (not _has(pp, "kernel_size")) != (not (_has(pp, "kernel_h") and _has(pp, "kernel_w"))),
            "Check failed: !pool_param.has_kernel_size() != !(pool_param.has_kernel_h() && "
            "pool_param.has_kernel_w()) Filter size is kernel_size OR kernel_h and kernel_w; "
            "not both",
        )
    _check(
        (not _has(pp, "pad") and _has(pp, "pad_h") and _has(pp, "pad_w"))
        or (not _has(pp, "pad_h") and not _has(pp, "pad_w")),
        "Check failed: (!pool_param.has_pad() && pool_param.has_pad_h() && "
        "pool_param.has_pad_w()) || (!pool_param.has_pad_h() && !pool_param.has_pad_w()) "
        "pad is pad OR pad_h and pad_w are required.",
    )
    _check(
        (not _has(pp, "stride") and _has(pp, "stride_h") and _has(pp, "stride_w"))
        or (not _has(pp, "stride_h") and not _has(pp, "stride_w")),
        "Check failed: (!pool_param.has_stride() && pool_param.has_stride_h() && "
        "pool_param.has_stride_w()) || (!pool_param.has_stride_h() && "
        "!pool_param.has_stride_w()) Stride is stride OR stride_h and stride_w are required.",
    )
    if global_pooling:
        # LayerSetUp reads bottom[0]->height() and width(): the legacy accessors
        _legacy(bottom)
        kh, kw = (bottom[i] if i < len(bottom) else 1 for i in (2, 3))
    elif _has(pp, "kernel_size"):
        kh = kw = int(pp.kernel_size)
    else:
        kh, kw = int(pp.kernel_h), int(pp.kernel_w)
    if not global_pooling:
        _check_op(kh > 0, kh, 0, "kernel_h_ > 0", "Filter dimensions cannot be zero.")
        _check_op(kw > 0, kw, 0, "kernel_w_ > 0", "Filter dimensions cannot be zero.")
    ph, pw = (int(pp.pad_h), int(pp.pad_w)) if _has(pp, "pad_h") else (int(pp.pad),) * 2
    sh, sw = (int(pp.stride_h), int(pp.stride_w)) if _has(pp, "stride_h") else (int(pp.stride),) * 2
    if global_pooling:
        _check(
            ph == 0 and pw == 0 and sh == 1 and sw == 1,
            "Check failed: pad_h_ == 0 && pad_w_ == 0 && stride_h_ == 1 && stride_w_ == 1 "
            "With Global_pooling: true; only pad = 0 and stride = 1",
        )
    if ph or pw:
        method = int(pp.pool)
        _check(
            method in (0, 1),
            "Check failed: pool == AVE || pool == MAX "
            "Padding implemented only for average and max pooling.",
        )
        _check_op(ph < kh, ph, kh, "pad_h_ < kernel_h_")
        _check_op(pw < kw, pw, kw, "pad_w_ < kernel_w_")
    # Reshape, after LayerSetUp's checks
    _check_eq(
        4,
        len(bottom),
        "4 == bottom[0]->num_axes()",
        "Input must have 4 axes, corresponding to (num, channels, height, width)",
    )
    n, c, h, w = bottom
    ceil_mode = int(pp.round_mode) == 0
    oh = _pool_output(h, ph, kh, sh, ceil_mode)
    ow = _pool_output(w, pw, kw, sw, ceil_mode)
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
        _check_op(
            (oh - 1) * sh < h + ph,
            (oh - 1) * sh,
            h + ph,
            "(pooled_height_ - 1) * stride_h_ < height_ + pad_h_",
        )
        _check_op(
            (ow - 1) * sw < w + pw,
            (ow - 1) * sw,
            w + pw,
            "(pooled_width_ - 1) * stride_w_ < width_ + pad_w_",
        )
    top = (n, c, oh, ow)
    return [top] * ctx.n_tops, []


def _spp(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    # LayerSetUp reads num(), channels(), height(), width() (the legacy accessors)
    h, w = _legacy_dim(bottom, 2), _legacy_dim(bottom, 3)
    _check_op(h > 0, h, 0, "bottom_h_ > 0", "Input dimensions cannot be zero.")
    _check_op(w > 0, w, 0, "bottom_w_ > 0", "Input dimensions cannot be zero.")
    _check_eq(
        4,
        len(bottom),
        "4 == bottom[0]->num_axes()",
        "Input must have 4 axes, corresponding to (num, channels, height, width)",
    )
    height = int(ctx.msg.spp_param.pyramid_height)
    n, c = bottom[0], bottom[1]
    if height == 1:
        return [(n, c, 1, 1)], []
    return [(n, c * sum(4**i for i in range(height)))], []


def _lrn(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    size = int(ctx.msg.lrn_param.local_size)
    _check_eq(size % 2, 1, "size_ % 2 == 1", "LRN only supports odd values for local_size")
    if int(ctx.msg.lrn_param.norm_region) == 0:  # ACROSS_CHANNELS
        _check_eq(
            4,
            len(bottom),
            "4 == bottom[0]->num_axes()",
            "Input must have 4 axes, corresponding to (num, channels, height, width)",
        )
    return [bottom], []


#: This family's shape rule per layer type (merged in :mod:`rewriter.caffe.shapes.table`).
RULES: dict[str, Callable[[_Ctx], _Result]] = {
    "LRN": _lrn,
    "Pooling": _pooling,
    "SPP": _spp,
}
