"""Selectors (upto, after, between, names, glob, regex, type, phase) and stop-gradient edges."""

from __future__ import annotations

from typing import Any

import pytest

from rewriter.errors import RewriterError
from rewriter.recipes.recipe import Recipe, Step
from rewriter.recipes.select import NetView, select
from rewriter.recipes.steps import bottom_writers, fed_by
from rewriter.schema.bind import bind
from rewriter.text.cst import parse
from tests.conftest import corpus_params, read_corpus

# data -> stem -> stem_relu (in place) -> {left, right, merge}; merge(left, stem, right) -> loss
# A TEST-only branch: acc reads merge; "aux" exists only in TEST.
NET = """name: "g"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }
layer { name: "stem" type: "Convolution" bottom: "data" top: "stem"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "stem_relu" type: "ReLU" bottom: "stem" top: "stem" }
layer { name: "left" type: "Convolution" bottom: "stem" top: "left"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "right" type: "Convolution" bottom: "stem" top: "right"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "merge" type: "Concat" bottom: "left" bottom: "stem" bottom: "right" top: "merge" }
layer { name: "head" type: "InnerProduct" bottom: "merge" top: "head"
  inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "head" bottom: "label" top: "loss"
  include { phase: TRAIN } }
layer { name: "aux" type: "InnerProduct" bottom: "merge" top: "aux"
  inner_product_param { num_output: 2 } include { phase: TEST } }
layer { name: "acc" type: "Accuracy" bottom: "aux" bottom: "label" top: "acc"
  include { phase: TEST } }
"""


def view_of(text: str = NET) -> NetView:
    doc = parse(text)
    return NetView(doc, bind(doc, None, "caffe.NetParameter").message)


def names(view: NetView, step: Step, phase: str = "TRAIN") -> list[str]:
    resolved = Recipe(steps=[step]).resolve()[0]
    got = select(view, resolved, resolved.get("phase") or phase)
    assert got is not None
    return [view.names[k] for k in got]


def test_upto_follows_in_place_layers_and_splits() -> None:
    v = view_of()
    assert names(v, Step("freeze", upto="left")) == ["data", "stem", "stem_relu", "left"]
    assert names(v, Step("freeze", upto="stem")) == ["data", "stem"]  # not its in-place ReLU
    assert names(v, Step("freeze", upto="merge")) == [
        "data", "stem", "stem_relu", "left", "right", "merge",
    ]  # fmt: skip


def test_after_and_between() -> None:
    v = view_of()
    assert names(v, Step("freeze", after="merge")) == ["head", "loss"]
    assert names(v, Step("freeze", after="merge", phase="TEST")) == ["head", "aux", "acc"]
    assert names(v, Step("freeze", between=["stem_relu", "merge"])) == [
        "stem_relu", "left", "right", "merge",
    ]  # fmt: skip
    with pytest.raises(RewriterError, match="no path from 'left' to 'right'"):
        names(v, Step("freeze", between=["left", "right"]))


def test_names_glob_regex_type_and_intersection() -> None:
    v = view_of()
    assert names(v, Step("freeze", layers=["aux", "left"])) == ["left", "aux"]
    assert names(v, Step("freeze", glob="*e*")) == ["stem", "stem_relu", "left", "merge", "head"]
    assert names(v, Step("freeze", regex="^(left|right)$")) == ["left", "right"]
    assert names(v, Step("freeze", type="Convolution")) == ["stem", "left", "right"]
    assert names(v, Step("freeze", type="Convolution", upto="left")) == ["stem", "left"]
    assert names(v, Step("freeze", glob="*", layers=["acc"])) == ["acc"]


def test_phase_rules() -> None:
    v = view_of()
    with pytest.raises(RewriterError, match='not in the TRAIN net.*phase = "TEST"'):
        names(v, Step("freeze", upto="aux"))
    assert names(v, Step("freeze", upto="aux", phase="TEST"))[-1] == "aux"
    with pytest.raises(RewriterError, match="did you mean 'merge'"):
        names(v, Step("freeze", layers=["merg"]))


