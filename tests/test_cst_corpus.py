"""Every real corpus file prints back byte-identical through the lossless tree."""

from __future__ import annotations

import pytest

from rewriter.api import read
from rewriter.errors import ParseError
from rewriter.text.cst import parse

from .conftest import corpus_params, read_corpus

# The one corpus file that is a shell template rather than text format (protobuf refuses it too).
TEMPLATE = "TheLegendAli-DeepLab-Context/voc12/config/vgg128_noup/test.prototxt"


@pytest.mark.parametrize("row", corpus_params())
def test_round_trip_byte_identical(row: dict[str, str] | None) -> None:
    path, text = read_corpus(row)
    assert row is not None
    if row["path"] == TEMPLATE:
        with pytest.raises(ParseError) as err:
            parse(text, str(path))
        assert "${NUM_LABELS}" in err.value.location.line_text
        assert err.value.location.line == 400
        return
    doc = parse(text, str(path))
    assert doc.code == text
    # Every field re-rendered from its parts (not the pristine slice) gives the same text too.
    assert "".join(f.code for f in doc.fields) + doc.src[doc.tail_start :] == text
    # Reading from disk keeps the exact bytes, including CRLF and non-UTF-8 bytes.
    assert read(path).code.encode("utf-8", "surrogateescape") == path.read_bytes()
