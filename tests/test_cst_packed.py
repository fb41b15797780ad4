"""The parsed tree keeps each top-level block's subtree as packed records (rewriter.text.cst) and
builds Field objects on demand. These tests pin down that the records describe every byte
exactly as the objects did, that nothing built from them depends on object identity, and that
the memory stays bounded."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from rewriter.text.cst import Document, Field, ListBody, MessageBody, parse
from rewriter.text.edit import Editor

from .conftest import corpus_params, read_corpus


def render(body: MessageBody) -> str:
    """A body printed from its parts only (never from a pristine slice)."""
    return body.open_text + "".join(render_field(f) for f in body.fields) + body.close_text


def render_field(f: Field) -> str:
    value = render(f.body) if isinstance(f.body, MessageBody) else f.value_text
    return f.prefix + f.name + f.separator + value + f.suffix


def attrs(f: Field) -> tuple[object, ...]:
    body = f.body
    shape: object = None
    if isinstance(body, MessageBody):
        shape = (body.start, body.open_end, body.close_start, body.end)
    elif isinstance(body, ListBody):
        shape = tuple(
            (it.start, it.end) if isinstance(it, MessageBody) else it for it in body.items
        )
    return (f.start, f.name_start, f.name_end, f.value_start, f.value_end, f.end, f.kind, shape)


@pytest.mark.parametrize("row", corpus_params())
def test_every_part_of_every_corpus_file_prints_back(row: dict[str, str] | None) -> None:
    path, text = read_corpus(row)
    try:
        doc = parse(text, str(path))
    except Exception:  # the one shell template; its error is tested in test_cst_corpus
        pytest.skip("not text format")
    printed = "".join(render_field(f) for f in doc.fields) + doc.src[doc.tail_start :]
    assert printed == text
    for _, f in doc.walk():
        assert f.code == text[f.start : f.end]


TRICKY = """\
# head comment
layer {  # after the open
  name: "a" 'b'   # adjacent strings
    "c"
  type: "Convolution"
  top: "x"
  ;
  param < lr_mult: 1, decay_mult: 0 >
  param { lr_mult: 2 }
  convolution_param {
    kernel_size: [3, 3]
    weight_filler { type: "xavier" }
    [ext.field]: 1
    pad
      :
      1
  }
  dim: [1, 2,
        3]
  list_of { x: [{ a: 1 }, { b: { c: 2 } }] }
  empty {}
  # tail of the layer
}
layer { name: "b" }
top_scalar: 3;
"""


def test_slow_path_constructs_inside_blocks() -> None:
    doc = parse(TRICKY)
    assert doc.code == TRICKY
    assert "".join(render_field(f) for f in doc.fields) + TRICKY[doc.tail_start :] == TRICKY
    layer = doc.fields[0].message
    names = [f.name for f in layer.fields]
    assert names == [
        "name",
        "type",
        "top",
        "param",
        "param",
        "convolution_param",
        "dim",
        "list_of",
        "empty",
    ]
    name = layer.get("name")
    assert name is not None and name.value_text == '"a" \'b\'   # adjacent strings\n    "c"'
    top = layer.get("top")
    assert top is not None and top.suffix == "\n  ;"  # a separator on its own line
    conv = layer.get("convolution_param")
    assert conv is not None
    inner = conv.message
    assert [f.name for f in inner.fields] == ["kernel_size", "weight_filler", "[ext.field]", "pad"]
    ks = inner.get("kernel_size")
    assert ks is not None and isinstance(ks.body, ListBody) and len(ks.body.items) == 2
    pad = inner.get("pad")
    assert pad is not None and pad.value_text == "1" and pad.separator == "\n      :\n      "
    filler = inner.get("weight_filler")
    assert filler is not None and filler.message.get("type") is not None
    lst = layer.get("list_of")
    assert lst is not None
    x = lst.message.get("x")
    assert x is not None and isinstance(x.body, ListBody)
    deep = x.body.items[1]
    assert isinstance(deep, MessageBody)
    b = deep.get("b")
    assert b is not None and b.message.get("c") is not None
    empty = layer.get("empty")
    assert empty is not None and empty.message.fields == ()
    assert [f.name for f in layer.get_all("param")] == ["param", "param"]
    assert layer.index()["param"] == (3, 4)
    assert [f.name for f in doc.fields] == ["layer", "layer", "top_scalar"]


def test_fields_read_twice_are_equal_field_by_field() -> None:
    doc = parse(TRICKY)
    for top in doc.fields:
        if isinstance(top.body, MessageBody):
            first = [attrs(f) for _, f in Document(TRICKY, [top], top.end).walk()]
            again = [attrs(f) for _, f in Document(TRICKY, [top], top.end).walk()]
            assert first == again and len(first) > 1


def test_edits_on_packed_bodies_keep_every_other_byte() -> None:
    doc = parse(TRICKY)
    ed = Editor(doc)
    conv = (0, 5)  # layer 0, field 5: convolution_param
    ed.set_value((*conv, 3), "2")  # pad
    out = ed.apply()
    assert out.code == TRICKY.replace("      1\n  }", "      2\n  }")
    assert out.fields[1] is doc.fields[1] and out.fields[2] is doc.fields[2]
    assert parse(out.code).code == out.code


def _net(n: int) -> str:
    parts = ['name: "n"\n']
    for i in range(n):
        parts.append(
            "layer {\n"
            f'  name: "conv{i}"\n  type: "Convolution"\n'
            f'  bottom: "conv{i - 1}"\n  top: "conv{i}"\n'
            "  param {\n    lr_mult: 1\n    decay_mult: 1\n  }\n"
            "  param {\n    lr_mult: 2\n    decay_mult: 0\n  }\n"
            "  convolution_param {\n    num_output: 64\n    kernel_size: 3\n"
            '    weight_filler {\n      type: "xavier"\n    }\n  }\n}\n'
        )
    return "".join(parts)


def test_tree_memory_stays_a_small_multiple_of_the_file() -> None:
    text = _net(3000)
    gc.collect()
    tracemalloc.start()
    try:
        doc = parse(text)
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert doc.code is text
    # Field objects for every field were ~9x the file; the packed records are ~2.5x.
    assert retained < 4 * len(text), retained / len(text)


def test_an_edit_shows_only_its_own_children_as_changed() -> None:
    # The checks re-read (and diff) only the children an edit touched; they find them by field
    # equality, which must hold between a parsed body's fields read at different times.
    from rewriter.recipes.checks import changed_names

    doc = parse(TRICKY)
    ed = Editor(doc)
    ed.set_value((0, 3, 0), "0")  # param < lr_mult: 1 ... >
    out = ed.apply()
    assert changed_names(doc.fields[0], out.fields[0]) == {"param"}
    assert doc.fields[0].message.fields[5] == out.fields[0].message.fields[5]
    assert doc.fields[0].message.fields[3] != out.fields[0].message.fields[3]
    assert len(set(doc.fields[0].message.fields) | set(doc.fields[0].message.fields)) == 9


def test_an_edited_layer_keeps_its_untouched_fields_as_records() -> None:
    text = _net(2000)
    doc = parse(text)
    gc.collect()
    tracemalloc.start()
    try:
        ed = Editor(doc)
        for i, f in enumerate(doc.fields):
            if f.name == "layer":
                ed.set_value((i, 4, 0), "0")  # the first param's lr_mult
        out = ed.apply()
        del ed
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.code == text.replace("lr_mult: 1", "lr_mult: 0")
    first = out.fields[1]
    assert first.message._mixed is not None  # name, type, bottom, top, ... stay records
    assert first.message.fields[0] == doc.fields[1].message.fields[0]
    assert first.message.fields[5] == doc.fields[1].message.fields[5]
    assert first.message.fields[4] != doc.fields[1].message.fields[4]
    # Every kept child as a Field (and its body) was ~9x the file; as records ~3.4x.
    assert retained < 5 * len(text), retained / len(text)


def test_child_positions_and_names_read_like_fields() -> None:
    """The shortcuts that skip building a parsed body's fields agree with ``fields``, for a
    parsed body, an edited one (kept children as records) and a plain one."""
    doc = parse(TRICKY)
    ed = Editor(doc)
    ed.set_value((0, 3, 0), "0")
    ed.set_value((0, 5, 3), "2")
    out = ed.apply()
    bodies = [f.body for _, f in doc.walk() if isinstance(f.body, MessageBody)]
    bodies += [f.body for _, f in out.walk() if isinstance(f.body, MessageBody)]
    for _, f in doc.walk():  # messages in lists hold plain tuples of fields
        if isinstance(f.body, ListBody):
            bodies += [it for it in f.body.items if isinstance(it, MessageBody)]
    assert any(b._mixed is not None for b in bodies) and any(b.is_view for b in bodies)
    assert any(b._packed is None for b in bodies)
    for body in bodies:
        fields = body.fields
        assert body.names() == [f.name for f in fields]
        assert [attrs(body.child(i)) for i in range(len(fields))] == [attrs(f) for f in fields]
        for name in set(body.names()) | {"missing"}:
            want = tuple(i for i, f in enumerate(fields) if f.name == name)
            assert body.positions(name) == want
            assert [attrs(f) for f in body.get_all(name)] == [attrs(fields[i]) for i in want]
        assert "".join(f.code for f in fields) in body.code
        with pytest.raises(IndexError):
            body.child(len(fields))


def test_records_go_into_chunks_at_top_level_blocks() -> None:
    """A big file's records are split into arrays of bounded size, each top-level block in
    one of them; blocks opened by the slow path (a line break before '{') and lists inside
    blocks land in the right chunk too."""
    parts = []
    for i in range(3000):
        opening = "layer\n{" if i % 3 == 0 else "layer {"
        parts.append(
            f'{opening}\n  name: "l{i}"\n  dim: [{i}, 2]\n  param {{ lr_mult: {i % 7} }}\n'
            "  convolution_param {\n    kernel_size: 3\n"
            '    weight_filler { type: "x" }\n  }\n}\n'
        )
    text = "".join(parts)
    doc = parse(text)
    assert doc.code == text
    assert "".join(render_field(f) for f in doc.fields) + text[doc.tail_start :] == text
    chunks = {id(f.message._packed) for f in doc.fields}
    assert len(chunks) >= 3
    for i in (0, 1, 1364, 1365, 2999):
        layer = doc.fields[i].message
        assert layer.get("name") is not None
        assert layer.get("name").value_text == f'"l{i}"'  # type: ignore[union-attr]
        dim = layer.get("dim")
        assert dim is not None and isinstance(dim.body, ListBody)
        assert dim.body.code == f"[{i}, 2]"
        conv = layer.get("convolution_param")
        assert conv is not None and conv.message.get("weight_filler") is not None


@pytest.mark.parametrize("row", corpus_params()[::9])
def test_a_new_value_gives_the_field_a_parse_would(row: dict[str, str] | None) -> None:
    """Edit.with_value computes the boundaries of a field with a new one-token value instead
    of parsing its text; they equal the parse's, and other values still go to the parser."""
    from rewriter.text.edit import make_field, with_value

    path, text = read_corpus(row)
    try:
        doc = parse(text, str(path))
    except Exception:
        pytest.skip("not text format")
    scalars = [f for _, f in doc.walk() if f.body is None][:300]
    for f in scalars + [f for f in parse(TRICKY).fields if f.body is None]:
        for value in ("0", '"x y"', "-1.5e-3", "TRAIN", "'q'", '"a" "b"'):
            got = with_value(f, value)
            want = make_field(f.src[f.start : f.value_start] + value + f.src[f.value_end : f.end])
            assert got.code == want.code
            assert (got.name, got.value_text, got.prefix, got.separator, got.suffix) == (
                want.name,
                want.value_text,
                want.prefix,
                want.separator,
                want.suffix,
            )
            assert attrs(got) == attrs(want)


