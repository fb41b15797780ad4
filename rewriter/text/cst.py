"""Lossless concrete syntax tree for protobuf text format, as Caffe files use it.

Why our own tree: protobuf's ``text_format`` throws away comments, blank lines and layout, so any
tool that re-prints through it turns a one-line change into a whole-file diff. Here every byte of
the input belongs to exactly one node and ``parse(text).code == text`` always holds.

Layout of ownership (in the spirit of libcst and txtpbfmt):

* A :class:`Field` owns its *prefix* (the whitespace, blank lines and comment lines before its
  name), its name, the separator up to the value, the value, and its *suffix*: an optional ``;`` or
  ``,`` and a comment on the same line. Deleting a field therefore takes its comments with it.
* A :class:`MessageBody` owns its opening bracket plus a comment on that same line, its fields,
  and the trivia before its closing bracket (comments at the end of a block stay with the block).
* A :class:`Document` owns its top-level fields and the trivia after the last one.

Nodes are immutable by convention. Each keeps a reference to the text it was parsed from and
offsets into it, so an untouched subtree prints as one slice of the original text; an edit builds
new nodes along the path to the change (see :mod:`rewriter.text.edit`) and only those re-render.

Memory: inside each top-level block the parser keeps no node objects, only packed records of
offsets (see :class:`MessageBody`); nodes are built when read. A field is therefore identified
by its span of its source text (``Field.__eq__``), not by object identity.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import os
import re
import struct
import sys
from array import array
from collections.abc import Container, Iterator, Sequence
from typing import Union

from rewriter.errors import Location, ParseError, locate

__all__ = [
    "Document",
    "Field",
    "ListBody",
    "MessageBody",
    "parse",
    "read",
    "write",
    "decode_string",
    "encode_string",
    "scalar_tokens",
]

# Whitespace is protobuf's ASCII set only: a Unicode space elsewhere is an error, as in protobuf.
_TRIVIA = re.compile(r"(?:[ \t\n\r\f\v]|#[^\n]*(?![^\n]))*")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STRING = r"\"(?:[^\"\n\\]|\\.)*\"|'(?:[^'\n\\]|\\.)*'"
# Scalar tokens follow protobuf's own tokenizer: greedy blobs, validated when bound to the schema.
_WORD = r"[A-Za-z_][0-9A-Za-z_+-]*|(?:[0-9+-]|\.[0-9])[0-9A-Za-z_.+-]*"
_SUFFIX = r"[ \t]*(?:[;,][ \t]*)?(?:#[^\n]*(?![^\n]))?"
_FAST_SCALAR = re.compile(
    rf"({_IDENT})([ \t]*:[ \t]*)({_STRING}|{_WORD})({_SUFFIX})",
)
_SUFFIX_RE = re.compile(_SUFFIX)
_OPEN_TRAIL = re.compile(r"[ \t]*(?:#[^\n]*)?")
_NAME_RE = re.compile(_IDENT)
_EXT_NAME_RE = re.compile(r"\[[ \t]*[A-Za-z_][A-Za-z0-9_.]*(?:/[A-Za-z0-9_.]+)*[ \t]*\]")
_VALUE_RE = re.compile(rf"{_STRING}|{_WORD}")
_TOKEN_RE = re.compile(
    rf"(?P<t>(?:[ \t\n\r\f\v]|#[^\n]*(?![^\n]))+)|(?P<s>{_STRING})|(?P<w>{_WORD})"
)

_CLOSE_FOR = {"{": "}", "<": ">"}
_ONE = tuple((i,) for i in range(256))  # shared single-position tuples for body indexes
_LINE_STARTS: dict[int, tuple[str, list[int]]] = {}

# Kinds of field value: a scalar string, a number or other word (identifier, enum, bool, inf),
# a nested message, or a bracketed list.
KIND_STRING = "s"
KIND_WORD = "w"
KIND_MESSAGE = "m"
KIND_LIST = "l"


_REC = 9  # ints per packed field record, see MessageBody
#: the fields of the bodies built last (see MessageBody.fields), oldest first
_RECENT: dict[int, tuple[MessageBody, tuple[Field, ...]]] = {}
_RECENT_SIZE = 32
_CHUNK = 4096 * _REC  # ints per array of records (about 150 KB)
_BIG = 2**31 - 1
_TYPECODE_SMALL = "i"  # offsets of files under 2 GB fit 32 bits: half the memory of "q"


class MessageBody:
    """``{ fields }`` or ``< fields >``: brackets, fields, and the trivia before the close.

    Memory: a parsed body does not keep :class:`Field` objects. Each top-level block keeps its
    whole subtree as records of ints in one array (``start, name_start, name_end, value_start,
    value_end, end, open_end, close_start, n_descendants`` per field, in file order; open_end is
    -1 for a scalar and -2 for a list, whose :class:`ListBody` sits in a side table), about a
    quarter of the objects' size. ``fields`` builds the Field objects (and views of the nested
    bodies) each time it is read; they are equal in every attribute from one read to the next,
    but not the same objects. Bodies built by edits keep the children they did not touch as
    records (see :meth:`with_entries`).
    """

    __slots__ = (
        "src",
        "start",
        "open_end",
        "_fields",
        "close_start",
        "end",
        "pristine",
        "_index",
        "_packed",
        "_lo",
        "_hi",
        "_lists",
        "_mixed",
    )

    def __init__(
        self,
        src: str,
        start: int,
        open_end: int,
        fields: Sequence[Field],
        close_start: int,
        end: int,
        pristine: bool = True,
    ) -> None:
        self.src = src
        self.start = start
        self.open_end = open_end
        self._fields: tuple[Field, ...] | None = tuple(fields)
        self.close_start = close_start
        self.end = end
        self.pristine = pristine
        self._index: dict[str, tuple[int, ...]] | None = None
        self._packed: array[int] | None = None
        self._lo = 0
        self._hi = 0
        self._lists: dict[int, ListBody] | None = None
        self._mixed: tuple[int | Field, ...] | None = None

    def entries(self) -> list[int | Field]:
        """The children as an edit sees them: records of the packed array (ints) where this
        body has them, Field objects otherwise. An edit of a layer touches one or two of its
        children; the others stay records and are never built (see :meth:`with_entries`)."""
        if self._fields is not None:
            return list(self._fields)
        if self._mixed is not None:
            return list(self._mixed)
        packed = self._packed
        assert packed is not None
        out: list[int | Field] = []
        r, hi = self._lo, self._hi
        while r < hi:
            out.append(r)
            r += 1 + packed[r * _REC + 8]
        return out

    def entry_prefixes(self, entries: Sequence[int | Field]) -> list[str]:
        """The prefix of each of :meth:`entries` (an edit looks at every one)."""
        packed = self._packed
        if packed is None:
            return [x.prefix for x in entries if isinstance(x, Field)]
        src = self.src
        return [
            x.prefix if isinstance(x, Field) else src[packed[x * _REC] : packed[x * _REC + 1]]
            for x in entries
        ]

    def with_entries(self, entries: Sequence[int | Field]) -> MessageBody:
        """This body with new children given as :meth:`entries` (records of this body's packed
        array, or fields): the edit's result. The children it kept stay records (an int each,
        instead of a Field and its body), so an edited layer's memory stays near the parsed
        one, and :meth:`edited_names` reads what changed from them."""
        packed = self._packed
        records = packed is not None and any(type(x) is int for x in entries)
        start, open_end, close_start, end = self.start, self.open_end, self.close_start, self.end
        if not records:
            fields = [x if isinstance(x, Field) else self._field_at(x) for x in entries]
            return MessageBody(self.src, start, open_end, fields, close_start, end, False)
        body = MessageBody(self.src, start, open_end, (), close_start, end, False)
        body._fields = None
        body._mixed = tuple(entries)
        body._packed = packed
        body._lists = self._lists
        return body

    def entry_field(self, x: int | Field) -> Field:
        """The field of one of :meth:`entries`."""
        return x if isinstance(x, Field) else self._field_at(x)

    def entry_span(self, x: int | Field) -> tuple[int, int, int, int]:
        """(start, name_start, value_end, end) in ``self.src`` of a record of :meth:`entries`."""
        packed = self._packed
        assert packed is not None and isinstance(x, int)
        j = x * _REC
        return packed[j], packed[j + 1], packed[j + 4], packed[j + 5]

    def prefixes(self) -> Iterator[str]:
        """The prefix of every field below this body, depth first in file order (as
        :meth:`Document.walk_depth` visits them), read from the records where there are some."""
        packed = self._packed
        src = self.src
        if packed is not None and self._mixed is None:
            for j in range(self._lo * _REC, self._hi * _REC, _REC):
                yield src[packed[j] : packed[j + 1]]
            return
        for x in self.entries():
            if isinstance(x, Field):
                yield x.prefix
                if isinstance(x.body, MessageBody):
                    yield from x.body.prefixes()
            else:
                assert packed is not None
                for j in range(x * _REC, (x + 1 + packed[x * _REC + 8]) * _REC, _REC):
                    yield src[packed[j] : packed[j + 1]]

    @property
    def is_view(self) -> bool:
        """A parsed body whose fields are all records (see :meth:`_records`)."""
        return self._packed is not None and self._mixed is None

    @classmethod
    def _view(
        cls,
        src: str,
        start: int,
        open_end: int,
        close_start: int,
        end: int,
        packed: array[int],
        lo: int,
        hi: int,
        lists: dict[int, ListBody] | None,
    ) -> MessageBody:
        """A parsed body whose fields are the records ``lo .. hi`` of ``packed``."""
        body = cls.__new__(cls)
        body.src = src
        body.start = start
        body.open_end = open_end
        body._fields = None
        body.close_start = close_start
        body.end = end
        body.pristine = True
        body._index = None
        body._packed = packed
        body._lo = lo
        body._hi = hi
        body._lists = lists
        body._mixed = None
        return body

    @property
    def fields(self) -> tuple[Field, ...]:
        fields = self._fields
        if fields is not None:
            return fields
        # Callers often read the same few bodies again and again (a step looks at one layer's
        # children several times); the last bodies' fields are kept for them.
        key = id(self)
        hit = _RECENT.get(key)
        if hit is not None and hit[0] is self:
            return hit[1]
        mixed = self._mixed
        if mixed is not None:
            at = self._field_at
            fields = tuple(x if isinstance(x, Field) else at(x) for x in mixed)
        else:
            fields = tuple(map(self._field_at, self._records()))
        if len(_RECENT) >= _RECENT_SIZE:
            # (another thread may evict the same entry: the cache is only a shortcut)
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del _RECENT[next(iter(_RECENT))]
        _RECENT[key] = (self, fields)
        return fields

    def _records(self) -> Iterator[int]:
        """The records of this parsed body's own fields (their descendants skipped)."""
        packed = self._packed
        assert packed is not None
        i = self._lo
        hi = self._hi
        while i < hi:
            yield i
            i += 1 + packed[i * _REC + 8]

    def _name_at(self, i: int) -> str:
        """The name of the field of record ``i``."""
        packed = self._packed
        assert packed is not None
        j = i * _REC
        return self.src[packed[j + 1] : packed[j + 2]]

    def edited_names(self, old: MessageBody) -> set[str] | None:
        """Names of the children that differ between ``old`` (a parsed body) and this body,
        an edit of it; None when this body was not built from ``old``'s records. Read from the
        records, without building either body's fields."""
        mixed = self._mixed
        packed = old._packed
        if mixed is None or packed is None or not old.is_view or self._packed is not packed:
            return None
        kept: set[int] = set()
        names: set[str] = set()
        for x in mixed:
            if isinstance(x, Field):
                names.add(x.name)
            else:
                kept.add(x)
        src = old.src
        r, hi = old._lo, old._hi
        while r < hi:
            j = r * _REC
            if r not in kept:
                names.add(src[packed[j + 1] : packed[j + 2]])
            r += 1 + packed[j + 8]
        return names

    def names(self) -> list[str]:
        """The field names in order (without building the fields of a parsed body)."""
        if self.is_view:
            return self._view_names()
        if self._mixed is not None:
            return self._mixed_names()
        return list(self._names())

    def _mixed_names(self) -> list[str]:
        """:meth:`names` of an edited body that kept records (every edited layer's is read
        by the checks)."""
        mixed = self._mixed
        packed = self._packed
        assert mixed is not None and packed is not None
        src = self.src
        return [
            x.name if isinstance(x, Field) else src[packed[x * _REC + 1] : packed[x * _REC + 2]]
            for x in mixed
        ]

    def _view_names(self) -> list[str]:
        """:meth:`names` of a view, read straight from its records (steps ask for the names
        of thousands of layers)."""
        packed = self._packed
        assert packed is not None
        src = self.src
        out = []
        r, hi = self._lo, self._hi
        while r < hi:
            j = r * _REC
            out.append(src[packed[j + 1] : packed[j + 2]])
            r += 1 + packed[j + 8]
        return out

    def _names(self) -> Iterator[str]:
        """The field names in order, without building the fields."""
        if self._mixed is not None:
            yield from self._mixed_names()
        elif self._packed is None:
            for f in self.fields:
                yield f.name
        else:
            yield from self._view_names()

    def _field_at(self, i: int) -> Field:
        """The field of record ``i`` (packed bodies only)."""
        packed = self._packed
        assert packed is not None
        j = i * _REC
        s, ns, ne, vs, ve, e, oe, cs, nsub = packed[j : j + _REC]
        body: MessageBody | ListBody | None = None
        if oe >= 0:
            body = MessageBody._view(
                self.src, vs, oe, cs, ve, packed, i + 1, i + 1 + nsub, self._lists
            )
        elif oe == -2:
            assert self._lists is not None
            body = self._lists[i]
        return Field(self.src, s, ns, ne, vs, ve, e, body)

    def _matching(self, name: str) -> Iterator[Field]:
        """The fields named ``name`` (packed bodies only), without building the others."""
        for r in self._records():
            if self._name_at(r) == name:
                yield self._field_at(r)

    @property
    def code(self) -> str:
        if self.pristine:
            return self.src[self.start : self.end]
        src = self.src
        parts = [src[self.start : self.open_end]]
        mixed = self._mixed
        if mixed is not None:
            packed = self._packed
            assert packed is not None
            for x in mixed:
                if isinstance(x, Field):
                    parts.append(x.code)
                else:
                    j = x * _REC
                    parts.append(src[packed[j] : packed[j + 5]])
        else:
            parts.extend(f.code for f in self.fields)
        parts.append(src[self.close_start : self.end])
        return "".join(parts)

    def code_of(self, names: Container[str], sep: str = "") -> str:
        """The code of the children named in ``names``, in file order, joined by ``sep``; read
        from the records where it can (the semantic diff keys thousands of edited layers by
        the text of their edited children)."""
        src = self.src
        packed = self._packed
        parts: list[str] = []
        if self._fields is None and packed is not None:
            mixed = self._mixed
            for x in mixed if mixed is not None else self._records():
                if isinstance(x, Field):
                    if x.name in names:
                        parts.append(x.code)
                    continue
                j = x * _REC
                if src[packed[j + 1] : packed[j + 2]] in names:
                    parts.append(src[packed[j] : packed[j + 5]])
        else:
            parts = [f.code for f in self.fields if f.name in names]
        return sep.join(parts)

    @property
    def open_text(self) -> str:
        return self.src[self.start : self.open_end]

    @property
    def close_text(self) -> str:
        return self.src[self.close_start : self.end]

    @property
    def is_one_line(self) -> bool:
        """True for ``param { lr_mult: 1 }``: edits keep such a block on one line."""
        return "\n" not in self.code

    def index(self) -> dict[str, tuple[int, ...]]:
        """Field name -> positions. Kept small because a big net has one per block: names are
        interned and a single position is a shared tuple. Cached only for big bodies built by
        edits (the top level): a small body is scanned faster than a dict is kept for it."""
        if self._index is not None:
            return self._index
        lists: dict[str, list[int]] = {}
        for i, name in enumerate(self._names()):
            lists.setdefault(name, []).append(i)
        index = {
            sys.intern(name): _ONE[hits[0]] if len(hits) == 1 and hits[0] < 256 else tuple(hits)
            for name, hits in lists.items()
        }
        if self._fields is not None and len(self._fields) > 32:
            self._index = index
        return index

    def child(self, i: int) -> Field:
        """``fields[i]``, built alone (a parsed body does not build its other fields)."""
        fields = self._fields
        if fields is not None:
            return fields[i]
        mixed = self._mixed
        if mixed is not None:
            x = mixed[i]
            return x if isinstance(x, Field) else self._field_at(x)
        if i < 0:
            return self.fields[i]
        for r in self._records():
            if i == 0:
                return self._field_at(r)
            i -= 1
        raise IndexError("field index out of range")

    def positions(self, name: str) -> tuple[int, ...]:
        """Indices of the fields named ``name`` (``index().get(name, ())`` without the dict)."""
        if self._fields is not None:
            return self.index().get(name, ())
        packed = self._packed
        if packed is None or self._mixed is not None:
            return tuple(i for i, n in enumerate(self.names()) if n == name)
        # A view: compare the names in place, without slicing them out.
        src = self.src
        size = len(name)
        out = []
        i = 0
        r, hi = self._lo, self._hi
        while r < hi:
            j = r * _REC
            a = packed[j + 1]
            if packed[j + 2] - a == size and src.startswith(name, a):
                out.append(i)
            i += 1
            r += 1 + packed[j + 8]
        return tuple(out)

    def get(self, name: str) -> Field | None:
        """The last field of that name (protobuf keeps the last of a repeated singular)."""
        if self.is_view:
            found = None
            for f in self._matching(name):
                found = f
            return found
        hits = self.index().get(name)
        return self.fields[hits[-1]] if hits else None

    def get_all(self, name: str) -> list[Field]:
        if self.is_view:
            return list(self._matching(name))
        if self._mixed is not None:
            return [self.child(i) for i in self.positions(name)]
        fields = self.fields
        return [fields[i] for i in self.index().get(name, ())]

    def __repr__(self) -> str:
        return f"MessageBody({len(self.fields)} fields)"


