"""Shape inference (rewriter.caffe.shapes) against Caffe's own answers.

Three kinds of truth, none of them our own output:

1. ``oracle/backward/*.expect.json``: real Caffe's parameter blob shapes for every layer of
   every run (a conv's weights need the bottom's channel count, an InnerProduct's need the
   bottom's whole size, so these pin the blob shapes that feed them too);
2. ``oracle/corpus-backward``: real Caffe *initialised* these corpus nets (``ok: true``) with
   the input shapes its README documents, which means every CHECK of every layer's
   ``Reshape`` passed (Eltwise operands equal, Concat non-axis dims equal, Crop in bounds,
   Reshape counts equal...). Inference with the same inputs must pass them all too: an
   off-by-one in pooling or convolution rounding breaks the residual sums of a ResNet or the
   concatenations of an Inception net;
3. published architecture tables (AlexNet, GoogLeNet, ResNet, VGG, SqueezeNet, MobileNet,
   Inception-v3/v4, YOLO, MTCNN, HED) for the sizes the papers print.
"""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Any

import pytest

from rewriter.api import load
from rewriter.caffe.graph import upgrade_net_message
from rewriter.caffe.shapes import ShapeError, infer_shapes, shape_string
from tests.conftest import CORPUS, ORACLE, manifest, need_shared

BACKWARD = ORACLE / "backward"
CORPUS_BACKWARD = ORACLE / "corpus-backward"


def _net(text: str) -> Any:
    from google.protobuf import text_format

    from rewriter.schema.runtime import default_schema

    cls = default_schema().message_class("caffe.NetParameter")
    return text_format.Parse(text, cls())


# --------------------------------------------------------------------------- 1. oracle params


def _oracle_cases() -> list[Any]:
    if not BACKWARD.is_dir():
        return [pytest.param(None, id="no-shared-oracle")]
    return [pytest.param(p, id=p.name[: -len(".expect.json")]) for p in sorted(
        BACKWARD.glob("*.expect.json"))]  # fmt: skip


def _caffe_shape(text: str) -> tuple[int, ...]:
    """The oracle's shape strings: ``"2 3 3 3"``; a 0-axis blob is ``"(1)"``."""
    return () if text.startswith("(") else tuple(int(x) for x in text.split())


@pytest.mark.parametrize("case", _oracle_cases())
def test_param_shapes_match_caffe(case: Any) -> None:
    need_shared()
    expect = json.loads(case.read_text())
    net = load(case.with_name(expect["prototxt"])).message
    compared = 0
    for run in expect["runs"]:
        if not run["ok"]:
            continue
        shapes = infer_shapes(net, run["phase"], stages=run["stages"], level=run["level"])
        assert shapes.complete, shapes.stopped
        assert [ls.name for ls in shapes.layers] == [la["name"] for la in run["layers"]]
        for ours, theirs in zip(shapes.layers, run["layers"], strict=True):
            want = [_caffe_shape(p["shape"]) for p in theirs["params"]]
            assert list(ours.params) == want, (ours.name, ours.type)
            compared += 1
    if not compared:
        pytest.skip("no run of this case initialised in Caffe")


def test_oracle_param_shape_count() -> None:
    """How many layer parameter lists the oracle pins (all of them must match above)."""
    need_shared()
    total = 0
    for path in BACKWARD.glob("*.expect.json"):
        for run in json.loads(path.read_text())["runs"]:
            total += sum(1 for la in run.get("layers", []) if la["params"])
    assert total >= 150


# --------------------------------------------------------------------------- 2. corpus init


def _oracle_runs() -> list[Any]:
    """Every non-fork corpus net with a run Caffe initialised: (manifest row, run)."""
    out: list[Any] = []
    for row in manifest():
        if row["kind"] != "net" or row["fork_specific"] != "no":
            continue
        path = CORPUS_BACKWARD / (row["path"] + ".json")
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for run in data["runs"]:
            if run["ok"]:
                label = f"{row['path']}:{run['phase']}" + "".join(f"+{s}" for s in run["stages"])
                out.append(pytest.param(row, run, data.get("notes") or [], id=label))
    return out or [pytest.param(None, None, [], id="no-shared-corpus")]


