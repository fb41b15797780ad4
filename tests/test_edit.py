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