class _BlockBody(MessageBody):
    """The body of a parsed top-level block: its offsets are read from its own record in the
    document's array instead of being kept as int objects (a big net has one per layer)."""

    __slots__ = ("_rec",)
    _rec: int

    @classmethod
    def _of(
        cls, src: str, packed: array[int], rec: int, lists: dict[int, ListBody] | None
    ) -> _BlockBody:
        body = cls.__new__(cls)
        body.src = src
        body._fields = None
        body.pristine = True
        body._index = None
        body._packed = packed
        body._lists = lists
        body._mixed = None
        body._rec = rec
        return body

    def _at(self, k: int) -> int:
        packed = self._packed
        assert packed is not None
        return packed[self._rec * _REC + k]

    @property
    def start(self) -> int:  # type: ignore[override]
        return self._at(3)

    @property
    def open_end(self) -> int:  # type: ignore[override]
        return self._at(6)

    @property
    def close_start(self) -> int:  # type: ignore[override]
        return self._at(7)

    @property
    def end(self) -> int:  # type: ignore[override]
        return self._at(4)

    @property
    def _lo(self) -> int:  # type: ignore[override]
        return self._rec + 1

    @property
    def _hi(self) -> int:  # type: ignore[override]
        return self._rec + 1 + self._at(8)


ListItem = Union[tuple[str, int, int], MessageBody]  # noqa: UP007 (runtime alias, py3.10)