def _oracle_inputs(path: str, net: Any, phase: str, notes: list[str]) -> dict[str, Any]:
    """The input shapes the oracle gave Caffe (README-corpus.md, "DummyData shapes")."""
    low = path.lower()
    mnist = "mnist" in low or "lenet" in low
    size = 28 if mnist else 32 if "cifar" in low else 227 if (
        "alexnet" in low or "caffenet" in low) else 224  # fmt: skip
    channels = 1 if mnist else 3
    seg = any("label shape variant 'seg'" in n for n in notes)
    override: dict[str, Any] = {}
    for note in notes:
        if note.startswith("DummyData shapes from per-file override: "):
            override = json.loads(note.split(": ", 1)[1])
    if override.get("*", {}).get("#C"):
        channels = override["*"]["#C"]
    inputs: dict[str, list[int]] = dict(override.get(phase, {}))
    for layer in upgrade_net_message(net).layer:
        if layer.bottom or layer.type not in ("Python", "HDF5Data"):
            continue
        batch = int(layer.hdf5_data_param.batch_size) if layer.type == "HDF5Data" else 0
        batch = batch or 1
        for j, top in enumerate(layer.top):
            if top in inputs:
                continue
            if j == 0:
                inputs[top] = [batch, channels, size, size]
            else:
                inputs[top] = [batch, 1, size, size] if seg else [batch]
    return {"channels": channels, "height": size, "width": size, "input_shapes": inputs}


@pytest.mark.parametrize(("row", "run", "notes"), _oracle_runs())
def test_corpus_nets_caffe_initialised_pass_every_shape_check(
    row: Any, run: Any, notes: list[str]
) -> None:
    need_shared()
    assert row is not None
    net = load(CORPUS / row["path"]).message
    opts = _oracle_inputs(row["path"], net, run["phase"], notes)
    shapes = infer_shapes(net, run["phase"], stages=run["stages"], level=run["level"], **opts)
    assert shapes.complete, shapes.stopped
    # the same layers Caffe built, in Caffe's order (inserted splits included)
    assert [ls.name for ls in shapes.layers] == [la["name"] for la in run["layers"]]
    # and the same number of parameter blobs Caffe made for each
    for ours, theirs in zip(shapes.layers, run["layers"], strict=True):
        assert len(ours.params) == len(theirs["param_lr_mult"]), ours.name


def test_corpus_init_coverage() -> None:
    """At least 30 distinct corpus nets are checked by the test above."""
    need_shared()
    files = {p.values[0]["path"] for p in _oracle_runs() if p.values[0] is not None}
    assert len(files) >= 30, len(files)


# --------------------------------------------------------------------------- 3. known sizes


@cache
def _shapes(path: str, **opts: Any) -> Any:
    return infer_shapes(load(CORPUS / path).message, "TEST", **opts)


def _blob(path: str, blob: str, **opts: Any) -> tuple[int, ...]:
    return tuple(_shapes(path, **opts).blobs[blob])


