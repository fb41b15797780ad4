"""Edit primitives change only what they address and copy the file's own style."""

from __future__ import annotations

from rewriter.text.cst import parse
from rewriter.text.edit import Editor

SRC = """name: "n"

# comment about conv
layer {
  name: "conv1"  # trailing
  type: "Convolution"
  param { lr_mult: 1 }

  # about the second
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 3
  }
}
"""


def test_no_edit_is_identity() -> None:
    doc = parse(SRC)
    assert Editor(doc).apply() is doc


def test_set_value_keeps_trailing_comment_and_everything_else() -> None:
    doc = parse(SRC)
    ed = Editor(doc)
    ed.set_value((1, 0), '"conv_a"')
    out = ed.apply().code
    assert out == SRC.replace('name: "conv1"  # trailing', 'name: "conv_a"  # trailing')


def test_one_line_block_stays_one_line() -> None:
    doc = parse(SRC)
    ed = Editor(doc)
    ed.set_value((1, 2, 0), "0")
    ed.insert((1, 2), 1, "decay_mult", "0")
    out = ed.apply().code
    assert "  param { lr_mult: 0 decay_mult: 0 }\n" in out
    assert out.replace("param { lr_mult: 0 decay_mult: 0 }", "param { lr_mult: 1 }") == SRC


def test_remove_takes_comments_keeps_blank_line() -> None:
    doc = parse(SRC)
    ed = Editor(doc)
    ed.remove((1, 3))
    out = ed.apply().code
    assert "about the second" not in out
    assert "lr_mult: 2" not in out
    assert "  param { lr_mult: 1 }\n\n  convolution_param {" in out


def test_insert_message_copies_indentation() -> None:
    doc = parse(SRC)
    ed = Editor(doc)
    ed.insert((1, 4), 1, "bias_term", "false")
    ed.insert((1,), 4, "param", [("lr_mult", "0"), ("decay_mult", "0")])
    out = ed.apply().code
    assert "    num_output: 3\n    bias_term: false\n  }" in out
    assert "  }\n  param {\n    lr_mult: 0\n    decay_mult: 0\n  }\n  convolution_param" in out


def test_flat_file_gets_no_indentation() -> None:
    doc = parse('layer {\nname: "a"\nparam {\nlr_mult: 1\n}\n}\n')
    ed = Editor(doc)
    ed.insert((0,), 2, "param", [("lr_mult", "0")])
    assert (
        ed.apply().code == 'layer {\nname: "a"\nparam {\nlr_mult: 1\n}\nparam {\nlr_mult: 0\n}\n}\n'
    )


def test_crlf_is_kept_in_inserted_lines() -> None:
    src = 'layer {\r\n  name: "a"\r\n\r\n  # c\r\n  top: "x"\r\n  bottom: "y"\r\n}\r\n'
    ed = Editor(parse(src))
    ed.remove((0, 1))
    ed.insert((0,), 3, "param", [("lr_mult", "0")])
    out = ed.apply().code
    expected = 'layer {\n  name: "a"\n\n  bottom: "y"\n  param {\n    lr_mult: 0\n  }\n}\n'
    assert out == expected.replace("\n", "\r\n")


def test_rename_and_edits_reparse_to_same_tree_text() -> None:
    doc = parse(SRC)
    ed = Editor(doc)
    ed.rename((1, 1), "type")
    ed.set_value((1, 1), '"Deconvolution"')
    out = ed.apply()
    assert parse(out.code).code == out.code
    assert 'type: "Deconvolution"' in out.code


def test_the_same_new_text_in_many_layers_gives_distinct_fields() -> None:
    """New field texts are parsed once and copied; each copy still counts as a change of its
    own, also when a later edit inserts the same text again into the same block."""
    from rewriter.recipes.checks import changed_names

    src = "".join(f'layer {{\n  name: "l{i}"\n  type: "Scale"\n}}\n' for i in range(3))
    ed = Editor(parse(src))
    for i in range(3):
        ed.insert((i,), 2, "param", [("lr_mult", "0")])
    once = ed.apply()
    made = [layer.message.fields[-1] for layer in once.fields]
    assert {f.code for f in made} == {"\n  param {\n    lr_mult: 0\n  }"}
    assert made[0] == made[0] and made[0] != made[1]
    ed2 = Editor(once)
    ed2.insert((0,), 3, "param", [("lr_mult", "0")])
    twice = ed2.apply()
    assert changed_names(once.fields[0], twice.fields[0]) == {"param"}
    assert twice.code == parse(twice.code).code
    assert twice.fields[0].code.count("param {") == 2


def test_an_edited_layer_names_its_changed_children_from_the_records() -> None:
    """The children an edit did not touch stay records of the parsed layer, so the names of
    those it changed come without building any field; they agree with comparing fields."""
    doc = parse(SRC)
    ed = Editor(doc)
    ed.set_value((1, 2, 0), "0")
    ed.insert((1,), 5, "top", '"t"')
    ed.remove((1, 1))
    new = ed.apply()
    old_body, new_body = doc.fields[1].message, new.fields[1].message
    fast = new_body.edited_names(old_body)
    assert fast == {"param", "top", "type"}
    old_set, new_set = set(old_body.fields), set(new_body.fields)
    slow = {c.name for c in new_body.fields if c not in old_set}
    slow |= {c.name for c in old_body.fields if c not in new_set}
    assert fast == slow
    assert new_body.names() == [f.name for f in new_body.fields]
    assert new_body.positions("param") == (1, 2)
