"""Protobuf wire format for the binder: field tags and scalar values as bytes.

Why: setting fields one by one on a upb message (``setattr``, ``.add()``, ``.append()``) costs a
Python-to-C call each; the binder writes each message's bytes instead and the whole net is
parsed once by upb (``MergeFromString``). Every encoding here gives the bytes upb itself writes
for the value ``setattr`` would have stored (``tests/test_bind_wire.py`` holds us to that).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["varint", "tag", "encoder", "wire_type", "encode_text"]

# FieldDescriptor.TYPE_* values (stable across protobuf versions; bind.py reads them here)
_DOUBLE, _FLOAT, _INT64, _UINT64, _INT32, _FIXED64, _FIXED32, _BOOL = 1, 2, 3, 4, 5, 6, 7, 8
_STRING, _GROUP, _MESSAGE, _BYTES, _UINT32, _ENUM = 9, 10, 11, 12, 13, 14
_SFIXED32, _SFIXED64, _SINT32, _SINT64 = 15, 16, 17, 18

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_MASK64 = (1 << 64) - 1
#: one-byte varints, shared
_SMALL = tuple(bytes((n,)) for n in range(128))

_pack_d = struct.Struct("<d").pack
_pack_f = struct.Struct("<f").pack
_pack_i = struct.Struct("<i").pack
_pack_I = struct.Struct("<I").pack
_pack_q = struct.Struct("<q").pack
_pack_Q = struct.Struct("<Q").pack
_INF = _pack_f(math.inf)
_NEG_INF = _pack_f(-math.inf)


def varint(n: int) -> bytes:
    """Base-128 varint of ``n`` (a negative ``n`` as its 64-bit two's complement: 10 bytes)."""
    if 0 <= n < 128:
        return _SMALL[n]
    n &= _MASK64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _float(v: float) -> bytes:
    """C's double-to-float conversion, as upb does it: past FLT_MAX is infinity (struct refuses)."""
    try:
        return _pack_f(v)
    except OverflowError:
        return _NEG_INF if v < 0 else _INF


def _bool(v: Any) -> bytes:
    return b"\x01" if v else b"\x00"


def _sint32(v: int) -> bytes:
    return varint(((v << 1) ^ (v >> 31)) & 0xFFFFFFFF)


def _sint64(v: int) -> bytes:
    return varint(((v << 1) ^ (v >> 63)) & _MASK64)


def encode_text(v: str | bytes) -> bytes:
    """A length-delimited string; raises UnicodeEncodeError for a str that is not UTF-8 text."""
    data = v.encode("utf-8") if isinstance(v, str) else v
    return varint(len(data)) + data


_ENCODERS: dict[int, tuple[int, Callable[[Any], bytes]]] = {
    _DOUBLE: (_I64, _pack_d),
    _FLOAT: (_I32, _float),
    _INT64: (_VARINT, varint),
    _UINT64: (_VARINT, varint),
    _INT32: (_VARINT, varint),
    _ENUM: (_VARINT, varint),
    _UINT32: (_VARINT, varint),
    _BOOL: (_VARINT, _bool),
    _SINT32: (_VARINT, _sint32),
    _SINT64: (_VARINT, _sint64),
    _FIXED32: (_I32, _pack_I),
    _SFIXED32: (_I32, _pack_i),
    _FIXED64: (_I64, _pack_Q),
    _SFIXED64: (_I64, _pack_q),
    _STRING: (_LEN, encode_text),
    _BYTES: (_LEN, encode_text),
}


def wire_type(field_type: int) -> int:
    """The wire type a field of ``field_type`` is written with (a group: its start tag's)."""
    if field_type == _MESSAGE:
        return _LEN
    if field_type == _GROUP:
        return _SGROUP
    return _ENCODERS[field_type][0]


def tag(number: int, wt: int) -> bytes:
    """The key of field ``number`` with wire type ``wt``."""
    return varint((number << 3) | wt)


def encoder(field_type: int) -> Callable[[Any], bytes]:
    """The value encoder of a scalar field type (value -> bytes after the tag)."""
    return _ENCODERS[field_type][1]