# (corpus file, blob, expected shape, where the number comes from)
KNOWN_SIZES = [
    # AlexNet paper (Krizhevsky et al. 2012), fig. 2: 55x55x96 after conv1, 6x6x256 after pool5
    ("BVLC-caffe/models/bvlc_reference_caffenet/deploy.prototxt", "conv1", (10, 96, 55, 55),
     "AlexNet conv1 55x55"),
    ("BVLC-caffe/models/bvlc_reference_caffenet/deploy.prototxt", "pool5", (10, 256, 6, 6),
     "AlexNet pool5 6x6"),
    ("BVLC-caffe/models/bvlc_reference_caffenet/deploy.prototxt", "prob", (10, 1000),
     "1000 ImageNet classes"),
    ("BVLC-caffe@11a4c16/models/bvlc_alexnet/train_val.prototxt", "pool5", (50, 256, 6, 6),
     "AlexNet pool5 6x6 (TEST batch 50, crop 227)"),
    # GoogLeNet paper (Szegedy et al. 2014), table 1
    ("BVLC-caffe/models/bvlc_googlenet/deploy.prototxt", "inception_3a/output",
     (10, 256, 28, 28), "GoogLeNet inception(3a) 28x28x256"),
    ("BVLC-caffe/models/bvlc_googlenet/deploy.prototxt", "inception_4e/output",
     (10, 832, 14, 14), "GoogLeNet inception(4e) 14x14x832"),
    ("BVLC-caffe/models/bvlc_googlenet/deploy.prototxt", "inception_5b/output",
     (10, 1024, 7, 7), "GoogLeNet 7x7x1024 before pool5"),
    ("BVLC-caffe/models/bvlc_googlenet/deploy.prototxt", "pool5/7x7_s1", (10, 1024, 1, 1),
     "GoogLeNet avg pool 1x1x1024"),
    # ResNet paper (He et al. 2015), table 1: conv2_x 56, conv3_x 28, conv4_x 14, conv5_x 7
    ("KaimingHe-deep-residual-networks/prototxt/ResNet-50-deploy.prototxt", "res2c",
     (1, 256, 56, 56), "ResNet-50 conv2_x 56x56"),
    ("KaimingHe-deep-residual-networks/prototxt/ResNet-50-deploy.prototxt", "res3d",
     (1, 512, 28, 28), "ResNet-50 conv3_x 28x28"),
    ("KaimingHe-deep-residual-networks/prototxt/ResNet-50-deploy.prototxt", "res4f",
     (1, 1024, 14, 14), "ResNet-50 conv4_x 14x14"),
    ("KaimingHe-deep-residual-networks/prototxt/ResNet-50-deploy.prototxt", "res5c",
     (1, 2048, 7, 7), "ResNet-50 conv5_x 7x7"),
    ("KaimingHe-deep-residual-networks/prototxt/ResNet-101-deploy.prototxt", "res5c",
     (1, 2048, 7, 7), "ResNet-101 conv5_x 7x7"),
    ("KaimingHe-deep-residual-networks/prototxt/ResNet-101-deploy.prototxt", "fc1000",
     (1, 1000), "ResNet-101 fc 1000"),
    # VGG paper (Simonyan & Zisserman 2014): 7x7x512 before the fully connected layers
    ("soeaver-caffe-model/cls/vgg/deploy_vgg16-tf.prototxt", "pool5", (1, 512, 7, 7),
     "VGG-16 pool5 7x7x512"),
    # SqueezeNet paper (Iandola et al. 2016), table 1
    ("forresti-SqueezeNet/SqueezeNet_v1.0/deploy.prototxt", "conv1", (10, 96, 111, 111),
     "SqueezeNet conv1 111x111x96"),
    ("forresti-SqueezeNet/SqueezeNet_v1.0/deploy.prototxt", "pool1", (10, 96, 55, 55),
     "SqueezeNet maxpool1 55x55x96"),
    ("forresti-SqueezeNet/SqueezeNet_v1.0/deploy.prototxt", "fire9/concat", (10, 512, 13, 13),
     "SqueezeNet fire9 13x13x512"),
    # MobileNet paper (Howard et al. 2017), table 1: 7x7x1024 before the average pool
    ("shicai-MobileNet-Caffe/mobilenet_deploy.prototxt", "conv6/sep", (1, 1024, 7, 7),
     "MobileNet last conv 7x7x1024"),
    ("shicai-MobileNet-Caffe/mobilenet_deploy.prototxt", "pool6", (1, 1024, 1, 1),
     "MobileNet avg pool 1x1x1024"),
    # Inception-v3 (Szegedy et al. 2015), table 1: 8x8x2048 before the pool
    ("soeaver-caffe-model/cls/inception/deploy_inception-v3.prototxt", "pool_8x8_s1",
     (1, 2048, 1, 1), "Inception-v3 pool over 8x8x2048"),
    ("soeaver-caffe-model/cls/inception/deploy_inception-v3.prototxt", "inception_c2_pool",
     (1, 2048, 8, 8), "Inception-v3 8x8x2048"),
    # Inception-v4 / Inception-ResNet-v2 (Szegedy et al. 2016), figs. 9 and 15: 8x8x1536
    ("soeaver-caffe-model/cls/inception/deploy_inception-v4.prototxt", "pool_8x8_s1",
     (1, 1536, 1, 1), "Inception-v4 avg pool over 8x8x1536"),
    ("soeaver-caffe-model/cls/inception/deploy_inception-resnet-v2.prototxt", "pool_8x8_s1",
     (1, 1536, 1, 1), "Inception-ResNet-v2 avg pool over 8x8x1536"),
    # YOLO paper (Redmon et al. 2016): a 7x7x30 output tensor (1470), last conv 7x7x1024
    ("xingwangsfu-caffe-yolo/prototxt/yolo_small_deploy.prototxt", "conv24", (1, 1024, 7, 7),
     "YOLO last conv 7x7x1024"),
    ("xingwangsfu-caffe-yolo/prototxt/yolo_small_deploy.prototxt", "result", (1, 1470),
     "YOLO 7x7x30"),
    ("xingwangsfu-caffe-yolo/prototxt/yolo_tiny_deploy.prototxt", "result", (1, 1470),
     "YOLO tiny 7x7x30"),
    # MTCNN paper (Zhang et al. 2016), fig. 2: P-Net on 12x12 gives 1x1x2 face scores;
    # R-Net 2 + 4 outputs; O-Net 2 + 4 + 10 (landmarks)
    ("kpzhang93-MTCNN_face_detection_alignment/code/codes/MTCNNv2/model/det1.prototxt",
     "prob1", (1, 2, 1, 1), "P-Net 1x1x2"),
    ("kpzhang93-MTCNN_face_detection_alignment/code/codes/MTCNNv2/model/det1.prototxt",
     "conv4-2", (1, 4, 1, 1), "P-Net 1x1x4 box"),
    ("kpzhang93-MTCNN_face_detection_alignment/code/codes/MTCNNv2/model/det2.prototxt",
     "conv5-2", (1, 4), "R-Net box regression 4"),
    ("kpzhang93-MTCNN_face_detection_alignment/code/codes/MTCNNv2/model/det3.prototxt",
     "conv6-3", (1, 10), "O-Net 5 landmarks"),
    # HED (Xie & Tu 2015): side outputs are cropped back to the input size (500x500 here)
    ("s9xie-hed/examples/hed/deploy.prototxt", "sigmoid-fuse", (1, 1, 500, 500),
     "HED fused map at input resolution"),
    ("s9xie-hed/examples/hed/deploy.prototxt", "upscore-dsn3", (1, 1, 500, 500),
     "HED side output 3 at input resolution"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "blob", "want", "source"), KNOWN_SIZES, ids=[f"{k[0]}:{k[1]}" for k in KNOWN_SIZES]
)
def test_published_sizes(path: str, blob: str, want: tuple[int, ...], source: str) -> None:
    need_shared()
    assert _blob(path, blob) == want, source


