"""``rewriter apply`` and ``rewriter recipes`` from the command line (in-process)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.test_apply_fixtures import FIXTURES

CASE = FIXTURES / "apply-freeze_upto_comments"
SG = FIXTURES / "apply-stop_gradient_inplace_split"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from rewriter.cli import main

    old = sys.argv
    sys.argv = ["rewriter", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def net(tmp_path: Path) -> Path:
    p = tmp_path / "net.prototxt"
    shutil.copyfile(CASE / "before.prototxt", p)
    return p


def test_default_prints_diff_and_writes_nothing(
    net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = net.read_bytes()
    code, out, err = run(["apply", str(CASE / "recipe.toml"), str(net)], capsys)
    assert code == 0
    assert out.startswith(f"--- {net}\n+++ {net}\n@@ ")
    assert "+    lr_mult: 0  # learn fast" in out and "\x1b[" not in out
    assert "not written" in err
    assert net.read_bytes() == before


def test_output_in_place_and_check(
    net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = (CASE / "after.prototxt").read_bytes()
    out_file = tmp_path / "out.prototxt"
    code, _, _ = run(["apply", str(CASE / "recipe.toml"), str(net), "-o", str(out_file)], capsys)
    assert code == 0 and out_file.read_bytes() == expected
    code, out, _ = run(["apply", "--check", str(CASE / "recipe.toml"), str(net)], capsys)
    assert code == 1 and "would change" in out
    code, _, _ = run(["apply", "--in-place", str(CASE / "recipe.toml"), str(net)], capsys)
    assert code == 0 and net.read_bytes() == expected
    code, out, _ = run(["apply", "--check", str(CASE / "recipe.toml"), str(net)], capsys)
    assert code == 0 and out == ""


def test_step_option_and_set(net: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["apply", "--step", "freeze upto=pool2", str(net), "-q"], capsys)
    assert code == 0 and "+    lr_mult: 0  # learn fast" in out
    code, out, _ = run(["apply", "freeze", str(net), "--set", "upto=pool2", "-q"], capsys)
    assert code == 0 and "+    lr_mult: 0  # learn fast" in out
    code, out, _ = run(
        ["apply", "--step", "freeze layers=fc", "--step", "zero-decay-frozen", str(net), "-q"],
        capsys,
    )
    assert code == 0 and "+  param { lr_mult: 0 decay_mult: 0 }" in out


def test_usage_errors_exit_2(net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["apply", "freeze", str(net), "--set", "uptoo=pool2"], "no option 'uptoo'"),
        (["apply", "freeze", str(net), "--set", "zero_decay=maybe", "--set", "upto=a"], "bool"),
        (["apply", "finetune-head", str(net)], "needs option 'layer'"),
        (["apply", "freeze", str(net), str(net), "-o", str(tmp_path / "x")], "exactly one"),
        (["apply", "--check", "--in-place", "freeze", str(net)], "writes nothing"),
        (["apply", "freeze"], "needs a RECIPE and at least one FILE"),
        (["apply", "nosuch", str(net)], "no built-in recipe named 'nosuch'"),
        (["apply", "--step", "freeze upto=nope", str(net)], "no layer named 'nope'"),
        (["apply", "--format", "yaml", "freeze", str(net)], "--format"),
        (["recipes", "nosuch"], "no built-in recipe"),
    ]
    for args, message in cases:
        code, out, err = run(args, capsys)
        assert code == 2, (args, out, err)
        assert message in err, (args, err)
        assert "Traceback" not in err


def test_errors_in_a_batch(net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer {\n  name: "x"\n  type: "ReLU"\n  bottom: "a"\n  top: "a"\n')
    code, _, err = run(
        ["apply", "--in-place", "--step", "freeze upto=pool2", str(bad), str(net)], capsys
    )
    assert code == 2
    assert f"{bad}:1:7" in err and "never closed" in err
    assert net.read_bytes() == (CASE / "after.prototxt").read_bytes()  # the good file was done


def test_failed_check_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "fb.prototxt"
    text = (
        (SG / "before.prototxt")
        .read_text()
        .replace('name: "branches"', 'name: "b"\nforce_backward: true')
    )
    p.write_text(text)
    code, _, err = run(["apply", "--in-place", str(SG / "recipe.toml"), str(p)], capsys)
    assert code == 2
    assert "rewrite refused, nothing written" in err and "check 'promises' FAILED" in err
    assert p.read_text() == text


def test_json_and_parallel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for i, case in enumerate(["apply-freeze_upto_comments", "apply-builtin_bn_frozen"] * 2):
        p = tmp_path / f"n{i}.prototxt"
        shutil.copyfile(FIXTURES / case / "before.prototxt", p)
        files.append(str(p))
    code, out, _ = run(["apply", "--format", "json", "bn-frozen", *files], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["recipe"] == "bn-frozen" and len(data["files"]) == 4
    first = data["files"][0]
    assert first["changed"] and first["ok"]
    assert first["changes"] == [
        {
            "layer": "bn1",
            "index": 2,
            "path": "batch_norm_param",
            "kind": "added",
            "old": None,
            "new": {"use_global_stats": True},
            "step": "1:set-field",
        }
    ]
    assert {c["check"] for c in first["checks"]} >= {"semantic-diff", "idempotence"}
    code, out2, _ = run(["apply", "--format", "json", "-j", "2", "bn-frozen", *files], capsys)
    assert code == 0 and json.loads(out2) == data


def test_recipes_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["recipes"], capsys)
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()]
    for name in ("freeze", "unfreeze", "stop-gradient", "zero-decay-frozen", "set-lr",
                 "bn-frozen", "finetune-head", "seed-freeze"):  # fmt: skip
        assert name in listed
    code, out, _ = run(["recipes", "finetune-head"], capsys)
    assert code == 0 and "num_output (int, required)" in out and "1. rename-layer" in out
    code, out, _ = run(["recipes", "seed-freeze", "--toml"], capsys)
    assert code == 0 and out.startswith('name = "seed-freeze"')
