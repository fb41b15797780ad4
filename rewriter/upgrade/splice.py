"""The text edits every upgrade step is made of: spans of the source replaced in one go
(:class:`_Splices`), fields to print (:class:`_Line`) and their rendering in the file's own
indentation, the comments of a field or block and where they go when it moves, and edits of the
children of one block (:func:`_edit_siblings`). Also the context a step runs in (:class:`_Ctx`).

Kept apart from the steps (:mod:`v0`, :mod:`data`, :mod:`v1`, :mod:`inputs`, :mod:`batchnorm`)
because they all share it; it knows nothing of Caffe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewriter.text.cst import Document, Field, ListBody, MessageBody
from rewriter.upgrade.result import UpgradeError
from rewriter.util.record import Record


class _Splices:
    """Replacements of ``[start, end)`` spans of one source text, applied in one go.

    A step that edits a file part by part calls :meth:`settle` after each part, so the text of
    the parts done is kept as one string rather than as thousands of pending edits."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.items: list[tuple[int, int, int, str]] = []
        self.seq = 0
        self.done: list[str] = []  # the new text of ``src[:pos]``
        self.pos = 0

    def add(self, start: int, end: int, text: str) -> None:
        self.items.append((start, end, self.seq, text))
        self.seq += 1

    def _render(self, items: list[tuple[int, int, int, str]], upto: int) -> None:
        out: list[str] = []
        pos = self.pos
        for start, end, _, text in sorted(items):
            if start < pos:
                raise UpgradeError(f"internal error: overlapping upgrade edits at offset {start}")
            out.append(self.src[pos:start])
            out.append(text)
            pos = end
        if pos < upto:
            out.append(self.src[pos:upto])
            pos = upto
        self.done.append("".join(out))
        self.pos = pos

    def settle(self, upto: int) -> None:
        """No later edit starts before ``upto``: the edits before it may be applied (they are,
        a few hundred at a time, so the text is kept in a few large strings)."""
        if len(self.items) >= 512:
            now = [it for it in self.items if it[0] < upto]
            self.items = [it for it in self.items if it[0] >= upto]
            self._render(now, upto)

    def apply(self) -> str:
        self._render(self.items, len(self.src))
        self.items = []
        return "".join(self.done)


class _Line(Record):
    """A field to print: a scalar (``name: value``), a message (``value`` is a list) or verbatim
    text (``raw``, already indented for its place); with comment lines before it ("" is a blank
    line) and a trailing comment (with its leading spaces). No name and no raw: comments only."""

    __slots__ = ("name", "value", "raw", "comments", "trailing")

    def __init__(
        self,
        name: str = "",
        value: str | list[_Line] | None = None,
        raw: str | None = None,
        comments: list[str] | None = None,
        trailing: str = "",
    ) -> None:
        self.name = name
        self.value = value
        self.raw = raw
        self.comments: list[str] = [] if comments is None else comments
        self.trailing = trailing

    def has_comments(self) -> bool:
        if self.comments or self.trailing or (self.raw is not None and "#" in self.raw):
            return True
        return isinstance(self.value, list) and any(c.has_comments() for c in self.value)


def _render_one(line: _Line, indent: str, unit: str, multiline: bool) -> str:
    """One field's text from its name on (later lines indented absolutely)."""
    if line.raw is not None:
        return line.raw
    if isinstance(line.value, list):
        if not line.value:
            return f"{line.name} {{}}"
        if not multiline:
            inner = " ".join(_render_one(c, "", unit, False) for c in line.value)
            return f"{line.name} {{ {inner} }}"
        body = _render_lines(line.value, indent + unit, unit, lead=True)
        return f"{line.name} {{{body}\n{indent}}}"
    return f"{line.name}: {line.value}"


def _render_lines(
    lines: Sequence[_Line], indent: str, unit: str, lead: bool, multiline: bool = True
) -> str:
    """Fields one per line at ``indent`` (each starting with a newline when ``lead``; otherwise
    the first is written where the cursor already is), or all on one line."""
    if not multiline:
        text = " ".join(_render_one(x, indent, unit, False) for x in lines if x.name or x.raw)
        return (" " + text) if lead and text else text
    out: list[str] = []
    first = not lead
    for x in lines:
        rows = list(x.comments)
        if x.name or x.raw is not None:
            rows.append(_render_one(x, indent, unit, True) + x.trailing)
        for row in rows:
            if first:
                if row:
                    out.append(row)
                    first = False
                continue
            out.append("\n" + (indent + row if row else ""))
    return "".join(out)


def _line_start(f: Field) -> int:
    return f.src.rfind("\n", 0, f.name_start) + 1


def _line_indent(f: Field) -> str:
    """The whitespace that starts the line the field's name is on."""
    src = f.src
    ls = _line_start(f)
    m = re.match(r"[ \t\ufeff]*", src[ls : f.name_start])
    return m.group().replace("\ufeff", "") if m else ""