def test_classifier_num_output_is_final_channel_count() -> None:
    """For every corpus deploy classifier, the output's channels are its num_output."""
    need_shared()
    checked = 0
    for row in manifest():
        if row["kind"] != "net" or "deploy" not in row["path"] or row["fork_specific"] != "no":
            continue
        f = load(CORPUS / row["path"])
        if f.bound.errors:
            continue
        net = upgrade_net_message(f.message)
        layers = [la for la in net.layer if la.type in ("InnerProduct", "Convolution")]
        if not layers or net.layer[-1].type != "Softmax":
            continue
        shapes = infer_shapes(f.message, "TEST")
        if not shapes.complete:
            continue
        last = layers[-1]
        param = last.inner_product_param if last.type == "InnerProduct" else (
            last.convolution_param)  # fmt: skip
        out = shapes.blobs[net.layer[-1].top[0]]
        axis = 2 if "LRCN" in row["path"] else 1  # LRCN's softmax is over axis 2 (T, N, C)
        assert out[axis] == param.num_output, row["path"]
        checked += 1
    assert checked >= 15, checked


def test_known_param_totals() -> None:
    """LeNet's 431,080 and CaffeNet's 60,965,224 learnable parameters (sum of blob sizes)."""
    need_shared()
    lenet = "BVLC-caffe@11a4c16/examples/mnist/lenet.prototxt"
    assert _shapes(lenet).param_count == 431_080
    # conv1 20x1x5x5+20, conv2 50x20x5x5+50, ip1 500x800+500 (800 = 50x4x4), ip2 10x500+10
    assert _blob(lenet, "pool2") == (64, 50, 4, 4)
    caffenet = "BVLC-caffe/models/bvlc_reference_caffenet/deploy.prototxt"
    assert _shapes(caffenet).param_count == 60_965_224
    assert _shapes(caffenet).layer("fc6").params == ((4096, 9216), (4096,))


