"""Edits on the lossless tree that leave every other byte untouched.

An :class:`Editor` collects edits addressed by *paths* (tuples of field indices from the top of
the document, as :meth:`Document.walk` yields them) and :meth:`Editor.apply` builds a new
document in one pass, copying only the nodes on the way to an edit. Untouched subtrees are
shared with the old document and still print as slices of the original text.

Style rules, so an inserted field looks as if the author had written it:

* indentation, line ending (LF or CRLF) and the indent unit are copied from the surroundings;
  a file with no indentation at all gets none;
* a one-line block such as ``param { lr_mult: 1 }`` stays on one line;
* a deleted field takes its own comments and trailing comment with it, but a blank line that
  separated it from the field before is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from rewriter.util.record import FrozenRecord, Record

from .cst import _VALUE_RE, ComposedField, Document, Field, MessageBody, encode_string, parse

__all__ = ["Editor", "FieldSpec", "render_value", "make_field"]

Path = tuple[int, ...]
# A value for a new field: a scalar's text (already formatted: '0', '"name"', 'TRAIN') or a
# list of (name, value) pairs for a nested message.
Value = str | Sequence[tuple[str, "Value"]]


class FieldSpec(FrozenRecord):
    """A field to insert: its name and value (a record, not a dataclass: start-up cost)."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Value) -> None:
        self.name = name
        self.value = value


def render_value(value: object) -> str:
    """Text for a Python scalar: bools as true/false, strings quoted, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return encode_string(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def with_value(f: Field, value: str) -> Field:
    """``f`` with another value, a single token. A parse of the new text would find the same
    boundaries moved by the value's new length, so they are computed instead (an edit in
    thousands of layers parsed a small text for each)."""
    head = f.src[f.start : f.value_start]
    if f.body is not None or head.startswith("\ufeff") or not _VALUE_RE.fullmatch(value):
        return make_field(head + value + f.src[f.value_end : f.end])
    text = head + value + f.src[f.value_end : f.end]
    pre = f.name_start - f.start
    vs = len(head)
    return Field(text, 0, pre, pre + f.name_end - f.name_start, vs, vs + len(value), len(text))


class _NewField(Field):
    """A field an edit made from new text. Copies of one parsed text share its source, so
    each copy is equal only to itself (as each parse of the text used to be)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


#: text -> its parsed field: an edit repeated in thousands of layers makes the same few texts
_MADE: dict[str, Field] = {}
_MADE_SIZE = 512


def make_field(text: str) -> Field:
    """One field parsed from its own small text (prefix and all); a text seen before is
    not parsed again (a fresh copy of its field is returned)."""
    f = _MADE.get(text)
    if f is None:
        doc = parse(text)
        if len(doc.fields) != 1 or doc.tail_start != len(text):
            raise ValueError(f"not exactly one field: {text!r}")
        f = doc.fields[0]
        if len(_MADE) >= _MADE_SIZE:
            _MADE.clear()
        _MADE[text] = f
    return _NewField(
        f.src, f.start, f.name_start, f.name_end, f.value_start, f.value_end, f.end, f.body
    )


class _Style:
    """How fields are laid out inside one body."""

    def __init__(self, one_line: bool, indent: str, unit: str, newline: str) -> None:
        self.one_line = one_line
        self.indent = indent
        self.unit = unit
        self.newline = newline

    def render(self, name: str, value: Value, indent: str | None = None) -> str:
        ind = self.indent if indent is None else indent
        if isinstance(value, str):
            return f"{name}: {value}"
        if self.one_line or not value:
            inner = " ".join(self.render(k, v, "") for k, v in value)
            return f"{name} {{ {inner} }}" if inner else f"{name} {{}}"
        child = ind + self.unit
        nl = self.newline
        lines = [f"{name} {{"]
        for k, v in value:
            lines.append(f"{child}{self.render(k, v, child)}")
        lines.append(f"{ind}}}")
        return nl.join(lines)


def _style(
    doc: Document,
    body: MessageBody,
    prefixes: list[str],
    parent_indent: str,
    unit: str,
    nl: str,
) -> _Style:
    if body is not doc.body and "\n" not in body.code:
        return _Style(True, "", "", nl)
    indent = None
    for prefix in prefixes:
        nl_at = prefix.rfind("\n")
        if nl_at >= 0:
            indent = prefix[nl_at + 1 :]
            break
    if indent is None:
        indent = parent_indent + unit
    own = indent[len(parent_indent) :] if indent.startswith(parent_indent) else ""
    return _Style(False, indent, own or unit, nl)


