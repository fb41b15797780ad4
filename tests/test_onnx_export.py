"""``rewriter export onnx``: every oracle/forward case, exported and run in onnxruntime, must
reproduce what real Caffe computed (../shared/oracle/forward), plus the CLI's contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import ORACLE, REPO, need_shared, run_cli

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FORWARD = ORACLE / "forward"
CASES = sorted(p.name for p in FORWARD.iterdir() if p.is_dir()) if FORWARD.is_dir() else []


def _dumped(case: str) -> list[dict[str, Any]]:
    """The layer-by-layer tops of a case that are not net outputs (those are tested anyway)."""
    meta = json.loads((FORWARD / case / "case.json").read_text())
    return [e for e in meta.get("blobs", []) if not e["file"].startswith("outputs/")]


DUMPED = [c for c in CASES if _dumped(c)]
#: max |got - ref| / max |ref| per output (docs/onnx.md); every case passes this bound
TOLERANCE = 1e-4


def _run(model: Any, feeds: dict[str, Any], names: list[str]) -> list[Any]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return list(session.run(names, feeds))


def _inputs(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {i["name"]: np.load(folder / i["file"]) for i in meta["inputs"]}


def _assert_outputs(model: Any, folder: Path, meta: dict[str, Any], feeds: dict[str, Any]) -> None:
    """Each of the case's outputs within TOLERANCE of Caffe's, relative to its scale."""
    names = [o["name"] for o in meta["outputs"]]
    for out, got in zip(meta["outputs"], _run(model, feeds, names), strict=True):
        ref = np.load(folder / out["file"])
        assert got.shape == ref.shape, out["name"]
        scale = float(np.abs(ref).max()) or 1.0
        err = float(np.abs(got.astype(np.float64) - ref).max()) / scale
        assert err <= TOLERANCE, f"{folder.name}/{out['name']}: {err:.2e}"


def _input_layer(*shapes: tuple[int, ...], tops: str = "data") -> str:
    """An Input layer line with one top per shape (tops: space-separated names)."""
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in sh) + " }" for sh in shapes)
    top = " ".join(f'top: "{t}"' for t in tops.split())
    return f'layer {{ name: "data" type: "Input" {top} input_param {{ {dims} }} }}\n'


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd or REPO)


@pytest.mark.parametrize("case", CASES or ["(no ../shared)"])
def test_case_matches_caffe(case: str) -> None:
    need_shared()
    import rewriter

    folder = FORWARD / case
    meta = json.loads((folder / "case.json").read_text())
    model = rewriter.load(folder / "net.prototxt").to_onnx(weights=folder / "weights.caffemodel")
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == [o["name"] for o in meta["outputs"]]
    _assert_outputs(model, folder, meta, _inputs(folder, meta))


def test_without_weights_params_are_inputs_and_the_graph_checks() -> None:
    need_shared()
    import rewriter

    model = rewriter.load(FORWARD / "batchnorm_scale" / "net.prototxt").to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert not model.graph.initializer or all(
        "param" not in t.name for t in model.graph.initializer
    )
    names = [i.name for i in model.graph.input]
    assert names[0] == "data" and any(n.endswith("/param2") for n in names)


def test_cli_check_against_caffe_outputs(tmp_path: Path) -> None:
    need_shared()
    case = FORWARD / "cifar10_quick"
    out = tmp_path / "m.onnx"
    args = ["export", "onnx", str(case / "net.prototxt"), "--weights"]
    args += [str(case / "weights.caffemodel"), "-o", str(out), "--check"]
    args += ["--inputs", str(case / "inputs"), "--expect", str(case / "outputs")]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and out.is_file()
    assert onnx.load(str(out)).graph.output[0].name == "prob"
    # a tolerance nothing meets: a mismatch is exit 1, still no traceback
    out.unlink()
    r = cli(*args, "--tolerance", "1e-12")
    assert r.returncode == 1 and "MISMATCH" in r.stdout and "Traceback" not in r.stderr
    assert "not written" in r.stderr and not out.exists()


def test_cli_refuses_an_unmappable_type_by_name(tmp_path: Path) -> None:
    net = tmp_path / "fork.prototxt"
    net.write_text(
        'name: "fork"\n'
        + _input_layer((1, 3, 4, 4))
        + 'layer { name: "perm" type: "Permute" bottom: "data" top: "p" }\n'
    )
    out = tmp_path / "fork.onnx"
    r = cli("export", "onnx", str(net), "-o", str(out))
    assert r.returncode == 2
    assert f"{net}:3:22: error: layer 'perm' (type Permute)" in r.stderr
    assert "^" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("pooling", "where", "why"),
    [
        # random, and NOT_IMPLEMENTED on CPU: refused at the field
        ("\n  pooling_param { pool: STOCHASTIC kernel_size: 2 } }", "3:19", "STOCHASTIC"),
        # ceil rounding puts the last window past the input: refused at the layer
        (" pooling_param { pool: MAX kernel_size: 2 stride: 5 } }", "2:22", "wholly outside"),
    ],
)
def test_cli_refuses_pooling_it_cannot_map(
    tmp_path: Path, pooling: str, where: str, why: str
) -> None:
    net = tmp_path / "p.prototxt"
    net.write_text(
        _input_layer((1, 1, 10, 10))
        + 'layer { name: "pool" type: "Pooling" bottom: "data" top: "p"'
        + pooling
        + "\n"
    )
    r = cli("export", "onnx", str(net), "-o", str(tmp_path / "p.onnx"))
    assert r.returncode == 2 and f"{net}:{where}:" in r.stderr and why in r.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    need_shared()
    net = str(FORWARD / "relu" / "net.prototxt")
    r = cli("export", "onnx", net, "--opset", "7", "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and "--opset 7" in r.stderr
    r = cli("export", "onnx", net, "--expect", str(tmp_path))
    assert r.returncode == 2 and "--check" in r.stderr
    r = cli("export", "onnx", net, "--set", "shape.data=a,b")
    assert r.returncode == 2 and "shape.data" in r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from rewriter.onnx import MissingExtra, require_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a)
    )
    with pytest.raises(MissingExtra) as info:
        require_extra("numpy", "onnx")
    assert "pip install 'prototxt-rewriter[onnx]'" in str(info.value)
    assert info.value.exit_code == 2


def test_version_does_not_import_onnx() -> None:
    code = (
        "import sys; from rewriter.cli.commands import load_all; load_all(); "
        "print(any(m in sys.modules for m in ('onnx', 'onnxruntime', 'numpy')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.stdout.strip() == "False", r.stderr


def test_legacy_input_rewritten_in_place_and_train_phase(tmp_path: Path) -> None:
    import rewriter

    net = tmp_path / "ip.prototxt"
    net.write_text(
        'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "data" top: "loss"'
        " include { phase: TRAIN } }\n"
    )
    model = rewriter.load(net).to_onnx()
    # the input keeps its name; its in-place rewrite is named after the layer that wrote it
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["data/relu"]
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    (got,) = _run(model, {"data": x}, ["data/relu"])
    assert (got == np.maximum(x, 0)).all()
    r = cli("export", "onnx", str(net), "--phase", "TRAIN", "-o", str(tmp_path / "t.onnx"))
    assert r.returncode == 2 and f"{net}:4:22:" in r.stderr and "rewriter deploy" in r.stderr


def test_silence_consumes_without_a_node(tmp_path: Path) -> None:
    import rewriter

    net = tmp_path / "s.prototxt"
    net.write_text(
        _input_layer((2, 3), (2, 3), tops="a b")
        + 'layer { name: "quiet" type: "Silence" bottom: "b" }\n'
        'layer { name: "t" type: "TanH" bottom: "a" top: "t" }\n'
    )
    model = rewriter.load(net).to_onnx()
    assert [o.name for o in model.graph.output] == ["t"]
    assert [n.op_type for n in model.graph.node] == ["Tanh"]


@pytest.mark.parametrize("opset", [13, 18, 21, 23, 24])
def test_opsets_old_and_new(opset: int) -> None:
    """Reduce* take axes as an attribute before opset 18 and as an input from 18."""
    need_shared()
    import rewriter

    if opset > onnx.defs.onnx_opset_version():
        pytest.skip(f"onnx {onnx.__version__} writes opsets up to {onnx.defs.onnx_opset_version()}")
    for case in ("mvn", "reduction", "batchnorm_batch_stats", "lstm"):
        folder = FORWARD / case
        meta = json.loads((folder / "case.json").read_text())
        model = rewriter.load(folder / "net.prototxt").to_onnx(
            weights=folder / "weights.caffemodel", opset=opset
        )
        assert model.opset_import[0].version == opset
        _assert_outputs(model, folder, meta, _inputs(folder, meta))


@pytest.mark.parametrize("case", DUMPED or ["(no ../shared)"])
def test_every_dumped_layer_top_matches_caffe(case: str) -> None:
    """Caffe's layer-by-layer dump (blobs/): each top right after its layer ran, so every step
    of an in-place chain (conv -> BatchNorm -> Scale -> ReLU on one blob) is checked."""
    need_shared()
    from rewriter.onnx.export import export

    folder = FORWARD / case
    meta = json.loads((folder / "case.json").read_text())
    entries = _dumped(case)
    values: dict[tuple[str, int], str] = {}
    model = export(folder / "net.prototxt", folder / "weights.caffemodel", top_values=values)
    names = [values[(e["layer"], e["top_index"])] for e in entries]
    known = {o.name for o in model.graph.output}
    for name in dict.fromkeys(names):
        if name not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    feeds = _inputs(folder, meta)
    for e, got in zip(entries, _run(model, feeds, names), strict=True):
        ref = np.load(folder / e["file"])
        scale = float(np.abs(ref).max()) or 1.0
        err = float(np.abs(got.astype(np.float64) - ref).max()) / scale
        assert err <= TOLERANCE, f"{case}: {e['layer']} top {e['top_index']}: {err:.2e}"


def test_shared_params_are_one_value(tmp_path: Path) -> None:
    import rewriter

    net = tmp_path / "shared.prototxt"
    ip = 'inner_product_param { num_output: 2 } param { name: "w" } param { name: "b" }'
    net.write_text(
        _input_layer((2, 3), (2, 3), tops="a b")
        + f'layer {{ name: "ip1" type: "InnerProduct" bottom: "a" top: "y1" {ip} }}\n'
        f'layer {{ name: "ip2" type: "InnerProduct" bottom: "b" top: "y2" {ip} }}\n'
    )
    model = rewriter.load(net).to_onnx()
    assert [i.name for i in model.graph.input] == ["a", "b", "ip1/param0", "ip1/param1"]
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert [list(n.input[1:]) for n in gemms] == [["ip1/param0", "ip1/param1"]] * 2


def test_cli_without_the_extra_names_the_pip_command(tmp_path: Path) -> None:
    need_shared()
    code = (
        "import sys; sys.modules['onnx'] = None; sys.argv = ['rewriter'] + sys.argv[1:]; "
        "from rewriter.cli import main; main()"
    )
    net = str(FORWARD / "relu" / "net.prototxt")
    out = tmp_path / "x.onnx"
    r = subprocess.run(
        [sys.executable, "-c", code, "export", "onnx", net, "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 2 and "pip install 'prototxt-rewriter[onnx]'" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_a_net_without_layers_is_refused(tmp_path: Path) -> None:
    net = tmp_path / "e.prototxt"
    net.write_text(
        'name: "e"\nlayer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 } } }\n'
    )
    r = cli("export", "onnx", str(net), "-o", str(tmp_path / "e.onnx"))
    assert r.returncode == 2 and "nothing to export" in r.stderr
    assert not (tmp_path / "e.onnx").exists()


@pytest.mark.parametrize("case", ["batchnorm_scale", "batchnorm_defaults", "lstm", "prelu"])
def test_weights_fed_as_inputs_give_caffe_outputs(case: str) -> None:
    """Without --weights the parameter blobs are inputs (BatchNorm's factor handled in the
    graph); fed the caffemodel's values they reproduce Caffe."""
    need_shared()
    import rewriter
    from rewriter.onnx.export import _read_weights

    folder = FORWARD / case
    meta = json.loads((folder / "case.json").read_text())
    model = rewriter.load(folder / "net.prototxt").to_onnx()
    assert not model.graph.initializer or all(
        "/param" not in t.name for t in model.graph.initializer
    )
    shapes = {
        i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input
    }
    params = {n.rsplit("/param", 1)[0] for n in shapes if "/param" in n}
    wanted = {
        layer: [shapes[n] for n in sorted(s for s in shapes if s.startswith(layer + "/param"))]
        for layer in params
    }
    values = _read_weights(str(folder / "weights.caffemodel"), wanted, "net")
    feeds = _inputs(folder, meta)
    for layer, arrays in values.items():
        feeds.update({f"{layer}/param{j}": a for j, a in enumerate(arrays)})
    _assert_outputs(model, folder, meta, feeds)