def test_reading_fields_from_several_threads() -> None:
    """The cache of recently built fields is shared; threads reading one tree must neither
    fail nor see another body's fields."""
    import threading

    doc = parse(_net(300))
    want = [[f.name for f in layer.message.fields] for layer in doc.fields[1:]]
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                got = [[f.name for f in layer.message.fields] for layer in doc.fields[1:]]
                assert got == want
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2")[:40])
def test_code_of_reads_the_records_like_the_fields(row: dict[str, str] | None) -> None:
    """``MessageBody.code_of`` (read from the records) equals the fields' own code, in a
    parsed body, an edited one (records and new fields mixed) and a plain one."""
    _, text = read_corpus(row)
    doc = parse(text)
    layers = [f for f in doc.fields if isinstance(f.body, MessageBody)][:30]
    for f in layers:
        body = f.body
        assert isinstance(body, MessageBody)
        for names in ({"param"}, {"name", "top", "bottom"}, {"convolution_param", "param"}):
            want = "".join(c.code for c in body.fields if c.name in names)
            assert body.code_of(names) == want
            assert body.code_of(names, "\0") == "\0".join(
                c.code for c in body.fields if c.name in names
            )
            plain = MessageBody(
                body.src, body.start, body.open_end, body.fields, body.close_start, body.end
            )
            assert plain.code_of(names) == want
    edited = [f for f in layers if any(c.name == "name" for c in f.body.fields)]  # type: ignore[union-attr]
    if edited:
        ed = Editor(doc)
        k = doc.fields.index(edited[0])
        kids = [c.name for c in edited[0].body.fields]  # type: ignore[union-attr]
        ed.set_value((k, kids.index("name")), '"renamed"')
        new = ed.apply().fields[k]
        assert isinstance(new.body, MessageBody)
        for names in ({"name"}, {"name", "type"}, {"top"}):
            assert new.body.code_of(names) == "".join(
                c.code for c in new.body.fields if c.name in names
            )
