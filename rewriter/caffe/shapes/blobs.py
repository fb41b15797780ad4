"""Shapes of the layers that route, join, cut or reshape blobs: Split, Silence, Concat, Slice,
Eltwise, Flatten, Reshape, Crop, Tile, Reduction, BatchReindex, Parameter, HDF5Output, Filter."""

from __future__ import annotations

import math
from collections.abc import Callable

from .core import (
    Shape,
    _blame,
    _canonical,
    _check,
    _check_eq,
    _check_op,
    _count,
    _Ctx,
    _has,
    _nonnegative,
    _Result,
    _shape_of,
    _Unknown,
    shape_string,
)


def _split(ctx: _Ctx) -> _Result:
    return [ctx.bottoms[0]] * ctx.n_tops, []


def _silence(ctx: _Ctx) -> _Result:
    return [], []


def _concat(ctx: _Ctx) -> _Result:
    p = ctx.msg.concat_param
    _check(
        not (_has(p, "axis") and _has(p, "concat_dim")),
        "Check failed: !(concat_param.has_axis() && concat_param.has_concat_dim()) Either axis "
        "or concat_dim should be specified; not both.",
    )
    first = ctx.bottoms[0]
    num_axes = len(first)
    if _has(p, "concat_dim"):
        axis = int(p.concat_dim)
        _check_op(
            axis < num_axes, axis, num_axes, "concat_axis_ < num_axes", "concat_dim out of range."
        )
    else:
        axis = _canonical(int(p.axis), first)
    top = list(first)
    for i, b in enumerate(ctx.bottoms[1:], 1):
        with _blame("bottom", i):
            _check_eq(
                num_axes,
                len(b),
                "num_axes == bottom[i]->num_axes()",
                "All inputs must have the same #axes.",
            )
            for j in range(num_axes):
                if j == axis:
                    continue
                _check_eq(
                    top[j],
                    b[j],
                    "top_shape[j] == bottom[i]->shape(j)",
                    "All inputs must have the same shape, except at concat_axis.",
                )
        top[axis] += b[axis]
    return [tuple(top)], []


