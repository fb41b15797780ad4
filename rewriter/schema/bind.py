"""Schema binding: the lossless tree checked against caffe.proto and turned into a message.

Why a binder of our own instead of ``text_format.Parse(doc.code)``: we need every problem at once,
each with ``path:line:col`` and a caret, did-you-mean suggestions, and a lenient mode that keeps a
fork's unknown fields in the text (and reports them) instead of refusing the whole file. The
result must still equal what protobuf builds; ``tests/test_bind.py`` holds us to that on the corpus.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewriter.errors import Diagnostic, Location, SchemaErrors, did_you_mean, locate
from rewriter.schema.runtime import is_repeated
from rewriter.schema.wire import (  # FieldDescriptor.TYPE_* values, defined once there
    _BOOL,
    _BYTES,
    _DOUBLE,
    _ENUM,
    _FIXED32,
    _FIXED64,
    _FLOAT,
    _GROUP,
    _INT32,
    _INT64,
    _MESSAGE,
    _SFIXED32,
    _SFIXED64,
    _SINT32,
    _SINT64,
    _STRING,
    _UINT32,
    _UINT64,
    encoder,
    tag,
    varint,
    wire_type,
)
from rewriter.text.cst import (
    _REC,
    KIND_LIST,
    KIND_MESSAGE,
    KIND_STRING,
    Document,
    EscapeError,
    Field,
    MessageBody,
    _BlockBody,
    decode_string,
    scalar_tokens,
)
from rewriter.util.record import FrozenRecord, Record

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor
    from google.protobuf.message import Message

    from rewriter.schema.runtime import Schema

__all__ = [
    "Bound",
    "bind",
    "diagnose",
    "detect_kind",
    "FieldInfo",
    "field_table",
    "NET",
    "SOLVER",
    "SolverNet",
    "require_net",
    "not_a_net",
    "resolve",
    "solver_net",
]

NET = "caffe.NetParameter"
SOLVER = "caffe.SolverParameter"


_INT_RANGES = {
    _INT32: (-(2**31), 2**31 - 1),
    _SINT32: (-(2**31), 2**31 - 1),
    _SFIXED32: (-(2**31), 2**31 - 1),
    _INT64: (-(2**63), 2**63 - 1),
    _SINT64: (-(2**63), 2**63 - 1),
    _SFIXED64: (-(2**63), 2**63 - 1),
    _UINT32: (0, 2**32 - 1),
    _FIXED32: (0, 2**32 - 1),
    _UINT64: (0, 2**64 - 1),
    _FIXED64: (0, 2**64 - 1),
}
_TYPE_NAMES = {
    _DOUBLE: "double",
    _FLOAT: "float",
    _INT64: "int64",
    _UINT64: "uint64",
    _INT32: "int32",
    _FIXED64: "fixed64",
    _FIXED32: "fixed32",
    _BOOL: "bool",
    _STRING: "string",
    _MESSAGE: "message",
    _BYTES: "bytes",
    _UINT32: "uint32",
    _ENUM: "enum",
    _SFIXED32: "sfixed32",
    _SFIXED64: "sfixed64",
    _SINT32: "sint32",
    _SINT64: "sint64",
}
_TRUE = {"true", "t", "1", "True"}
_FALSE = {"false", "f", "0", "False"}
_INF_RE = re.compile(r"-?inf(?:inity)?f?", re.I)
_NAN_RE = re.compile(r"-?nanf?", re.I)
_INT_RE = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_HAS_TRIVIA = re.compile(r"[ \t\n\r\f\v#]").search
_OCTAL_RE = re.compile(r"-?0[0-9]")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?")


class FieldInfo(FrozenRecord):
    """What the binder needs of one field descriptor, computed once per message type (read-only).

    The records of this module are :class:`~rewriter.util.record.Record` classes, not
    ``@dataclass``: every command imports it, and each dataclass costs ~1 ms at import."""

    __slots__ = (
        "name",
        "type",
        "repeated",
        "message",
        "enum_names",
        "enum_numbers",
        "full_type",
        "number",
    )

    def __init__(
        self,
        name: str,
        type: int,
        repeated: bool,
        message: Descriptor | None,
        enum_names: dict[str, int] | None,
        enum_numbers: frozenset[int] | None,
        full_type: str,
        number: int = 0,
    ) -> None:
        self.name = name
        self.type = type
        self.repeated = repeated
        self.message = message
        self.enum_names = enum_names
        self.enum_numbers = enum_numbers
        self.full_type = full_type
        #: the field number (its wire-format tag)
        self.number = number

    @property
    def type_name(self) -> str:
        return self.full_type


_TABLES: dict[int, dict[str, FieldInfo]] = {}


def field_table(desc: Descriptor) -> dict[str, FieldInfo]:
    """Field name -> FieldInfo for a message type (cached per descriptor object)."""
    table = _TABLES.get(id(desc))
    if table is None:
        table = {}
        for fd in desc.fields:
            enum_names = enum_numbers = None
            full_type = _TYPE_NAMES.get(fd.type, "?")
            if fd.type == _ENUM and fd.enum_type is not None:
                enum_names = {v.name: v.number for v in fd.enum_type.values}
                enum_numbers = frozenset(enum_names.values())
                full_type = fd.enum_type.full_name
            msg = fd.message_type if fd.type in (_MESSAGE, _GROUP) else None
            if msg is not None:
                full_type = msg.full_name
            table[fd.name] = FieldInfo(
                fd.name,
                fd.type,
                is_repeated(fd),
                msg,
                enum_names,
                enum_numbers,
                full_type,
                fd.number,
            )
        _TABLES[id(desc)] = table
        # Keep the descriptor alive as long as its table, so id() stays unique.
        _KEEP.append(desc)
    return table


_KEEP: list[Any] = []


class Bound(Record):
    """A document bound to a message type: the message plus every finding."""

    __slots__ = ("document", "root", "message", "diagnostics")

    def __init__(
        self,
        document: Document,
        root: str,
        message: Message,
        diagnostics: list[Diagnostic] | None = None,
    ) -> None:
        self.document = document
        self.root = root
        self.message = message
        self.diagnostics: list[Diagnostic] = [] if diagnostics is None else diagnostics

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        if self.errors:
            raise SchemaErrors(self.errors)


def detect_kind(doc: Document, schema: Schema) -> str:
    """NetParameter or SolverParameter, by which one knows more of the top-level names."""
    names = {f.name for f in doc.fields}
    net = field_table(schema.net_descriptor)
    solver = field_table(schema.solver_descriptor)
    n_net = sum(1 for n in names if n in net)
    n_solver = sum(1 for n in names if n in solver)
    return SOLVER if n_solver > n_net else NET


_SLOW = object()  # not a one-token value: read it the general way (bind_field)
#: values a fork's caffe.proto can make valid: kept verbatim (and left out) when lenient
_FORK_VALUE_CODES = frozenset({"unknown-enum", "not-repeated"})


#: how alike an unknown name and a known one must be (difflib ratio) to count as a typo of it;
#: the did-you-mean in the message uses difflib's looser default (0.6), which also pairs a
#: fork's field with a BVLC one (``multibox_loss_param`` / ``loss_param``: 0.69)
_TYPO_RATIO = 0.8


def _typo_of(name: str, known: Iterable[str]) -> str | None:
    """The known name ``name`` is most likely a typo of, or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=_TYPO_RATIO)
    return close[0] if close else None