def _unit(doc: Document) -> str:
    """The file's indent step: the indentation of the first indented line inside a block.

    Computed once per Editor: on a file with no indentation at all it walks the whole tree.
    """
    for prefix in doc.body.prefixes():
        nl = prefix.rfind("\n")
        if nl >= 0 and nl + 1 < len(prefix):
            ind = prefix[nl + 1 :]
            return ind if ind.strip() == "" else "  "
    return ""


class _Op(Record):
    __slots__ = ("kind", "index", "text", "order", "spec")

    def __init__(
        self,
        kind: str,  # "set" | "rename" | "remove" | "insert" | "replace"
        index: int,
        text: str = "",
        order: int = 0,
        spec: FieldSpec | None = None,
    ) -> None:
        self.kind = kind
        self.index = index
        self.text = text
        self.order = order
        self.spec = spec


class Editor:
    """Collects edits on one document; ``apply()`` returns the edited document."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self._ops: dict[Path, list[_Op]] = {}  # parent path -> ops on its children
        self._count = 0
        self._unit: str | None = None
        self._newline: str | None = None

    # --- recording -----------------------------------------------------------------------------
    def _add(self, parent: Path, op: _Op) -> None:
        self._count += 1
        op.order = self._count
        self._ops.setdefault(parent, []).append(op)

    def set_value(self, path: Path, value_text: str) -> None:
        """Replace a scalar's value text (``'0'``, ``'"x"'``, ``'true'``), keeping the rest."""
        self._add(path[:-1], _Op("set", path[-1], value_text))

    def rename(self, path: Path, new_name: str) -> None:
        self._add(path[:-1], _Op("rename", path[-1], new_name))

    def remove(self, path: Path) -> None:
        self._add(path[:-1], _Op("remove", path[-1]))

    def insert(self, parent: Path, index: int, name: str, value: Value) -> None:
        """Insert a field before the child ``index`` of ``parent`` (``len`` appends)."""
        self._add(parent, _Op("insert", index, spec=FieldSpec(name, value)))

    def replace(self, path: Path, field_text: str) -> None:
        """Replace a whole field (without its prefix, which is kept) by new text."""
        self._add(path[:-1], _Op("replace", path[-1], field_text))

    @property
    def empty(self) -> bool:
        return not self._ops

    def removed_children(self, parent: Path = ()) -> list[int]:
        """Indices of ``parent``'s children that the edits remove (original numbering)."""
        return sorted({op.index for op in self._ops.get(parent, ()) if op.kind == "remove"})

    def inserted_children(self, parent: Path = ()) -> list[tuple[int, str]]:
        """(original index it goes before, field name) of each insertion, in output order."""
        ops = [op for op in self._ops.get(parent, ()) if op.kind == "insert"]
        ops.sort(key=lambda op: (op.index, op.order))
        return [(op.index, op.spec.name if op.spec else "") for op in ops]

    # --- applying ------------------------------------------------------------------------------
    def apply(self) -> Document:
        if not self._ops:
            return self.doc
        doc = self.doc
        # Which children of each parent lie on a path to an edit.
        through: dict[Path, set[int]] = {}
        for parent in self._ops:
            for depth in range(len(parent)):
                through.setdefault(parent[:depth], set()).add(parent[depth])
        entries, _ = self._rebuild((), doc.body, "", through)
        fields = [doc.body.entry_field(x) for x in entries]
        tail = doc.tail_start
        if not doc.fields and fields:
            # A file with no fields (empty, comments only, a byte order mark): the new fields
            # start the file (after the mark) and end their line before the old text.
            bom = "\ufeff" if doc.src.startswith("\ufeff", tail) else ""
            rest = doc.src[tail + len(bom) :]
            sep = doc.newline if rest and not rest.startswith(("\n", "\r\n")) else ""
            code = "".join(f.code for f in fields).lstrip("\r\n")
            return parse(bom + code + sep + rest, doc.path)
        return Document(doc.src, fields, tail, False, doc.path)

    def _rebuild(
        self, path: Path, body: MessageBody, indent: str, through: dict[Path, set[int]]
    ) -> tuple[list[int | Field], str]:
        """The new children of ``body`` (as :meth:`MessageBody.entries`: the ones kept stay
        records of its packed array), and a line break its close bracket now needs (when the
        last field kept ends in a comment that used to be followed by another line)."""
        fields = body.entries()
        for i in sorted(through.get(path, ())):
            if i >= len(fields):
                raise IndexError(f"no field at path {path + (i,)}")
            f = body.entry_field(fields[i])
            b = f.body
            if not isinstance(b, MessageBody):
                raise TypeError(f"path {path + (i,)} goes through a scalar field")
            new_children, close_break = self._rebuild(path + (i,), b, f.indent, through)
            if close_break:
                # The break goes in front of the close text, which is otherwise kept as it was.
                opened, closed = b.open_text, close_break + b.close_text
                src, n = opened + closed, len(opened)
                kids = [b.entry_field(x) for x in new_children]
                nb = MessageBody(src, 0, n, kids, n, len(src), False)
            else:
                nb = b.with_entries(new_children)
            fields[i] = ComposedField(
                f.src, f.start, f.name_start, f.name_end, f.value_start, f.value_end, f.end, nb
            )
        ops = self._ops.get(path)
        if not ops:
            return fields, ""
        return self._apply_ops(body, fields, ops, indent)

    def _apply_ops(
        self, body: MessageBody, fields: list[int | Field], ops: list[_Op], indent: str
    ) -> tuple[list[int | Field], str]:
        if self._unit is None:
            self._unit = _unit(self.doc)
            self._newline = self.doc.newline
        assert self._newline is not None
        prefixes = body.entry_prefixes(fields)
        style = _style(self.doc, body, prefixes, indent, self._unit, self._newline)
        inserts: dict[int, list[_Op]] = {}
        removed: set[int] = set()
        for op in sorted(ops, key=lambda o: o.order) if len(ops) > 1 else ops:
            if op.kind == "insert":
                inserts.setdefault(op.index, []).append(op)
                continue
            f = body.entry_field(fields[op.index])
            if op.kind == "set":
                fields[op.index] = with_value(f, op.text)
            elif op.kind == "rename":
                fields[op.index] = make_field(
                    f.prefix + op.text + f.src[f.name_end : f.value_start] + f.value_text + f.suffix
                )
            elif op.kind == "replace":
                # The new text brings its own suffix; without one, the old field's spaces
                # still keep it apart from a next field on the same line.
                text = op.text
                if "#" not in text and not text[-1:].isspace():
                    text += f.suffix[: len(f.suffix) - len(f.suffix.lstrip(" \t"))]
                    glued_next = op.index + 1 < len(fields) and not _prefix(
                        body, fields[op.index + 1]
                    )
                    if glued_next and not text[-1:].isspace():
                        text += " "  # the next field was glued to this one (`x {}A: 1`)
                fields[op.index] = make_field(f.prefix + text)
            elif op.kind == "remove":
                removed.add(op.index)
            if op.kind != "remove":
                prefixes[op.index] = _prefix(body, fields[op.index])
        out: list[int | Field] = []
        carry = ""  # prefix text a removed field leaves behind (a separating blank line)
        line_break = ""  # the line break that ended the line before the removed fields
        dropped = False  # fields were removed since the last one kept
        n = len(fields)
        for i in range(n + 1):
            glued = False  # the next field does not start a line of its own
            at_start = False  # ... and it was the first field of the file
            for op in inserts.get(i, ()):
                assert op.spec is not None
                following = _code(body, fields[i]) if i < n else body.close_text
                nxt = i < n and i not in removed
                at_file_start = not out and body is self.doc.body
                if nxt and not style.one_line and (at_file_start or "\n" not in prefixes[i]):
                    glued = True
                    at_start = at_start or at_file_start
                    out.append(self._glued_field(op.spec, style, body, out, prefixes[i]))
                    continue
                out.append(self._new_field(op.spec, style, body, out, following))
            if i == n:
                break
            x = fields[i]
            prefix = prefixes[i]
            if glued:
                # The inserted field took this one's place at the start of the file or line;
                # this one now starts its own line (its comments, if any, come with it).
                code = _code(body, x).lstrip("\ufeff")
                if "\n" not in prefix and not at_start:
                    code = style.indent + code.lstrip(" \t")
                x = make_field(style.newline + code)
                prefix = x.prefix
            if i in removed:
                carry += _detached_prefix(prefix)
                if not line_break and "\n" in prefix:
                    line_break = _first_line_break(prefix)
                dropped = True
                continue
            if "\n" not in prefix and "\n" not in carry:
                if _ends_in_comment(body, out):
                    # The field before ends in a comment: this one must start a line of its own.
                    if line_break:
                        carry = line_break + carry
                    else:
                        carry = style.newline + style.indent
                        x = make_field(_code(body, x).lstrip(" \t"))
                elif dropped and not (carry + prefix).lstrip("\ufeff") and _glued_after(body, out):
                    # The removed field's line break was all that kept this one apart
                    # (``A: 0\nB: 1 C: 2`` minus B).
                    carry += line_break or " "
            line_break, dropped = "", False
            if carry:
                x = make_field(carry + _code(body, x))
                carry = ""
            out.append(x)
        if carry.startswith("\ufeff") and out:
            # The file's BOM travelled with a deleted first field: keep it in front.
            out[0] = make_field("\ufeff" + _code(body, out[0]))
        close_break = ""
        if (
            body is not self.doc.body
            and _ends_in_comment(body, out)
            and "\n" not in body.close_text
        ):
            # The close bracket shared a line with a removed (or replaced) last field.
            close_break = line_break.rstrip(" \t") or style.newline
        return out, close_break

    def _glued_field(
        self,
        spec: FieldSpec,
        style: _Style,
        body: MessageBody,
        before: list[int | Field],
        prefix: str,
    ) -> Field:
        """A field inserted before one (with this prefix) that does not start its own line: at
        the start of the file it takes that place (after a byte order mark); inside a line it
        starts a line."""
        text = style.render(spec.name, spec.value)
        if not before and body is self.doc.body:
            bom = "\ufeff" if prefix.startswith("\ufeff") else ""
            # A first line indented without a break before it keeps its indentation.
            lead = prefix[len(bom) :] if "\n" not in prefix else ""
            return make_field(bom + lead + text)
        return make_field(style.newline + style.indent + text)

    def _new_field(
        self,
        spec: FieldSpec,
        style: _Style,
        body: MessageBody,
        before: list[int | Field],
        following: str,
    ) -> Field:
        text = style.render(spec.name, spec.value)
        if style.one_line:
            preceding = _code(body, before[-1]) if before else body.open_text
            ws_before = preceding.endswith((" ", "\t"))
            prefix = "" if ws_before else " "
            # keep a space before whatever follows unless it brings its own
            suffix = "" if following.startswith((" ", "\t")) else " "
            return make_field(prefix + text + suffix)
        if not before and body is self.doc.body:
            return make_field(text)  # the file's first field: no blank line above it
        return make_field(style.newline + style.indent + text)