# --------------------------------------------------------------------------- rules, unit level


def _one(layer: str, bottom: tuple[int, ...], extra: str = "") -> tuple[Any, ...]:
    dims = " ".join(f"dim: {d}" for d in bottom)
    net = _net(
        f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'
        f"{layer}\n{extra}"
    )
    s = infer_shapes(net, "TEST")
    assert s.complete, s.stopped
    return tuple(s.layers[1].top_shapes)


def test_pooling_rounds_up_like_caffe() -> None:
    # ceil((112 - 3) / 2) + 1 = 56 (GoogLeNet's pool1 on a 112 map); floor would give 55
    pool = 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { %s } }'
    assert _one(pool % "pool: MAX kernel_size: 3 stride: 2", (1, 4, 112, 112)) == (
        (1, 4, 56, 56),)  # fmt: skip
    # round_mode: FLOOR takes floor instead
    assert _one(pool % "pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR",
                (1, 4, 112, 112)) == ((1, 4, 55, 55),)  # fmt: skip
    # pad clipping: ceil((5 + 2 - 2) / 2) + 1 = 4, but (4-1)*2 = 6 >= 5 + 1 -> 3
    assert _one(pool % "pool: AVE kernel_size: 2 stride: 2 pad: 1", (1, 1, 5, 5)) == (
        (1, 1, 3, 3),)  # fmt: skip
    # without the clip it would start a window in the padding; check the non-padded case too
    assert _one(pool % "pool: AVE kernel_size: 2 stride: 2", (1, 1, 5, 5)) == ((1, 1, 3, 3),)
    # global pooling uses the whole plane, whatever its size
    assert _one(pool % "pool: AVE global_pooling: true", (2, 7, 13, 9)) == ((2, 7, 1, 1),)
    # kernel_h / kernel_w, stride_h / stride_w
    assert _one(pool % "kernel_h: 3 kernel_w: 1 stride_h: 3 stride_w: 1",
                (1, 1, 9, 4)) == ((1, 1, 3, 4),)  # fmt: skip


def test_convolution_geometry() -> None:
    conv = 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { %s } }'
    # (227 - 11) / 4 + 1 = 55
    assert _one(conv % "num_output: 96 kernel_size: 11 stride: 4", (1, 3, 227, 227)) == (
        (1, 96, 55, 55),)  # fmt: skip
    # integer division floors: (224 + 6 - 7) / 2 + 1 = 112 (223 / 2 = 111)
    assert _one(conv % "num_output: 64 kernel_size: 7 stride: 2 pad: 3", (1, 3, 224, 224)) == (
        (1, 64, 112, 112),)  # fmt: skip
    # dilation: extent 2*(3-1)+1 = 5 -> 32 - 5 + 1 = 28
    assert _one(conv % "num_output: 2 kernel_size: 3 dilation: 2", (1, 1, 32, 32)) == (
        (1, 2, 28, 28),)  # fmt: skip
    # kernel_h/kernel_w, pad_h/pad_w
    assert _one(conv % "num_output: 2 kernel_h: 1 kernel_w: 5 pad_h: 0 pad_w: 2",
                (1, 1, 10, 10)) == ((1, 2, 10, 10),)  # fmt: skip
    # N-D: 3 spatial axes, per-axis kernel sizes
    assert _one(conv % "num_output: 4 kernel_size: 3 kernel_size: 1 kernel_size: 1",
                (1, 2, 8, 8, 8)) == ((1, 4, 6, 8, 8),)  # fmt: skip
    # deconvolution: 2 * (7 - 1) + 4 - 2 * 1 = 14
    deconv = conv.replace('"Convolution"', '"Deconvolution"')
    assert _one(deconv % "num_output: 21 kernel_size: 4 stride: 2 pad: 1", (1, 21, 7, 7)) == (
        (1, 21, 14, 14),)  # fmt: skip