class ListBody:
    """``[a, b, c]``: scalar items as (kind, start, end) spans, or message bodies."""

    __slots__ = ("src", "start", "end", "items")

    def __init__(self, src: str, start: int, end: int, items: Sequence[ListItem]) -> None:
        self.src = src
        self.start = start
        self.end = end
        self.items: tuple[ListItem, ...] = tuple(items)

    @property
    def code(self) -> str:
        return self.src[self.start : self.end]


class Field:
    """One ``name: value`` or ``name { ... }`` with its own comments and separators.

    Memory: a big net has millions of fields, so a field keeps two absolute offsets (``start``
    and ``end``; the parser shares each one with the neighbouring field) and the inner
    boundaries as lengths, which are small integers Python does not allocate. The absolute
    ``name_start`` ... ``value_end`` are computed on access.
    """

    __slots__ = ("src", "start", "end", "_pre", "_name", "_sep", "_post", "body")

    def __init__(
        self,
        src: str,
        start: int,
        name_start: int,
        name_end: int,
        value_start: int,
        value_end: int,
        end: int,
        body: MessageBody | ListBody | None = None,
    ) -> None:
        self.src = src
        self.start = start
        self.end = end
        self._pre = name_start - start
        self._name = name_end - name_start
        self._sep = value_start - name_end
        self._post = end - value_end
        self.body = body

    # Parsed fields print as one slice of their source; see _ComposedField for edited ones.
    pristine = True

    # A parsed body builds its Field objects each time they are read (see MessageBody), so a
    # field is known by what it is, not by which object it is: the same span of the same
    # source text. Fields an edit built around a new body (ComposedField) are unique objects.
    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(self) is not Field or type(other) is not Field:
            return False
        return self.src is other.src and self.start == other.start and self.end == other.end

    def __hash__(self) -> int:
        return hash((id(self.src), self.start, self.end))

    @property
    def name_start(self) -> int:
        return self.start + self._pre

    @property
    def name_end(self) -> int:
        return self.start + self._pre + self._name

    @property
    def value_start(self) -> int:
        return self.start + self._pre + self._name + self._sep

    @property
    def value_end(self) -> int:
        return self.end - self._post

    @property
    def kind(self) -> str:
        body = self.body
        if body is None:
            return KIND_STRING if self.src[self.value_start] in "\"'" else KIND_WORD
        return KIND_MESSAGE if isinstance(body, MessageBody) else KIND_LIST

    # --- text of the parts -------------------------------------------------------------------
    @property
    def code(self) -> str:
        if self.pristine:
            return self.src[self.start : self.end]
        src = self.src
        assert self.body is not None
        return src[self.start : self.value_start] + self.body.code + src[self.value_end : self.end]

    @property
    def name(self) -> str:
        a = self.start + self._pre
        return self.src[a : a + self._name]

    @property
    def prefix(self) -> str:
        return self.src[self.start : self.start + self._pre]

    @property
    def separator(self) -> str:
        a = self.start + self._pre + self._name
        return self.src[a : a + self._sep]

    @property
    def value_text(self) -> str:
        return self.src[self.start + self._pre + self._name + self._sep : self.end - self._post]

    @property
    def suffix(self) -> str:
        return self.src[self.end - self._post : self.end]

    @property
    def message(self) -> MessageBody:
        if not isinstance(self.body, MessageBody):
            raise TypeError(f"field {self.name!r} is not a message")
        return self.body

    @property
    def is_message(self) -> bool:
        return self.kind == KIND_MESSAGE

    @property
    def indent(self) -> str:
        """Whitespace at the start of the field's own line ('' when it shares a line)."""
        prefix = self.prefix
        nl = prefix.rfind("\n")
        if nl < 0:
            return ""
        return prefix[nl + 1 :]

    @property
    def leading_comments(self) -> list[str]:
        return [line.strip() for line in self.prefix.splitlines() if line.strip().startswith("#")]

    @property
    def trailing_comment(self) -> str | None:
        hash_at = self.suffix.find("#")
        return self.suffix[hash_at:].rstrip("\r") if hash_at >= 0 else None

    def scalar_tokens(self) -> list[tuple[str, str, int]]:
        """Value tokens as (kind, text, offset in src) with trivia dropped."""
        return scalar_tokens(self.src, self.value_start, self.value_end)

    def __repr__(self) -> str:
        if self.body is not None:
            return f"Field({self.name!r}, {self.body!r})"
        return f"Field({self.name!r}: {self.value_text!r})"


