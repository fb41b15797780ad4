"""LSTM and RNN layers, unrolled over their (static) time axis.

Caffe's recurrent layers build an unrolled net (``LSTMLayer::FillUnrolledNet``,
``RNNLayer::FillUnrolledNet``) in which the continuation input ``cont`` (T x N) multiplies the
previous hidden state before each step, and (LSTM) the forget gate, so a stream restarts where
``cont`` is 0. ONNX's LSTM/RNN operators have no such per-step reset, so the same steps are
written out one per time step, with the parameter blobs in Caffe's order:

* LSTM: ``W_xc`` (4H x X), ``b_c`` (4H), ``W_hc`` (4H x H); gates in the order i, f, o, g;
* RNN: ``W_xh`` (H x X), ``b_h`` (H), ``W_hh`` (H x H), ``W_ho`` (H x H), ``b_o`` (H).

Initial states are zeros; ``expose_hidden`` and a static input (a third bottom) are refused.
"""

from __future__ import annotations

import numpy as np

from .builder import Ctx


def _matmul_t(c: Ctx, x: str, w: str) -> str:
    """``x @ w.T`` (Caffe's InnerProduct without bias)."""
    return c.node("MatMul", [x, c.node("Transpose", [w], perm=[1, 0])])


def unroll(c: Ctx) -> None:
    rp = c.msg.recurrent_param
    if rp.expose_hidden:
        raise c.fail("expose_hidden is not mapped (initial states are zeros)", "recurrent_param")
    if len(c.bottoms) > 2:
        raise c.fail("a static input (third bottom) is not mapped", None)
    steps, batch, _ = c.bottom_shapes[0]
    hidden = int(rp.num_output)
    lstm = c.layer.type == "LSTM"
    x, cont = c.bottoms[0], c.bottoms[1]
    # W_x x + b for every step at once: (T, N, G)
    gates = 4 * hidden if lstm else hidden
    xw = c.node("Add", [_matmul_t(c, x, c.params[0]), c.params[1]])
    xs = c.b.node("Split", [xw, c.ints([1] * steps)], steps, name=c.name, axis=0)
    conts = c.b.node("Split", [cont, c.ints([1] * steps)], steps, name=c.name, axis=0)
    zeros = c.const(np.zeros((batch, hidden)))
    h = state = zeros
    outs = []
    for t in range(steps):
        keep = c.reshape(conts[t], [batch, 1])
        h_in = c.node("Mul", [h, keep])
        pre = c.node("Add", [_matmul_t(c, h_in, c.params[2]), c.reshape(xs[t], [batch, gates])])
        if lstm:
            i, f, o, g = c.b.node("Split", [pre, c.ints([hidden] * 4)], 4, name=c.name, axis=1)
            forget = c.node("Mul", [c.node("Sigmoid", [f]), keep])
            state = c.node(
                "Add",
                [
                    c.node("Mul", [forget, state]),
                    c.node("Mul", [c.node("Sigmoid", [i]), c.node("Tanh", [g])]),
                ],
            )
            h = c.node("Mul", [c.node("Sigmoid", [o]), c.node("Tanh", [state])])
            out = h
        else:
            h = c.node("Tanh", [pre])
            out = c.node("Tanh", [c.node("Add", [_matmul_t(c, h, c.params[3]), c.params[4]])])
        outs.append(c.reshape(out, [1, batch, hidden]))
    c.node("Concat", outs, c.tops[0], axis=0)
