"""Shapes of the per-element and per-channel layers: the neurons that keep their bottom's shape,
Softmax, Scale, Bias, BatchNorm, PReLU, MVN, Log, Exp."""

from __future__ import annotations

from collections.abc import Callable

from .core import (
    Shape,
    _canonical,
    _check,
    _check_eq,
    _check_op,
    _Ctx,
    _legacy_dim,
    _memoized,
    _Result,
)


def _same(ctx: _Ctx) -> _Result:
    return [ctx.bottoms[0]] * ctx.n_tops, []


def _softmax(ctx: _Ctx) -> _Result:
    _canonical(int(ctx.msg.softmax_param.axis), ctx.bottoms[0])
    return [ctx.bottoms[0]], []


def _scale_like(ctx: _Ctx, field_name: str, learned_name: str) -> tuple[Shape, int]:
    """Shape of the scale/bias operand and the axis it applies at (Scale/Bias layers)."""
    p = getattr(ctx.msg, field_name)
    bottom = ctx.bottoms[0]
    ax = "axis_" if learned_name == "scale" else "axis"  # as each layer's source spells it
    if len(ctx.bottoms) > 1:
        operand = ctx.bottoms[1]
    else:
        axis = _canonical(int(p.axis), bottom)
        num_axes = int(p.num_axes)
        _check_op(
            num_axes >= -1,
            num_axes,
            -1,
            "num_axes >= -1",
            "num_axes must be non-negative, or -1 to extend to the end of bottom[0]",
        )
        if num_axes >= 0 and len(bottom) < axis + num_axes:
            _check_op(
                len(bottom) >= axis + num_axes,
                len(bottom),
                axis + num_axes,
                f"bottom[0]->num_axes() >= {ax} + num_axes",
                f"{learned_name} blob's shape extends past bottom[0]'s shape when applied "
                f"starting with bottom[0] axis = {axis}",
            )
        operand = tuple(bottom[axis:] if num_axes == -1 else bottom[axis : axis + num_axes])
    axis = 0 if len(operand) == 0 else _canonical(int(p.axis), bottom)
    if len(bottom) < axis + len(operand):
        _check_op(
            len(bottom) >= axis + len(operand),
            len(bottom),
            axis + len(operand),
            f"bottom[0]->num_axes() >= {ax} + {learned_name}->num_axes()",
            f"{learned_name} blob's shape extends past bottom[0]'s shape when applied "
            f"starting with bottom[0] axis = {axis}",
        )
    for i, d in enumerate(operand):
        if bottom[axis + i] == d:
            continue  # (the message is built only for a failure)
        _check_eq(
            bottom[axis + i],
            d,
            f"bottom[0]->shape({ax} + i) == {learned_name}->shape(i)",
            f"dimension mismatch between bottom[0]->shape({axis + i}) and "
            f"{learned_name}->shape({i})",
        )
    return operand, axis


def _scale(ctx: _Ctx) -> _Result:
    return _memoized(ctx, "scale_param", _scale_rule)


def _scale_rule(ctx: _Ctx) -> _Result:
    operand, axis = _scale_like(ctx, "scale_param", "scale")
    params: list[Shape] = []
    if len(ctx.bottoms) == 1:
        params.append(operand)
    if ctx.msg.scale_param.bias_term:
        bottom = ctx.bottoms[0]
        p = ctx.msg.scale_param
        # The internal Bias layer: axis as given, num_axes = bottom[1]'s or scale num_axes.
        b_axis = _canonical(int(p.axis), bottom)
        num_axes = len(ctx.bottoms[1]) if len(ctx.bottoms) > 1 else int(p.num_axes)
        params.append(
            tuple(bottom[b_axis:] if num_axes == -1 else bottom[b_axis : b_axis + num_axes])
        )
    return [ctx.bottoms[0]], params


def _bias(ctx: _Ctx) -> _Result:
    operand, _ = _scale_like(ctx, "bias_param", "bias")
    params: list[Shape] = [operand] if len(ctx.bottoms) == 1 else []
    return [ctx.bottoms[0]], params


def _batch_norm(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    channels = 1 if len(bottom) == 1 else bottom[1]
    return [bottom], [(channels,), (channels,), (1,)]


def _prelu(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    _check_op(
        len(bottom) >= 2,
        len(bottom),
        2,
        "bottom[0]->num_axes() >= 2",
        "Number of axes of bottom blob must be >=2.",
    )
    channels = _legacy_dim(bottom, 1)
    shape: Shape = () if ctx.msg.prelu_param.channel_shared else (channels,)
    return [bottom], [shape]


def _mvn(ctx: _Ctx) -> _Result:
    """MVNLayer::Reshape builds its top from the legacy accessors: always 4 axes."""
    bottom = ctx.bottoms[0]
    return [tuple(_legacy_dim(bottom, i) for i in range(4))], []


def _log_exp(ctx: _Ctx) -> _Result:
    """Log/Exp LayerSetUp: a base other than -1 (e) must be positive; Log also needs
    1/log(base) finite."""
    p = ctx.msg.log_param if ctx.type == "Log" else ctx.msg.exp_param
    base = float(p.base)
    if base != -1:
        _check(base > 0, f"Check failed: base > 0 ({base:g} vs. 0) base must be strictly positive.")
    if ctx.type == "Log" and base == 1:
        _check(
            False,
            "Check failed: !isinf(base_scale_) Inf result: 1/log(base) = 1/log(1) = 0",
        )
    return [ctx.bottoms[0]], []


_SAME_SHAPE = (
    "AbsVal",
    "BNLL",
    "Clip",
    "Dropout",
    "ELU",
    "Power",
    "ReLU",
    "Sigmoid",
    "Swish",
    "TanH",
    "Threshold",
)


#: This family's shape rule per layer type (merged in :mod:`rewriter.caffe.shapes.table`).
RULES: dict[str, Callable[[_Ctx], _Result]] = {
    **{t: _same for t in _SAME_SHAPE},
    "Softmax": _softmax,
    "BatchNorm": _batch_norm,
    "Bias": _bias,
    "PReLU": _prelu,
    "MVN": _mvn,
    "Log": _log_exp,
    "Exp": _log_exp,
    "Scale": _scale,
}