class ComposedField(Field):
    """A message field whose body was edited: it prints its own parts around the new body."""

    __slots__ = ()
    pristine = False

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    @property
    def code(self) -> str:
        src = self.src
        assert self.body is not None
        return src[self.start : self.value_start] + self.body.code + src[self.value_end : self.end]

    @property
    def value_text(self) -> str:
        assert self.body is not None
        return self.body.code


class Document:
    """A whole text file: its top-level fields plus the trivia after them."""

    __slots__ = ("src", "fields", "tail_start", "pristine", "path", "_body")

    def __init__(
        self,
        src: str,
        fields: Sequence[Field],
        tail_start: int,
        pristine: bool = True,
        path: str = "<string>",
    ) -> None:
        self.src = src
        self.fields: tuple[Field, ...] = tuple(fields)
        self.tail_start = tail_start
        self.pristine = pristine
        self.path = path
        self._body: MessageBody | None = None

    @property
    def code(self) -> str:
        if self.pristine:
            return self.src
        return "".join(f.code for f in self.fields) + self.src[self.tail_start :]

    @property
    def body(self) -> MessageBody:
        """The top level seen as a message body, so one API walks both."""
        if self._body is None:
            self._body = MessageBody(self.src, 0, 0, self.fields, self.tail_start, len(self.src))
            self._body.pristine = False
        return self._body

    def get(self, name: str) -> Field | None:
        return self.body.get(name)

    def get_all(self, name: str) -> list[Field]:
        return self.body.get_all(name)

    @property
    def newline(self) -> str:
        """The file's line ending: CRLF when most lines use it."""
        crlf = self.src.count("\r\n")
        return "\r\n" if crlf and crlf * 2 >= self.src.count("\n") else "\n"

    def location(self, offset: int) -> Location:
        return locate(self.src, offset, self.path)

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of an offset in this document's source, in O(log n)."""
        starts = self._line_starts()
        line = bisect.bisect_right(starts, offset)
        return line, offset - starts[line - 1] + 1

    def _line_starts(self) -> list[int]:
        cached = _LINE_STARTS.get(id(self.src))
        if cached is None or cached[0] is not self.src:
            starts = [0]
            find = self.src.find
            pos = find("\n")
            while pos >= 0:
                starts.append(pos + 1)
                pos = find("\n", pos + 1)
            cached = (self.src, starts)
            _LINE_STARTS.clear()  # keep one source's table: positions are asked in bursts
            _LINE_STARTS[id(self.src)] = cached
        return cached[1]

    def position(self, f: Field) -> tuple[int, int, int]:
        """(line, column, offset) of a field's name, for fields parsed from this document."""
        line, col = self.line_col(f.name_start)
        return line, col, f.name_start

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the exact text (non-UTF-8 bytes restored) atomically: temp file + rename."""
        from .fileio import write_text_atomic

        write_text_atomic(path, self.code)

    def walk(self) -> Iterator[tuple[tuple[int, ...], Field]]:
        """Every field with its path (indices from the top), depth first, in file order.

        A path is as long as the field is deep: over a deeply nested file that is quadratic
        time; :meth:`walk_depth` is linear.
        """
        return _walk_body((), self.body)

    def walk_depth(self) -> Iterator[tuple[int, Field]]:
        """Every field with its depth (1 at the top), depth first, in file order."""
        stack: list[Iterator[Field]] = [iter(self.body.fields)]
        while stack:
            f = next(stack[-1], None)
            if f is None:
                stack.pop()
                continue
            yield len(stack), f
            if isinstance(f.body, MessageBody) and f.body.fields:
                stack.append(iter(f.body.fields))

    def __repr__(self) -> str:
        return f"Document({self.path!r}, {len(self.fields)} top-level fields)"


def _walk_body(base: tuple[int, ...], body: MessageBody) -> Iterator[tuple[tuple[int, ...], Field]]:
    stack: list[tuple[tuple[int, ...], Iterator[tuple[int, Field]]]] = [
        (base, iter(enumerate(body.fields)))
    ]
    while stack:
        path, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            continue
        i, f = nxt
        yield path + (i,), f
        if isinstance(f.body, MessageBody) and f.body.fields:
            stack.append((path + (i,), iter(enumerate(f.body.fields))))


# --- scalars -----------------------------------------------------------------------------------


def scalar_tokens(src: str, start: int, end: int) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = start
    while pos < end:
        m = _TOKEN_RE.match(src, pos, end)
        if m is None:
            out.append(("?", src[pos:end], pos))
            break
        kind = m.lastgroup
        if kind != "t":
            out.append((kind or "?", m.group(), pos))
        pos = m.end()
    return out


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}
_ESCAPE_RE = re.compile(
    r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.S
)


class EscapeError(ValueError):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


def decode_string(token: str) -> str:
    """The value of one quoted token (C escapes, as protobuf's CUnescape).

    As in protobuf, escapes stand for *bytes* (``"\\303\\251"`` is UTF-8 for "é"), and the
    bytes are then read as UTF-8. Bytes that are not UTF-8 come back surrogate-escaped (as
    :func:`rewriter.text.fileio.read_text` does), so nothing is lost; protobuf refuses such a value
    in a ``string`` field and so does the binder.
    """
    body = token[1:-1]
    if "\\" not in body:
        return body
    out = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(body):
        out += _raw_bytes(body[pos : m.start()])
        pos = m.end()
        octal, hex2, uni4, uni8, c = m.groups()
        if octal is not None:
            out.append(int(octal, 8) & 0xFF)  # C++ keeps the low byte of \\777
        elif hex2 is not None:
            out.append(int(hex2, 16))
        elif uni4 is not None or uni8 is not None:
            code = int(uni4 or uni8, 16)
            if code > 0x10FFFF:
                raise EscapeError(m.start() + 1, f"invalid Unicode escape '{m.group()}'")
            out += chr(code).encode("utf-8", "surrogatepass")
        elif c in _ESCAPES:
            out += _ESCAPES[c].encode()
        else:
            raise EscapeError(m.start() + 1, f"invalid escape sequence '\\{c}'")
    out += _raw_bytes(body[pos:])
    return out.decode("utf-8", "surrogateescape")


def _raw_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate given through the API, not read from a file
        return text.encode("utf-8", "surrogatepass")


def encode_string(value: str) -> str:
    """A double-quoted token for ``value``, escaping only what must be escaped."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    out = out.replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


# --- parser ------------------------------------------------------------------------------------


# One match per construct in the common case: a scalar field (groups 2-5), a block opening
# (groups 6-9) or a block closing (groups 10-11), each with the trivia before it (group 1).
_EVENT = re.compile(
    r"[ \t\n\r\f\v]*(?:#[^\n]*(?![^\n])[ \t\n\r\f\v]*)*(?:"
    rf"({_IDENT})(?:([ \t]*:[ \t]*)({_STRING}|{_WORD})({_SUFFIX})"
    rf"|([ \t]*:?[ \t]*)([{{<])([ \t]*(?:#[^\n]*)?))"
    rf"|([}}>])({_SUFFIX}))"
)


def parse(source: str, path: str = "<string>") -> Document:
    """Parse protobuf text format into a lossless :class:`Document`.

    Raises :class:`ParseError` with ``path:line:col`` for text that is not text format at all.
    Whether the fields exist in the schema is the binder's business, not the parser's.
    """
    # The tree holds no reference cycles, so the cyclic collector only costs time here: on a
    # 100k-node file it runs hundreds of full passes and more than doubles the parse time.
    enabled = gc.isenabled()
    gc.disable()
    parser = _Parser(source, path)
    try:
        doc = parser.run()
        return _own_bom(doc) if source.startswith("\ufeff") else doc
    except ParseError as e:
        # Errors raised inside a list (or a message in a list) know nothing of the top level:
        # attach the top-level fields completed so far, as fail() does.
        e.partial = Document(source, parser.top, parser.field_start, False, path)
        raise
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:  # file the new tree as old: see memory.gc_paused
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def read(path: str | os.PathLike[str]) -> Document:
    """Parse a file into a lossless Document (exact bytes kept, even non-UTF-8 ones)."""
    from .fileio import read_text

    return parse(read_text(path), str(path))


def write(doc: Document, path: str | os.PathLike[str]) -> None:
    """Write a Document's text atomically (temp file + rename)."""
    from .fileio import write_text_atomic

    write_text_atomic(path, doc.code)


def _own_bom(doc: Document) -> Document:
    """Give a leading byte order mark to the first field's prefix (or to the tail of an empty
    document), so that re-printing edited fields keeps it: every byte belongs to some node."""
    fields = list(doc.fields)
    if fields and fields[0].start == 1:
        f = fields[0]
        fields[0] = type(f)(
            f.src, 0, f.name_start, f.name_end, f.value_start, f.value_end, f.end, f.body
        )
        return Document(doc.src, fields, doc.tail_start, True, doc.path)
    if not fields and doc.tail_start == 1:
        return Document(doc.src, fields, 0, True, doc.path)
    return doc


class _Parser:
    """Fast path: one regex event per construct; anything unusual goes to :meth:`step`.

    Top-level fields become :class:`Field` objects; every block, and everything inside a
    top-level block, goes into one packed array of records for the document (see
    :class:`MessageBody`); a top-level block's body reads its offsets from its own record.
    """

    def __init__(
        self, src: str, path: str, start: int = 0, end: int | None = None, depth: int = 0
    ) -> None:
        self.src = src
        self.path = path
        self.top: list[Field] = []
        #: the open blocks, as their records (a record holds all a frame would)
        self.stack: list[int] = []
        #: the records of every block and what is inside (see MessageBody), and their lists;
        #: the array is allocated ahead (``fill`` ints of it are used) and records are written
        #: into it with struct, which is 2-3x faster than growing it by extend()
        typecode = "i" if len(src) < _BIG else "q"
        self.put = struct.Struct(f"<{_REC}{typecode}").pack_into
        self.packed: array[int] = array(typecode)
        self.fill = 0
        self.lists: dict[int, ListBody] | None = None
        # A message inside a list is parsed in place over [start, end) of the whole text, so
        # its offsets (and error locations) are those of the file; depth counts such nesting.
        self.end = len(src) if end is None else end
        self.depth = depth
        self.pos = 1 if start == 0 and src.startswith("\ufeff") else start
        self.field_start = start
        self._new_chunk()

    def fail(self, offset: int, message: str, expected: str | None = None) -> ParseError:
        err = ParseError(message, locate(self.src, offset, self.path), expected)
        # The top-level fields completed before the error, so a caller can report schema errors
        # that come earlier in the file first, in file order, as protobuf does.
        err.partial = Document(self.src, self.top, self.field_start, False, self.path)
        return err

    def run(self) -> Document:
        src = self.src
        n = self.end
        top = self.top
        stack = self.stack
        put = self.put
        size = self.packed.itemsize
        while True:
            pos = self.pos
            # (the slow path may have written records or started a new chunk)
            packed = self.packed
            w = self.fill
            room = len(packed) - _REC
            for m in _EVENT.finditer(src, pos, n):
                if m.start() != pos:
                    break
                li = m.lastindex
                if li == 4:
                    end = m.end()
                    if stack:
                        if w > room:
                            self.fill = w
                            room = self._grow() - _REC
                        put(
                            packed,
                            w * size,
                            pos,
                            m.start(1),
                            m.end(1),
                            m.start(3),
                            m.end(3),
                            end,
                            -1,
                            -1,
                            0,
                        )
                        w += _REC
                    else:
                        top.append(Field(src, pos, m.start(1), m.end(1), m.start(3), m.end(3), end))
                    pos = end  # one int object for this field's end and the next one's start
                elif li == 7:
                    end = m.end()
                    if not stack and w >= _CHUNK:
                        self.fill = w
                        packed = self._new_chunk()
                        w = 0
                        room = len(packed) - _REC
                    elif w > room:
                        self.fill = w
                        room = self._grow() - _REC
                    stack.append(w // _REC)
                    put(packed, w * size, pos, m.start(1), m.end(1), m.start(6), 0, 0, end, 0, 0)
                    w += _REC
                    pos = end
                else:
                    q = m.start(8)
                    if not stack:
                        break
                    rec = stack[-1]
                    j = rec * _REC
                    if _CLOSE_FOR[src[packed[j + 3]]] != src[q]:
                        break
                    stack.pop()
                    end = m.end()
                    packed[j + 4] = q + 1
                    packed[j + 5] = end
                    packed[j + 7] = pos
                    packed[j + 8] = w // _REC - rec - 1
                    if not stack:
                        self._top_block(rec)
                    pos = end
            self.pos = self.field_start = pos
            self.fill = w
            if len(stack) > 100_000:
                raise self.fail(
                    self.packed[stack[-1] * _REC + 3], "nesting deeper than 100000 blocks"
                )
            done = self.step(n)
            if done is not None:
                return done

    def _new_chunk(self) -> array[int]:
        """Start a new array (at a top-level block) sized for what text is left, up to about
        150 KB: one array for a whole big file would grow by reallocation, leaving freed copies
        behind in the heap. The one it replaces gives back what it did not use."""
        old = self.packed
        del old[self.fill :]
        fields = (self.end - self.pos) // 12 + 2  # ~12 bytes of text per field or more
        self.packed = array(old.typecode, [0]) * min(_CHUNK, fields * _REC)
        self.fill = 0
        self.lists = None
        return self.packed

    def _grow(self) -> int:
        """Make room for more records in the current array (a block bigger than expected)."""
        packed = self.packed
        packed.extend(array(packed.typecode, [0]) * max(len(packed), 8 * _REC))
        return len(packed)

    def _record(self, *values: int) -> int:
        """Write one record (the slow path); returns its index."""
        if self.fill + _REC > len(self.packed):
            self._grow()
        rec = self.fill // _REC
        self.put(self.packed, self.fill * self.packed.itemsize, *values)
        self.fill += _REC
        return rec

    def _finish(self) -> None:
        """Give back the unused end of the last array."""
        del self.packed[self.fill :]

    def _top_block(self, rec: int) -> None:
        """A top-level block closed (its record filled in): build its field."""
        packed = self.packed
        j = rec * _REC
        body = _BlockBody._of(self.src, packed, rec, self.lists)
        s, ns, ne, vs, ve, e = packed[j : j + 6]
        self.top.append(Field(self.src, s, ns, ne, vs, ve, e, body))

    def _add(
        self, start: int, ns: int, ne: int, vs: int, ve: int, end: int, lb: ListBody | None
    ) -> None:
        """A scalar or list field, at the top level or in the open block."""
        if not self.stack:
            self.top.append(Field(self.src, start, ns, ne, vs, ve, end, lb))
            return
        if lb is not None:
            if self.lists is None:
                self.lists = {}
            self.lists[self.fill // _REC] = lb
        self._record(start, ns, ne, vs, ve, end, -1 if lb is None else -2, -1, 0)

    def _last(self) -> tuple[int, int, int, int] | None:
        """(record or -1, value_start, value_end, end) of the last field at the current level,
        which the slow path may extend; record -1 means the last top-level field."""
        stack = self.stack
        packed = self.packed
        if not stack:
            if not self.top:
                return None
            f = self.top[-1]
            return -1, f.value_start, f.value_end, f.end
        i = stack[-1] + 1
        total = self.fill // _REC
        last = -1
        while i < total:
            last = i
            i += 1 + packed[i * _REC + 8]
        if last < 0:
            return None
        j = last * _REC
        return last, packed[j + 3], packed[j + 4], packed[j + 5]

    def _extend_last(self, rec: int, value_end: int, end: int) -> None:
        if rec < 0:
            f = self.top[-1]
            self.top[-1] = type(f)(
                f.src, f.start, f.name_start, f.name_end, f.value_start, value_end, end, f.body
            )
            return
        packed = self.packed
        packed[rec * _REC + 4] = value_end
        packed[rec * _REC + 5] = end

    def _last_kind(self, rec: int) -> str:
        if rec < 0:
            return self.top[-1].kind
        packed = self.packed
        oe = packed[rec * _REC + 6]
        if oe >= 0:
            return KIND_MESSAGE
        if oe == -2:
            return KIND_LIST
        return KIND_STRING if self.src[packed[rec * _REC + 3]] in "\"'" else KIND_WORD

    def step(self, n: int) -> Document | None:
        """Handle one construct the fast path did not take; returns the document at the end."""
        src = self.src
        stack = self.stack
        field_start = self.field_start
        q = _skip(_TRIVIA, src, self.pos)
        if q >= n:
            if stack:
                j = stack[-1] * _REC
                packed = self.packed
                raise self.fail(
                    packed[j + 3],
                    f"block '{src[packed[j + 1] : packed[j + 2]]}' is never closed",
                    f"'{_CLOSE_FOR[src[packed[j + 3]]]}' before the end of the file",
                )
            self._finish()
            return Document(src, self.top, field_start, True, self.path)
        c = src[q]
        if c == "}" or c == ">":
            if stack:
                close = _CLOSE_FOR[src[self.packed[stack[-1] * _REC + 3]]]
                raise self.fail(q, f"unexpected '{c}'", f"'{close}'")
            raise self.fail(q, f"unexpected '{c}' at the top level", "a field name")
        last = self._last() if c in ";,\"'" else None
        if (c == ";" or c == ",") and last is not None and _no_separator(src[last[2] : last[3]]):
            # A separator on its own line still belongs to the field before it.
            end = _skip(_SUFFIX_RE, src, q)
            self._extend_last(last[0], last[2], end)
            self.pos = self.field_start = end
            return None
        if (c == '"' or c == "'") and last is not None and self._last_kind(last[0]) == KIND_STRING:
            # Adjacent string literals concatenate, possibly across lines and comments.
            sm = _VALUE_RE.match(src, q)
            if sm is None:
                raise self.fail(q, "unterminated string", "a closing quote on the same line")
            end = _skip(_SUFFIX_RE, src, sm.end())
            self._extend_last(last[0], sm.end(), end)
            self.pos = self.field_start = end
            return None
        # General path: a field name, then ':' and/or a value, with trivia anywhere between.
        nm = _NAME_RE.match(src, q) or (_EXT_NAME_RE.match(src, q) if c == "[" else None)
        if nm is None:
            raise self.fail(q, _describe(src, q), "a field name")
        name_start, name_end = q, nm.end()
        r = _skip(_TRIVIA, src, name_end)
        has_colon = r < n and src[r] == ":"
        if has_colon:
            r = _skip(_TRIVIA, src, r + 1)
        if r >= n:
            raise self.fail(
                r, f"the file ends after field name '{src[name_start:name_end]}'", "a value"
            )
        v = src[r]
        if v == "{" or v == "<":
            open_end = _skip(_OPEN_TRAIL, src, r + 1)
            if not stack and self.fill >= _CHUNK:
                self._new_chunk()
            stack.append(self._record(field_start, name_start, name_end, r, 0, 0, open_end, 0, 0))
            self.pos = self.field_start = open_end
            return None
        if v == "[":
            lb, r_end = _parse_list(src, r, self.path, self.depth)
            end = _skip(_SUFFIX_RE, src, r_end)
            self._add(field_start, name_start, name_end, r, r_end, end, lb)
            self.pos = self.field_start = end
            return None
        if not has_colon:
            raise self.fail(r, _describe(src, r), "':' or '{' after the field name")
        vm = _VALUE_RE.match(src, r)
        if vm is None:
            if v in "\"'":
                raise self.fail(r, "unterminated string", "a closing quote on the same line")
            raise self.fail(r, _describe(src, r), "a value")
        end = _skip(_SUFFIX_RE, src, vm.end())
        self._add(field_start, name_start, name_end, r, vm.end(), end, None)
        self.pos = self.field_start = end
        return None


def _skip(pattern: re.Pattern[str], src: str, pos: int) -> int:
    """End of a pattern that can match the empty string (so always matches)."""
    m = pattern.match(src, pos)
    assert m is not None
    return m.end()


def _no_separator(suffix: str) -> bool:
    code = suffix.split("#", 1)[0]
    return ";" not in code and "," not in code


def _describe(src: str, q: int) -> str:
    c = src[q]
    if c == "\x00":
        return "NUL byte in text (is this a binary file?)"
    if c in "\"'":
        return "unexpected string"
    if c.isprintable() and not c.isspace():
        return f"unexpected '{c}'"
    return f"unexpected character U+{ord(c):04X}"


def _parse_list(src: str, start: int, path: str, depth: int = 0) -> tuple[ListBody, int]:
    """``[v, v, ...]`` of scalars or messages; returns the body and the offset after ']'."""
    n = len(src)
    items: list[ListItem] = []
    pos = _skip(_TRIVIA, src, start + 1)
    if pos < n and src[pos] == "]":
        return ListBody(src, start, pos + 1, items), pos + 1
    while True:
        if pos >= n:
            raise ParseError("list is never closed", locate(src, start, path), "']'")
        c = src[pos]
        if c == "{" or c == "<":
            sub = parse_message_at(src, pos, path, depth)
            items.append(sub)
            pos = sub.end
        else:
            vm = _VALUE_RE.match(src, pos)
            if vm is None:
                raise ParseError(_describe(src, pos), locate(src, pos, path), "a list value")
            end = vm.end()
            if c == '"' or c == "'":
                # Adjacent string literals concatenate here too: one item spans them all.
                while True:
                    q = _skip(_TRIVIA, src, end)
                    sm = _VALUE_RE.match(src, q) if q < n and src[q] in "\"'" else None
                    if sm is None:
                        break
                    end = sm.end()
            items.append((KIND_STRING if c in "\"'" else KIND_WORD, pos, end))
            pos = end
        pos = _skip(_TRIVIA, src, pos)
        if pos < n and src[pos] == ",":
            pos = _skip(_TRIVIA, src, pos + 1)
            continue
        if pos < n and src[pos] == "]":
            return ListBody(src, start, pos + 1, items), pos + 1
        if pos >= n:
            raise ParseError("list is never closed", locate(src, start, path), "']'")
        raise ParseError(_describe(src, pos), locate(src, pos, path), "',' or ']'")


# Messages inside lists (``f: [{...}, {...}]``, never seen in Caffe files) recurse; a bound keeps
# hostile input from exhausting the Python stack (protobuf's own parser stops at 100 levels).
MAX_LIST_NESTING = 100


def parse_message_at(src: str, pos: int, path: str = "<string>", depth: int = 0) -> MessageBody:
    """Parse one bracketed message starting at ``pos`` (used for messages inside lists)."""
    close = _CLOSE_FOR[src[pos]]
    open_end = _skip(_OPEN_TRAIL, src, pos + 1)
    if depth >= MAX_LIST_NESTING:
        raise ParseError(
            f"messages inside lists nested deeper than {MAX_LIST_NESTING} levels",
            locate(src, pos, path),
        )
    # Find the matching close, skipping strings and comments.
    level = 0
    q = pos
    n = len(src)
    while q < n:
        m = _TOKEN_RE.match(src, q)
        if m is not None:
            q = m.end()
            continue
        ch = src[q]
        if ch in "{<":
            level += 1
        elif ch in "}>":
            level -= 1
            if level == 0:
                break
        q += 1
    if q >= n:
        raise ParseError("block is never closed", locate(src, pos, path), f"'{close}'")
    # Parse the inside in place, so offsets and error locations are those of the whole text.
    inner = _Parser(src, path, open_end, q, depth + 1).run()
    return MessageBody(src, pos, open_end, inner.fields, inner.tail_start, q + 1)