def test_empty_selection_is_an_error_unless_allowed() -> None:
    from rewriter.recipes.engine import apply

    with pytest.raises(RewriterError, match="selection is empty"):
        apply(parse(NET), Step("freeze", type="BatchNorm"))
    result = apply(parse(NET), Step("freeze", type="BatchNorm", allow_empty=True))
    assert not result.changed
    with pytest.raises(RewriterError, match="needs a selection"):
        apply(parse(NET), Step("freeze"))


def test_legacy_formats_are_refused_clearly() -> None:
    from rewriter.recipes.engine import apply

    v1 = 'name: "v1"\nlayers { name: "fc" type: INNER_PRODUCT bottom: "data" top: "fc" }\n'
    v1 = 'input: "data"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 1\ninput_dim: 1\n' + v1
    with pytest.raises(RewriterError, match="V1.*Upgrade the file first"):
        apply(parse(v1), Step("freeze", layers=["fc"]))


def test_fed_by_walks_splits_and_in_place_chains() -> None:
    v = view_of()
    g = v.graph("TRAIN")
    w = bottom_writers(g)
    merge = g.layer("merge").index
    assert [fed_by(g, w, merge, j, "stem") for j in range(3)] == [False, True, False]
    assert [fed_by(g, w, merge, j, "stem_relu") for j in range(3)] == [False, True, False]
    assert [fed_by(g, w, merge, j, "right") for j in range(3)] == [False, False, True]
    assert not fed_by(g, w, merge, 0, "data")


def test_stop_gradient_errors_and_warnings() -> None:
    from rewriter.recipes.engine import apply

    with pytest.raises(RewriterError, match="'data' does not feed 'merge'.*left, stem_relu, right"):
        apply(parse(NET), Step("stop-gradient", from_="data", to="merge"))
    result = apply(parse(NET), Step("stop-gradient", from_="stem", to="merge"))
    assert "propagate_down: true propagate_down: false propagate_down: true" in result.code
    assert any("stem above the cut still train" in w for w in result.warnings)
    # cutting every path from stem: it gets no gradient but still decays
    cut_all = Recipe(
        steps=[
            Step("stop-gradient", from_="stem", to="left"),
            Step("stop-gradient", from_="stem", to="right"),
            Step("stop-gradient", from_="stem", to="merge"),
        ]
    )
    result = apply(parse(NET), cut_all)
    assert any("get no gradient any more but still change through weight decay" in w
               for w in result.warnings)  # fmt: skip


def _naive_edges(graph: object) -> tuple[list[list[int]], list[list[int]]]:
    g: Any = graph
    preds: list[list[int]] = [[] for _ in g.layers]
    succs: list[list[int]] = [[] for _ in g.layers]
    last: dict[int, int] = {}
    for layer in g.layers:
        for bid in layer.bottom_ids:
            if bid in last:
                preds[layer.index].append(last[bid])
                succs[last[bid]].append(layer.index)
        for tid in layer.top_ids:
            last[tid] = layer.index
    return preds, succs


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2", fork="no")[::5])
def test_packed_edges_and_index_maps_equal_plain_lists(row: dict[str, str] | None) -> None:
    """The packed neighbour lists and document -> graph index maps read exactly like the
    lists and dicts they replace (order and repeated edges included)."""
    from rewriter.recipes.select import graph_edges

    path, text = read_corpus(row)
    doc = parse(text, str(path))
    view = NetView(doc, bind(doc, None, "caffe.NetParameter", lenient=True).message)
    try:
        graph = view.graph("TRAIN")
    except RewriterError:
        pytest.skip("Caffe cannot build this net's TRAIN graph")
    preds, succs = graph_edges(graph)
    want_preds, want_succs = _naive_edges(graph)
    assert [list(p) for p in preds] == want_preds
    assert [list(s) for s in succs] == want_succs
    assert len(preds) == len(graph.layers) and list(preds[-1]) == want_preds[-1]
    where = view.graph_layers_of("TRAIN")
    plain = {
        k: layer.index
        for layer in graph.layers
        if (k := view.doc_index(layer.source_index)) is not None
    }
    assert dict(where.items()) == plain and len(where) == len(plain)
    assert where.get(len(view.layer_fields)) is None and where.get(-1) is None
    assert all(where[k] == v and k in where for k, v in plain.items())
