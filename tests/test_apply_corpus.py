"""``freeze`` up to the middle layer of every current-format, non-fork net of the corpus.

For each net whose TRAIN graph Caffe's Net::Init would build, the layer at half the TRAIN net
(a layer of the file, not an inserted Split nor the Input made from legacy ``input:`` fields)
is frozen with everything above it. Every round-trip check must pass, and the diff may touch
nothing but ``lr_mult`` values, new ``param`` blocks and BatchNorm's ``use_global_stats``.
"""

from __future__ import annotations

import re

import pytest

from rewriter.api import load
from rewriter.errors import RewriterError
from rewriter.recipes.engine import apply
from rewriter.recipes.recipe import Step
from tests.conftest import corpus_params, read_corpus

# What a freeze may add or rewrite, line by line.
_ADDED = re.compile(
    r"\s*(lr_mult:\s*0|param\s*\{|\}|batch_norm_param\s*\{|use_global_stats:\s*true)\s*"
)
_ONE_LINE_PARAM = re.compile(r"\s*param\s*\{.*\}\s*(#.*)?")
_ONE_LINE_BN = re.compile(r"\s*batch_norm_param\s*\{.*\}\s*(#.*)?")
_REMOVED = re.compile(r"\s*(lr_mult\s*:\s*\S+|use_global_stats\s*:\s*\S+)\s*(#.*)?")


def _middle(path: str, lenient: bool = False) -> str | None:
    try:
        f = load(path, lenient=lenient)
        f.message  # noqa: B018 (binds, raising on schema errors)
    except RewriterError:
        return None
    try:
        graph = f.graph("TRAIN")
    except RewriterError:
        return None
    offset = 1 if len(f.message.input) else 0
    real = [
        layer
        for layer in graph.layers
        if layer.source_index is not None and layer.source_index >= offset
    ]
    return real[len(real) // 2].name if real else None


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2", fork="no"))
def test_freeze_middle_layer(row: dict[str, str] | None) -> None:
    _freeze_middle(row, lenient=False)


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2", fork="yes"))
def test_freeze_middle_layer_fork_files_lenient(row: dict[str, str] | None) -> None:
    """Fork files under --lenient: their unknown fields stay verbatim, the same rules hold."""
    _freeze_middle(row, lenient=True)


def _freeze_middle(row: dict[str, str] | None, lenient: bool) -> None:
    path, text = read_corpus(row)
    middle = _middle(str(path), lenient)
    if middle is None:
        pytest.skip("Caffe cannot build this net's TRAIN graph")
    result = apply(path, Step("freeze", upto=middle), lenient=lenient)
    assert all(c.ok for c in result.checks), [c.render() for c in result.checks]
    assert result.net is not None and result.net_before is not None
    for line in result.diff.splitlines():
        if line.startswith(("+++", "---", "@@", " ", "\\")):
            continue
        body = line[1:].rstrip("\r")
        if line.startswith("+"):
            ok = _ADDED.fullmatch(body) or _ONE_LINE_PARAM.fullmatch(body)
            ok = ok or _ONE_LINE_BN.fullmatch(body)
        else:
            ok = _REMOVED.fullmatch(body) or _ONE_LINE_PARAM.fullmatch(body)
            ok = ok or _ONE_LINE_BN.fullmatch(body)
        assert ok, f"unexpected diff line {line!r}"
    # Every changed value is an lr_mult set to 0 or use_global_stats set to true.
    for change in result.changes:
        assert change.path.startswith(("param", "batch_norm_param")), change
    # The promise, seen through the analysis: nothing at or above the middle layer updates.
    backward = result.net.backward("TRAIN")
    graph = result.net.graph("TRAIN")
    idx = graph.layer(middle).index
    from rewriter.recipes.select import graph_edges

    preds, _ = graph_edges(graph)
    seen, stack = {idx}, [idx]
    while stack:
        for p in preds[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    for li in seen:
        assert not any(backward.layers[li].param_updates), graph.layers[li].name
    # Applying again changes nothing, byte for byte.
    again = apply(result.document, Step("freeze", upto=middle), lenient=lenient)
    assert not again.changed and again.code == result.code
    assert text == path.read_bytes().decode("utf-8", "surrogateescape")
