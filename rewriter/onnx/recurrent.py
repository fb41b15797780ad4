"""LSTM and RNN layers, unrolled over their (static) time axis."""

from __future__ import annotations

from .export import Ctx


def unroll(c: Ctx) -> None:
    raise c.fail("not mapped yet", None)