def test_caffe_errors_point_at_the_layer(tmp_path: Path) -> None:
    net = tmp_path / "g.prototxt"
    net.write_text(
        _input_layer((1, 3, 4, 4)) + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"'
        " convolution_param { num_output: 2 kernel_size: 3 group: 2 } }\n"
        'layer { name: "d" type: "ReLU" bottom: "nowhere" top: "d" }\n'
    )
    r = cli("export", "onnx", str(net), "-o", str(tmp_path / "g.onnx"))
    assert r.returncode == 2 and "Unknown bottom blob 'nowhere'" in r.stderr
    net.write_text(net.read_text().replace('"nowhere"', '"c"'))
    r = cli("export", "onnx", str(net), "-o", str(tmp_path / "g.onnx"))
    assert r.returncode == 2 and f"{net}:2:19: error: layer 'c'" in r.stderr
    assert "channels_ % group_ == 0" in r.stderr and "^" in r.stderr
    assert not (tmp_path / "g.onnx").exists()


def test_v1_caffemodel_weights(tmp_path: Path) -> None:
    """Old snapshots hold V1 ``layers`` records; their blobs are read the same way."""
    need_shared()
    import rewriter
    from rewriter.schema.runtime import default_schema

    folder = FORWARD / "lenet"
    schema = default_schema()
    v2: Any = schema.message_class("caffe.NetParameter").FromString(
        (folder / "weights.caffemodel").read_bytes()
    )
    v1 = schema.message_class("caffe.NetParameter")(name=v2.name)
    kinds = {"Convolution": "CONVOLUTION", "InnerProduct": "INNER_PRODUCT"}
    for layer in v2.layer:
        if layer.blobs:
            old: Any = v1.layers.add(name=layer.name)
            old.type = type(old).LayerType.Value(kinds[layer.type])
            old.blobs.extend(layer.blobs)
    weights = tmp_path / "v1.caffemodel"
    weights.write_bytes(v1.SerializeToString())
    meta = json.loads((folder / "case.json").read_text())
    model = rewriter.load(folder / "net.prototxt").to_onnx(weights=weights)
    _assert_outputs(model, folder, meta, _inputs(folder, meta))


