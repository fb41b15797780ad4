"""Shapes of the recurrent layers: LSTM and RNN (``recurrent_layer.cpp``) and LSTMUnit."""

from __future__ import annotations

from collections.abc import Callable

from .core import (
    Shape,
    _blame,
    _check,
    _check_eq,
    _check_op,
    _count,
    _Ctx,
    _Result,
    shape_string,
)


def _recurrent(ctx: _Ctx) -> _Result:
    p = ctx.msg.recurrent_param
    x = ctx.bottoms[0]
    _check_op(
        len(x) >= 2,
        len(x),
        2,
        "bottom[0]->num_axes() >= 2",
        "bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...)",
    )
    t, n = x[0], x[1]
    cont = ctx.bottoms[1]
    _check_eq(
        len(cont),
        2,
        "bottom[1]->num_axes() == 2",
        "bottom[1] must have exactly 2 axes -- (#timesteps, #streams)",
    )
    _check_eq(t, cont[0], "T_ == bottom[1]->shape(0)")
    _check_eq(n, cont[1], "N_ == bottom[1]->shape(1)")
    hidden = int(p.num_output)
    x_dim = _count(x, 2)
    expose = bool(p.expose_hidden)
    n_recur = 2 if ctx.type == "LSTM" else 1
    static = len(ctx.bottoms) > 2 + (n_recur if expose else 0)
    if static:
        x_static = ctx.bottoms[2]
        _check_op(len(x_static) >= 1, len(x_static), 1, "bottom[2]->num_axes() >= 1")
        _check_eq(n, x_static[0], "N_ == bottom[2]->shape(0)")
    if expose:
        # Reshape: each exposed initial state must have the recurrent input's shape
        state: Shape = (1, n, hidden)
        first = 2 + int(static)
        for j, got in enumerate(ctx.bottoms[first:]):
            _check(
                tuple(got) == state,
                "Check failed: recur_input_blobs_[j]->shape() == bottom[i]->shape() shape "
                f"mismatch - recur_input_blobs_[{j}]: {shape_string(state)} vs. "
                f"bottom[{first + j}]: {shape_string(got)}",
            )
    static_dim = _count(ctx.bottoms[2], 1) if static else 0
    params: list[Shape]
    if ctx.type == "LSTM":
        params = [(4 * hidden, x_dim), (4 * hidden,)]
        if static:
            params.append((4 * hidden, static_dim))
        params.append((4 * hidden, hidden))
    else:
        params = [(hidden, x_dim), (hidden,)]
        if static:
            params.append((hidden, static_dim))
        params += [(hidden, hidden), (hidden, hidden), (hidden,)]
    tops: list[Shape] = [(t, n, hidden)]
    for _ in range(1, ctx.n_tops):
        tops.append((1, n, hidden))
    return tops, params


def _lstm_unit(ctx: _Ctx) -> _Result:
    """LSTMUnitLayer::Reshape: c_prev (1, N, D), gates (1, N, 4D), cont (1, N)."""
    c_prev = ctx.bottoms[0]
    n = c_prev[1]
    for i, b in enumerate(ctx.bottoms):
        want = 2 if i == 2 else 3
        with _blame("bottom", i):
            _check_eq(want, len(b), f"{want} == bottom[i]->num_axes()")
            _check_eq(1, b[0], "1 == bottom[i]->shape(0)")
            _check_eq(n, b[1], "num_instances == bottom[i]->shape(1)")
    _check_eq(4 * c_prev[2], ctx.bottoms[1][2], "4 * hidden_dim_ == bottom[1]->shape(2)")
    return [c_prev, c_prev], []


#: This family's shape rule per layer type (merged in :mod:`rewriter.caffe.shapes.table`).
RULES: dict[str, Callable[[_Ctx], _Result]] = {
    "LSTM": _recurrent,
    "LSTMUnit": _lstm_unit,
    "RNN": _recurrent,
}
