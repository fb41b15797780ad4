"""Protobuf values as Python source for NetSpec scripts (shared by export and the codemods).

Values become the literals pycaffe's ``assign_proto`` turns back into the same message: a
message is ``dict(field=value, ...)`` (``{"field": value}`` when a key is not an identifier),
a repeated field a list (a single scalar stays bare, ``kernel_size=3``, as scripts write it),
an enum ``P.Pooling.MAX`` (``caffe.TRAIN`` for phases, ``caffe_pb2.X.Y`` for enums of
messages that ``P`` cannot reach), a float the shortest decimal that gives back the same
32-bit (or 64-bit) value.

Expressions are small trees (:class:`Atom`, :class:`Call`, :class:`ListExpr`,
:class:`DictExpr`) printed by :func:`fmt` on one line when they fit, else black-style: one
item per line with a trailing comma.
"""

from __future__ import annotations

import keyword
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rewriter.schema.runtime import is_repeated

__all__ = [
    "Atom",
    "Call",
    "DictExpr",
    "Expr",
    "ListExpr",
    "Renderer",
    "fmt",
    "is_identifier",
    "py_float",
    "py_str",
]

_FLOAT = 2  # FieldDescriptor.TYPE_FLOAT
_DOUBLE = 1
_BOOL = 8
_STRING = 9
_BYTES = 12
_ENUM = 14
_MESSAGE = 11
_GROUP = 10


def is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def py_str(value: str) -> str:
    """A Python string literal, double-quoted when that needs no escaping of quotes."""
    r = repr(value)
    if r.startswith("'") and '"' not in value:
        r = '"' + r[1:-1].replace("\\'", "'") + '"'
    return r


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def py_float(value: float, single: bool = True) -> str:
    """The shortest literal giving ``value`` back (as a float32 when ``single``)."""
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else '-float("inf")'
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if not single:
        return repr(value)
    for precision in range(1, 18):
        text = f"{value:.{precision}g}"
        if _f32(float(text)) == value:
            return text if ("." in text or "e" in text or "n" in text) else text + ".0"
    return repr(value)


# --------------------------------------------------------------------------- expressions


@dataclass
class Atom:
    text: str


@dataclass
class Call:
    func: str
    args: list[tuple[str | None, Expr]] = field(default_factory=list)


@dataclass
class ListExpr:
    items: list[Expr] = field(default_factory=list)


@dataclass
class DictExpr:
    """``{"key": value}`` (used when some key is not an identifier)."""

    items: list[tuple[str, Expr]] = field(default_factory=list)


Expr = Atom | Call | ListExpr | DictExpr


def _flat(e: Expr) -> str:
    if isinstance(e, Atom):
        return e.text
    if isinstance(e, Call):
        parts = [_flat(v) if k is None else f"{k}={_flat(v)}" for k, v in e.args]
        return f"{e.func}({', '.join(parts)})"
    if isinstance(e, ListExpr):
        return "[" + ", ".join(_flat(v) for v in e.items) + "]"
    return "{" + ", ".join(f"{py_str(k)}: {_flat(v)}" for k, v in e.items) + "}"


def _has_dict_literal(e: Expr) -> bool:
    """Black explodes a call whose arguments hold a multi-item container; we do the same for
    argument lists holding a list, so ``param=[...]`` entries line up one per line."""
    return any(isinstance(v, ListExpr) and len(v.items) > 1 for _, v in e.args)  # type: ignore[union-attr]