def test_batchnorm_factor_zero_means_zero_statistics(tmp_path: Path) -> None:
    """Caffe: scale_factor = blob2 == 0 ? 0 : 1 / blob2, so a zero factor zeroes mean and
    variance; both the folded (weights) and the in-graph (weights as inputs) paths agree."""
    import rewriter
    from rewriter.schema.runtime import default_schema

    net = tmp_path / "bn.prototxt"
    net.write_text(
        _input_layer((2, 3, 2, 2)) + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "y"'
        " batch_norm_param { eps: 0.25 } }\n"
    )
    msg: Any = default_schema().message_class("caffe.NetParameter")()
    layer = msg.layer.add(name="bn", type="BatchNorm")
    for values in ([0.5, -1.0, 2.0], [4.0, 4.0, 4.0], [0.0]):
        blob = layer.blobs.add()
        blob.shape.dim.append(len(values))
        blob.data.extend(values)
    weights = tmp_path / "bn.caffemodel"
    weights.write_bytes(msg.SerializeToString())
    x = np.linspace(-2, 2, 24, dtype=np.float32).reshape(2, 3, 2, 2)
    want = x / np.sqrt(np.float32(0.25))
    (folded,) = _run(rewriter.load(net).to_onnx(weights=weights), {"data": x}, ["y"])
    feeds = {"data": x, "bn/param0": np.array([0.5, -1, 2], np.float32)}
    feeds |= {"bn/param1": np.full(3, 4, np.float32), "bn/param2": np.zeros(1, np.float32)}
    (in_graph,) = _run(rewriter.load(net).to_onnx(), feeds, ["y"])
    assert np.allclose(folded, want, rtol=1e-6) and np.allclose(in_graph, want, rtol=1e-6)