def test_group_and_param_shapes() -> None:
    net = _net(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 96 '
        "dim: 27 dim: 27 } } }\n"
        'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
        "num_output: 256 kernel_size: 5 pad: 2 group: 2 bias_term: false } }\n"
        'layer { name: "d" type: "Deconvolution" bottom: "y" top: "z" convolution_param { '
        "num_output: 8 kernel_size: 2 stride: 2 group: 2 } }\n"
        'layer { name: "ip" type: "InnerProduct" bottom: "z" top: "f" inner_product_param { '
        "num_output: 10 transpose: true } }\n"
        'layer { name: "ip2" type: "InnerProduct" bottom: "z" top: "g" inner_product_param { '
        "num_output: 3 axis: 2 } }\n"
    )
    s = infer_shapes(net, "TEST")
    assert s.layer("c").params == ((256, 48, 5, 5),)  # channels / group, no bias
    assert s.layer("d").params == ((256, 4, 2, 2), (8,))  # deconv: (C_in, out / group, k, k)
    assert s.blobs["z"] == (1, 8, 54, 54)
    assert s.layer("ip").params == ((8 * 54 * 54, 10), (10,))  # transpose: (K, N)
    assert s.blobs["g"] == (1, 8, 3)  # axis 2 keeps (N, C) and flattens the rest
    assert s.layer("ip2").params == ((3, 54 * 54), (3,))


def test_reshape_flatten_slice_concat_crop() -> None:
    reshape = 'layer { name: "r" type: "Reshape" bottom: "x" top: "y" reshape_param { %s } }'
    assert _one(reshape % "shape { dim: 0 dim: -1 }", (2, 3, 4, 5)) == ((2, 60),)
    assert _one(reshape % "shape { dim: 2 dim: 2 } axis: 1 num_axes: 1", (3, 4, 5)) == (
        (3, 2, 2, 5),)  # fmt: skip
    # a negative axis counts from after the last axis: -1 appends, -3 starts at axis 1 here
    assert _one(reshape % "shape { dim: -1 } axis: -3", (3, 4, 5)) == ((3, 20),)
    assert _one(reshape % "shape { dim: 1 } axis: -1", (3, 4, 5)) == ((3, 4, 5, 1),)
    flat = 'layer { name: "f" type: "Flatten" bottom: "x" top: "y" %s }'
    assert _one(flat % "", (2, 3, 4, 5)) == ((2, 60),)
    assert _one(flat % "flatten_param { axis: 2 }", (2, 3, 4, 5)) == ((2, 3, 20),)
    sl = 'layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" top: "c" %s }'
    assert _one(sl % "slice_param { slice_point: 1 slice_point: 4 }", (2, 6, 3)) == (
        (2, 1, 3), (2, 3, 3), (2, 2, 3))  # fmt: skip
    assert _one(sl % "slice_param { axis: -1 }", (2, 3, 9)) == ((2, 3, 3),) * 3
    concat = (
        'layer { name: "s" type: "Split" bottom: "x" top: "a" top: "b" }\n'
        'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" %s }'
    )
    net = _net(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 '
        "} } }\n" + concat % "concat_param { concat_dim: 2 }"
    )
    assert infer_shapes(net, "TEST").blobs["y"] == (2, 3, 8)
    crop = (
        'layer { name: "in2" type: "Input" top: "ref" input_param { shape { dim: 1 dim: 1 '
        'dim: 5 dim: 6 } } }\nlayer { name: "k" type: "Crop" bottom: "x" bottom: "ref" '
        'top: "y" crop_param { %s } }'
    )
    net = _net(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 21 '
        "dim: 8 dim: 9 } } }\n" + crop % "axis: 2 offset: 3"
    )
    assert infer_shapes(net, "TEST").blobs["y"] == (1, 21, 5, 6)
    # the crop must fit: 8 - 4 < 5
    bad = _net(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 21 '
        "dim: 8 dim: 9 } } }\n" + crop % "axis: 2 offset: 4"
    )
    with pytest.raises(ShapeError, match="the crop for dimension 2 is out-of-bounds"):
        infer_shapes(bad, "TEST")


