"""Targeted tests of the Net::Init rules reproduced by rewriter.caffe.graph /
rewriter.caffe.netinit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rewriter.caffe.graph import (
    AUTOMATIC_TOP,
    CaffeError,
    Graph,
    build_graph,
    upgrade_net_message,
    v1_to_v2_message,
)
from rewriter.caffe.layer_params import ORACLE_BUILD_LAYER_TYPES, param_blob_count
from rewriter.caffe.netinit import Backward, analyze

SEED = Path(__file__).resolve().parents[1].parent / "shared" / "seed"


def net_class() -> Any:
    from rewriter.schema.runtime import default_schema

    return default_schema().message_class("caffe.NetParameter")


def parse(text: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(text, net_class()())


def run(text: str, phase: str = "TRAIN", **kw: Any) -> Backward:
    return analyze(build_graph(parse(text), phase, **kw))


def names(graph: Graph) -> list[str]:
    return [layer.name for layer in graph.layers]


def verdicts(result: Backward) -> dict[str, bool]:
    return {v.name: v.needs_backward for v in result.layers}


INPUT = 'layer { name: "data" type: "Input" top: "data" top: "label" }\n'
LOSS = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'


# --------------------------------------------------------------------------- filtering


def test_phase_include_exclude() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "tr" type: "ReLU" bottom: "fc" top: "fc" include { phase: TRAIN } }\n'
        + 'layer { name: "te" type: "TanH" bottom: "fc" top: "fc" exclude { phase: TRAIN } }\n'
        + 'layer { name: "both" type: "Sigmoid" bottom: "fc" top: "fc" '
        + "include { phase: TRAIN } include { phase: TEST } }\n"
        + LOSS
    )
    assert names(build_graph(parse(text), "TRAIN")) == ["data", "fc", "tr", "both", "loss"]
    assert names(build_graph(parse(text), "TEST")) == ["data", "fc", "te", "both", "loss"]


def test_stage_rules_and_or_not() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "ab" type: "ReLU" bottom: "fc" top: "fc" '
        + 'include { stage: "a" stage: "b" } }\n'
        + 'layer { name: "a_or_b" type: "ReLU" bottom: "fc" top: "fc" '
        + 'include { stage: "a" } include { stage: "b" } }\n'
        + 'layer { name: "not_c" type: "ReLU" bottom: "fc" top: "fc" '
        + 'include { not_stage: "c" } }\n'
        + LOSS
    )

    def present(*stages: str) -> list[str]:
        return names(build_graph(parse(text), "TRAIN", stages))[2:-1]

    assert present() == ["not_c"]
    assert present("a") == ["a_or_b", "not_c"]
    assert present("a", "b") == ["ab", "a_or_b", "not_c"]
    assert present("b", "c") == ["a_or_b"]


def test_level_bounds_are_inclusive() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "ge2" type: "ReLU" bottom: "fc" top: "fc" include { min_level: 2 } }\n'
        + 'layer { name: "le1" type: "ReLU" bottom: "fc" top: "fc" include { max_level: 1 } }\n'
        + 'layer { name: "no3" type: "ReLU" bottom: "fc" top: "fc" exclude { min_level: 3 } }\n'
        + LOSS
    )

    def present(level: int) -> list[str]:
        return names(build_graph(parse(text), "TRAIN", level=level))[2:-1]

    assert present(-1) == ["le1", "no3"]
    assert present(1) == ["le1", "no3"]
    assert present(2) == ["ge2", "no3"]
    assert present(3) == ["ge2"]


def test_file_state_stages_are_kept_and_caller_stages_appended() -> None:
    text = (
        'state { phase: TEST stage: "s1" level: 5 }\n'
        + INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "s1s2" type: "ReLU" bottom: "fc" top: "fc" '
        + 'include { stage: "s1" stage: "s2" } }\n'
        + 'layer { name: "lvl5" type: "ReLU" bottom: "fc" top: "fc" include { min_level: 5 } }\n'
        + LOSS
    )
    graph = build_graph(parse(text), "TRAIN", ("s2",))
    assert graph.stages == ("s1", "s2")
    assert names(graph)[2:-1] == ["s1s2"]  # level comes from the caller (0), not the file


def test_include_and_exclude_together_is_refused() -> None:
    text = INPUT + (
        'layer { name: "x" type: "ReLU" bottom: "data" top: "x" '
        "include { phase: TRAIN } exclude { phase: TEST } }\n"
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert err.value.message == (
        "Check failed: layer_param.include_size() == 0 || layer_param.exclude_size() == 0 "
        "Specify either include rules or exclude rules; not both."
    )
    assert err.value.location == "net.cpp"


def test_unknown_bottom_after_filtering() -> None:
    text = (
        INPUT
        + 'layer { name: "aux" type: "ReLU" bottom: "data" top: "aux" include { phase: TEST } }\n'
        + 'layer { name: "fc" type: "Concat" bottom: "data" bottom: "aux" top: "fc" }\n'
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert err.value.message == "Unknown bottom blob 'aux' (layer 'fc', bottom index 1)"
    assert err.value.location == "insert_splits.cpp"
    build_graph(parse(text), "TEST")


# --------------------------------------------------------------------------- splits and blobs


def test_split_names_and_wiring() -> None:
    text = (
        INPUT
        + 'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        + "convolution_param { num_output: 2 kernel_size: 1 } }\n"
        + 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        + 'layer { name: "a" type: "InnerProduct" bottom: "conv1" top: "a" }\n'
        + 'layer { name: "b" type: "InnerProduct" bottom: "conv1" top: "fc" }\n'
        + 'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "a" top: "s" }\n'
        + LOSS
    )
    graph = build_graph(parse(text), "TRAIN")
    assert names(graph) == [
        "data",
        "conv1",
        "relu1",
        "conv1_relu1_0_split",
        "a",
        "a_a_0_split",
        "b",
        "sum",
        "loss",
    ]
    split = graph.layer("conv1_relu1_0_split")
    assert split.inserted_split and split.source_index is None
    assert split.tops == ("conv1_relu1_0_split_0", "conv1_relu1_0_split_1")
    assert graph.layer("sum").bottoms == ("a_a_0_split_0", "a_a_0_split_1")
    assert graph.layer("conv1").source_index == 1
    assert graph.blobs["conv1"].writers == (2,)
    assert graph.blobs["conv1"].consumers == (2, 3)
    assert graph.producer("fc") is graph.layer("b")
    assert graph.consumers("a") == [graph.layer("a_a_0_split")]
    assert graph.outputs == ("loss", "s")


def test_loss_weight_on_split_top_moves_to_the_split() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" loss_weight: 0.5 }\n'
        + 'layer { name: "fc2" type: "InnerProduct" bottom: "fc" top: "fc2" }\n'
    )
    graph = build_graph(parse(text), "TRAIN")
    split = graph.layer("fc_fc_0_split")
    assert split.loss_weights == (0.5, 0.0)
    assert graph.layer("fc").loss_weights == (0.0,)
    assert graph.layer("fc2").bottoms == ("fc_fc_0_split_1",)
    result = analyze(graph)
    assert verdicts(result) == {
        "data": False,
        "fc": True,
        "fc_fc_0_split": True,
        "fc2": False,
    }


def test_in_place_after_a_fork_is_a_duplicate_top() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "other" type: "TanH" bottom: "fc" top: "t" }\n'
        + 'layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" }\n'
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert err.value.message == "Top blob 'fc' produced by multiple sources."


def test_loss_layer_without_top_gets_an_automatic_top() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'
    )
    graph = build_graph(parse(text), "TRAIN")
    loss = graph.layer("loss")
    assert loss.tops == (AUTOMATIC_TOP,) and loss.loss_weights == (1.0,)
    assert graph.outputs == ()
    assert verdicts(analyze(graph))["fc"] is True


def test_loss_layer_two_tops_needs_two_weights() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
        + 'top: "loss" top: "prob" }\n'
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert err.value.message == (
        "Check failed: top.size() == num_loss_weights (2 vs. 1) loss_weight must be "
        "unspecified or specified once per top blob."
    )
    fixed = text.replace('top: "prob" }', 'top: "prob" loss_weight: 1 loss_weight: 0 }')
    assert build_graph(parse(fixed), "TRAIN").layer("loss").loss_weights == (1.0, 0.0)


# --------------------------------------------------------------------------- propagate_down


def test_propagate_down_on_one_bottom_of_a_multi_bottom_layer() -> None:
    text = (
        INPUT
        + 'layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" }\n'
        + 'layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" }\n'
        + 'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "fc" '
        + "propagate_down: true propagate_down: false }\n"
        + LOSS
    )
    result = run(text)
    assert verdicts(result) == {
        "data": False,
        "data_data_0_split": False,
        "a": True,
        "b": False,
        "cat": True,
        "loss": True,
    }
    assert result.layer("cat").bottom_need_backward == (True, False)
    assert result.layer("b").reasons == (
        "b does not need backward: its only consumer cat sets propagate_down: false on bottom 1",
    )


def test_propagate_down_count_must_match() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
        + "propagate_down: false }\n"
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert err.value.message == (
        "Check failed: layer_param.propagate_down_size() == layer_param.bottom_size() "
        "(1 vs. 2) propagate_down param must be specified either 0 or bottom_size times"
    )


def test_propagate_down_false_in_place_cuts_the_producer() -> None:
    text = (
        INPUT
        + 'layer { name: "conv1" type: "InnerProduct" bottom: "data" top: "conv1" }\n'
        + 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" '
        + "propagate_down: false }\n"
        + 'layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" }\n'
        + LOSS
    )
    result = run(text)
    assert verdicts(result)["conv1"] is False
    assert verdicts(result)["relu1"] is True
    assert result.layer("conv1").reasons[0] == (
        "conv1 does not need backward: its only consumer relu1 sets propagate_down: false"
    )
    trap = [w for w in result.warnings if w.kind == "decay-without-gradient"]
    assert [w.layer for w in trap] == ["conv1"]
    assert "weight decay" in trap[0].message


# --------------------------------------------------------------------------- force_backward


def test_force_backward_changes_the_final_state_only() -> None:
    text = (
        "force_backward: true\n"
        + INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        + "param { lr_mult: 0 } param { lr_mult: 0 } }\n"
        + LOSS
    )
    result = run(text)
    fc = result.layer("fc")
    assert fc.needs_backward is False and fc.needs_backward_final is True
    assert fc.bottom_need_backward_log == (False,) and fc.bottom_need_backward == (True,)
    assert fc.param_propagate_down == (True, True) and fc.param_updates == (False, False)
    loss = result.layer("loss")
    assert loss.bottom_need_backward == (True, False)  # labels are never forced
    assert "force_backward" in fc.reasons[-1]
    # nothing learns, so nothing needs backward in Caffe's log, not even the loss
    assert result.log_lines() == [
        "loss does not need backward computation.",
        "fc does not need backward computation.",
        "data does not need backward computation.",
    ]
    assert [v.needs_backward_final for v in result.layers] == [True, True, True]


# --------------------------------------------------------------------------- parameters


def test_lr_mult_defaults_and_partial_param_blocks() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        + "param { lr_mult: 0 } }\n"
        + LOSS
    )
    result = run(text)
    params = result.graph.layer("fc").params
    assert [(p.role, p.lr_mult, p.explicit) for p in params] == [
        ("weights", 0.0, True),
        ("bias", 1.0, False),
    ]
    assert result.layer("fc").reasons[0] == (
        "fc needs backward: param 1 (bias) has lr_mult 1 (no param block -> default)"
    )


def test_too_many_params() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        + "param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 3 } }\n"
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert err.value.message == (
        "Check failed: param_size <= num_param_blobs (3 vs. 2) Too many params specified for "
        "layer fc"
    )


def test_shared_weights_owner_and_effective_lr() -> None:
    text = (
        INPUT
        + 'layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" '
        + 'param { name: "w" } param { name: "b" lr_mult: 2 } }\n'
        + 'layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" '
        + 'param { name: "w" lr_mult: 0 } param { name: "b" } }\n'
        + 'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "fc" }\n'
        + LOSS
    )
    graph = build_graph(parse(text), "TRAIN")
    a, b = graph.layer("a"), graph.layer("b")
    # the owner had no lr_mult of its own: the sharer's lr_mult 0 becomes the net-level value
    assert [p.lr_mult for p in a.params] == [0.0, 2.0]
    assert [p.lr_mult for p in b.params] == [0.0, 2.0]
    assert b.params[0].shared_from == (a.index, 0) and b.params[0].shared_from_name == "a"
    # ...but Net::Init tested each layer's own param block for need_backward
    assert [p.local_lr_mult for p in a.params] == [1.0, 2.0]
    assert [p.local_lr_mult for p in b.params] == [0.0, 1.0]


def test_shared_weights_mismatch_is_refused() -> None:
    text = (
        INPUT
        + 'layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" '
        + 'param { name: "w" lr_mult: 0 } }\n'
        + 'layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" '
        + 'param { name: "w" lr_mult: 1 } }\n'
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert err.value.message == (
        "Check failed: param_spec->lr_mult() == params_lr_[learnable_param_id] (1 vs. 0) "
        "Shared param 'w' has mismatched lr_mult."
    )
    decay = text.replace("lr_mult: 0", "decay_mult: 0.5").replace("lr_mult: 1", "decay_mult: 2")
    with pytest.raises(CaffeError) as err:
        build_graph(parse(decay), "TRAIN")
    assert err.value.message == (
        "Check failed: param_spec->decay_mult() == params_weight_decay_[learnable_param_id] "
        "(2 vs. 0.5) Shared param 'w' has mismatched decay_mult."
    )


@pytest.mark.parametrize(
    ("layer", "bottoms", "count"),
    [
        ('type: "Convolution"', 1, 2),
        ('type: "Convolution" convolution_param { bias_term: false }', 1, 1),
        ('type: "Deconvolution" convolution_param { bias_term: false }', 1, 1),
        ('type: "InnerProduct" inner_product_param { bias_term: false }', 1, 1),
        ('type: "Embed"', 1, 2),
        ('type: "BatchNorm"', 1, 3),
        ('type: "Scale"', 1, 1),
        ('type: "Scale" scale_param { bias_term: true }', 1, 2),
        ('type: "Scale" scale_param { bias_term: true }', 2, 1),
        ('type: "Scale"', 2, 0),
        ('type: "Bias"', 1, 1),
        ('type: "Bias"', 2, 0),
        ('type: "PReLU"', 1, 1),
        ('type: "Parameter"', 0, 1),
        ('type: "LSTM"', 2, 3),
        ('type: "LSTM"', 3, 4),
        ('type: "RNN"', 2, 5),
        ('type: "RNN"', 3, 6),
        ('type: "ReLU"', 1, 0),
        ('type: "Python"', 1, None),
    ],
)
def test_param_blob_counts(layer: str, bottoms: int, count: int | None) -> None:
    msg = parse(f"layer {{ name: 'x' {layer} }}").layer[0]
    assert param_blob_count(msg.type, msg, bottoms) == count


def test_batchnorm_quirks() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        + "param { lr_mult: 0 } param { lr_mult: 0 } }\n"
        + 'layer { name: "bn" type: "BatchNorm" bottom: "fc" top: "fc" }\n'
        + LOSS
    )
    result = run(text)
    bn = result.graph.layer("bn")
    # Caffe adds lr_mult 0 specs to its own copy (the solver's value) but Net::Init tested the
    # net's copy, where the default spec has lr_mult 1: bn "needs backward".
    assert [p.lr_mult for p in bn.params] == [0.0, 0.0, 0.0]
    assert [p.local_lr_mult for p in bn.params] == [1.0, 1.0, 1.0]
    assert result.layer("bn").needs_backward is True
    assert [w.kind for w in result.warnings] == ["batchnorm-statistics-move"]
    frozen = text.replace(
        'type: "BatchNorm" bottom: "fc" top: "fc" }',
        'type: "BatchNorm" bottom: "fc" top: "fc" batch_norm_param { use_global_stats: true } }',
    )
    assert [w.kind for w in run(frozen).warnings] == []
    assert [w.kind for w in run(text, "TEST").warnings] == []
    # a learnable BatchNorm statistic is refused by BatchNormLayer::LayerSetUp
    bad = text.replace(
        'type: "BatchNorm" bottom: "fc" top: "fc" }',
        'type: "BatchNorm" bottom: "fc" top: "fc" param { lr_mult: 1 } }',
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(bad), "TRAIN")
    assert err.value.message == (
        "Check failed: this->layer_param_.param(i).lr_mult() == 0.f (1 vs. 0) Cannot "
        "configure batch normalization statistics as layer parameters."
    )
    # exactly three param blocks: the load-time upgrade zeroes them, no error
    three = bad.replace("param { lr_mult: 1 }", "param { lr_mult: 1 } " * 3)
    assert [p.decay_mult for p in build_graph(parse(three), "TRAIN").layer("bn").params] == [
        0.0,
        0.0,
        0.0,
    ]


def test_unknown_layer_type_counts_param_blocks_and_warns() -> None:
    text = (
        INPUT
        + 'layer { name: "py" type: "Python" bottom: "data" top: "fc" '
        + "param { lr_mult: 0 } }\n"
        + LOSS
    )
    graph = build_graph(parse(text), "TRAIN")
    assert len(graph.layer("py").params) == 1
    assert [w.kind for w in graph.warnings] == ["unknown-layer-type"]
    assert verdicts(analyze(graph))["py"] is False
    graph2 = build_graph(parse(text), "TRAIN", param_counts={"Python": 2})
    assert len(graph2.layer("py").params) == 2 and graph2.warnings == ()
    assert verdicts(analyze(graph2))["py"] is True  # the second blob defaults to lr_mult 1
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN", registered_types=ORACLE_BUILD_LAYER_TYPES)
    assert err.value.message.startswith(
        "Check failed: registry.count(type) == 1 (0 vs. 1) Unknown layer type: Python "
        "(known types: AbsVal, Accuracy, ArgMax,"
    )


def test_unknown_filler() -> None:
    text = INPUT + (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        'inner_product_param { weight_filler { type: "gabor" } } }\n'
    )
    with pytest.raises(CaffeError) as err:
        build_graph(parse(text), "TRAIN")
    assert (err.value.message, err.value.location) == (
        "Check failed: false Unknown filler name: gabor",
        "filler.hpp",
    )


# --------------------------------------------------------------------------- legacy formats


def test_v1_layers_are_viewed_as_v2() -> None:
    text = """
    name: "v1"
    input: "data" input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 4
    input: "label" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1
    layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
             blobs_lr: 0 blobs_lr: 2 weight_decay: 1 weight_decay: 0 param: "w"
             convolution_param { num_output: 2 kernel_size: 3 } }
    layers { name: "fc" type: INNER_PRODUCT bottom: "conv" top: "fc"
             inner_product_param { num_output: 3 } include { phase: TRAIN } }
    layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" top: "loss"
             loss_weight: 2 }
    """
    v2 = v1_to_v2_message(parse(text))
    assert [layer.type for layer in v2.layer] == ["Convolution", "InnerProduct", "SoftmaxWithLoss"]
    conv = v2.layer[0]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [
        ("w", 0.0, 1.0),
        ("", 2.0, 0.0),
    ]
    assert conv.convolution_param.num_output == 2
    assert v2.layer[1].include[0].phase == 0 and list(v2.layer[2].loss_weight) == [2.0]
    upgraded = upgrade_net_message(parse(text))
    assert upgraded.layer[0].name == "input" and list(upgraded.layer[0].top) == ["data", "label"]
    assert [list(s.dim) for s in upgraded.layer[0].input_param.shape] == [
        [2, 3, 4, 4],
        [2, 1, 1, 1],
    ]
    graph = build_graph(parse(text), "TRAIN")
    assert graph.inputs == ("data", "label")
    assert graph.layer("loss").loss_weights == (2.0,)


def test_legacy_input_split_is_named_after_the_input_layer() -> None:
    text = """
    input: "data" input_shape { dim: 2 dim: 3 }
    layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" }
    layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "data" }
    """
    graph = build_graph(parse(text), "TRAIN")
    assert names(graph) == ["input", "data_input_0_split", "a", "loss"]


def test_v0_layers() -> None:
    text = """
    name: "v0"
    input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 biasterm: false
             blobs_lr: 0 } bottom: "pad1" top: "conv1" }
    layers { layer { name: "fc" type: "innerproduct" num_output: 2 } bottom: "conv1" top: "fc" }
    """
    graph = build_graph(parse(text), "TRAIN")
    assert [(layer.name, layer.type) for layer in graph.layers] == [
        ("input", "Input"),
        ("conv1", "Convolution"),
        ("fc", "InnerProduct"),
    ]
    assert graph.layer("conv1").bottoms == ("data",)
    assert [p.lr_mult for p in graph.layer("conv1").params] == [0.0]


# --------------------------------------------------------------------------- reasons, output


def test_seed_reasons() -> None:
    if not SEED.exists():
        pytest.skip(f"shared seed data not found at {SEED}")
    result = run((SEED / "seed_net.prototxt").read_text())
    assert result.layer("test/pool").reasons == (
        "test/pool does not need backward: its only consumer test/pool_proj sets "
        "propagate_down: false",
    )
    assert result.layer("test/pool_proj").reasons[0] == (
        "test/pool_proj needs backward: param 0 (weights) has lr_mult 1 (param block)"
    )
    assert result.layer("data").reasons == (
        "data does not need backward: nothing to learn: it has no bottoms and no parameters",
    )
    test_result = run((SEED / "seed_net.prototxt").read_text(), "TEST")
    assert test_result.layer("top-1").reasons == (
        "top-1 does not need backward: it does not contribute to a loss",
    )


def test_json_schema() -> None:
    text = (
        INPUT
        + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        + "param { lr_mult: 0 decay_mult: 0 } }\n"
        + LOSS
    )
    data = run(text).to_json()
    assert set(data) == {
        "net",
        "phase",
        "stages",
        "level",
        "force_backward",
        "layers",
        "inputs",
        "outputs",
        "warnings",
        "log",
    }
    fc = data["layers"][1]
    assert fc["name"] == "fc" and fc["needs_backward"] is True
    assert fc["bottoms"] == [
        {
            "blob": "data",
            "need_backward": False,
            "need_backward_log": False,
            "propagate_down": None,
            "allow_force_backward": True,
        }
    ]
    assert [p["role"] for p in fc["params"]] == ["weights", "bias"]
    assert fc["params"][0]["updates"] is False and fc["params"][1]["updates"] is True
    assert data["log"][0] == "loss needs backward computation."


# --------------------------------------------------------------------------- performance


def test_100k_layer_chain_is_linear() -> None:
    net = net_class()()
    first = net.layer.add()
    first.name, first.type = "data", "Input"
    first.top.extend(["x", "t"])
    prev = "x"
    n = 100_000
    for i in range(1, n):
        layer = net.layer.add()
        layer.name = f"l{i}"
        layer.bottom.append(prev)
        if i % 3 == 0:
            layer.type = "ReLU"
            layer.top.append(prev)
        else:
            layer.type = "InnerProduct"
            prev = f"b{i}"
            layer.top.append(prev)
    loss = net.layer.add()
    loss.name, loss.type = "loss", "EuclideanLoss"
    loss.bottom.extend([prev, "t"])
    start = time.perf_counter()
    result = analyze(build_graph(net, "TRAIN"))
    lines = result.log_lines()
    elapsed = time.perf_counter() - start
    assert len(lines) == n + 1
    assert lines[0] == "loss needs backward computation."
    assert lines[-1] == "data does not need backward computation."
    assert elapsed < 15, f"{elapsed:.1f}s for {n} layers"
