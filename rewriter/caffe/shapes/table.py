"""The one table of shape rules: each layer-family module's ``RULES``, merged."""

from __future__ import annotations

from collections.abc import Callable

from . import blobs, conv, data, losses, neurons, pooling, recurrent
from .core import _Ctx, _Result

_RULES: dict[str, Callable[[_Ctx], _Result]] = {
    **data.RULES,
    **conv.RULES,
    **pooling.RULES,
    **blobs.RULES,
    **losses.RULES,
    **neurons.RULES,
    **recurrent.RULES,
}

#: Layer types whose shapes this package computes.
KNOWN_TYPES: frozenset[str] = frozenset(_RULES)