def _starts_line(f: Field) -> bool:
    return f.src[_line_start(f) : f.name_start].strip(" \t\ufeff") == ""


def _child_indent(body: MessageBody, parent_indent: str, unit: str) -> str:
    for f in body.fields:
        if "\n" in f.prefix:
            return f.indent
    return parent_indent + unit


def _trailing(f: Field) -> str:
    """The field's same-line comment with the spaces before it ("" when none)."""
    s = f.suffix
    h = s.find("#")
    if h < 0:
        return ""
    before = s[:h]
    ws = before[len(before.rstrip(" \t")) :]
    return (ws or " ") + s[h:].rstrip("\r")


def _prefix_lines(f: Field) -> list[str]:
    """Comment and blank lines of the field's prefix, stripped ("" for a blank line)."""
    lines = f.prefix.split("\n")
    full = lines[:-1] if f.start == 0 else lines[1:-1]
    return [ln.strip(" \t\r\ufeff") for ln in full]


def _split_prefix(f: Field) -> tuple[str, list[str]]:
    """What stays of the prefix when the field is deleted, and its attached comment lines."""
    prefix = f.prefix
    bom = "\ufeff" if prefix.startswith("\ufeff") else ""
    lines = prefix.split("\n")
    if len(lines) == 1:
        return bom, []
    first = 0 if f.start == 0 else 1
    j = len(lines) - 1
    while j > first and lines[j - 1].strip(" \t\r\ufeff").startswith("#"):
        j -= 1
    attached = [ln.strip(" \t\r\ufeff") for ln in lines[j:-1]]
    if j > first and lines[j - 1].strip(" \t\r\ufeff") == "":
        return "\n".join(lines[: j - 1]) + "\n", attached
    return bom, attached


def _value_texts(f: Field) -> list[str]:
    if isinstance(f.body, ListBody):
        return [f.src[it[1] : it[2]] for it in f.body.items if isinstance(it, tuple)]
    return [f.value_text]


def _field_text(f: Field, name: str | None = None) -> str:
    """``name: value`` (or ``name { ... }``) without prefix and suffix, optionally renamed."""
    return (name if name is not None else f.name) + f.src[f.name_end : f.value_end]


def _reindent(text: str, old: str, new: str) -> str:
    if old == new or "\n" not in text:
        return text
    lines = text.split("\n")
    return "\n".join(
        [lines[0]] + [new + ln[len(old) :] if ln.startswith(old) else ln for ln in lines[1:]]
    )


def _body_comments(b: MessageBody) -> list[str]:
    """Every comment inside a block (not the block field's own prefix)."""
    out: list[str] = []
    h = b.open_text.find("#")
    if h >= 0:
        out.append(b.open_text[h:].strip())
    for g in b.fields:
        out.extend(c for c in _prefix_lines(g) if c)
        out.extend(_inner_comments(g))
    tail = b.src[(b.fields[-1].end if b.fields else b.open_end) : b.close_start]
    out.extend(ln.strip() for ln in tail.split("\n") if ln.strip().startswith("#"))
    return out


def _inner_comments(f: Field) -> list[str]:
    out = _body_comments(f.body) if isinstance(f.body, MessageBody) else []
    t = _trailing(f)
    if t:
        out.append(t.strip())
    return out


def _close_comments(b: MessageBody) -> list[str]:
    tail = b.src[(b.fields[-1].end if b.fields else b.open_end) : b.close_start]
    return [ln.strip() for ln in tail.split("\n") if ln.strip().startswith("#")]


def _open_comments(b: MessageBody) -> list[str]:
    h = b.open_text.find("#")
    return [b.open_text[h:].strip()] if h >= 0 else []


def _commented_out(f: Field, reason: str) -> list[str]:
    """The field as comment lines, after a line saying why it is not in the upgraded net."""
    old = _line_indent(f)
    lines = f.src[f.name_start : f.value_end].split("\n")
    out = [f"# [rewriter upgrade] not upgraded ({reason}):"]
    for n, ln in enumerate(lines):
        ln = ln.rstrip("\r")
        if n and ln.startswith(old):
            ln = ln[len(old) :]
        out.append("# " + ln)
    t = _trailing(f)
    if t:
        out[-1] += t
    return out


_Action = str | tuple[str, str]  # "drop" | "keep" | ("replace", text)


