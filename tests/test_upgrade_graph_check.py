"""The upgrade's graph verification: ``check_same_graph`` must catch an upgrade that changes
Caffe's net (the last line of defence if our port of upgrade_proto.cpp ever drifts).

Every other upgrade test feeds correct upgrades, which this check passes silently; here the
"upgraded" net is broken on purpose, one way per test, and the check must name the phase and
the layer. (Layer parameters such as shapes are not in the graph: the upgrade's other check, the
message equal to Caffe's, covers them; see docs/upgrade.md.)"""

from __future__ import annotations

from typing import Any

import pytest

from rewriter.caffe.graph import upgrade_net_message
from rewriter.schema.bind import NET, bind
from rewriter.text.cst import parse
from rewriter.upgrade.document import UpgradeError, check_same_graph, upgrade_text

V1_NET = """\
name: "tiny"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 8
input_dim: 8
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  convolution_param { num_output: 4 kernel_size: 3 }
}
layers {
  name: "relu1"
  type: RELU
  bottom: "conv1"
  top: "conv1"
}
layers {
  name: "ip"
  type: INNER_PRODUCT
  bottom: "conv1"
  top: "ip"
  inner_product_param { num_output: 2 }
}
layers {
  name: "loss"
  type: SOFTMAX_LOSS
  bottom: "ip"
  bottom: "data"
  top: "loss"
  include { phase: TRAIN }
}
"""


def _original() -> Any:
    bound = bind(parse(V1_NET), root=NET)
    assert not bound.errors
    return bound.message


def _upgraded() -> Any:
    out = upgrade_net_message(_original())
    assert len(out.layers) == 0 and len(out.layer) == 5  # Input + the four layers
    return out


def test_a_faithful_upgrade_passes() -> None:
    check_same_graph(_original(), _upgraded())
    # and the text upgrade of the same file goes through the same check without complaint
    result = upgrade_text(V1_NET)
    assert result.changed and "layers {" not in result.document.code


def test_a_rewired_bottom_is_caught_with_its_layer() -> None:
    broken = _upgraded()
    ip = next(layer for layer in broken.layer if layer.name == "ip")
    ip.bottom[0] = "data"
    with pytest.raises(UpgradeError) as info:
        check_same_graph(_original(), broken)
    # the first difference Caffe would see is the split of "data", which now feeds three layers
    assert "changed Caffe's net in phase TRAIN: layer 'data_input_0_split'" in info.value.message


def test_a_lost_learning_rate_is_caught() -> None:
    broken = _upgraded()
    conv = next(layer for layer in broken.layer if layer.name == "conv1")
    conv.param[1].lr_mult = 1.0  # blobs_lr: 2 became 1
    with pytest.raises(UpgradeError) as info:
        check_same_graph(_original(), broken)
    assert "'conv1'" in info.value.message


def test_a_changed_phase_rule_is_caught_in_the_phase_it_changes() -> None:
    broken = _upgraded()
    loss = next(layer for layer in broken.layer if layer.name == "loss")
    loss.include[0].phase = 1  # TEST: the TRAIN net loses its loss, the TEST net gains it
    with pytest.raises(UpgradeError) as info:
        check_same_graph(_original(), broken)
    assert "changed Caffe's net in phase" in info.value.message


def test_a_changed_loss_weight_is_caught() -> None:
    broken = _upgraded()
    loss = next(layer for layer in broken.layer if layer.name == "loss")
    loss.loss_weight.append(2.0)
    with pytest.raises(UpgradeError) as info:
        check_same_graph(_original(), broken)
    assert "'loss'" in info.value.message


def test_layer_parameters_are_the_message_checks_business() -> None:
    """The graph holds wiring and learning, not layer parameters: a changed input shape passes
    this check and is caught by the other one (the upgraded message must equal Caffe's)."""
    broken = _upgraded()
    broken.layer[0].input_param.shape[0].dim[2] = 16
    check_same_graph(_original(), broken)
    assert broken != _upgraded()
