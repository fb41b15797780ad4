"""`rewriter explain` and `rewriter check` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, SHARED, need_shared

SEED = REPO / "examples" / "seed_net.prototxt"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rewriter.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_explain_log_reproduces_caffe_seed_log() -> None:
    need_shared()
    log = (SHARED / "seed" / "seed_caffe_train_log.txt").read_text()
    expected = [
        line.split("] ", 1)[1] for line in log.splitlines() if "backward computation" in line
    ]
    res = run("explain", str(SHARED / "seed" / "seed_net.prototxt"), "--format", "log")
    assert res.returncode == 0, res.stderr
    got = [line for line in res.stdout.splitlines() if "backward computation" in line]
    assert got == expected
    assert "This network produces output loss3" in res.stdout


def test_explain_layer_says_why_pool_proj_still_trains() -> None:
    res = run("explain", str(SEED), "--layer", "test/pool_proj")
    assert res.returncode == 0, res.stderr
    assert "lr_mult 1" in res.stdout
    assert "param 0 (weights)" in res.stdout
    res = run("explain", str(SEED), "--layer", "test/pool")
    assert "propagate_down: false" in res.stdout
    assert "does not need backward" in res.stdout


def test_explain_json_lists_layers_in_net_order() -> None:
    res = run("explain", str(SEED), "--format", "json", "--phase", "TEST")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["phase"] == "TEST"
    names = [layer["name"] for layer in data["layers"]]
    assert names[0] == "data" and "pool2/3x3_s2_pool2/3x3_s2_0_split" in names
    conv1 = data["layers"][names.index("conv1/7x7_s2")]
    assert [p["lr_mult"] for p in conv1["params"]] == [1.0, 2.0]
    assert all("reasons" in layer for layer in data["layers"])


def test_explain_text_table_marks_states() -> None:
    res = run("explain", str(SEED))
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[2:] if line.strip()}
    assert "trainable" in rows["conv1/7x7_s2"]
    assert "no backward" in rows["test/pool"]
    assert "test/pool" in rows["test/pool_proj"].split("trainable", 1)[1]  # the cut bottom


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('layer {\n  name: "a"\n', "never closed"),
        ('layer {\n  nmae: "a"\n}\n', "did you mean 'name'"),
        ('layer {\n  name: "a"\n  convolution_param { num_output: x }\n}\n', "invalid integer"),
        ("state { phase: TRAINING }\n", "no value named 'TRAINING'"),
    ],
)
def test_check_reports_line_col_and_exit_2(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "bad.prototxt"
    p.write_text(text)
    res = run("check", str(p))
    assert res.returncode == 2
    assert fragment in res.stderr
    assert f"{p}:" in res.stderr and "^" in res.stderr
    assert "Traceback" not in res.stderr


def test_check_directory_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.prototxt").write_text('name: "a"\n')
    (tmp_path / "b.prototxt").write_text('base_lr: 0.01\nlr_policy: "fixed"\n')
    res = run("check", str(tmp_path), "--format", "json")
    assert res.returncode == 0, res.stderr
    files = json.loads(res.stdout)["files"]
    assert [(Path(f["path"]).name, f["kind"], f["ok"]) for f in files] == [
        ("a.prototxt", "net", True),
        ("b.prototxt", "solver", True),
    ]


def test_explain_unknown_phase_is_usage_error() -> None:
    res = run("explain", str(SEED), "--phase", "VAL")
    assert res.returncode == 2
    assert "TRAIN or TEST" in res.stderr