def _edit_siblings(sp: _Splices, fields: Sequence[Field], actions: dict[int, _Action]) -> None:
    """Remove or replace some children of one block, keeping the lines of the others intact.

    "drop" deletes a field with its attached comments (the caller re-homes them); "keep" deletes
    it but leaves its comments where they were; ("replace", text) swaps the field's text (its
    prefix, i.e. its own comments and indentation, stays). A surviving field that shared a line
    with deleted ones moves to the start of that line.
    """
    n = len(fields)
    i = 0
    while i < n:
        act = actions.get(i)
        if act is None:
            i += 1
            continue
        f = fields[i]
        if isinstance(act, tuple):
            sp.add(f.name_start, f.end, act[1])
            i += 1
            continue
        own_line = "\n" in f.prefix or f.start == 0
        if not own_line:
            sp.add(f.start, f.end, _trailing(f) if act == "keep" else "")
            i += 1
            continue
        j = i + 1
        while j < n and "\n" not in fields[j].prefix and actions.get(j) in ("drop", "keep"):
            j += 1
        last = fields[j - 1]
        kept, attached = _split_prefix(f)
        if act == "drop" and i > 0 and i - 1 in actions and not kept.strip(" \t\r\n\ufeff"):
            # A blank line between two fields that both go separates nothing any more.
            kept = kept[:1] if kept.startswith("\ufeff") else ""
        keep = any(actions.get(k) == "keep" for k in range(i, j))
        if j < n and "\n" not in fields[j].prefix:
            # A surviving field continues the line: it takes the deleted field's place.
            if keep:
                text = f.prefix
            elif "\n" in f.prefix:
                text = kept + "\n" + f.indent
            else:
                text = kept
            sp.add(f.start, fields[j].name_start, text)
            i = j
            continue
        end = last.end
        if keep and _trailing(last):
            text = f.prefix + _trailing(last).lstrip()
        elif keep and attached:
            text = f.prefix[: f.prefix.rfind("\n")]
        else:
            text = kept
            if f.start == 0 and j < n and actions.get(j) not in ("drop", "keep"):
                nxt = fields[j].prefix
                end += 2 if nxt.startswith("\r\n") else 1 if nxt.startswith("\n") else 0
        sp.add(f.start, end, text)
        i = j


def _insert_before(sp: _Splices, anchor: Field, text: str, multiline: bool) -> None:
    """Put a new field (``text``, from its name on) just before ``anchor``."""
    if multiline and _starts_line(anchor):
        pos = _line_start(anchor)
        sp.add(pos, pos, _line_indent(anchor) + text + "\n")
    else:
        sp.add(anchor.name_start, anchor.name_start, text + " ")


def _append_to_body(
    sp: _Splices, body: MessageBody, lines: Sequence[_Line], indent: str, unit: str
) -> None:
    """Add fields at the end of a block, one per line or on the block's single line."""
    multiline = "\n" in body.code or any(x.has_comments() for x in lines)
    if multiline:
        pos = body.fields[-1].end if body.fields else body.open_end
        sp.add(pos, pos, _render_lines(lines, indent, unit, lead=True))
        return
    text = _render_lines(lines, indent, unit, lead=False, multiline=False)
    if body.fields:
        pos = body.fields[-1].end
        sp.add(pos, pos, " " + text)
    else:
        sp.add(body.start + 1, body.close_start, f" {text} ")


def _insert_comment_lines(sp: _Splices, chain: Sequence[Field], comments: list[str]) -> None:
    """Comment lines just above the first field of ``chain`` that starts its own line."""
    for f in chain:
        if _starts_line(f):
            pos = _line_start(f)
            ind = _line_indent(f)
            sp.add(pos, pos, "".join(f"{ind}{c}\n" for c in comments))
            return


class _Ctx(Record):
    __slots__ = ("path", "unit", "crlf", "differences", "lenient", "v1_types", "fork_types")

    def __init__(
        self,
        path: str,
        unit: str,
        crlf: bool,
        differences: list[str] | None = None,
        lenient: bool = False,
        v1_types: Mapping[str, str] | None = None,
        fork_types: dict[int, str] | None = None,
    ) -> None:
        self.path = path
        self.unit = unit
        self.crlf = crlf
        self.differences: list[str] = [] if differences is None else differences
        self.lenient = lenient
        #: a fork's V1 type token -> its V2 type string (``--v1-type CROP=Crop``)
        self.v1_types: Mapping[str, str] = {} if v1_types is None else v1_types
        #: for the net being upgraded: V1 layer index -> the V2 type of its fork token
        self.fork_types: dict[int, str] = {} if fork_types is None else fork_types

    def finish(self, text: str) -> str:
        return re.sub(r"(?<!\r)\n", "\r\n", text) if self.crlf else text


def _file_unit(doc: Document) -> str:
    """The file's indent step (what a nested field is indented by), "  " when unknown."""
    for depth, f in doc.walk_depth():
        if depth >= 2 and "\n" in f.prefix:
            return f.indent
    return "  "


_Step = Callable[[_Ctx, Document, MessageBody, Any, tuple[int, ...], str], "str | None"]
