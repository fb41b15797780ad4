"""Pretrained-weight check (rewriter.caffe.weights) on generated .caffemodel files.

The weight files are built with the schema's own message classes (``caffe.NetParameter``,
``LayerParameter``, ``BlobProto``) and written to tmp_path. Their blob shapes are the published
shapes of the pretrained models (LeNet from Caffe's MNIST tutorial; CaffeNet's as in
``bvlc_reference_caffenet.caffemodel``), not shapes computed by this project. Caffe's wording of
the two fatal errors is the one in ``net.cpp`` (``Net::CopyTrainedLayersFrom``).
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from rewriter.api import load
from rewriter.caffe.weights import (
    BlobInfo,
    WeightError,
    check_weights,
    read_caffemodel,
    shape_equals,
)
from rewriter.schema.runtime import default_schema
from tests.conftest import CORPUS, need_shared, run_cli

Shape = tuple[int, ...]

# Caffe's MNIST tutorial LeNet: conv1 20 5x5, conv2 50 5x5, ip1 500 (from 50x4x4), ip2 10.
LENET: list[tuple[str, str, list[Shape]]] = [
    ("mnist", "Data", []),
    ("conv1", "Convolution", [(20, 1, 5, 5), (20,)]),
    ("pool1", "Pooling", []),
    ("conv2", "Convolution", [(50, 20, 5, 5), (50,)]),
    ("pool2", "Pooling", []),
    ("ip1", "InnerProduct", [(500, 800), (500,)]),
    ("relu1", "ReLU", []),
    ("ip2", "InnerProduct", [(10, 500), (10,)]),
    ("loss", "SoftmaxWithLoss", []),
]
LENET_NET = "BVLC-caffe/examples/mnist/lenet_train_test.prototxt"
MNIST = {"channels": 1, "height": 28, "width": 28}

# bvlc_reference_caffenet.caffemodel (conv2/4/5 have group 2)
CAFFENET: list[tuple[str, str, list[Shape]]] = [
    ("conv1", "Convolution", [(96, 3, 11, 11), (96,)]),
    ("conv2", "Convolution", [(256, 48, 5, 5), (256,)]),
    ("conv3", "Convolution", [(384, 256, 3, 3), (384,)]),
    ("conv4", "Convolution", [(384, 192, 3, 3), (384,)]),
    ("conv5", "Convolution", [(256, 192, 3, 3), (256,)]),
    ("fc6", "InnerProduct", [(4096, 9216), (4096,)]),
    ("fc7", "InnerProduct", [(4096, 4096), (4096,)]),
    ("fc8", "InnerProduct", [(1000, 4096), (1000,)]),
]


def _cls(name: str) -> Any:
    return default_schema().message_class(name)


def write_model(path: Path, layers: list[tuple[str, str, list[Shape]]], **tweaks: Any) -> Path:
    """A V2 caffemodel with real float data (small nets)."""
    net = _cls("caffe.NetParameter")()
    net.name = "generated"
    for name, ltype, shapes in layers:
        layer = net.layer.add()
        layer.name = name
        layer.type = ltype
        for shape in shapes:
            blob = layer.blobs.add()
            blob.shape.dim.extend(shape)
            blob.data.extend([0.25] * math.prod(shape))
    path.write_bytes(net.SerializeToString())
    return path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def write_sparse_model(path: Path, layers: list[tuple[str, str, list[Shape]]]) -> Path:
    """A full-size caffemodel whose float payloads are file holes (sparse: fast, no disk).

    Headers (LayerParameter name/type, BlobProto shape) are serialised by the schema classes;
    only the outer length framing and the packed ``data`` field header are written by hand.
    """
    layer_cls, blob_cls = _cls("caffe.LayerParameter"), _cls("caffe.BlobProto")
    with path.open("wb") as fh:
        net = _cls("caffe.NetParameter")()
        net.name = "sparse"
        fh.write(net.SerializeToString())
        for name, ltype, shapes in layers:
            head = layer_cls()
            head.name, head.type = name, ltype
            head_bytes = head.SerializeToString()
            blobs = []
            for shape in shapes:
                b = blob_cls()
                b.shape.dim.extend(shape)
                n = 4 * math.prod(shape)
                prefix = b.SerializeToString() + b"\x2a" + _varint(n)  # field 5, packed floats
                blobs.append((prefix, n))
            inner = [len(p) + n for p, n in blobs]
            body = len(head_bytes) + sum(1 + len(_varint(x)) + x for x in inner)
            fh.write(b"\xa2\x06" + _varint(body) + head_bytes)  # field 100, wire type 2
            for (prefix, n), size in zip(blobs, inner, strict=True):
                fh.write(b"\x3a" + _varint(size) + prefix)  # field 7 (blobs)
                fh.seek(n, os.SEEK_CUR)
        fh.truncate()
    return path


def _rows(layers: list[list[Any]]) -> list[tuple[str, str, list[Shape]]]:
    return [(str(a), str(b), list(c)) for a, b, c in layers]


def _lenet() -> Any:
    need_shared()
    return load(CORPUS / LENET_NET)


# --------------------------------------------------------------------------- the three lists


def test_finetuning_lists_and_shape_mismatch(tmp_path: Path) -> None:
    """Rename one layer, reshape another, add an unrelated one: copied / filler / unused."""
    layers = [list(x) for x in LENET]
    layers[7][0] = "ip2_old"  # renamed in the file: the net's ip2 gets no weights
    layers.append(["fc_extra", "InnerProduct", [(3, 3), (3,)]])
    model = write_model(tmp_path / "lenet.caffemodel", _rows(layers))
    report = check_weights(_lenet(), model, phase="TRAIN", **MNIST)
    assert [c.name for c in report.copied] == ["conv1", "conv2", "ip1"]
    assert [(f.name, f.reason) for f in report.from_filler] == [("ip2", "not in the file")]
    assert report.from_filler[0].fillers == ("xavier", "constant")
    assert report.from_filler[0].shapes == ((10, 500), (10,))
    assert [u.name for u in report.unused] == ["ip2_old", "fc_extra"]
    assert report.ok and report.fatal is None
    assert report.matched_without_params == 5  # mnist, pool1, pool2, relu1, loss

    # now a reshaped layer: ip1 saved for 1024 inputs
    layers[5][2] = [(500, 1024), (500,)]
    model = write_model(tmp_path / "lenet2.caffemodel", _rows(layers))
    report = check_weights(_lenet(), model, phase="TRAIN", **MNIST)
    assert not report.ok
    assert report.fatal is not None
    assert report.fatal.message == (
        "Cannot copy param 0 weights from layer 'ip1'; shape mismatch.  Source param shape is "
        "500 1024 (512000); target param shape is 500 800 (400000). To learn this layer's "
        "parameters from scratch rather than copying from a saved net, rename the layer."
    )
    assert [c.name for c in report.copied] == ["conv1", "conv2"]
    assert "ip1" not in [f.name for f in report.from_filler]


def test_blob_count_mismatch(tmp_path: Path) -> None:
    layers = [list(x) for x in LENET]
    layers[1][2] = [(20, 1, 5, 5)]  # conv1 saved without its bias (bias_term: false)
    model = write_model(tmp_path / "m.caffemodel", _rows(layers))
    report = check_weights(_lenet(), model, phase="TRAIN", **MNIST)
    assert report.fatal is not None and report.fatal.kind == "count"
    assert report.fatal.message == (
        "Check failed: target_blobs.size() == source_layer.blobs_size() (2 vs. 1) "
        "Incompatible number of blobs for layer conv1"
    )


def test_stored_value_count_must_match(tmp_path: Path) -> None:
    net = _cls("caffe.NetParameter")()
    layer = net.layer.add()
    layer.name, layer.type = "conv1", "Convolution"
    for shape, n in (((20, 1, 5, 5), 500), ((20,), 19)):
        blob = layer.blobs.add()
        blob.shape.dim.extend(shape)
        blob.data.extend([0.0] * n)
    path = tmp_path / "short.caffemodel"
    path.write_bytes(net.SerializeToString())
    report = check_weights(_lenet(), path, phase="TRAIN", **MNIST)
    assert report.fatal is not None and report.fatal.kind == "stored"
    assert "count_ == proto.data_size() (20 vs. 19)" in report.fatal.message


def test_caffenet_weights_into_flickr_style_finetuning(tmp_path: Path) -> None:
    """Caffe's own fine-tuning example: fc8 becomes fc8_flickr (20 styles), trained anew."""
    need_shared()
    net = load(CORPUS / "BVLC-caffe@11a4c16/models/finetune_flickr_style/train_val.prototxt")
    model = write_sparse_model(tmp_path / "caffenet.caffemodel", CAFFENET)
    assert model.stat().st_size > 230_000_000  # the real model's size
    report = check_weights(net, model, phase="TRAIN")
    assert [c.name for c in report.copied] == [n for n, _, _ in CAFFENET[:7]]
    assert [f.name for f in report.from_filler] == ["fc8_flickr"]
    assert report.from_filler[0].shapes == ((20, 4096), (20,))
    assert report.from_filler[0].fillers == ("gaussian", "constant")
    assert [u.name for u in report.unused] == ["fc8"]
    assert report.ok
    assert sum(c.param_count for c in report.copied) == 56_868_224