class _ValueError(Exception):
    def __init__(
        self,
        offset: int,
        message: str,
        expected: str | None = None,
        code: str = "value",
        suggestion: str | None = None,
    ) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.expected = expected
        self.code = code
        self.suggestion = suggestion


#: fields longer than this are not memoized: slicing each level of deep nesting as a key would
#: cost the square of its size, and a long field is rarely repeated
_MEMO_MAX_TEXT = 512
#: memo entries per message type (each a field's text and bytes: bounded memory)
_MEMO_MAX_ENTRIES = 4096
#: the root message's bytes are merged into it once they exceed this (bounded extra memory)
_FLUSH_BYTES = 1 << 20


class _Kind:
    """One message type as the binder writes it: its field table plus this bind's memo.

    ``memo`` maps the text of a field of a parsed body (``lr_mult: 1``,
    ``weight_filler { type: "xavier" }``, from its name to the end of its value) to its name,
    whether it is repeated, and its encoded bytes (key included). Only a field that bound
    without any diagnostic is memoized: the same text in the same message type always encodes
    to the same bytes, while each problem must be reported at its own place.
    """

    __slots__ = ("desc", "table", "slots", "children", "memo")

    def __init__(self, desc: Descriptor) -> None:
        self.desc = desc
        self.table = field_table(desc)
        #: name -> (the field's key bytes, its value encoder; None for a message field)
        self.slots: dict[str, tuple[bytes, Callable[[Any], bytes] | None]] = {}
        for name, info in self.table.items():
            wt = wire_type(info.type)
            enc = None if info.message is not None else encoder(info.type)
            self.slots[name] = (tag(info.number, wt), enc)
        #: message field name -> its type's _Kind (filled as met)
        self.children: dict[str, _Kind] = {}
        self.memo: dict[str, tuple[str, bool, bytes]] = {}


