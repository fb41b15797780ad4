"""The graph and the backward analysis share what they can and build some fields lazily; these
tests pin down that sharing never merges values that print differently, that the lazy parts
read exactly like the eager ones did, and that the memory stays bounded."""

from __future__ import annotations

import gc
import json
import math
import tracemalloc
from typing import Any

import pytest

from rewriter.caffe.graph import AUTOMATIC_TOP, Blob, build_graph
from rewriter.caffe.netinit import analyze


def parse(text: str) -> Any:
    from google.protobuf import text_format

    from rewriter.schema.runtime import default_schema

    return text_format.Parse(text, default_schema().message_class("caffe.NetParameter")())


NET = """
name: "n"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3"
        param { lr_mult: -0.0 decay_mult: 1 } param { lr_mult: 0 decay_mult: -0.0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "c4" type: "Convolution" bottom: "c3" top: "c4"
        param { lr_mult: 0 decay_mult: 1 } param { lr_mult: 0 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "cat" type: "Concat" bottom: "c4" bottom: "c2" top: "cat"
        propagate_down: true propagate_down: false }
layer { name: "ip" type: "InnerProduct" bottom: "cat" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }
"""


def test_equal_values_are_shared_objects() -> None:
    g = build_graph(parse(NET))
    c1, r1, c2 = g.layer("c1"), g.layer("r1"), g.layer("c2")
    # in place: the ReLU's bottoms are its tops are the conv's tops; ids likewise
    assert r1.bottoms is r1.tops is c1.tops
    assert r1.bottom_ids is r1.top_ids is c1.top_ids
    # same param blocks, same Params
    assert c1.params is c2.params
    assert g.layer("c3").params is not g.layer("c4").params
    # a layer named like its top: one string
    assert c1.name is c1.tops[0]


def test_negative_zero_is_never_merged_with_zero() -> None:
    result = analyze(build_graph(parse(NET)))
    data = json.loads(json.dumps(result.to_json()))
    params = {d["name"]: d["params"] for d in data["layers"]}
    assert [p["local_lr_mult"] for p in params["c3"]] == [-0.0, 0.0]
    assert math.copysign(1.0, params["c3"][0]["local_lr_mult"]) < 0
    assert math.copysign(1.0, params["c4"][0]["local_lr_mult"]) > 0
    assert math.copysign(1.0, params["c3"][1]["decay_mult"]) < 0
    assert math.copysign(1.0, params["c4"][1]["decay_mult"]) > 0
    assert '"decay_mult": -0.0' in json.dumps(params["c3"])


def test_shared_tuples_keep_their_element_types() -> None:
    # (1,) == (True,) == (1.0,): a shared tuple must never come from another kind of field
    result = analyze(build_graph(parse(NET)))
    g = result.graph
    for layer in g.layers:
        assert all(type(x) is bool for x in layer.propagate_down)
        assert all(type(x) is bool for x in layer.allow_force_backward)
        assert all(type(x) is float for x in layer.loss_weights)
        assert all(type(x) is int for x in layer.bottom_ids + layer.top_ids)
    for v in result.layers:
        for flags in (v.bottom_need_backward, v.bottom_need_backward_log, v.param_updates):
            assert all(type(x) is bool for x in flags)
        assert all(type(x) is float for x in v.param_lr_mult)
    assert g.layer("cat").propagate_down == (True, False)
    assert g.layer("loss").loss_weights == (1.0,)


def test_blob_list_reads_like_a_tuple_of_blobs() -> None:
    g = build_graph(parse(NET))
    blobs = tuple(g.blob_list)
    assert len(g.blob_list) == len(blobs) and all(isinstance(b, Blob) for b in blobs)
    assert g.blob_list == blobs and blobs == g.blob_list
    assert g.blob_list == build_graph(parse(NET)).blob_list
    no_relu = NET.replace('layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }', "")
    assert g.blob_list != build_graph(parse(no_relu)).blob_list
    assert [b.id for b in blobs] == list(range(len(blobs)))
    assert g.blob_list[-1] == blobs[-1] and g.blob_list[1:3] == blobs[1:3]
    with pytest.raises(IndexError):
        g.blob_list[len(blobs)]
    c1 = g.blobs["c1"]
    assert (c1.producer, c1.writers) == (1, (2,))
    assert [g.layers[i].name for i in c1.consumers] == ["r1", "c2"]
    assert blobs[-1].name == AUTOMATIC_TOP and AUTOMATIC_TOP not in g.blobs
    assert dict(g.blobs) == {b.name: b for b in blobs if b.name != AUTOMATIC_TOP}
    assert g.layer("c4").index == 6 and g.producer("c1") == g.layer("c1")
    assert hash(g.blob_list) == hash(blobs)


def test_reasons_are_written_once_when_read() -> None:
    result = analyze(build_graph(parse(NET)))
    c4 = result.layer("c4")
    first = c4.reasons
    assert first is c4.reasons
    assert first == (
        "c4 needs backward: its input 'c3' (from c3) is marked as needing backward by Caffe's"
        " forward pass",
        "  and it contributes to a loss: its top 'c4' reaches a loss through cat",
    )
    assert result.layer("ip").reasons[0] == (
        "ip needs backward: param 0 (weights) has lr_mult 1 (no param block -> default)"
    )
    assert [layer["reasons"] for layer in result.to_json()["layers"]] == [
        list(v.reasons) for v in result.layers
    ]


def _retained_per_layer(n: int) -> float:
    from bench.gen import densenet
    from rewriter import parse as cst_parse
    from rewriter.schema.bind import NET as NET_ROOT
    from rewriter.schema.bind import bind

    text = densenet(n)
    msg = bind(cst_parse(text), root=NET_ROOT).message
    gc.collect()
    tracemalloc.start()
    try:
        result = build_graph(msg).backward()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.layers) > n
    return used / len(text.encode())


def test_graph_and_backward_stay_small() -> None:
    # Python objects kept by the TRAIN graph and its backward analysis, relative to the file
    # size (about 4x in tracemalloc terms at 20k layers; it was 13x before the compaction)
    assert _retained_per_layer(3000) < 6.0


def test_graph_shares_the_callers_layer_names() -> None:
    msg = parse(NET)
    names = [str(layer.name) for layer in msg.layer]
    g = build_graph(msg, names=names)
    for layer in g.layers:
        if layer.source_index is not None:
            assert layer.name is names[layer.source_index]
    # a name list that does not fit the net is not used
    other = build_graph(msg, names=names[:-1])
    assert [la.name for la in other.layers] == [la.name for la in g.layers]
    assert all(la.name is not names[-1] for la in other.layers)


def test_verdicts_are_built_on_read_and_equal_each_time() -> None:
    from rewriter.caffe.netinit import LayerVerdict, Verdicts

    result = analyze(build_graph(parse(NET)))
    verdicts = result.layers
    assert isinstance(verdicts, Verdicts)
    eager = [verdicts[i] for i in range(len(verdicts))]
    assert all(isinstance(v, LayerVerdict) for v in eager)
    assert list(verdicts) == eager and verdicts == eager and verdicts[-1] == eager[-1]
    assert verdicts[1:3] == eager[1:3]
    # the shared per-layer values are the same objects in every read
    assert verdicts[1].param_updates is verdicts[1].param_updates
    assert [v.name for v in verdicts] == [la.name for la in result.graph.layers]