def test_deploy_net_takes_the_train_val_weights(tmp_path: Path) -> None:
    """deploy(train_val) keeps every learnable layer's name and shape: all weights load."""
    need_shared()
    from rewriter.api import read
    from rewriter.recipes.deploy import deploy_document

    path = CORPUS / "BVLC-caffe@11a4c16/models/bvlc_reference_caffenet/train_val.prototxt"
    result = deploy_document(read(path))
    model = write_sparse_model(tmp_path / "caffenet.caffemodel", CAFFENET)
    report = check_weights(result.document, model, phase="TEST")
    assert report.ok and not report.from_filler and not report.unused
    assert len(report.copied) == 8


def test_graph_and_message_api(tmp_path: Path) -> None:
    """What ``explain --weights`` / ``--shapes`` call: a Graph plus the message it came from."""
    from rewriter.caffe.shapes import infer_shapes

    f = _lenet()
    graph = f.graph("TEST")
    shapes = infer_shapes(graph, "TEST", message=f.message, **MNIST)
    assert shapes.blobs["pool2"] == (100, 50, 4, 4)  # TEST batch 100
    model = write_model(tmp_path / "m.caffemodel", LENET)
    report = check_weights(graph, model, message=f.message, net_label="lenet", **MNIST)
    assert report.phase == "TEST" and report.net == "lenet"
    assert len(report.copied) == 4 and report.ok


