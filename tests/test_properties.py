"""Property tests of the lossless tree and the edit primitives (issue 2), on generated documents.

* Any text format document, with random comments, blank lines, CRLF, separators (``:`` or not,
  ``;`` and ``,``), bracket styles (``{}`` ``<>``), lists and string concatenation, round-trips:
  ``parse(t).code == t``.
* Documents that are valid for ``caffe.NetParameter`` bind to exactly the message protobuf's own
  ``text_format.Parse`` builds from the same text.
* One random edit through :class:`rewriter.text.edit.Editor` changes only the text of the edited
  field: everything before and after that field's span is byte-for-byte the old text.

The strategies here are shared with ``tests/test_fuzz.py``.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewriter.text.cst import Document, MessageBody, parse

# --- building blocks ---------------------------------------------------------------------------

# Generation of these structured documents costs ~20 ms per example, so the counts stay modest;
# tests/test_fuzz.py runs tens of thousands of cheaper (seeded) examples.
SETTINGS = settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_NAMES = [
    "name",
    "layer",
    "layers",
    "type",
    "bottom",
    "top",
    "param",
    "lr_mult",
    "include",
    "phase",
    "convolution_param",
    "num_output",
    "weight_filler",
    "input_dim",
    "force_backward",
    "propagate_down",
    "loss_weight",
    "x",
    "_a1",
]
# Comment text may hold anything but a newline: quotes, brackets, non-ASCII, stray bytes
# (as read_text surrogate-escapes them) and NUL.
_COMMENT_CHARS = st.sampled_from(list(" \"'{}<>[]:;,#\\\tabcXYZ019é€\udce9\x00\r\x0b"))
_STRING_CHARS = st.sampled_from(list(" abcAZ09_-./{}<>[]:;,#'é€\t\udcff\x00"))
_ESCAPES = ["\\n", "\\t", "\\\\", '\\"', "\\'", "\\a", "\\b", "\\f", "\\v", "\\r", "\\101"]
_ESCAPES += ["\\x41", "\\303\\251", "\\u00e9", "\\U0001F600", "\\0", "\\7"]


@st.composite
def comment(draw: st.DrawFn) -> str:
    return "#" + "".join(draw(st.lists(_COMMENT_CHARS, max_size=12)))


@st.composite
def trivia(draw: st.DrawFn, need_space: bool = False) -> str:
    """Whitespace and comment lines; a comment is always followed by a newline here."""
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            parts.append(draw(comment()) + draw(st.sampled_from(["\n", "\r\n"])))
        elif kind == 1:
            parts.append(draw(st.sampled_from(["\n", "\r\n", "\n\n", "\r\n\r\n"])))
        elif kind == 2:
            parts.append("\t")
        elif kind == 3:
            parts.append(draw(st.sampled_from(["\f", "\v", "  \n  "])))
        else:
            parts.append(" " * draw(st.integers(1, 4)))
    out = "".join(parts)
    if need_space and not out:
        out = draw(st.sampled_from([" ", "\n", "\r\n", "\n  "]))
    return out


@st.composite
def string_token(draw: st.DrawFn, escapes: bool = True) -> str:
    quote = draw(st.sampled_from(['"', "'"]))
    pieces = draw(
        st.lists(
            st.one_of(_STRING_CHARS, st.sampled_from(_ESCAPES))
            if escapes
            else _STRING_CHARS.filter(lambda c: c not in "\x00\udcff"),
            max_size=10,
        )
    )
    body = "".join(p for p in pieces if p != quote)
    return quote + body + quote


_WORDS = st.sampled_from(
    [
        "0",
        "1",
        "-1",
        "42",
        "0x1F",
        "-0x10",
        "017",
        "3.5",
        "-0.25",
        ".5",
        "5.",
        "1e-3",
        "2.5E+2",
        "1f",
        "inf",
        "-inf",
        "nan",
        "true",
        "false",
        "t",
        "f",
        "True",
        "TRAIN",
        "TEST",
        "MAX",
        "gaussian",
        "99999999999999999999",
        "1e999",
    ]
)


@st.composite
def scalar(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(_WORDS)
    first = draw(string_token())
    if draw(st.integers(0, 5)) == 0:  # adjacent literals concatenate
        return first + draw(trivia()) + draw(string_token())
    return first


@st.composite
def field_name(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True))
    return draw(st.sampled_from(_NAMES))


@st.composite
def message_text(draw: st.DrawFn, depth: int) -> str:
    """``{ fields }`` or ``< fields >`` with trivia."""
    opening, closing = draw(st.sampled_from([("{", "}"), ("<", ">")]))
    body = draw(fields_text(depth + 1))
    return opening + draw(trivia()) + body + draw(trivia()) + closing


@st.composite
def list_text(draw: st.DrawFn, depth: int) -> str:
    if depth < 3 and draw(st.integers(0, 3)) == 0:
        items = draw(st.lists(message_text(depth), max_size=3))
    else:
        items = draw(st.lists(scalar(), max_size=4))
    sep = "," + draw(trivia())
    return "[" + draw(trivia()) + sep.join(items) + draw(trivia()) + "]"


@st.composite
def one_field(draw: st.DrawFn, depth: int) -> str:
    name = draw(field_name())
    kind = draw(st.integers(0, 9))
    if kind <= 5 or depth >= 4:
        value = draw(scalar())
        sep = draw(st.sampled_from([":", ": ", " : ", ":\t", ":\n  ", " :"]))
    elif kind <= 8:
        value = draw(message_text(depth))
        sep = draw(st.sampled_from([" ", "", ": ", ":", "\n", " # c\n"]))
    else:
        value = draw(list_text(depth))
        sep = draw(st.sampled_from([": ", ":"]))
    suffix = draw(st.sampled_from(["", "", "", ";", ",", " ;", " # trailing", "; # t"]))
    return name + sep + value + suffix


@st.composite
def fields_text(draw: st.DrawFn, depth: int = 0) -> str:
    n = draw(st.integers(0, 5 if depth else 8))
    out = ""
    for i in range(n):
        f = draw(one_field(depth))
        ends_clean = not out or out.endswith(("}", ">", "]"))
        out += draw(trivia(need_space=i > 0 and not ends_clean)) + f
        if "#" in f.rsplit("\n", 1)[-1].replace('"#', "").replace("'#", ""):
            # a trailing comment runs to the end of the line
            out += draw(st.sampled_from(["\n", "\r\n"]))
    return out


@st.composite
def documents(draw: st.DrawFn) -> str:
    """Any text format document (not necessarily valid for a Caffe schema)."""
    bom = "\ufeff" if draw(st.integers(0, 19)) == 0 else ""
    body = draw(fields_text())
    tail = draw(trivia())
    if draw(st.booleans()):
        tail += draw(comment())  # a final comment without a newline
    return bom + draw(trivia()) + body + tail


# --- documents valid for a schema, to compare with protobuf's own parser ------------------------

_INT_LIMITS = {
    3: (-(2**63), 2**63 - 1),
    4: (0, 2**64 - 1),
    5: (-(2**31), 2**31 - 1),
    13: (0, 2**32 - 1),
    17: (-(2**31), 2**31 - 1),
    18: (-(2**63), 2**63 - 1),
}


@st.composite
def int_text(draw: st.DrawFn, lo: int, hi: int) -> str:
    v = draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1])))
    style = draw(st.integers(0, 3))
    sign = "-" if v < 0 else ""
    if style == 1:
        return f"{sign}0x{abs(v):x}"
    if style == 2 and v != 0:
        return f"{sign}0{abs(v):o}"
    return str(v)


@st.composite
def float_text(draw: st.DrawFn) -> str:
    style = draw(st.integers(0, 6))
    if style == 0:
        return draw(st.sampled_from(["inf", "-inf", "nan", "Infinity", "-inff", "1e999"]))
    if style == 1:
        return str(draw(st.integers(-(10**12), 10**12)))
    if style == 2:
        return draw(st.sampled_from([".5", "5.", "-.25", "1e-3", "2.5E+2", "1f", "0.5F", "0"]))
    v = draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    return repr(v)


def _value_for(draw: st.DrawFn, fd: Any, depth: int) -> str:
    t = fd.type
    if t in (11, 10):  # message, group
        opening, closing = draw(st.sampled_from([("{", "}"), ("<", ">")]))
        inner = draw(valid_fields(fd.message_type, depth + 1))
        sep = draw(st.sampled_from([" ", ": ", ""]))
        return sep + opening + draw(trivia()) + inner + draw(trivia()) + closing
    sep = draw(st.sampled_from([": ", ":", " : "]))
    if t == 9:  # string
        return sep + draw(string_token(escapes=draw(st.booleans())).filter(_utf8_ok))
    if t == 8:
        return sep + draw(st.sampled_from(["true", "false", "t", "f", "1", "0", "True", "False"]))
    if t == 14:
        values = list(fd.enum_type.values)
        v = draw(st.sampled_from(values))
        return sep + (v.name if draw(st.integers(0, 3)) else str(v.number))
    if t in _INT_LIMITS:
        lo, hi = _INT_LIMITS[t]
        return sep + draw(int_text(lo, hi))
    if t in (1, 2):
        return sep + draw(float_text())
    return sep + "0"  # pragma: no cover (no other types in caffe.proto)


def _utf8_ok(token: str) -> bool:
    from rewriter.text.cst import decode_string

    try:
        decode_string(token).encode("utf-8")
    except (UnicodeError, ValueError):
        return False
    return True


@st.composite
def valid_fields(draw: st.DrawFn, desc: Any, depth: int = 0) -> str:
    fields = list(desc.fields)
    if depth >= 3:
        fields = [fd for fd in fields if fd.type not in (10, 11)]
    if not fields:
        return ""
    chosen = draw(st.lists(st.sampled_from(fields), max_size=6 if depth == 0 else 4))
    seen: set[str] = set()
    out: list[str] = []
    for fd in chosen:
        repeated = getattr(fd, "is_repeated", getattr(fd, "label", 0) == 3)
        if not repeated:
            if fd.name in seen:
                continue
            seen.add(fd.name)
        out.append(fd.name + _value_for(draw, fd, depth))
    sep = st.sampled_from(["\n", " ", "\r\n", ";\n", ", ", "\n# note\n", " # x\n"])
    return "".join(f + draw(sep) for f in out)


def net_descriptor() -> Any:
    from rewriter.schema.runtime import default_schema

    return default_schema().net_descriptor


@st.composite
def valid_nets(draw: st.DrawFn) -> str:
    return draw(trivia()) + draw(valid_fields(net_descriptor()))


# --- the properties ----------------------------------------------------------------------------


@SETTINGS
@given(documents())
def test_any_document_round_trips(text: str) -> None:
    doc = parse(text)
    assert doc.code == text
    # Every field's parts tile its span exactly.
    for _, f in doc.walk():
        assert f.code == f.prefix + f.name + f.separator + f.value_text + f.suffix


@settings(SETTINGS, max_examples=600)
@given(valid_nets())
def test_valid_nets_bind_as_protobuf_parses_them(text: str) -> None:
    from google.protobuf import text_format

    from rewriter.schema.bind import NET, bind
    from rewriter.schema.runtime import default_schema

    doc = parse(text)
    assert doc.code == text
    bound = bind(doc, root=NET)
    assert bound.errors == [], [d.render() for d in bound.errors]
    theirs = default_schema().message_class(NET)()
    text_format.Parse(text, theirs)
    assert _same(bound.message, theirs)


def _same(a: Any, b: Any) -> bool:
    """Message equality where NaN equals NaN (serialised bytes compare bit patterns)."""
    return bool(a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True))


# --- one edit changes only its own field --------------------------------------------------------


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, str, tuple[int, ...], Any]:
    text = draw(documents())
    doc = parse(text)
    fields = list(doc.walk())
    kinds = ["insert"]
    if fields:
        kinds += ["set", "rename", "remove", "replace"]
    kind = draw(st.sampled_from(kinds))
    if kind == "insert":
        bodies: list[tuple[tuple[int, ...], MessageBody]] = [((), doc.body)]
        bodies += [(p, f.body) for p, f in fields if isinstance(f.body, MessageBody)]
        path, body = draw(st.sampled_from(bodies))
        index = draw(st.integers(0, len(body.fields)))
        value: Any = draw(
            st.one_of(
                _WORDS,
                string_token(),
                st.lists(st.tuples(st.sampled_from(_NAMES), _WORDS), max_size=3),
            )
        )
        return text, kind, path + (index,), (draw(st.sampled_from(_NAMES)), value)
    path, f = draw(st.sampled_from(fields))
    if kind == "set":
        if f.body is not None:
            kind = "rename"
        else:
            return text, kind, path, draw(st.one_of(_WORDS, string_token()))
    if kind == "rename":
        return text, kind, path, draw(st.sampled_from(_NAMES))
    if kind == "replace":
        # (a trailing comment in replacement text would swallow a '}' on the same line: the
        # caller's business, not the editor's)
        return text, kind, path, draw(one_field(3).filter(lambda t: "#" not in t))
    return text, kind, path, None


def _span(doc: Document, kind: str, path: tuple[int, ...]) -> tuple[int, int]:
    """The offsets of the text an edit may change: the field's own span, or an insertion point."""
    body = doc.body
    for i in path[:-1]:
        nxt = body.fields[i].body
        assert isinstance(nxt, MessageBody)
        body = nxt
    i = path[-1]
    if kind == "insert":
        at = body.fields[i].start if i < len(body.fields) else body.close_start
        if at == 0 and doc.src.startswith("\ufeff"):
            at = 1  # a field inserted at the top of the file goes after the byte order mark
        return at, at
    f = body.fields[i]
    return f.start, f.end


