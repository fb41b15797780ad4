"""``--set key=value`` strings as keyword arguments: :func:`parse_settings`.

Apart from :mod:`rewriter.recipes.deploy`, whose options they mostly are, so that ``rewriter
check --set`` (shapes for the set-up checks) does not import the deploy code and the tree editor
with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["parse_settings"]

_INT_KEYS = ("batch", "channels", "height", "width")
_BOOL_KEYS = ("strip_params", "strip_fillers", "strip_dropout")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_settings(items: Sequence[str], allowed: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` strings -> keyword arguments (``shape.BLOB=d,d,d`` -> input_shapes).

    Integers for batch/channels/height/width, booleans for strip_*, comma lists for
    ``outputs`` (unless ``last``/``all``) and ``stage``. Raises :class:`UsageError`.
    """
    from rewriter.errors import UsageError

    out: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, not {item!r}")
        if key.startswith("shape.") and "input_shapes" in allowed:
            blob = key[len("shape.") :]
            try:
                dims = [int(d) for d in value.replace("x", ",").split(",") if d.strip()]
            except ValueError:
                raise UsageError(
                    f"--set {key}: dimensions must be integers, not {value!r}"
                ) from None
            if not blob or not dims or any(d < 0 for d in dims):
                raise UsageError(f"--set shape.BLOB=D,D,...: bad value {item!r}")
            shapes[blob] = dims
            continue
        if key not in allowed:
            known = ", ".join(sorted(k for k in allowed if k != "input_shapes"))
            raise UsageError(f"--set: unknown key {key!r} (known: {known}, shape.BLOB)")
        if key in _INT_KEYS:
            try:
                number = int(value)
            except ValueError:
                raise UsageError(f"--set {key}: expected an integer, not {value!r}") from None
            if number <= 0:
                raise UsageError(f"--set {key}: must be positive, not {number}")
            out[key] = number
        elif key in _BOOL_KEYS:
            low = value.strip().lower()
            if low not in _TRUE | _FALSE:
                raise UsageError(f"--set {key}: expected true or false, not {value!r}")
            out[key] = low in _TRUE
        elif key == "outputs":
            out[key] = value if value in ("last", "all") else [v for v in value.split(",") if v]
        elif key == "stage":
            out[key] = [v for v in value.split(",") if v]
        elif key == "phase":
            if value.upper() not in ("TRAIN", "TEST"):
                raise UsageError(f"--set phase: TRAIN or TEST, not {value!r}")
            out[key] = value.upper()
        else:
            if not value:
                raise UsageError(f"--set {key}: empty value")
            out[key] = value
    if shapes:
        out["input_shapes"] = shapes
    return out