# --------------------------------------------------------------------------- formats


def test_v1_file_with_legacy_dims(tmp_path: Path) -> None:
    """Old caffemodels: V1 ``layers`` with 4-D num/channels/height/width blob fields."""
    net = _cls("caffe.NetParameter")()
    v1 = _cls("caffe.V1LayerParameter")
    for name, ltype, legacy in (
        ("conv1", v1.CONVOLUTION, [(20, 1, 5, 5), (1, 1, 1, 20)]),
        ("ip1", v1.INNER_PRODUCT, [(1, 1, 500, 800), (1, 1, 1, 500)]),
        ("ip2", v1.INNER_PRODUCT, [(1, 1, 10, 800), (1, 1, 1, 10)]),  # wrong K
    ):
        layer = net.layers.add()
        layer.name, layer.type = name, ltype
        for n, c, h, w in legacy:
            blob = layer.blobs.add()
            blob.num, blob.channels, blob.height, blob.width = n, c, h, w
            blob.data.extend([0.0] * (n * c * h * w))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    wf = read_caffemodel(path)
    assert wf.format == "V1"
    assert [(la.name, la.type) for la in wf.layers] == [
        ("conv1", "Convolution"), ("ip1", "InnerProduct"), ("ip2", "InnerProduct")]  # fmt: skip
    report = check_weights(_lenet(), path, phase="TRAIN", **MNIST)
    assert [c.name for c in report.copied] == ["conv1", "ip1"]
    assert report.fatal is not None
    assert report.fatal.message.startswith(
        "Cannot copy param 0 weights from layer 'ip2'; shape mismatch.  Source param shape is "
        "1 1 10 800 (8000); target param shape is 10 500 (5000)."
    )


def test_shape_equals_is_blob_shape_equals() -> None:
    legacy = BlobInfo((1, 1, 10, 500), (1, 1, 10, 500), 5000)
    assert shape_equals((10, 500), legacy)
    assert shape_equals((1, 10, 500), legacy)
    assert not shape_equals((2, 1, 1, 10, 500), legacy)  # more than 4 axes never matches
    assert not shape_equals((500, 10), legacy)
    modern = BlobInfo((10, 500), None, 5000)
    assert shape_equals((10, 500), modern) and not shape_equals((1, 1, 10, 500), modern)


