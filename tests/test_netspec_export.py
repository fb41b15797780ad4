"""``export netspec``: every current-format BVLC net of the corpus comes back equal.

The original is parsed by protobuf's own text parser; the exported script is executed by the
NetSpec evaluator (as ``rewriter netspec run`` does) and what it writes is parsed again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rewriter.netspec.evaluator import run_script
from rewriter.netspec.export import ExportError, export_netspec
from tests.conftest import corpus_params, read_corpus


def _parse(text: str) -> Any:
    from google.protobuf import text_format

    from rewriter.schema.runtime import default_schema

    msg = default_schema().message_class("caffe.NetParameter")()
    text_format.Parse(text, msg)
    return msg


def _roundtrip(net: Any, tmp_path: Path) -> tuple[str, Any]:
    script = export_netspec(net, source="net.prototxt", output="out.prototxt")
    path = tmp_path / "make_net.py"
    path.write_text(script)
    run = run_script(path)
    assert [o.name for o in run.outputs] == ["out.prototxt"]
    return script, _parse(run.outputs[0].text)


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2", fork="no"))
def test_export_reproduces_corpus_net(row: dict[str, str] | None, tmp_path: Path) -> None:
    path, text = read_corpus(row)
    net = _parse(text)
    script, again = _roundtrip(net, tmp_path)
    assert again == net
    assert again.SerializeToString(deterministic=True) == net.SerializeToString(deterministic=True)


def test_export_is_readable(tmp_path: Path) -> None:
    net = _parse(
        'name: "tiny"\n'
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
        "  param { lr_mult: 1 } param { lr_mult: 2 }\n"
        "  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: 'xavier' } } }\n"
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"\n'
        "  pooling_param { pool: MAX kernel_size: 2 } include { phase: TEST } }\n"
    )
    script, again = _roundtrip(net, tmp_path)
    assert again == net
    assert "    n.data = L.Input(shape=dict(dim=[1, 3]))\n" in script
    assert "    n.relu1 = L.ReLU(n.conv1, in_place=True)\n" in script
    assert (
        "    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, "
        "include=dict(phase=caffe.TEST))\n" in script
    )
    assert "param=[dict(lr_mult=1), dict(lr_mult=2)]" in script
    assert '    net.name = "tiny"\n' in script


HARD = (
    # legacy inputs, a layer named unlike its top, duplicate writers of a blob, a partly
    # in-place layer, a name that is a NetSpec method, a layer without name, an empty message,
    # a non-identifier name, a float needing 32-bit rounding
    'name: "hard"\ninput: "data"\ninput_shape { dim: 1 dim: 3 }\nforce_backward: true\n'
    'layer { name: "c" type: "Convolution" bottom: "data" top: "conv"\n'
    "  convolution_param { num_output: 2 kernel_size: 1 } }\n"
    'layer { name: "keys" type: "ReLU" bottom: "conv" top: "conv" }\n'
    'layer { name: "d1" type: "DummyData" top: "x" include { phase: TRAIN } }\n'
    'layer { name: "d2" type: "DummyData" top: "x" include { phase: TEST } }\n'
    'layer { name: "sl" type: "Slice" bottom: "x" top: "x" top: "y" }\n'
    'layer { type: "Sigmoid" bottom: "y" top: "y/out" }\n'
    'layer { name: "drop" type: "Dropout" bottom: "y/out" top: "y/out" dropout_param { } }\n'
    'layer { name: "pow" type: "Power" bottom: "y/out" top: "p" power_param { scale: 0.1 } }\n'
)


def test_export_hard_cases(tmp_path: Path) -> None:
    net = _parse(HARD)
    script, again = _roundtrip(net, tmp_path)
    assert again == net
    assert 'n["keys"] = L.ReLU(n.conv, in_place=True)' in script
    assert 'name="c"' in script
    assert "net.layer[5].ClearField('name')" in script
    assert "net.layer[6].dropout_param.SetInParent()" in script
    assert "scale=0.1" in script


def test_v1_nets_are_refused() -> None:
    net = _parse('layers { name: "a" type: RELU bottom: "x" top: "x" }')
    with pytest.raises(ExportError, match="upgrade it first"):
        export_netspec(net)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "rewriter"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_cli_export_then_run(tmp_path: Path) -> None:
    src = tmp_path / "net.prototxt"
    src.write_text(HARD)
    r = _cli("export", "netspec", str(src), "-o", "net.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("netspec", "run", "net.py", "-o", "again.prototxt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _parse((tmp_path / "again.prototxt").read_text()) == _parse(HARD)
    r = _cli("netspec", "run", "net.py", cwd=tmp_path)
    assert r.returncode == 0 and _parse(r.stdout) == _parse(HARD)
    r = _cli("export", "netspec", "missing.prototxt", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (tmp_path / "boom.py").write_text("raise ValueError('nope')\n")
    r = _cli("netspec", "run", "boom.py", cwd=tmp_path)
    assert r.returncode == 2
    assert "boom.py:1: the NetSpec script failed: ValueError: nope" in r.stderr
    assert "Traceback" not in r.stderr
