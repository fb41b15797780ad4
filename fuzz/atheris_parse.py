"""Coverage-guided fuzzing of parse -> check -> explain with atheris (libFuzzer), for long runs.

CI runs the hypothesis fuzz tests (tests/test_fuzz.py); this harness is for hours, not minutes.
See fuzz/README.md. One input is any bytes; it is decoded as the CLI decodes files (UTF-8 with
surrogateescape) and must:

* parse to a document that prints back to the same text, or raise ParseError (a RewriterError);
* bind without raising (diagnostics only), strictly and leniently;
* when it binds as a net: build Caffe's TRAIN and TEST graphs and run the backward analysis,
  or raise a RewriterError (Caffe's FATAL text); render the result as text and JSON;
* when it binds with no error, be accepted by protobuf's text_format with the same message.

Anything else (another exception, a mismatch) is a crash: libFuzzer saves the input as
``crash-<sha1>`` in the working directory.

    python fuzz/atheris_parse.py -max_total_time=3600 WORK_CORPUS_DIR [SEED_DIR...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports():
    from rewriter.caffe.graph import build_graph
    from rewriter.errors import ParseError, RewriterError
    from rewriter.review.explain_text import render_table
    from rewriter.schema.bind import NET, bind
    from rewriter.text.cst import parse

from google.protobuf import text_format  # noqa: E402  (not instrumented: not ours)

from rewriter.schema.runtime import default_schema  # noqa: E402

_NET_CLASS = default_schema().message_class(NET)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        doc = parse(text, "fuzz.prototxt")
    except ParseError as e:
        assert e.location.line >= 1
        return
    if doc.code != text:
        raise AssertionError("round trip lost bytes")
    bind(doc, lenient=True)
    bound = bind(doc, root=NET)
    if bound.errors:
        return
    theirs = _NET_CLASS()
    text_format.Parse(text.removeprefix("\ufeff"), theirs)
    ours = bound.message.SerializeToString(deterministic=True)
    if ours != theirs.SerializeToString(deterministic=True):
        raise AssertionError("bound message differs from protobuf's")
    for phase in ("TRAIN", "TEST"):
        try:
            result = build_graph(bound.message, phase=phase).backward()
        except RewriterError:
            continue
        json.dumps(result.to_json())
        render_table(result, color=False)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
