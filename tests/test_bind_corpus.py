"""Schema binding agrees with protobuf's own text_format on every corpus file.

Where protobuf accepts a file our message must be equal to its message; where it refuses one we
must refuse it too, and our first error must be on the same line as protobuf's.
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from rewriter.schema.bind import NET, SOLVER, bind, diagnose
from rewriter.schema.runtime import default_schema
from rewriter.text.cst import parse

from .conftest import corpus_params, read_corpus


@pytest.mark.parametrize("row", corpus_params())
def test_agrees_with_protobuf(row: dict[str, str] | None) -> None:
    path, text = read_corpus(row)
    assert row is not None
    root = SOLVER if row["kind"] == "solver" else NET
    schema = default_schema()
    expected = schema.message_class(root)()
    try:
        text_format.Parse(text, expected)
        pb_error_line = None
    except text_format.ParseError as e:
        pb_error_line = e.GetLine()
    bound, diags = diagnose(text, str(path), schema, root)
    if bound is None:
        assert pb_error_line is not None, f"we refuse a file protobuf accepts: {diags[-1]}"
        assert diags[0].location is not None
        assert diags[0].location.line == pb_error_line, diags[0].render()
        return
    if pb_error_line is None:
        assert bound.errors == [], bound.errors[0].render()
        assert bound.message == expected
    else:
        assert bound.errors, "protobuf refuses this file but we accept it"
        assert bound.errors[0].location is not None
        assert bound.errors[0].location.line == pb_error_line, bound.errors[0].render()


@pytest.mark.parametrize("row", corpus_params(fork="yes"))
def test_lenient_keeps_fork_files(row: dict[str, str] | None) -> None:
    """Under --lenient a fork file binds with warnings only, and nothing of it is dropped."""
    path, text = read_corpus(row)
    assert row is not None
    if "${" in text:
        pytest.skip("shell template, not text format")
    doc = parse(text, str(path))
    bound = bind(doc, default_schema(), SOLVER if row["kind"] == "solver" else NET, lenient=True)
    hard = [d for d in bound.errors if d.code != "value"]
    assert hard == [], hard[0].render()
    assert doc.code == text
