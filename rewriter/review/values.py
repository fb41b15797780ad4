"""Field values of a message as plain data: dicts for comparing and printing.

:func:`message_to_dict` turns a bound message into nested dicts and lists (floats at their
shortest float32 text, enums by name), :func:`format_value` prints one value as the text
format would, and :func:`_deep_changes` lists the fields two such dicts differ in.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from rewriter.review.changes import FieldChange
from rewriter.schema.runtime import is_repeated


def _short_float32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (as protobuf prints it)."""
    if not math.isfinite(v):
        return v
    packed = struct.pack("<f", v)
    for digits in range(1, 10):
        s = float(f"{v:.{digits}g}")
        try:
            if struct.pack("<f", s) == packed:
                return s
        except OverflowError:
            break
    return v


_T_FLOAT, _T_ENUM, _T_GROUP, _T_MESSAGE, _T_BYTES = 2, 14, 10, 11, 12


class EnumName(str):
    """An enum value by name: a string in JSON, printed bare (``TRAIN``) in text."""

    __slots__ = ()


def _plain(fd: Any, value: Any) -> Any:
    t = fd.type
    if t in (_T_MESSAGE, _T_GROUP):
        return message_to_dict(value)
    if t == _T_ENUM:
        ev = fd.enum_type.values_by_number.get(value)
        return EnumName(ev.name) if ev is not None else int(value)
    if t == _T_FLOAT:
        return _short_float32(float(value))
    if t == _T_BYTES:
        return bytes(value).decode("utf-8", "backslashreplace")
    return value


def message_to_dict(msg: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """A message as plain data: set fields only, enums by name, float32 values shortest."""
    skipped = frozenset(skip)
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        name = f"[{fd.full_name}]" if fd.is_extension else fd.name
        if name in skipped:
            continue
        if is_repeated(fd):
            out[name] = [_plain(fd, v) for v in value]
        else:
            out[name] = _plain(fd, value)
    return out


def format_value(value: Any) -> str:
    """A plain value in protobuf text style: ``0``, ``"x"``, ``TRAIN``, ``{ lr_mult: 0 }``."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, EnumName):
        return str(value)
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dict):
        inner = " ".join(f"{k}: {format_value(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _path_text(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(root)"


def _deep_changes(old: dict[str, Any], new: dict[str, Any]) -> list[FieldChange]:
    """Field changes between two plain dicts, as deepdiff reports them without its threshold
    (rewriter.util.plaindiff: deepdiff itself only for what that does not model)."""
    if old == new:
        return []
    from rewriter.util.plaindiff import plain_diff

    kinds = {
        "values_changed": "changed",
        "type_changes": "changed",
        "dictionary_item_added": "added",
        "iterable_item_added": "added",
        "dictionary_item_removed": "removed",
        "iterable_item_removed": "removed",
    }
    out: list[tuple[list[Any], FieldChange]] = []
    for path, report, t1, t2 in plain_diff(old, new, threshold=0):
        change = kinds.get(report, "changed")
        parts = list(path)
        o = None if change == "added" else t1
        n = None if change == "removed" else t2
        out.append((parts, FieldChange(_path_text(parts), change, o, n)))
    rank: dict[tuple[Any, ...], int] = {}
    _rank_paths((), old, rank)
    _rank_paths((), new, rank)
    out.sort(key=lambda item: rank.get(tuple(item[0]), len(rank)))
    return [fc for _, fc in out]


def _rank_paths(prefix: tuple[Any, ...], value: Any, rank: dict[tuple[Any, ...], int]) -> None:
    """Number every path of a plain value in file order (fields as protobuf lists them)."""
    rank.setdefault(prefix, len(rank))
    if isinstance(value, dict):
        for k, v in value.items():
            _rank_paths(prefix + (k,), v, rank)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _rank_paths(prefix + (i,), v, rank)