def _body_at(doc: Document, parent: tuple[int, ...]) -> MessageBody:
    body = doc.body
    for i in parent:
        nxt = body.fields[i].body
        assert isinstance(nxt, MessageBody)
        body = nxt
    return body


@SETTINGS
@given(edits())
def test_one_edit_changes_only_its_field(case: tuple[str, str, tuple[int, ...], Any]) -> None:
    from rewriter.text.edit import Editor

    text, kind, path, arg = case
    doc = parse(text)
    ed = Editor(doc)
    if kind == "set":
        ed.set_value(path, arg)
    elif kind == "rename":
        ed.rename(path, arg)
    elif kind == "remove":
        ed.remove(path)
    elif kind == "replace":
        ed.replace(path, arg)
    else:
        ed.insert(path[:-1], path[-1], arg[0], arg[1])
    out = ed.apply().code
    a, b = _span(doc, kind, path)
    head, tail = text[:a], text[b:]
    assert out.startswith(head), (kind, path)
    assert out.endswith(tail), (kind, path)
    assert len(out) >= len(head) + len(tail)
    # The result is itself a lossless document, and the changed middle shows the edit.
    again = parse(out)
    assert again.code == out
    middle = out[len(head) : len(out) - len(tail)]
    old = text[a:b]
    if kind == "set":
        f = _body_at(doc, path[:-1]).fields[path[-1]]
        assert middle == old[: f.value_start - a] + arg + old[f.value_end - a :]
    elif kind == "rename":
        f = _body_at(doc, path[:-1]).fields[path[-1]]
        assert middle == old[: f.name_start - a] + arg + old[f.name_end - a :]
    elif kind == "remove":
        # What stays behind is the start of the removed field's prefix: the BOM, comments
        # detached from it by a blank line, and that blank line.
        f = _body_at(doc, path[:-1]).fields[path[-1]]
        assert f.prefix.startswith(middle)
        assert len(list(again.walk())) < len(list(doc.walk()))
    elif kind == "replace":
        f = _body_at(doc, path[:-1]).fields[path[-1]]
        # replace keeps the old field's trailing spaces when the new text brings no suffix of
        # its own, so that a next field on the same line stays apart
        kept = ""
        if "#" not in arg and not arg[-1:].isspace():
            kept = f.suffix[: len(f.suffix) - len(f.suffix.lstrip(" \t"))]
            siblings = _body_at(doc, path[:-1]).fields
            glued_next = path[-1] + 1 < len(siblings) and not siblings[path[-1] + 1].prefix
            if glued_next and not kept:
                kept = " "  # `x {}A: 1`: a space keeps the next field apart
        assert middle == f.prefix + arg + kept
    else:
        name, value = arg
        assert middle.lstrip().startswith(f"{name}:" if isinstance(value, str) else name)
        assert len(list(again.walk())) > len(list(doc.walk()))


