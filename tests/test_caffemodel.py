"""Streaming ``.caffemodel`` upgrade against the message API.

Each test builds a NetParameter with the schema's classes (weights included), writes it, upgrades
it with :func:`rewriter.upgrade.caffemodel.upgrade_caffemodel` (which never parses the weights) and
compares with parsing the whole file and upgrading the message in memory: the colleague's
``graph.upgrade_net_message`` (Caffe's V1 -> V2 / inputs / BatchNorm rules) where it applies, and
:func:`rewriter.upgrade.document.upgrade_net_message_caffe` (checked against real Caffe in
test_upgrade_oracle.py) for the data-transformation and V0 rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest

from rewriter.caffe.graph import upgrade_net_message
from rewriter.schema.runtime import default_schema
from rewriter.upgrade.caffemodel import CaffemodelError, scan, upgrade_caffemodel
from rewriter.upgrade.document import upgrade_net_message_caffe

from .conftest import REPO

V1 = {"CONVOLUTION": 4, "DATA": 5, "INNER_PRODUCT": 14, "RELU": 18, "SOFTMAX_LOSS": 21}


def _cls(name: str) -> Any:
    return default_schema().message_class(name)


def _blob(blob: Any, n: int, seed: float, legacy_shape: bool = True) -> None:
    if legacy_shape:
        blob.num, blob.channels, blob.height, blob.width = 1, 1, 1, n
    else:
        blob.shape.dim.append(n)
    blob.data.extend(array("f", (seed + i * 0.5 for i in range(n))))


def v1_net(data_fields: bool = True, n: int = 64) -> Any:
    net = _cls("caffe.NetParameter")()
    net.name = "v1"
    net.input.append("unused")  # what old Net::ToProto saved: names without dims
    data = net.layers.add()
    data.name, data.type = "data", V1["DATA"]
    data.top.extend(["data", "label"])
    data.data_param.source = "lmdb"
    data.data_param.batch_size = 2
    if data_fields:
        data.data_param.scale = 0.5
        data.data_param.crop_size = 3
    conv = net.layers.add()
    conv.name, conv.type = "conv", V1["CONVOLUTION"]
    conv.bottom.append("data")
    conv.top.append("conv")
    conv.param.extend(["w", "b"])
    conv.blob_share_mode.append(1)
    conv.blobs_lr.extend([1.0, 2.0])
    conv.weight_decay.extend([1.0, 0.0])
    conv.convolution_param.num_output = 4
    _blob(conv.blobs.add(), n, 1.0)
    _blob(conv.blobs.add(), 4, 2.0, legacy_shape=False)
    relu = net.layers.add()
    relu.name, relu.type = "relu", V1["RELU"]
    relu.bottom.append("conv")
    relu.top.append("conv")
    ip = net.layers.add()
    ip.name, ip.type = "ip", V1["INNER_PRODUCT"]
    ip.bottom.append("conv")
    ip.top.append("ip")
    ip.blobs_lr.append(0.0)
    ip.inner_product_param.num_output = 2
    _blob(ip.blobs.add(), n, 3.0)
    _blob(ip.blobs.add(), 2, 4.0)
    loss = net.layers.add()
    loss.name, loss.type = "loss", V1["SOFTMAX_LOSS"]
    loss.bottom.extend(["ip", "label"])
    loss.top.append("loss")
    return net


def v0_net() -> Any:
    net = _cls("caffe.NetParameter")()
    net.name = "v0"
    net.input.append("data")
    net.input_dim.extend([1, 3, 8, 8])
    pad = net.layers.add()
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad1", "padding", 2
    pad.bottom.append("data")
    pad.top.append("pad1")
    conv = net.layers.add()
    conv.layer.name, conv.layer.type = "conv1", "conv"
    conv.layer.num_output, conv.layer.kernelsize = 4, 3
    conv.layer.blobs_lr.extend([1.0, 2.0])
    _blob(conv.layer.blobs.add(), 108, 0.25)
    _blob(conv.layer.blobs.add(), 4, 0.5)
    conv.bottom.append("pad1")
    conv.top.append("conv1")
    pool = net.layers.add()
    pool.layer.name, pool.layer.type, pool.layer.pool = "pool1", "pool", 1
    pool.layer.kernelsize = 2
    pool.bottom.append("conv1")
    pool.top.append("pool1")
    return net


def write(tmp_path: Path, net: Any, name: str = "in.caffemodel") -> Path:
    path = tmp_path / name
    path.write_bytes(net.SerializeToString(deterministic=True))
    return path


def upgraded(tmp_path: Path, src: Path) -> tuple[Any, bytes, Any]:
    dst = tmp_path / "out.caffemodel"
    result = upgrade_caffemodel(src, dst)
    data = dst.read_bytes()
    return _cls("caffe.NetParameter").FromString(data), data, result


def test_v1_weights_stream_to_v2_like_the_message_api(tmp_path: Path) -> None:
    net = v1_net(data_fields=False)
    src = write(tmp_path, net)
    out, data, result = upgraded(tmp_path, src)
    assert result.changed and result.blobs == 4
    assert out == upgrade_net_message(net)  # graph.py's in-memory V1 -> V2 (+ inputs)
    want = upgrade_net_message_caffe(net).message
    assert out == want
    assert data == want.SerializeToString(deterministic=True)  # canonical field order too
    assert [len(layer.blobs) for layer in out.layer] == [0, 2, 0, 2, 0]
    assert out.layer[1].blobs[0] == net.layers[1].blobs[0]
    assert out.layer[1].param[0].name == "w" and out.layer[1].param[0].share_mode == 1
    assert len(out.input) == 0 and len(out.layers) == 0


def test_data_transformation_fields_move_like_caffe(tmp_path: Path) -> None:
    net = v1_net(data_fields=True)
    out, data, result = upgraded(tmp_path, write(tmp_path, net))
    assert data == upgrade_net_message_caffe(net).message.SerializeToString(deterministic=True)
    layer = out.layer[0]
    assert layer.transform_param.scale == 0.5 and layer.transform_param.crop_size == 3
    assert not layer.data_param.HasField("scale") and layer.data_param.batch_size == 2
    assert result.messages[0].startswith(
        "Attempting to upgrade input file specified using deprecated transformation parameters"
    )


def test_v0_weights_follow_their_layer_through_padding_removal(tmp_path: Path) -> None:
    net = v0_net()
    out, data, _ = upgraded(tmp_path, write(tmp_path, net))
    want = upgrade_net_message_caffe(net).message
    assert data == want.SerializeToString(deterministic=True)
    assert [layer.name for layer in out.layer] == ["input", "conv1", "pool1"]
    conv = out.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.convolution_param.pad) == [2]
    assert list(conv.blobs) == list(net.layers[1].layer.blobs)
    assert [p.lr_mult for p in conv.param] == [1.0, 2.0]


def test_batchnorm_and_already_current_models(tmp_path: Path) -> None:
    net = _cls("caffe.NetParameter")()
    bn = net.layer.add()
    bn.name, bn.type = "bn", "BatchNorm"
    bn.bottom.append("x")
    bn.top.append("x")
    for k in range(3):
        bn.param.add().lr_mult = 1.0
        _blob(bn.blobs.add(), 8, float(k), legacy_shape=False)
    src = write(tmp_path, net)
    out, data, result = upgraded(tmp_path, src)
    assert result.changed
    assert out == upgrade_net_message(net)
    assert all(p.lr_mult == 0 and p.decay_mult == 0 for p in out.layer[0].param)
    assert list(out.layer[0].blobs) == list(net.layer[0].blobs)

    current = tmp_path / "current.caffemodel"
    current.write_bytes(data)
    again = upgrade_caffemodel(current, tmp_path / "copy.caffemodel")
    assert not again.changed
    assert (tmp_path / "copy.caffemodel").read_bytes() == data


def test_refusals_and_broken_files(tmp_path: Path) -> None:
    net = v1_net()
    net.layer.add().name = "new_style"
    with pytest.raises(CaffemodelError, match="Refusing to upgrade inconsistent NetParameter"):
        upgrade_caffemodel(write(tmp_path, net, "mixed.caffemodel"))
    good = v1_net().SerializeToString()
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CaffemodelError, match="truncated"):
        upgrade_caffemodel(truncated)
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\x0f\xff\xff\xff" * 8)
    with pytest.raises(CaffemodelError):
        upgrade_caffemodel(garbage)
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written output left behind


def test_scan_reads_no_weights(tmp_path: Path) -> None:
    net = v1_net(n=50_000)
    src = write(tmp_path, net)
    s = scan(src)
    assert s.size == src.stat().st_size
    assert sum(len(ref.light) for ref in s.refs) < 2_000
    assert [len(ref.blobs) for ref in s.refs] == [0, 2, 0, 2, 0]
    assert all(len(layer.blobs) == 0 for layer in s.net.layers)


_MEASURE = """
import json, resource, sys
from rewriter.upgrade.caffemodel import upgrade_caffemodel
import rewriter.upgrade.document, rewriter.caffe.graph, rewriter.schema.runtime
rewriter.schema.runtime.default_schema()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = upgrade_caffemodel(sys.argv[1], sys.argv[2])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "blobs": r.blobs}))
"""


def make_big_v1(path: Path, layers: int, floats_per_layer: int) -> None:
    """A V1 model written one layer at a time (never the whole message in memory)."""
    net_cls = _cls("caffe.NetParameter")
    with path.open("wb") as fh:
        head = net_cls()
        head.name = "big"
        head.input.append("data")
        fh.write(head.SerializeToString())
        bottom = "data"
        for i in range(layers):
            one = net_cls()
            layer = one.layers.add()
            layer.name, layer.type = f"ip{i}", V1["INNER_PRODUCT"]
            layer.bottom.append(bottom)
            layer.top.append(f"ip{i}")
            layer.blobs_lr.extend([1.0, 2.0])
            layer.inner_product_param.num_output = 8
            _blob(layer.blobs.add(), floats_per_layer, float(i), legacy_shape=False)
            _blob(layer.blobs.add(), 8, float(i), legacy_shape=False)
            fh.write(one.SerializeToString())
            bottom = f"ip{i}"


def test_memory_stays_far_below_the_file_size(tmp_path: Path) -> None:
    src = tmp_path / "big.caffemodel"
    make_big_v1(src, layers=8, floats_per_layer=2_000_000)  # 64 MB of weights
    size = src.stat().st_size
    dst = tmp_path / "big_out.caffemodel"
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    grown = (figures["peak_kb"] - figures["base_kb"]) * 1024
    assert figures["blobs"] == 16
    assert grown < 0.1 * size, f"upgrade grew RSS by {grown} bytes for a {size}-byte model"
    out = scan(dst)
    assert len(out.net.layer) == 8 and len(out.net.layers) == 0
    assert [len(ref.blobs) for ref in out.refs] == [2] * 8
    assert dst.stat().st_size > size - 100


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from rewriter.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_cli_on_a_caffemodel(tmp_path: Path) -> None:
    net = v1_net()
    src = write(tmp_path, net, "model.caffemodel")
    before = src.read_bytes()
    dry = cli("upgrade", src.name, cwd=tmp_path)
    assert dry.returncode == 0 and "would upgrade" in dry.stdout
    assert src.read_bytes() == before
    assert cli("upgrade", "--check", src.name, cwd=tmp_path).returncode == 1
    done = cli("upgrade", src.name, "-o", "new.caffemodel", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = upgrade_net_message_caffe(net).message.SerializeToString(deterministic=True)
    assert (tmp_path / "new.caffemodel").read_bytes() == expected
    assert cli("upgrade", "--in-place", src.name, cwd=tmp_path).returncode == 0
    assert src.read_bytes() == expected
    current = cli("upgrade", "--check", src.name, cwd=tmp_path)
    assert current.returncode == 0 and "already in the current format" in current.stderr