def test_v0_file(tmp_path: Path) -> None:
    net = _cls("caffe.NetParameter")()
    for name, ltype, shape in (("conv1", "conv", (20, 1, 5, 5)), ("pad1", "padding", None)):
        conn = net.layers.add()
        conn.layer.name, conn.layer.type = name, ltype
        if shape:
            blob = conn.layer.blobs.add()
            blob.num, blob.channels, blob.height, blob.width = shape
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(net.SerializeToString())
    wf = read_caffemodel(path)
    assert wf.format == "V0"
    assert [(la.name, [b.shape for b in la.blobs]) for la in wf.layers] == [
        ("conv1", [(20, 1, 5, 5)])]  # the padding layer goes, as in UpgradeV0Net  # fmt: skip


def test_unreadable_files(tmp_path: Path) -> None:
    good = write_model(tmp_path / "g.caffemodel", LENET)
    data = good.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightError, match="truncated"):
        read_caffemodel(cut)
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"name: 'a text file'\n")
    with pytest.raises(WeightError, match=r"a text file \(a prototxt\?\), not a binary"):
        read_caffemodel(junk)
    junk.write_bytes(b"\x0a\x05LeNet\xff\xff")
    with pytest.raises(WeightError, match="not a valid caffemodel"):
        read_caffemodel(junk)
    with pytest.raises(WeightError, match="HDF5"):
        read_caffemodel(tmp_path / "w.h5")
    with pytest.raises(WeightError, match="cannot read"):
        read_caffemodel(tmp_path / "missing.caffemodel")
    both = _cls("caffe.NetParameter")()
    both.layer.add().name = "a"
    both.layers.add().name = "b"
    mixed = tmp_path / "mixed.caffemodel"
    mixed.write_bytes(both.SerializeToString())
    with pytest.raises(WeightError, match="both 'layer' and 'layers'"):
        read_caffemodel(mixed)


# --------------------------------------------------------------------------- size


def test_streaming_reader_memory_is_bounded(tmp_path: Path) -> None:
    """A 1.1 GB model (three CaffeNets and a VGG-16 fc6): bounded memory, payloads untouched."""
    big = [(f"{n}_{k}", t, s) for k in range(3) for n, t, s in CAFFENET] + [
        ("fc6_big", "InnerProduct", [(4096, 25088), (4096,)])]  # fmt: skip
    model = write_sparse_model(tmp_path / "big.caffemodel", big)
    size = model.stat().st_size
    assert size > 1_000_000_000
    tracemalloc.start()
    t0 = time.perf_counter()
    wf = read_caffemodel(model)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(wf.layers) == 25
    assert wf.layers[-1].blobs[0].shape == (4096, 25088)
    assert wf.layers[-1].blobs[0].stored == 4096 * 25088
    assert peak < 2_000_000, peak  # bytes: independent of the payload size
    assert elapsed < 5.0, elapsed


# --------------------------------------------------------------------------- CLI


def test_cli_weights_and_shapes(tmp_path: Path) -> None:
    need_shared()
    import json

    net = str(CORPUS / LENET_NET)
    sets = ["--set", "channels=1", "--set", "height=28", "--set", "width=28"]
    ok = write_model(tmp_path / "ok.caffemodel", LENET)
    r = run_cli("weights", net, str(ok), *sets)
    assert r.returncode == 0, r.stderr
    assert "copied from the file: 4 layer(s), 431,080 parameters" in r.stdout
    layers = [list(x) for x in LENET]
    layers[3][2] = [(50, 20, 3, 3), (50,)]
    bad = write_model(tmp_path / "bad.caffemodel", _rows(layers))
    r = run_cli("weights", net, str(bad), *sets, "--format", "json")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["errors"][0]["layer"] == "conv2"
    assert data["errors"][0]["source_shapes"] == [[50, 20, 3, 3], [50]]
    r = run_cli("weights", net, str(tmp_path / "nope.caffemodel"), *sets)
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("shapes", net, *sets, "--phase", "TRAIN")
    assert r.returncode == 0
    assert "pool2  " in r.stdout and "(64, 50, 4, 4)" in r.stdout
    assert "total learnable parameters: 431,080" in r.stdout
    r = run_cli("shapes", net, "--format", "json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["stopped"].startswith("shape unknown after mnist (type Data)")
    r = run_cli("shapes", net, "--phase", "VAL")
    assert r.returncode == 2