def _slice(ctx: _Ctx) -> _Result:
    p = ctx.msg.slice_param
    _check(
        not (_has(p, "axis") and _has(p, "slice_dim")),
        "Check failed: !(slice_param.has_axis() && slice_param.has_slice_dim()) Either axis or "
        "slice_dim should be specified; not both.",
    )
    bottom = ctx.bottoms[0]
    if _has(p, "slice_dim"):
        axis = int(p.slice_dim)
        _check_op(
            axis < len(bottom),
            axis,
            len(bottom),
            "slice_axis_ < num_axes",
            "slice_dim out of range.",
        )
    else:
        axis = _canonical(int(p.axis), bottom)
    size = bottom[axis]
    points = [int(x) for x in p.slice_point]
    n = ctx.n_tops
    tops: list[Shape] = []
    if points:
        _check_eq(len(points), n - 1, "slice_point_.size() == top.size() - 1")
        _check_op(n <= size, n, size, "top.size() <= bottom_slice_axis")
        prev = 0
        sizes = []
        for pt in points:
            _check_op(pt > prev, pt, prev, "slice_point_[i] > prev")
            sizes.append(pt - prev)
            prev = pt
        sizes.append(size - prev)
        for s in sizes:
            _nonnegative((s,))
            tops.append((*bottom[:axis], s, *bottom[axis + 1 :]))
    else:
        _check_eq(
            size % n,
            0,
            "bottom_slice_axis % top.size() == 0",
            f"Number of top blobs ({n}) should evenly divide input slice axis ({size})",
        )
        tops = [(*bottom[:axis], size // n, *bottom[axis + 1 :])] * n
    return tops, []


def _eltwise(ctx: _Ctx) -> _Result:
    p = ctx.msg.eltwise_param
    nc = len(p.coeff)
    _check(
        nc == 0 or nc == len(ctx.bottoms),
        "Check failed: this->layer_param().eltwise_param().coeff_size() == 0 || "
        "this->layer_param().eltwise_param().coeff_size() == bottom.size() Eltwise Layer takes "
        "one coefficient per bottom blob.",
    )
    _check(
        not (int(p.operation) != 1 and nc),
        "Check failed: !(this->layer_param().eltwise_param().operation() == "
        "EltwiseParameter_EltwiseOp_PROD && this->layer_param().eltwise_param().coeff_size()) "
        "Eltwise layer only takes coefficients for summation.",
    )
    first = ctx.bottoms[0]
    for i, b in enumerate(ctx.bottoms[1:], 1):
        if b == first:
            continue  # (the message is built only for a failure)
        _check(
            False,
            f"Check failed: bottom[0]->shape() == bottom[i]->shape() bottom[0]: "
            f"{shape_string(first)}, bottom[{i}]: {shape_string(b)}",
        )
    return [first], []


def _flatten(ctx: _Ctx) -> _Result:
    p = ctx.msg.flatten_param
    bottom = ctx.bottoms[0]
    start = _canonical(int(p.axis), bottom)
    end = _canonical(int(p.end_axis), bottom)
    return [(*bottom[:start], _count(bottom, start, end + 1), *bottom[end + 1 :])], []


def _reshape(ctx: _Ctx) -> _Result:
    p = ctx.msg.reshape_param
    bottom = ctx.bottoms[0]
    dims = [int(d) for d in p.shape.dim]
    copy_axes = [i for i, d in enumerate(dims) if d == 0]
    inferred = [i for i, d in enumerate(dims) if d == -1]
    _check(
        len(inferred) <= 1,
        f"Check failed: inferred_axis_ == -1 ({inferred[0] if inferred else -1} vs. -1) new "
        "shape contains multiple -1 dims; at most a single (1) value of -1 may be specified",
    )
    constant = math.prod(d for d in dims if d not in (0, -1))
    in_axis = int(p.axis)
    n = len(bottom)
    start = in_axis if in_axis >= 0 else n + in_axis + 1
    _check_op(start >= 0, start, 0, "start_axis >= 0", f"axis {in_axis} out of range")
    _check_op(
        start <= n,
        start,
        n,
        "start_axis <= bottom[0]->num_axes()",
        f"axis {in_axis} out of range for {n}-D input blob",
    )
    num_axes = int(p.num_axes)
    _check_op(
        num_axes >= -1, num_axes, -1, "num_axes >= -1", "num_axes must be >= 0, or -1 for all"
    )
    end = n if num_axes == -1 else start + num_axes
    _check_op(
        end <= n,
        end,
        n,
        "end_axis <= bottom[0]->num_axes()",
        "end_axis = axis + num_axes is out of range",
    )
    top = [*bottom[:start], *dims, *bottom[end:]]
    for i in copy_axes:
        _check_op(
            n > start + i,
            n,
            start + i,
            "bottom[0]->num_axes() > start_axis + copy_axis_index",
            "new shape contains a 0, but there was no corresponding bottom axis to copy",
        )
        top[start + i] = bottom[start + i]
    total = _count(bottom)
    if inferred:
        explicit = constant * _count(bottom, 0, start) * _count(bottom, end)
        for i in copy_axes:
            explicit *= top[start + i]
        _check_eq(
            0,
            total % explicit if explicit else 1,
            "0 == bottom[0]->count() % explicit_count",
            f"bottom count ({total}) must be divisible by the product of the specified "
            f"dimensions ({explicit})",
        )
        top[start + inferred[0]] = total // explicit
    _check_eq(
        math.prod(top),
        total,
        "top[0]->count() == bottom[0]->count()",
        "output count must match input count",
    )
    return [tuple(top)], []


def _crop_layer(ctx: _Ctx) -> _Result:
    p = ctx.msg.crop_param
    _check_eq(len(ctx.bottoms), 2, "bottom.size() == 2", "Wrong number of bottom blobs.")
    a, b = ctx.bottoms
    n = len(a)
    start = _canonical(int(p.axis), a)
    _check_op(start < n, start, n, "start_axis < input_dim", "crop axis bigger than input dim")
    offsets = [int(o) for o in p.offset]
    if len(offsets) > 1:
        _check_eq(
            start + len(offsets),
            n,
            "start_axis + param.offset_size() == input_dim",
            "number of offset values specified must be equal to the number of dimensions "
            "following axis.",
        )
    top = list(a)
    for i in range(start, n):
        off = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        _check_op(
            a[i] - off >= b[i],
            a[i] - off,
            b[i],
            "bottom[0]->shape(i) - crop_offset >= bottom[1]->shape(i)",
            f"the crop for dimension {i} is out-of-bounds with size {b[i]} and offset {off}",
        )
        top[i] = b[i]
    return [tuple(top)], []


def _tile(ctx: _Ctx) -> _Result:
    p = ctx.msg.tile_param
    bottom = ctx.bottoms[0]
    axis = _canonical(int(p.axis), bottom)
    _check(
        _has(p, "tiles"),
        "Check failed: tile_param.has_tiles() Number of tiles must be specified",
    )
    tiles = int(p.tiles)
    _check_op(tiles > 0, tiles, 0, "tiles_ > 0", "Number of tiles must be positive.")
    top = list(bottom)
    top[axis] *= tiles
    return [tuple(top)], []


def _reduction(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    axis = _canonical(int(ctx.msg.reduction_param.axis), bottom)
    return [tuple(bottom[:axis])], []


def _batch_reindex(ctx: _Ctx) -> _Result:
    a, b = ctx.bottoms
    _check_eq(1, len(b), "1 == bottom[1]->num_axes()")
    return [(b[0], *a[1:])], []


def _parameter(ctx: _Ctx) -> _Result:
    shape = _shape_of(ctx.msg.parameter_param.shape)
    return [shape], [shape]


def _no_tops(ctx: _Ctx) -> _Result:
    return [], []


def _filter(ctx: _Ctx) -> _Result:
    """FilterLayer's checks on the selector (last bottom); its batch size then depends on the
    selector's values."""
    _check_eq(ctx.n_tops, len(ctx.bottoms) - 1, "top.size() == bottom.size() - 1")
    selector = ctx.bottoms[-1]
    for d in selector[1:]:
        _check_eq(
            d,
            1,
            "bottom[selector_index]->shape(i) == 1",
            "Selector blob dimensions must be singletons (1), except the first",
        )
    for b in ctx.bottoms[:-1]:
        _check_eq(
            selector[0],
            b[0],
            "bottom[selector_index]->shape(0) == bottom[i]->shape(0)",
            "Each bottom should have the same 0th dimension as the selector blob",
        )
    raise _Unknown("the Filter layer's batch size depends on the data")


#: This family's shape rule per layer type (merged in :mod:`rewriter.caffe.shapes.table`).
RULES: dict[str, Callable[[_Ctx], _Result]] = {
    "BatchReindex": _batch_reindex,
    "Concat": _concat,
    "Crop": _crop_layer,
    "Eltwise": _eltwise,
    "Filter": _filter,
    "Flatten": _flatten,
    "HDF5Output": _no_tops,
    "Parameter": _parameter,
    "Reduction": _reduction,
    "Reshape": _reshape,
    "Silence": _silence,
    "Slice": _slice,
    "Split": _split,
    "Tile": _tile,
}