def test_broadcast_layers_and_small_ones() -> None:
    net = _net(
        'layer { name: "in" type: "Input" top: "x" top: "s" input_param { shape { dim: 2 '
        "dim: 3 dim: 4 dim: 5 } shape { dim: 3 dim: 4 } } }\n"
        'layer { name: "sc" type: "Scale" bottom: "x" top: "a" scale_param { bias_term: true } }\n'
        'layer { name: "sc2" type: "Scale" bottom: "x" bottom: "s" top: "b" scale_param { '
        "bias_term: true } }\n"
        'layer { name: "sc3" type: "Scale" bottom: "x" top: "c" scale_param { axis: 0 '
        "num_axes: -1 } }\n"
        'layer { name: "bi" type: "Bias" bottom: "x" top: "d" bias_param { axis: 2 '
        "num_axes: 2 } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "e" }\n'
        'layer { name: "pr" type: "PReLU" bottom: "x" top: "f" }\n'
        'layer { name: "pr2" type: "PReLU" bottom: "x" top: "g" prelu_param { channel_shared: '
        "true } }\n"
        'layer { name: "am" type: "ArgMax" bottom: "x" top: "h" argmax_param { top_k: 2 } }\n'
        'layer { name: "am2" type: "ArgMax" bottom: "x" top: "i" argmax_param { axis: 1 } }\n'
        'layer { name: "t" type: "Tile" bottom: "x" top: "j" tile_param { axis: 2 tiles: 3 } }\n'
        'layer { name: "rd" type: "Reduction" bottom: "x" top: "k" reduction_param { axis: 2 } }\n'
        'layer { name: "rd0" type: "Reduction" bottom: "x" top: "l" }\n'
        'layer { name: "sm" type: "Softmax" bottom: "x" top: "m" }\n'
        'layer { name: "lrn" type: "LRN" bottom: "x" top: "n" }\n'
    )
    s = infer_shapes(net, "TEST")
    assert s.layer("sc").params == ((3,), (3,))
    assert s.layer("sc2").params == ((3, 4),)  # scale from bottom[1]; bias shaped like it
    assert s.layer("sc3").params == ((2, 3, 4, 5),)
    assert s.layer("bi").params == ((4, 5),)
    assert s.layer("bn").params == ((3,), (3,), (1,))
    assert s.layer("pr").params == ((3,),)
    assert s.layer("pr2").params == ((),)
    assert s.blobs["h"] == (2, 1, 2, 1)  # max(num_axes, 3) axes: (N, 1, top_k, 1)
    assert s.blobs["i"] == (2, 1, 4, 5)
    assert s.blobs["j"] == (2, 3, 12, 5)
    assert s.blobs["k"] == (2, 3)
    assert s.blobs["l"] == ()
    assert s.blobs["m"] == (2, 3, 4, 5)


def test_losses_and_accuracy() -> None:
    net = _net(
        'layer { name: "in" type: "Input" top: "x" top: "lab" input_param { shape { dim: 4 '
        "dim: 10 } shape { dim: 4 } } }\n"
        'layer { name: "s" type: "Split" bottom: "x" top: "x1" top: "x2" }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x1" bottom: "lab" top: "l" }\n'
        'layer { name: "acc" type: "Accuracy" bottom: "x2" bottom: "lab" top: "a" top: "pc" }\n'
    )
    s = infer_shapes(net, "TEST")
    assert s.blobs["l"] == ()
    assert s.blobs["a"] == ()
    assert s.blobs["pc"] == (10,)
    bad = _net(
        'layer { name: "in" type: "Input" top: "x" top: "lab" input_param { shape { dim: 4 '
        "dim: 10 } shape { dim: 5 } } }\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "lab" }\n'
    )
    with pytest.raises(ShapeError, match="same first dimension"):
        infer_shapes(bad, "TEST")
    # The internal Softmax copies the LayerParameter, loss weights included, and has one top:
    # a second top (which needs a second loss weight) is refused (issue 16, real Caffe's text).
    two_tops = _net(
        'layer { name: "in" type: "Input" top: "x" top: "lab" input_param { shape { dim: 4 '
        "dim: 10 } shape { dim: 4 } } }\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "lab" top: "l" '
        'top: "p" loss_weight: 1 loss_weight: 0 }\n'
    )
    with pytest.raises(ShapeError) as err:
        infer_shapes(two_tops, "TEST")
    assert err.value.message == (
        "Check failed: top.size() == num_loss_weights (1 vs. 2) loss_weight must be "
        "unspecified or specified once per top blob."
    )
    assert err.value.location == "layer.hpp"