def test_remove_last_field_after_a_trailing_comment() -> None:
    from rewriter.text.edit import Editor

    text = "layer {\n  name: 'a'  # the name\n  top: 'b' }\n"
    ed = Editor(parse(text))
    ed.remove((0, 1))
    out = ed.apply().code  # was: "layer {\n  name: 'a'  # the name}\n": never closed
    assert parse(out).code == out
    assert [f.name for f in parse(out).fields[0].message.fields] == ["name"]
    assert "# the name" in out


def test_replace_before_a_glued_next_field() -> None:
    from rewriter.text.edit import Editor

    text = "x {}A: 1\n"
    ed = Editor(parse(text))
    ed.replace((0,), "name: 0")
    out = ed.apply().code  # was: "name: 0A: 1\n", which does not parse
    assert [f.name for f in parse(out).fields] == ["name", "A"]


def test_remove_after_a_trailing_comment_keeps_the_next_field_on_its_own_line() -> None:
    from rewriter.text.edit import Editor

    text = "layer {\n  name: 'a'  # the name\n  top: 'b' type: 'c'\n}\n"
    ed = Editor(parse(text))
    ed.remove((0, 1))
    out = ed.apply().code
    assert out == "layer {\n  name: 'a'  # the name\n  type: 'c'\n}\n"