def _prefix(body: MessageBody, x: int | Field) -> str:
    """The prefix of one of ``body``'s entries (a record or a field)."""
    if isinstance(x, Field):
        return x.prefix
    start, name_start, _, _ = body.entry_span(x)
    return body.src[start:name_start]


def _code(body: MessageBody, x: int | Field) -> str:
    if isinstance(x, Field):
        return x.code
    start, _, _, end = body.entry_span(x)
    return body.src[start:end]


def _suffix(body: MessageBody, x: int | Field) -> str:
    if isinstance(x, Field):
        return x.suffix
    _, _, value_end, end = body.entry_span(x)
    return body.src[value_end:end]


def _first_line_break(prefix: str) -> str:
    """The prefix up to its first line break and the indentation after it."""
    nl = prefix.index("\n") + 1
    rest = prefix[nl:]
    return prefix[:nl].lstrip("\ufeff") + rest[: len(rest) - len(rest.lstrip(" \t"))]


def _glued_after(body: MessageBody, fields: list[int | Field]) -> bool:
    """Whether a field name printed right after these would run on with the last token
    (``0name``); after ``}``, a quote, ``;`` or ``{`` it may follow directly."""
    if not fields:
        return False  # after ``{``, ``<`` or at the start of the file
    f = body.entry_field(fields[-1])
    last = f.suffix[-1:] or f.src[f.value_end - 1 : f.value_end]
    return last.isalnum() or last in "_.+-"  # a number or identifier would run on


def _ends_in_comment(body: MessageBody, fields: list[int | Field]) -> bool:
    """Whether the text before the next field ends in a comment (a field's trailing one, or
    one after the open bracket)."""
    return "#" in (_suffix(body, fields[-1]) if fields else body.open_text)


def _detached_prefix(prefix: str) -> str:
    """What stays when a field with this prefix is deleted: blank lines not attached to it."""
    bom = "\ufeff" if prefix.startswith("\ufeff") else ""
    lines = prefix.split("\n")
    # lines[0] ends the previous line; lines[-1] is the field's own indentation.
    j = len(lines) - 1
    while j > 1 and lines[j - 1].strip().startswith("#"):
        j -= 1
    # lines[j-1] is now the last line before the field's attached comments.
    if j > 1 and lines[j - 1].strip() == "":
        # Keep the end of the previous line and the blank line (CR of CRLF included).
        return bom + "\n".join(lines[: j - 1]).lstrip("\ufeff") + "\n"
    return bom