def test_caffe_checks_are_reported_with_caffe_text() -> None:
    net = _net(
        'layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 1 '
        "dim: 2 dim: 3 } shape { dim: 1 dim: 2 dim: 4 } } }\n"
        'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "c" }\n'
    )
    with pytest.raises(ShapeError) as err:
        infer_shapes(net, "TEST")
    assert err.value.layer == "sum"
    assert "bottom[0]: 1 2 3 (6), bottom[1]: 1 2 4 (8)" in str(err.value)
    assert err.value.location == "eltwise_layer.cpp"


def test_unknown_type_stops_and_keeps_earlier_shapes() -> None:
    net = _net(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 '
        "dim: 8 } } }\n"
        'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
        "num_output: 4 kernel_size: 3 } }\n"
        'layer { name: "roi" type: "ROIPooling" bottom: "y" top: "z" }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "z" top: "w" inner_product_param { '
        "num_output: 2 } }\n"
    )
    s = infer_shapes(net, "TEST")
    assert not s.complete
    assert s.stopped is not None
    assert s.stopped.startswith("shape unknown after roi (type ROIPooling)")
    assert s.blobs == {"x": (1, 3, 8, 8), "y": (1, 4, 6, 6)}
    assert s.unknown_layers == ["ip"]


def test_data_layers() -> None:
    net = _net(
        'layer { name: "d" type: "Data" top: "data" top: "label" transform_param { crop_size: 227 }'
        " data_param { batch_size: 32 } }\n"
        'layer { name: "i" type: "ImageData" top: "im" top: "l2" image_data_param { '
        "batch_size: 5 new_height: 64 new_width: 48 is_color: false } }\n"
        'layer { name: "m" type: "MemoryData" top: "md" top: "l3" memory_data_param { '
        "batch_size: 2 channels: 3 height: 10 width: 11 } }\n"
        'layer { name: "dd" type: "DummyData" top: "a" top: "b" dummy_data_param { num: 2 '
        "channels: 3 height: 4 width: 5 } }\n"
        'layer { name: "sil" type: "Silence" bottom: "label" bottom: "l2" bottom: "l3" '
        'bottom: "a" bottom: "b" bottom: "data" bottom: "im" bottom: "md" }\n'
    )
    s = infer_shapes(net, "TEST")
    assert s.blobs["data"] == (32, 3, 227, 227)
    assert s.blobs["label"] == (32,)
    assert s.layer("d").assumptions  # channels assumed 3: said, not hidden
    assert s.blobs["im"] == (5, 1, 64, 48)
    assert s.blobs["md"] == (2, 3, 10, 11)
    assert s.blobs["a"] == s.blobs["b"] == (2, 3, 4, 5)
    s = infer_shapes(net, "TEST", batch=1, channels=1)
    assert s.blobs["data"] == (1, 1, 227, 227)
    no_crop = _net('layer { name: "d" type: "Data" top: "data" data_param { batch_size: 8 } }')
    s = infer_shapes(no_crop, "TEST")
    assert not s.complete and "--set height=H --set width=W" in (s.stopped or "")
    s = infer_shapes(no_crop, "TEST", height=28, width=28, channels=1)
    assert s.blobs["data"] == (8, 1, 28, 28)
    hdf5 = _net('layer { name: "h" type: "HDF5Data" top: "x" hdf5_data_param { batch_size: 4 } }')
    assert not infer_shapes(hdf5, "TEST").complete
    assert infer_shapes(hdf5, "TEST", {"x": [4, 7]}).blobs["x"] == (4, 7)


def test_shape_string_matches_blob_shape_string() -> None:
    assert shape_string((2, 3, 3, 3)) == "2 3 3 3 (54)"
    assert shape_string(()) == "(1)"
    assert math.prod(()) == 1