def fmt(e: Expr, indent: int = 0, width: int = 99, prefix: int = 0) -> str:
    """Print ``e`` starting at column ``indent + prefix``; lines wrap at ``width``."""
    flat = _flat(e)
    if indent + prefix + len(flat) <= width or isinstance(e, Atom):
        return flat
    inner = " " * (indent + 4)
    close = " " * indent
    if isinstance(e, Call):
        if not e.args:
            return flat
        joined = ", ".join(_flat(v) if k is None else f"{k}={_flat(v)}" for k, v in e.args)
        if indent + 4 + len(joined) <= width and not _has_dict_literal(e):
            return f"{e.func}(\n{inner}{joined}\n{close})"
        lines = []
        for k, v in e.args:
            label = "" if k is None else f"{k}="
            lines.append(f"{inner}{label}{fmt(v, indent + 4, width, len(label) + 1)},")
        return f"{e.func}(\n" + "\n".join(lines) + f"\n{close})"
    if isinstance(e, ListExpr):
        if not e.items:
            return flat
        lines = [f"{inner}{fmt(v, indent + 4, width, 1)}," for v in e.items]
        return "[\n" + "\n".join(lines) + f"\n{close}]"
    lines = []
    for k, v in e.items:
        label = f"{py_str(k)}: "
        lines.append(f"{inner}{label}{fmt(v, indent + 4, width, len(label) + 1)},")
    return "{\n" + "\n".join(lines) + f"\n{close}}}"


# --------------------------------------------------------------------------- protobuf values


def is_message(fd: Any) -> bool:
    return fd.type in (_MESSAGE, _GROUP)


class Renderer:
    """Turns protobuf values into :data:`Expr` trees; remembers which names the text needs."""

    def __init__(self) -> None:
        self.uses_params = False
        self.uses_caffe = False
        self.uses_caffe_pb2 = False
        #: paths (attribute chains) of present-but-empty singular messages, which a dict
        #: literal cannot express: the caller adds ``.SetInParent()`` for each
        self.empty_messages: list[str] = []

    def enum(self, fd: Any, number: int) -> Expr:
        enum_type = fd.enum_type
        value = enum_type.values_by_number.get(number)
        if value is None:
            return Atom(str(number))
        container = enum_type.containing_type
        if container is None:
            if enum_type.name == "Phase":
                self.uses_caffe = True
                return Atom(f"caffe.{value.name}")
            self.uses_caffe_pb2 = True
            return Atom(f"caffe_pb2.{value.name}")
        if (
            container.containing_type is None
            and container.name.endswith("Parameter")
            and len(container.name) > len("Parameter")
        ):
            self.uses_params = True
            return Atom(f"P.{container.name[: -len('Parameter')]}.{value.name}")
        chain = []
        t = container
        while t is not None:
            chain.append(t.name)
            t = t.containing_type
        self.uses_caffe_pb2 = True
        return Atom("caffe_pb2." + ".".join(reversed(chain)) + f".{value.name}")

    def scalar(self, fd: Any, value: Any, path: str = "") -> Expr:
        t = fd.type
        if is_message(fd):
            return self.message(value, path)
        if t == _ENUM:
            return self.enum(fd, int(value))
        if t == _BOOL:
            return Atom("True" if value else "False")
        if t == _FLOAT:
            return Atom(py_float(float(value), single=True))
        if t == _DOUBLE:
            return Atom(py_float(float(value), single=False))
        if t == _STRING:
            return Atom(py_str(str(value)))
        if t == _BYTES:
            return Atom(repr(bytes(value)))
        return Atom(str(int(value)))

    def message(self, msg: Any, path: str = "") -> Expr:
        items: list[tuple[str, Expr]] = []
        for fd, value in msg.ListFields():
            sub = f"{path}.{fd.name}" if path else fd.name
            items.append((fd.name, self.field(fd, value, sub)))
        if all(is_identifier(k) for k, _ in items):
            return Call("dict", [(k, v) for k, v in items])
        return DictExpr(items)

    def field(self, fd: Any, value: Any, path: str = "", unwrap: bool = True) -> Expr:
        """The value of one field as assign_proto wants it (``value`` as ListFields gives it)."""
        if is_repeated(fd):
            items = list(value)
            if len(items) == 1 and unwrap:
                return self.scalar(fd, items[0], f"{path}[0]")
            if is_message(fd):
                # list items are added with add(): an empty dict still adds an element
                return ListExpr([self.message(v, f"{path}[{i}]") for i, v in enumerate(items)])
            return ListExpr([self.scalar(fd, v) for v in items])
        if is_message(fd) and not value.ListFields():
            self.empty_messages.append(path or fd.name)
        return self.scalar(fd, value, path)


def render_list(items: Sequence[Expr]) -> Expr:
    return ListExpr(list(items))