def test_replace_with_a_comment_moves_a_field_sharing_its_line() -> None:
    from rewriter.text.edit import Editor

    text = "layer {\n  name: 'a'\n  top: 'b' type: 'c' }\n"
    ed = Editor(parse(text))
    ed.replace((0, 1), "top: 'x'  # new")
    out = ed.apply().code
    assert out == "layer {\n  name: 'a'\n  top: 'x'  # new\n  type: 'c' }\n"
    ed = Editor(parse(text))
    ed.replace((0, 2), "type: 'x'  # new")
    out = ed.apply().code  # the close bracket shared the replaced field's line
    assert out == "layer {\n  name: 'a'\n  top: 'b' type: 'x'  # new\n}\n"


def test_insert_at_the_top_of_an_indented_first_line_keeps_its_indentation() -> None:
    from rewriter.text.edit import Editor

    for bom in ("", "\ufeff"):
        ed = Editor(parse(bom + "  A: 0\n"))
        ed.insert((), 0, "name", '"x"')
        assert ed.apply().code == bom + '  name: "x"\n  A: 0\n'


def test_insert_before_first_field_of_file() -> None:
    from rewriter.text.edit import Editor

    for text in ('name: "a"\n', '\ufeffname: "a"\n', '# head\nname: "a"\n', "\ufeff"):
        ed = Editor(parse(text))
        ed.insert((), 0, "force_backward", "true")
        out = ed.apply().code
        assert parse(out).code == out
        names = ["force_backward"] + (["name"] if "name" in text else [])
        assert [f.name for f in parse(out).fields] == names
        assert out.startswith("\ufeff") == text.startswith("\ufeff")