#: one unit of binding work: fields (a tuple of Field, or a parsed body whose records are read
#: directly), the position to go on from and where to stop, the message type, the bytes of the
#: message being written, and the names of its singular fields set so far. A "finish" entry
#: (source None) appends a completed sub-message to its parent: (None, parent bytes, key bytes,
#: the sub-message's bytes, the end group key or None, the memo to keep it in or None, its
#: memo key, the diagnostic count when it began, its name, whether it is repeated).
_Work = tuple[Any, ...]


class _Binder:
    def __init__(self, doc: Document, lenient: bool) -> None:
        self.doc = doc
        self.lenient = lenient
        self.diags: list[Diagnostic] = []
        self.kinds: dict[int, _Kind] = {}

    def kind(self, desc: Descriptor) -> _Kind:
        k = self.kinds.get(id(desc))
        if k is None:
            k = self.kinds[id(desc)] = _Kind(desc)
            _KEEP.append(desc)
        return k

    def child_kind(self, kind: _Kind, name: str, desc: Descriptor) -> _Kind:
        ck = kind.children[name] = self.kind(desc)
        return ck

    def diag(
        self,
        severity: str,
        offset: int,
        message: str,
        expected: str | None = None,
        code: str = "",
        suggestion: str | None = None,
    ) -> None:
        loc = locate(self.doc.src, offset, self.doc.path)
        self.diags.append(Diagnostic(severity, message, loc, expected, code, suggestion=suggestion))

    def bind_fields(self, fields: Iterable[Field], desc: Descriptor, msg: Message) -> None:
        """Bind fields depth first, in file order, writing wire format; merge it into ``msg``.

        A work list instead of recursion: 10,000-deep nesting must not overflow the stack. A
        parsed (packed) body is read straight from its records in the common cases, a known
        message field, a plain string or a one-token scalar, without building :class:`Field`
        objects; anything else (unknown names, lists, odd values, errors) goes through
        :meth:`bind_field`.
        """
        root = self.kind(desc)
        out = bytearray()
        top = tuple(fields)
        stack: list[_Work] = [(top, 0, len(top), root, out, set())]
        bind_field = self.bind_field
        word = self.word
        diags = self.diags
        child_kind = self.child_kind
        while stack:
            work = stack.pop()
            source = work[0]
            if source is None:
                _, parent, head, child, tail, memo, key, ndiags, name, repeated = work
                # a message is length-delimited; a group ends with its end key
                if key is not None and len(diags) == ndiags and len(memo) < _MEMO_MAX_ENTRIES:
                    data = head + child + tail if tail else head + varint(len(child)) + child
                    memo[key] = (name, repeated, data)
                    parent += data
                else:
                    parent += head
                    if tail:
                        parent += child
                        parent += tail
                    else:
                        parent += varint(len(child))
                        parent += child
                continue
            _, i, hi, kind, buf, seen = work
            if isinstance(source, MessageBody):
                packed = source._packed
                assert packed is not None
                src = source.src
                table = kind.table
                slots = kind.slots
                memo = kind.memo
                while i < hi:
                    j = i * _REC
                    ns, ne, vs, ve, _end, oe, cs, nsub = packed[j + 1 : j + _REC]
                    nxt = i + 1 + nsub
                    if oe == -2:  # a list: the general way
                        pass
                    elif oe == -1 and src[vs] == '"':
                        # a string: plain ones (no escape, one token) are encoded here
                        name = src[ns:ne]
                        info = table.get(name)
                        if info is not None and info.type == _STRING:
                            text = src[vs + 1 : ve - 1]
                            plain = ve - vs > 1 and src[ve - 1] == '"'
                            if plain and '"' not in text and "\\" not in text:
                                if not info.repeated and name in seen:
                                    self.duplicate(ns, name, kind.desc)
                                    i = nxt
                                    continue
                                try:
                                    data = text.encode("utf-8")
                                except ValueError:  # UnicodeEncodeError
                                    self.not_utf8(name, vs)
                                    i = nxt
                                    continue
                                if not info.repeated:
                                    seen.add(name)
                                buf += slots[name][0]
                                n = len(data)
                                if n < 128:
                                    buf.append(n)
                                else:
                                    buf += varint(n)
                                buf += data
                                i = nxt
                                continue
                    else:
                        key = src[ns:ve] if ve - ns <= _MEMO_MAX_TEXT else None
                        if key is not None:
                            hit = memo.get(key)
                            if hit is not None:
                                if hit[1]:
                                    buf += hit[2]
                                elif hit[0] in seen:
                                    self.duplicate(ns, hit[0], kind.desc)
                                else:
                                    seen.add(hit[0])
                                    buf += hit[2]
                                i = nxt
                                continue
                        name = src[ns:ne]
                        info = table.get(name)
                        if info is None:
                            pass
                        elif oe >= 0:
                            sub_desc = info.message
                            if sub_desc is not None:
                                repeated = info.repeated
                                if not repeated:
                                    if name in seen:
                                        self.duplicate(ns, name, kind.desc)
                                        i = nxt
                                        continue
                                    seen.add(name)
                                ck = kind.children.get(name)
                                if ck is None:
                                    ck = child_kind(kind, name, sub_desc)
                                tail = tag(info.number, 4) if info.type == _GROUP else None
                                child = bytearray()
                                stack.append((source, nxt, hi, kind, buf, seen))
                                stack.append(
                                    (
                                        None,
                                        buf,
                                        slots[name][0],
                                        child,
                                        tail,
                                        memo,
                                        key,
                                        len(diags),
                                        name,
                                        repeated,
                                    )
                                )
                                stack.append((source, i + 1, nxt, ck, child, set()))
                                break
                        elif info.message is None:
                            # one token (what the parser's fast path took): read and encode it
                            # here, inline (as value() and bind_field() do, without the calls),
                            # as this runs once per scalar field of the file
                            text = src[vs:ve]
                            c = text[0]
                            if c == "'":
                                value: Any = _SLOW
                            elif _HAS_TRIVIA(text):
                                value = _SLOW
                            else:
                                try:
                                    value = word(text, vs, info)
                                except _ValueError as e:
                                    self.bad_value(e)
                                    i = nxt
                                    continue
                            if value is not _SLOW:
                                repeated = info.repeated
                                if not repeated and name in seen:
                                    self.duplicate(ns, name, kind.desc)
                                    i = nxt
                                    continue
                                head, enc = slots[name]
                                assert enc is not None
                                data = head + enc(value)
                                if not repeated:
                                    seen.add(name)
                                buf += data
                                if key is not None and len(memo) < _MEMO_MAX_ENTRIES:
                                    memo[key] = (name, repeated, data)
                                i = nxt
                                continue
                    pushed = bind_field(source._field_at(i), kind, buf, seen, stack)
                    if pushed:
                        stack.insert(len(stack) - pushed, (source, nxt, hi, kind, buf, seen))
                        break
                    i = nxt
            else:
                while i < hi:
                    if buf is out and len(out) > _FLUSH_BYTES:
                        # every top-level field before this one is complete: merging now is
                        # the same as parsing the whole at the end, and bounds the bytes held
                        msg.MergeFromString(bytes(out))
                        out.clear()
                    f = source[i]
                    i += 1
                    body = f.body
                    if type(body) is _BlockBody:
                        # a parsed top-level block (a layer): pushed here, without bind_field
                        name = f.name
                        info = kind.table.get(name)
                        if info is not None and info.message is not None:
                            repeated = info.repeated
                            if not repeated:
                                if name in seen:
                                    self.duplicate(f.name_start, name, kind.desc)
                                    continue
                                seen.add(name)
                            ck = kind.children.get(name)
                            if ck is None:
                                ck = child_kind(kind, name, info.message)
                            tail = tag(info.number, 4) if info.type == _GROUP else None
                            child = bytearray()
                            block = body._packed
                            assert block is not None
                            lo = body._rec + 1
                            end = lo + block[body._rec * _REC + 8]
                            head = kind.slots[name][0]
                            stack.append((source, i, hi, kind, buf, seen))
                            stack.append((None, buf, head, child, tail, None, None, 0, name, False))
                            stack.append((body, lo, end, ck, child, set()))
                            break
                    pushed = bind_field(f, kind, buf, seen, stack)
                    if pushed:
                        stack.insert(len(stack) - pushed, (source, i, hi, kind, buf, seen))
                        break
        if out:
            msg.MergeFromString(bytes(out))

    def bind_field(
        self,
        f: Field,
        kind: _Kind,
        buf: bytearray,
        seen: set[str],
        stack: list[_Work],
    ) -> int:
        """Bind one field; returns how many entries (two per body of a message field) it pushed."""
        name = f.name
        table = kind.table
        desc = kind.desc
        info = table.get(name)
        if info is None:
            self.unknown(f, desc, table)
            return 0
        body = f.body
        head, enc = kind.slots[name]
        if info.message is not None:
            if body is None:
                self.diag(
                    "error",
                    f.value_start,
                    f"field '{name}' is a message ({info.full_type})",
                    "'{' after the field name",
                    "type",
                )
                return 0
            bodies: list[MessageBody]
            if isinstance(body, MessageBody):
                bodies = [body]
            else:
                bodies = [it for it in body.items if isinstance(it, MessageBody)]
                if len(bodies) != len(body.items):
                    self.diag(
                        "error",
                        f.value_start,
                        f"list for message field '{name}' holds scalars",
                        "messages in braces",
                        "type",
                    )
                    return 0
            ck = self.kind(info.message)
            tail = tag(info.number, 4) if info.type == _GROUP else None
            work: list[_Work] = []
            for b in bodies:
                if not info.repeated:
                    if name in seen:
                        self.duplicate(f.name_start, name, desc)
                        continue
                    seen.add(name)
                child = bytearray()
                if b.is_view:
                    work.append((b, b._lo, b._hi, ck, child, set()))
                else:
                    fs = b.fields
                    work.append((fs, 0, len(fs), ck, child, set()))
                work.append((None, buf, head, child, tail, None, None, 0, name, info.repeated))
            stack.extend(reversed(work))
            return len(work)
        # Scalar field.
        if isinstance(body, MessageBody):
            self.diag(
                "error",
                f.value_start,
                f"field '{name}' is a {info.full_type}, not a message",
                f"'{name}: <{info.full_type}>'",
                "type",
            )
            return 0
        try:
            if body is not None:  # a list
                if not info.repeated:
                    raise _ValueError(
                        f.value_start,
                        f"field '{name}' is not repeated and cannot take a list",
                        "a single value",
                        "not-repeated",
                    )
                values = []
                for it in body.items:
                    if not isinstance(it, tuple):  # a message in a scalar list
                        raise _ValueError(
                            it.start,
                            f"field '{name}' is a {info.full_type}, not a message",
                            f"'{name}: [<{info.full_type}>, ...]'",
                        )
                    values.append(self.value(f, info, [it]))
            else:
                values = [self.value(f, info, None)]
        except _ValueError as e:
            self.bad_value(e)
            return 0
        assert enc is not None
        if not info.repeated and name in seen:
            self.duplicate(f.name_start, name, desc)
            return 0
        try:
            # all or nothing, as upb's extend() checks every value before it appends one
            data = b"".join([head + enc(v) for v in values])
        except ValueError:  # UnicodeEncodeError included
            self.not_utf8(name, f.value_start)
            return 0
        if not info.repeated:
            seen.add(name)
        buf += data
        return 0

    def bad_value(self, e: _ValueError) -> None:
        """A value the schema refuses. A fork's enum value (``type: CROP``) or a list for a field
        a fork made repeated (``device_id: [0, 1]``) is only a warning when lenient: its text
        stays as it is and the field stays unset in the message."""
        if self.lenient and e.code in _FORK_VALUE_CODES:
            self.diag(
                "warning",
                e.offset,
                e.message + " (kept verbatim; the field stays unset in the message)",
                None,
                e.code,
                e.suggestion,
            )
        else:
            self.diag("error", e.offset, e.message, e.expected, e.code, e.suggestion)

    def duplicate(self, name_start: int, name: str, desc: Descriptor) -> None:
        self.diag(
            "error",
            name_start,
            f"field '{name}' is set more than once",
            f"one '{name}' in {desc.full_name} (it is not repeated)",
            "duplicate",
        )

    def not_utf8(self, name: str, value_start: int) -> None:
        """A string whose bytes are not UTF-8: protobuf refuses it, so do we (not a crash)."""
        self.diag(
            "error",
            value_start,
            f"the string value of '{name}' is not valid UTF-8",
            "UTF-8 text",
            "value",
        )

    def unknown(self, f: Field, desc: Descriptor, table: dict[str, FieldInfo]) -> None:
        name = f.name
        near = did_you_mean(name, table)
        hint = f"; {near}" if near else ""
        if name.startswith("["):
            message = f"unknown extension {name} in {desc.full_name}"
        else:
            message = f"unknown field '{name}' in {desc.full_name}{hint}"
        typo = _typo_of(name, table)
        if self.lenient:
            self.diag(
                "warning", f.name_start, message + " (kept verbatim)", None, "unknown-field", typo
            )
        else:
            self.diag("error", f.name_start, message, None, "unknown-field", typo)

    def value(self, f: Field, info: FieldInfo, span: list[tuple[str, int, int]] | None) -> Any:
        if span is None:
            # Fast path: the value is one plain token (what the parser's fast path produced).
            text = f.value_text
            c = text[0]
            t = info.type
            if c == '"' or c == "'":
                plain = "\\" not in text and text.count(c) == 2 and text[-1] == c
                if plain and t in (_STRING, _BYTES):
                    return text[1:-1]
            elif not _HAS_TRIVIA(text):
                return self.word(text, f.value_start, info)
            toks = scalar_tokens(f.src, f.value_start, f.value_end)
        else:
            toks = [t for _, s, e in span for t in scalar_tokens(f.src, s, e)]
        t = info.type
        first_kind, first_text, off = toks[0]
        if first_kind == "?":
            raise _ValueError(off, "malformed value", None)
        if t in (_STRING, _BYTES):
            if any(k != KIND_STRING and k != "s" for k, _, _ in toks):
                raise _ValueError(off, f"field '{info.name}' takes a string", "a quoted string")
            try:
                return "".join(decode_string(text) for _, text, _ in toks)
            except EscapeError as e:
                raise _ValueError(off + e.offset, str(e), None) from None
        if len(toks) != 1:
            raise _ValueError(toks[1][2], "unexpected second value", "one value")
        if first_kind != "w":
            raise _ValueError(off, f"field '{info.name}' takes a {info.full_type}, not a string")
        return self.word(first_text, off, info)

    def word(self, text: str, off: int, info: FieldInfo) -> Any:
        """The value of one unquoted token for a non-string field."""
        t = info.type
        if t in (_STRING, _BYTES):
            raise _ValueError(off, f"field '{info.name}' takes a string", "a quoted string")
        if t == _BOOL:
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise _ValueError(off, f"invalid bool value '{text}'", "true or false")
        if t == _ENUM:
            assert info.enum_names is not None and info.enum_numbers is not None
            number = info.enum_names.get(text)
            if number is not None:
                return number
            if _INT_RE.fullmatch(text) and not _OCTAL_RE.match(text):
                num = int(text, 0)  # decimal or hex; protobuf takes no octal enum numbers
                if num in info.enum_numbers:
                    return num
                raise _ValueError(
                    off,
                    f"enum {info.full_type} has no value numbered {num}",
                    None,
                    "unknown-enum",
                )
            near = difflib.get_close_matches(text, list(info.enum_names), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise _ValueError(
                off,
                f"enum {info.full_type} has no value named '{text}'{hint}",
                "one of " + ", ".join(info.enum_names),
                "unknown-enum",
                _typo_of(text, info.enum_names),
            )
        if t in _INT_RANGES:
            if not _INT_RE.fullmatch(text):
                raise _ValueError(off, f"invalid integer '{text}' for {info.full_type} field")
            neg = text.startswith("-")
            digits = text[1:] if neg else text
            if digits[:2] in ("0x", "0X"):
                num = int(digits, 16)
            elif len(digits) > 1 and digits.startswith("0"):
                num = int(digits, 8)
            else:
                num = int(digits)
            num = -num if neg else num
            lo, hi = _INT_RANGES[t]
            if not lo <= num <= hi:
                raise _ValueError(off, f"integer {text} out of range for {info.full_type}")
            return num
        if t in (_FLOAT, _DOUBLE):
            if _FLOAT_RE.fullmatch(text):
                if _OCTAL_RE.match(text):  # protobuf refuses 010 and 00.5 for a float
                    raise _ValueError(off, f"invalid octal number '{text}' for a float")
                return float(text.rstrip("fF"))
            if _INF_RE.fullmatch(text):
                return -math.inf if text.startswith("-") else math.inf
            if _NAN_RE.fullmatch(text):
                return math.nan
            raise _ValueError(off, f"invalid number '{text}' for {info.full_type} field")
        raise _ValueError(off, f"unsupported field type {info.full_type}")  # pragma: no cover


def bind(
    doc: Document,
    schema: Schema | None = None,
    root: str | None = None,
    lenient: bool = False,
) -> Bound:
    """Bind ``doc`` to ``root`` (detected when None); never raises for schema problems."""
    if schema is None:
        from rewriter.schema.runtime import default_schema

        schema = default_schema()
    if root is None:
        root = detect_kind(doc, schema)
    elif root == NET and doc.fields and detect_kind(doc, schema) == SOLVER:
        # one error that says what the file is, not one "unknown field" per solver field
        return Bound(doc, root, schema.message_class(root)(), [not_a_net(doc)])
    desc = schema.descriptor(root)
    msg = schema.message_class(root)()
    binder = _Binder(doc, lenient)
    from rewriter.util.memory import gc_paused

    with gc_paused():
        binder.bind_fields(doc.fields, desc, msg)
    binder.diags.sort(key=lambda d: (d.location.line, d.location.col) if d.location else (0, 0))
    return Bound(doc, root, msg, binder.diags)


def is_message_field(f: Field) -> bool:
    return f.kind == KIND_MESSAGE or f.kind == KIND_LIST


def diagnose(
    text: str,
    path: str = "<string>",
    schema: Schema | None = None,
    root: str | None = None,
    lenient: bool = False,
) -> tuple[Bound | None, list[Diagnostic]]:
    """Parse and bind, returning every finding in file order (syntax errors included).

    A syntax error stops parsing; the fields completed before it are still bound, so an unknown
    field on line 13 is reported before a syntax error on line 400, as protobuf would.
    """
    from rewriter.errors import ParseError
    from rewriter.text.cst import parse

    try:
        doc = parse(text, path)
    except ParseError as e:
        diags = [e.diagnostic]
        if e.partial is not None and e.partial.fields:
            partial = bind(e.partial, schema, root, lenient)
            diags = partial.diagnostics + diags
        return None, diags
    bound = bind(doc, schema, root, lenient)
    return bound, bound.diagnostics


# ------------------------------------------------------------------- a solver bound as a net
# (the net a solver names, so binding a solver as a net says which net to give instead)

#: Solver::InitTrainNet's order: train_net_param, train_net, net_param, net
_TRAIN_NET_FIELDS = ("train_net_param", "train_net", "net_param", "net")


class SolverNet(Record):
    """The training net a solver names."""

    __slots__ = ("field", "path", "location", "stages", "level", "found")

    def __init__(
        self,
        field: str,
        path: str | None,
        location: Location,
        stages: tuple[str, ...] = (),
        level: int = 0,
        found: Path | None = None,
    ) -> None:
        self.field = field
        #: the path as written (None for an inline net)
        self.path = path
        self.location = location
        #: the solver's train_state (stage names, level)
        self.stages = stages
        self.level = level
        #: the net file found for ``path``
        self.found = found

    def describe(self) -> str:
        where = f"{self.field}: {self.found or self.path}" if self.path else f"{self.field} {{...}}"
        state = f", train_state stage {', '.join(self.stages)}" if self.stages else ""
        return f"the net it trains ({where}{state}{f', level {self.level}' if self.level else ''})"


def _first(doc: Document, name: str) -> Field | None:
    return next((f for f in doc.fields if f.name == name), None)


def solver_net(doc: Document) -> SolverNet | None:
    """The net a solver document trains, or None when it names none."""
    message: Any = bind(doc, root="caffe.SolverParameter", lenient=True).message
    state = message.train_state
    stages, level = tuple(str(s) for s in state.stage), int(state.level)
    for name in _TRAIN_NET_FIELDS:
        f = _first(doc, name)
        if f is None:
            continue
        path = str(getattr(message, name)) if name in ("train_net", "net") else None
        return SolverNet(name, path, doc.location(f.name_start), stages, level)
    return None


def resolve(solver_path: str, net_path: str) -> Path | None:
    """Where the net file is: as given (the working directory), beside the solver, or in one
    of the solver's parent directories (Caffe's examples run from the Caffe root)."""
    given = Path(net_path)
    if given.is_absolute():
        return given if given.is_file() else None
    if given.is_file():
        return given
    for base in Path(solver_path).resolve().parents:
        if (base / given).is_file():
            return base / given
    return None


def not_a_net(doc: Document) -> Diagnostic:
    """One error for a solver bound as a net (instead of one per solver field)."""
    ref = solver_net(doc)
    if ref is None:
        return Diagnostic(
            "error",
            "this is a solver (caffe.SolverParameter), not a net, and it names no net "
            "(net, train_net, net_param or train_net_param)",
            doc.location(doc.fields[0].name_start) if doc.fields else None,
            code="solver-not-net",
        )
    if ref.path is None:
        what = f"its net is inline ({ref.field} {{ ... }})"
    else:
        found = resolve(doc.path, ref.path)
        where = f": {found}" if found is not None else " (not found from here)"
        what = f'it trains the net in {ref.field}: "{ref.path}"{where}'
    return Diagnostic(
        "error",
        f"this is a solver (caffe.SolverParameter), not a net; {what}. Give that net file, "
        "or run 'rewriter explain SOLVER' to explain it with the solver's train_state",
        ref.location,
        code="solver-not-net",
    )


def require_net(doc: Document) -> None:
    """Refuse a file with no fields where a net is expected (an empty net is no answer)."""
    if doc.fields:
        return
    from rewriter.errors import RewriterError

    what = "holds only comments and blank lines" if doc.code.strip() else "is empty"
    if not doc.code:
        what += " (0 bytes)"
    raise RewriterError(f"{doc.path}: {what}: there is no net in it")
