"""train_val -> deploy (rewriter.recipes.deploy) against the deploy nets the model authors shipped.

The pairs: every corpus folder holding a net with "deploy" in its name next to a
train_val / trainval / train_test net (found by ``_discover_pairs``, listed in ``PAIRS``).
"Semantically equal" means: Caffe's TEST net of both files (after filtering; inserted splits
left out) has the same layers in the same order with the same types, bottoms and tops, and
the same layer parameters once fillers, ``param`` blocks and include/exclude rules are set
aside (they do not change what a deploy net computes). Names are compared too, except for
Input layers: Caffe names the layer it makes from legacy ``input:`` fields "input", and an
Input layer has no parameters to load by name.

Where the shipped files really differ, the difference is asserted exactly, with its reason.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import pytest

from rewriter.api import read
from rewriter.caffe.graph import build_graph, upgrade_net_message
from rewriter.caffe.shapes import infer_shapes
from rewriter.errors import UsageError
from rewriter.recipes.deploy import DeployError, deploy_document, parse_settings
from rewriter.schema.bind import bind
from rewriter.text.cst import parse
from tests.conftest import CORPUS, manifest, need_shared, run_cli

# (folder, train/val net, shipped deploy net, deploy options, known differences, reason)
PAIRS: list[tuple[str, str, str, dict[str, Any], list[str], str]] = [
    ("BVLC-caffe/models/bvlc_googlenet", "train_val.prototxt", "deploy.prototxt",
     {"batch": 10}, [], "auxiliary classifiers loss1/loss2 pruned with their branches"),
    ("BVLC-caffe@11a4c16/models/bvlc_reference_caffenet", "train_val.prototxt",
     "deploy.prototxt", {"batch": 10}, [], "V1 file: legacy input fields, SOFTMAX"),
    ("forresti-SqueezeNet/SqueezeNet_v1.0", "train_val.prototxt", "deploy.prototxt",
     {"batch": 10}, [], "the loss runs only in TRAIN; it still becomes the Softmax output"),
    ("xingwangsfu-caffe-yolo/prototxt", "yolo_small_train_val.prototxt",
     "yolo_small_deploy.prototxt", {}, [], "no data or loss layers: fillers only"),
    ("xingwangsfu-caffe-yolo/prototxt", "yolo_tiny_train_val.prototxt",
     "yolo_tiny_deploy.prototxt", {},
     ["conv8_y: name 'conv8_y' vs 'conv8'"],
     "the shipped train_val names its 8th convolution 'conv8_y', the deploy net 'conv8' (so "
     "weights trained with the train_val would not load into the deploy net's conv8)"),
    ("BVLC-caffe@intel/examples/LRCN_activity_recognition", "train_test_lstm_RGB.prototxt",
     "deploy_lstm.prototxt",
     {"stage": "test-on-test", "batch": 48, "height": 227, "width": 227, "output": "probs",
      "strip_dropout": True, "input_shapes": {"clip_markers": [48, 1, 1, 1]}},
     ["<input>: params differ: input_param",
      "reshape-data: params differ: reshape_param",
      "reshape-cm: params differ: reshape_param"],
     "the TEST net (stage test-on-test) unrolls 16 frames x 3 streams (48 inputs, reshape "
     "16x3); the shipped deploy net is sized for 10 streams (160 inputs, reshape 16x10)"),
    ("s9xie-hed/examples/hed", "train_val.prototxt", "deploy.prototxt",
     {"height": 500, "width": 500, "outputs": "all"},
     [f"prob_upscore-{s}: name 'prob_upscore-{s}' vs 'sigmoid-{s}'; tops "
      f"['prob_upscore-{s}'] vs ['sigmoid-{s}']"
      for s in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse")],
     "all six SigmoidCrossEntropyLoss side outputs become Sigmoid maps as in the shipped "
     "net, but their names there ('sigmoid-dsn1'...) appear nowhere in the train_val (its "
     "loss layers are unnamed)"),
    ("yjxiong-caffe/models/action_recognition", "vgg_16_rgb_train_val_fast.prototxt",
     "cuhk_action_spatial_vgg_16_deploy.prototxt",
     {"batch": 50, "height": 224, "width": 224, "input_shapes": {"label_local": [50]}},
     ["<input>: tops ['data', 'label_local'] vs ['data']",
      "<input>: params differ: input_param",
      "only in ours: pool5 (Pooling)",
      "only in ours: gather (Gather)",
      "only in shipped: pool5 (Pooling)",
      "drop6: params differ: dropout_param",
      "only in ours: prob (Softmax)"],
     "the train_val's pool5 writes pool5_local, which the fork's Gather layer (it also reads "
     "the label, so the Input keeps label_local) turns into pool5; the shipped deploy net has "
     "no Gather, uses dropout_ratio 0.95 where the train_val has 0.9 (no effect at TEST), and "
     "stops at fc8-1 without a Softmax"),
]  # fmt: skip

EXACT = sum(1 for p in PAIRS if not p[4])


# --------------------------------------------------------------------------- comparison


def _repeated(fd: Any) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return bool(rep) if rep is not None else bool(fd.label == 3)


def _strip_fillers(msg: Any) -> None:
    for fd, value in list(msg.ListFields()):
        if fd.name.endswith("filler"):
            msg.ClearField(fd.name)
        elif fd.message_type is not None:
            for item in value if _repeated(fd) else [value]:
                _strip_fillers(item)


def _semantic(msg: Any) -> Any:
    out = type(msg)()
    out.CopyFrom(msg)
    for name in ("name", "type", "bottom", "top", "param", "include", "exclude", "blobs"):
        out.ClearField(name)
    _strip_fillers(out)
    return out


def _view(doc: Any) -> list[tuple[str, str, list[str], list[str], Any]]:
    bound = bind(doc, root="caffe.NetParameter", lenient=True)
    net = upgrade_net_message(bound.message)
    graph = build_graph(net, "TEST")
    out = []
    for layer in graph.layers:
        if layer.inserted_split:
            continue
        msg = net.layer[layer.source_index]
        name = "<input>" if layer.type == "Input" else str(msg.name)
        out.append((name, str(msg.type), list(msg.bottom), list(msg.top), _semantic(msg)))
    return out


def _differences(ours: list[Any], theirs: list[Any]) -> list[str]:
    def key(x: Any) -> tuple[Any, ...]:
        return (x[1], tuple(x[2]), tuple(x[3]))

    diffs: list[str] = []
    sm = difflib.SequenceMatcher(a=[key(x) for x in ours], b=[key(x) for x in theirs],
                                 autojunk=False)  # fmt: skip
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "replace" and i2 - i1 == j2 - j1 or op == "equal":
            pairs = zip(ours[i1:i2], theirs[j1:j2], strict=True)
        else:
            diffs += [f"only in ours: {x[0]} ({x[1]})" for x in ours[i1:i2]]
            diffs += [f"only in shipped: {x[0]} ({x[1]})" for x in theirs[j1:j2]]
            continue
        for a, b in pairs:
            parts = []
            if a[0] != b[0]:
                parts.append(f"name {a[0]!r} vs {b[0]!r}")
            if a[1] != b[1]:
                parts.append(f"type {a[1]} vs {b[1]}")
            if a[2] != b[2]:
                parts.append(f"bottoms {a[2]} vs {b[2]}")
            if a[3] != b[3]:
                parts.append(f"tops {a[3]} vs {b[3]}")
            if parts:
                diffs.append(f"{a[0]}: " + "; ".join(parts))
            if a[4] != b[4]:
                fields = {fd.name for fd, _ in a[4].ListFields()} | {
                    fd.name for fd, _ in b[4].ListFields()}  # fmt: skip
                differ = sorted(f for f in fields if _field(a[4], f) != _field(b[4], f))
                diffs.append(f"{a[0]}: params differ: {', '.join(differ)}")
    return diffs


def _field(msg: Any, name: str) -> Any:
    fd = msg.DESCRIPTOR.fields_by_name[name]
    value = getattr(msg, name)
    if _repeated(fd):
        return [str(v) for v in value]
    return str(value) if msg.HasField(name) else None


def _discover_pairs() -> set[tuple[str, str]]:
    by_dir: dict[str, list[str]] = {}
    for row in manifest():
        if row["kind"] == "net":
            folder, _, name = row["path"].rpartition("/")
            by_dir.setdefault(folder, []).append(name)
    found = set()
    for folder, names in by_dir.items():
        deploys = [n for n in names if "deploy" in n]
        trains = [n for n in names if re.search(r"train_?val|train_test", n)]
        for t in trains:
            for d in deploys:
                found.add((f"{folder}/{t}", f"{folder}/{d}"))
    return found


# --------------------------------------------------------------------------- corpus pairs


def test_pairs_are_all_the_corpus_pairs() -> None:
    """Every same-folder deploy/train_val combination is either listed or explained."""
    need_shared()
    listed = {(f"{p[0]}/{p[1]}", f"{p[0]}/{p[2]}") for p in PAIRS}
    found = _discover_pairs()
    # The yolo folder holds small and tiny nets; the action-recognition folder a spatial (RGB)
    # and a temporal (optical flow) deploy net, and only an RGB train_val.
    cross = {
        ("xingwangsfu-caffe-yolo/prototxt/yolo_small_train_val.prototxt",
         "xingwangsfu-caffe-yolo/prototxt/yolo_tiny_deploy.prototxt"),
        ("xingwangsfu-caffe-yolo/prototxt/yolo_tiny_train_val.prototxt",
         "xingwangsfu-caffe-yolo/prototxt/yolo_small_deploy.prototxt"),
        ("yjxiong-caffe/models/action_recognition/vgg_16_rgb_train_val_fast.prototxt",
         "yjxiong-caffe/models/action_recognition/cuhk_action_temporal_vgg_16_flow_deploy"
         ".prototxt"),
    }  # fmt: skip
    assert found == listed | cross


@pytest.mark.parametrize(
    ("folder", "train", "deploy", "options", "known", "reason"),
    PAIRS,
    ids=[f"{p[0]}/{p[1]}" for p in PAIRS],
)
def test_deploy_matches_shipped_deploy(
    folder: str, train: str, deploy: str, options: dict[str, Any], known: list[str], reason: str
) -> None:
    need_shared()
    result = deploy_document(read(CORPUS / folder / train), **options)
    ours = _view(result.document)
    theirs = _view(read(CORPUS / folder / deploy))
    assert _differences(ours, theirs) == known, reason
    # Parameter shapes agree wherever names agree, so weights move between the two nets.
    theirs_shapes = infer_shapes(bind(read(CORPUS / folder / deploy), root="caffe.NetParameter",
                                      lenient=True).message, "TEST")  # fmt: skip
    ours_shapes = result.shapes
    compared = 0
    for ls in ours_shapes.layers:
        other = theirs_shapes.params_of(ls.name) if ls.params else None
        if other is not None:
            assert ls.params == other, ls.name
            compared += 1
    assert compared or not any(ls.params for ls in ours_shapes.layers)


def test_match_rate() -> None:
    """4 of the 8 corpus pairs match exactly; the other 4 differ only as explained above."""
    assert len(PAIRS) == 8
    assert EXACT == 4


# --------------------------------------------------------------------------- behaviour

TRAIN_VAL = """\
name: "tiny"
# training data
layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  transform_param { crop_size: 8 }
  data_param { source: "train_lmdb" batch_size: 64 }
}
layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TEST }
  transform_param { crop_size: 8 }
  data_param { source: "val_lmdb" batch_size: 10 }
}
# the feature extractor: keep this comment
layer {
  name: "conv1"  # trailing comment kept
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 }
  param { lr_mult: 2 }
  convolution_param {
    num_output: 4
    kernel_size: 3
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
layer {
  name: "drop1"
  type: "Dropout"
  bottom: "conv1"
  top: "conv1d"
}
layer {
  name: "fc"
  type: "InnerProduct"
  bottom: "conv1d"
  top: "fc"
  param { name: "fc_w" lr_mult: 1 }
  inner_product_param { num_output: 5 }
}
layer {
  name: "aux"
  type: "InnerProduct"
  bottom: "conv1"
  top: "aux"
  inner_product_param { num_output: 5 }
}
layer {
  name: "aux_loss"
  type: "SoftmaxWithLoss"
  bottom: "aux"
  bottom: "label"
  top: "aux_loss"
  loss_weight: 0.3
}
layer {
  name: "silence"
  type: "Silence"
  bottom: "label"
  include { phase: TEST }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "fc"
  bottom: "label"
  top: "loss"
}
layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "fc"
  bottom: "label"
  top: "accuracy"
  include { phase: TEST }
}
"""


def _deploy(text: str, **options: Any) -> Any:
    return deploy_document(parse(text, "tiny.prototxt"), **options)


def test_deploy_rules_on_a_small_net() -> None:
    result = _deploy(TRAIN_VAL)
    code = result.code
    net = bind(parse(code), root="caffe.NetParameter").message  # strict binding
    assert [la.name for la in net.layer] == ["data", "conv1", "drop1", "fc", "prob"]
    assert [la.type for la in net.layer] == ["Input", "Convolution", "Dropout", "InnerProduct",
                                             "Softmax"]  # fmt: skip
    assert list(net.layer[0].top) == ["data"]  # the label is gone
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert list(net.layer[-1].bottom) == ["fc"] and list(net.layer[-1].top) == ["prob"]
    assert not any(la.include or la.exclude for la in net.layer)
    assert not net.layer[-1].HasField("loss_param") and not net.layer[-1].loss_weight
    # comments and layout of kept layers survive; removed layers take theirs along
    assert "# the feature extractor: keep this comment" in code
    assert 'name: "conv1"  # trailing comment kept' in code
    assert "# training data" not in code
    conv_text = TRAIN_VAL[TRAIN_VAL.index('layer {\n  name: "conv1"') :]
    conv_text = conv_text[: conv_text.index("}\nlayer") + 1]
    assert conv_text in code  # the untouched layer is byte-identical
    removed = {(n, why) for n, _, why in result.removed}
    assert ("aux", "layer feeds no output") in removed
    assert ("aux_loss", "loss layer (not a selected output)") in removed
    assert ("silence", "layer feeds no output") in removed
    assert ("accuracy", "accuracy layer") in removed
    assert result.outputs == ["prob"]
    assert result.shapes.blobs["prob"] == (1, 5)


def test_deploy_options() -> None:
    result = _deploy(
        TRAIN_VAL, batch=2, channels=1, output="scores", strip_params=True, strip_fillers=True,
        strip_dropout=True, outputs="all",
    )  # fmt: skip
    net = bind(parse(result.code), root="caffe.NetParameter").message
    names = [la.name for la in net.layer]
    assert names == ["data", "conv1", "fc", "aux", "scores_aux", "scores_fc"]
    assert list(net.layer[0].input_param.shape[0].dim) == [2, 1, 8, 8]
    fc = net.layer[2]
    assert list(fc.bottom) == ["conv1"]  # rewired past the stripped Dropout
    assert len(fc.param) == 1 and fc.param[0].name == "fc_w"  # named: kept for sharing
    assert not fc.param[0].HasField("lr_mult")
    conv = net.layer[1]
    assert not conv.param and not conv.convolution_param.HasField("weight_filler")
    assert result.outputs == ["scores_aux", "scores_fc"]
    only = _deploy(TRAIN_VAL, outputs=["aux_loss"])
    assert [la.name for la in bind(parse(only.code), root="caffe.NetParameter").message.layer
            ] == ["data", "conv1", "aux", "prob"]  # fmt: skip
    with pytest.raises(DeployError, match="no loss layer or blob named 'nope'"):
        _deploy(TRAIN_VAL, outputs=["nope"])


def test_edits_can_be_recorded_into_a_callers_editor() -> None:
    """For the recipe engine: record into an Editor, apply later, then verify."""
    from rewriter.recipes.deploy import verify_deploy
    from rewriter.text.edit import Editor

    doc = parse(TRAIN_VAL, "tiny.prototxt")
    ed = Editor(doc)
    recorded = deploy_document(doc, editor=ed)
    assert recorded.document is doc and recorded.shapes is None
    assert recorded.converted == [("loss", "SoftmaxWithLoss", "prob", "Softmax")]
    applied = parse(ed.apply().code, doc.path)
    verify_deploy(applied, recorded)
    assert applied.code == _deploy(TRAIN_VAL).code
    assert recorded.outputs == ["prob"] and recorded.shapes.blobs["prob"] == (1, 5)


def test_deploy_refuses_what_it_cannot_size_or_load() -> None:
    no_crop = TRAIN_VAL.replace("transform_param { crop_size: 8 }", "")
    with pytest.raises(DeployError, match="give it: --set height=H --set width=W"):
        _deploy(no_crop)
    assert _deploy(no_crop, height=8, width=8).shapes.blobs["data"] == (1, 3, 8, 8)
    with pytest.raises(DeployError, match="Caffe would refuse the deploy net"):
        _deploy(no_crop, height=1, width=1)  # a 3x3 kernel on a 1x1 input: size -1
    with pytest.raises(DeployError, match="V0 net"):
        deploy_document(parse('layers { layer { name: "d" type: "data" } top: "data" }'))
    with pytest.raises(DeployError, match="already a blob"):
        _deploy(TRAIN_VAL, output="fc")


def test_v1_file_gets_legacy_inputs() -> None:
    need_shared()
    path = CORPUS / "BVLC-caffe@11a4c16/models/bvlc_reference_caffenet/train_val.prototxt"
    result = deploy_document(read(path), batch=10)
    head = result.code.split("layers {", 1)[0]
    assert 'input: "data"' in head and head.count("input_dim:") == 4
    assert "type: SOFTMAX\n" in result.code and "SOFTMAX_LOSS" not in result.code
    assert result.inputs == [("input", ("data",), [(10, 3, 227, 227)])]


def test_every_corpus_train_val_deploys_or_says_why() -> None:
    """No traceback: each non-fork train/val net either deploys (and loads) or gets a reason."""
    need_shared()
    made = 0
    for row in manifest():
        if row["kind"] != "net" or row["fork_specific"] != "no":
            continue
        try:
            result = deploy_document(read(CORPUS / row["path"]), height=224, width=224)
        except DeployError as e:
            assert str(e)
            continue
        except Exception as e:  # noqa: BLE001
            if type(e).__name__ in ("SchemaErrors", "ParseError"):
                continue
            raise
        assert result.shapes is not None
        made += 1
    assert made >= 60, made


# --------------------------------------------------------------------------- settings and CLI


def test_parse_settings() -> None:
    got = parse_settings(
        ["batch=4", "strip_params=yes", "outputs=a,b", "shape.clip=16x1", "stage=x,y"],
        ("batch", "strip_params", "outputs", "stage", "input_shapes"),
    )
    assert got == {"batch": 4, "strip_params": True, "outputs": ["a", "b"],
                   "stage": ["x", "y"], "input_shapes": {"clip": [16, 1]}}  # fmt: skip
    for bad in (["batch=x"], ["batch=0"], ["nokey"], ["strip_params=maybe"], ["colour=1"]):
        with pytest.raises(UsageError):
            parse_settings(bad, ("batch", "strip_params"))


def test_cli_deploy(tmp_path: Path) -> None:
    src = tmp_path / "train_val.prototxt"
    src.write_text(TRAIN_VAL)
    out = tmp_path / "deploy.prototxt"
    r = run_cli("deploy", str(src), "-o", str(out), "--set", "batch=3")
    assert r.returncode == 0, r.stderr
    assert "output prob (Softmax) from loss (SoftmaxWithLoss)" in r.stdout
    assert "dim: 3" in out.read_text()
    r = run_cli("deploy", str(src))  # to stdout, summary on stderr
    assert r.returncode == 0 and r.stdout == _deploy(TRAIN_VAL).code
    assert "net outputs: prob" in r.stderr
    r = run_cli("deploy", str(src), "--set", "colour=1")
    assert r.returncode == 2 and "unknown key 'colour'" in r.stderr
    r = run_cli("deploy", str(src), "-o", str(out), "--in-place")
    assert r.returncode == 2
    r = run_cli("deploy", str(src), "--set", "height=1", "--set", "width=1",
             "--set", "batch=1")  # fmt: skip
    assert r.returncode == 0  # crop_size wins over height/width for a Data layer
    r = run_cli("deploy", str(src), "--in-place", "-q")
    assert r.returncode == 0 and r.stdout == ""
    assert 'type: "Input"' in src.read_text()
    r = run_cli("deploy", str(tmp_path / "missing.prototxt"))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