def test_insert_before_field_on_same_line() -> None:
    from rewriter.text.edit import Editor

    text = 'layer {\n  name: "a" type: "ReLU"\n}\n'
    ed = Editor(parse(text))
    ed.insert((0,), 1, "top", '"t"')
    out = ed.apply().code
    assert [f.name for f in parse(out).fields[0].message.fields] == ["name", "top", "type"]
    assert '"t"type' not in out, out  # was: 'name: "a" \n  top: "t"type: "ReLU"'


def test_replace_keeps_separation_from_next_field() -> None:
    from rewriter.text.edit import Editor

    text = "layer { name: 'a' top: 'b' }\n"
    ed = Editor(parse(text))
    ed.replace((0, 0), 'name: "c"')
    out = ed.apply().code  # was: "layer { name: \"c\"top: 'b' }"
    assert out == "layer { name: \"c\" top: 'b' }\n"


# --- small sanity checks of the generators themselves -------------------------------------------


def test_generators_reach_the_interesting_shapes() -> None:
    """The strategies do produce lists, <> blocks, CRLF, comments and concatenated strings."""
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(documents())
    def collect(text: str) -> None:
        for mark in ("[", "<", "\r\n", "#", '" "', "\ufeff", ";", "\udce9"):
            if mark in text:
                seen.add(mark)

    collect()
    assert seen >= {"[", "<", "\r\n", "#", ";"}, seen


def test_float_equality_helper_treats_nan_as_equal() -> None:
    from rewriter.schema.runtime import default_schema

    cls = default_schema().message_class("caffe.NetParameter")
    a, b = cls(), cls()
    a.layer.add().dropout_param.dropout_ratio = math.nan
    b.layer.add().dropout_param.dropout_ratio = math.nan
    assert _same(a, b)
    b.layer[0].dropout_param.dropout_ratio = 0.5
    assert not _same(a, b)
