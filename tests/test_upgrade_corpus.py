"""`rewriter upgrade` on every V0/V1 file of the real corpus, against real Caffe's upgrade.

Truth: ``oracle/corpus-upgrade/<path>.upgraded.prototxt`` (what ``upgrade_net_proto_text`` /
``upgrade_solver_proto_text`` wrote) and ``oracle/corpus-upgrade.tsv`` (sha256 of that message
serialised deterministically, or Caffe's parse error for the 3 fork files it refused).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from typing import Any

import pytest
from google.protobuf import text_format

from rewriter.caffe.graph import build_graph
from rewriter.errors import RewriterError, SchemaErrors
from rewriter.schema.bind import bind
from rewriter.schema.runtime import default_schema
from rewriter.text.cst import parse
from rewriter.upgrade.document import upgrade_net_message_caffe, upgrade_text

from .conftest import ORACLE, corpus_params, read_corpus
from .test_upgrade_oracle import LEGACY_LINE, comments, removed_lines

CONSOLIDATED = "BVLC-caffe/examples/mnist/lenet_consolidated_solver.prototxt"
LEGACY = corpus_params(fmt="V0") + corpus_params(fmt="V1")


def _truth() -> dict[str, dict[str, str]]:
    path = ORACLE / "corpus-upgrade.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh, delimiter="\t")}


TRUTH = _truth()


def _root(row: dict[str, str]) -> str:
    return "caffe.SolverParameter" if row["kind"] == "solver" else "caffe.NetParameter"


def _caffe_output(row: dict[str, str]) -> Any:
    want = default_schema().message_class(_root(row))()
    text = (ORACLE / "corpus-upgrade" / f"{row['path']}.upgraded.prototxt").read_text()
    text_format.Parse(text, want)
    return want


def _after(text: str, line: int, col: int) -> tuple[int, int]:
    """Where protobuf's tokenizer is after the word at line:col (1-based): the next token."""
    lines = text.split("\n")
    offset = sum(len(ln) + 1 for ln in lines[: line - 1]) + col - 1
    m = re.compile(r"[A-Za-z0-9_]+(?:\s|#[^\n]*)*").match(text, offset)
    assert m is not None
    nxt = m.end()
    return text.count("\n", 0, nxt) + 1, nxt - (text.rfind("\n", 0, nxt) + 1) + 1


@pytest.mark.parametrize("row", LEGACY)
def test_corpus_upgrade_equals_caffe(row: dict[str, str] | None) -> None:
    path, text = read_corpus(row)
    assert row is not None
    truth = TRUTH[row["path"]]
    if truth["ok"] != "true":
        # Caffe failed to parse (fork enum values): we refuse at the same token.
        with pytest.raises(SchemaErrors) as info:
            upgrade_text(text, row["path"], kind=row["kind"])
        m = re.search(r'(\d+):(\d+): Unknown enumeration value of "(\w+)"', truth["error"])
        assert m is not None
        first = info.value.diagnostics[0]
        assert first.location is not None
        assert f"no value named '{m.group(3)}'" in first.message
        # protobuf reports the position of the token after the bad value
        assert _after(text, first.location.line, first.location.col) == (
            int(m.group(1)),
            int(m.group(2)),
        )
        return
    result = upgrade_text(text, row["path"], kind=row["kind"])
    out = result.document.code
    assert parse(out).code == out
    bound = bind(result.document, root=_root(row))
    assert bound.errors == []
    got = bound.message
    want = _caffe_output(row)
    if row["path"] == CONSOLIDATED:
        # Deliberate difference: the embedded V1 net is upgraded too (Caffe leaves it V1).
        assert result.deliberate_differences == [
            "net_param: the embedded net was upgraded too; Caffe's upgrade_solver_proto_text "
            "leaves it as it is (and current Caffe then builds that net with no layers)"
        ]
        original = bind(parse(text, row["path"]), root=_root(row)).message
        assert want.net_param == original.net_param and len(want.net_param.layers) > 0
        assert got.net_param == upgrade_net_message_caffe(original.net_param).message
        assert len(got.net_param.layers) == 0
        assert len(got.net_param.layer) == len(original.net_param.layers)
        got.ClearField("net_param")
        want.ClearField("net_param")
        assert got == want
    else:
        assert result.deliberate_differences == []
        assert got == want
        digest = hashlib.sha256(got.SerializeToString(deterministic=True)).hexdigest()
        assert digest == truth["sha256"]
        assert result.changed == ("File already in latest proto format" not in truth["error"])
    if not result.changed:
        assert result.document.code == text
    assert not Counter(comments(text)) - Counter(comments(out))
    if row["format"] == "V1":
        for line in removed_lines(text, out):
            assert LEGACY_LINE.search(line), f"needlessly rewritten: {line!r}"
    again = upgrade_text(out, row["path"], kind=row["kind"])
    assert not again.changed


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2", fork="no"))
def test_current_nets_are_left_alone_or_upgraded_consistently(row: dict[str, str] | None) -> None:
    """V2 files: only legacy inputs / BatchNorm params may change, with Caffe's graph kept."""
    path, text = read_corpus(row)
    assert row is not None
    try:
        original = bind(parse(text, row["path"]), root="caffe.NetParameter")
    except RewriterError:
        pytest.skip("not parseable on its own (template)")
    if original.errors:
        pytest.skip("does not bind to BVLC's schema")
    result = upgrade_text(text, row["path"], kind="net")
    if not result.changed:
        assert result.document.code == text
        return
    out = result.document.code
    got = bind(result.document, root="caffe.NetParameter").message
    assert got == upgrade_net_message_caffe(original.message).message
    assert len(got.input) == 0
    for layer in got.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            assert all(p.lr_mult == 0 and p.decay_mult == 0 for p in layer.param)
    assert not Counter(comments(text)) - Counter(comments(out))
    for line in removed_lines(text, out):
        assert LEGACY_LINE.search(line), f"needlessly rewritten: {line!r}"
    for phase in ("TRAIN", "TEST"):
        try:
            before = build_graph(original.message, phase)
        except RewriterError:
            continue
        after = build_graph(got, phase)
        assert after.layers == before.layers
