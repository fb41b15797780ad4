"""JSON rendering of a semantic diff (schema in docs/diff.md, ``schema_version`` 1).

Keys come in a fixed order and lists in file/net order, so the output is stable and can be
compared byte for byte. Non-finite numbers (possible in a file's float fields) are written as
the strings ``"nan"``, ``"inf"`` and ``"-inf"`` so the output is strict JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rewriter.review.semdiff import DiffResult

__all__ = ["render_json"]


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def render_json(result: DiffResult) -> str:
    return json.dumps(_strict(result.to_json()), indent=2, ensure_ascii=False, allow_nan=False)
