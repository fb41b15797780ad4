"""What a new user meets first: --help, flags, output options, built-in recipes, deploy outputs.

The CLI runs as ``python -m rewriter.cli`` with the interpreter running the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rewriter.cli_help import reflow

from .conftest import REPO

SEED = REPO / "examples" / "seed_net.prototxt"


def cli(*args: str, cwd: Path | None = None, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "rewriter.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=cwd,
    )


def test_reflow_joins_lines_inside_a_paragraph_only() -> None:
    assert reflow("One two\n    three.\n\n    Four\n    five.") == "One two three.\n\nFour five."


def test_flags_show_no_value_type() -> None:
    for command in ("apply", "deploy", "check", "explain", "upgrade"):
        r = cli(command, "--help", columns=200)
        assert r.returncode == 0, r.stderr
        assert "<bool>" not in r.stdout, command
    assert "<bool>" not in cli("--help", columns=200).stdout


def test_help_prose_is_not_broken_mid_sentence() -> None:
    r = cli("--help", columns=300)
    assert "which file layers go unused, and the error Caffe stops with" in r.stdout
    r = cli("graph", "--help", columns=300)
    assert "drawn inside their producer's node, as Netron does;" in r.stdout


def test_apply_help_says_a_python_file_is_executed() -> None:
    r = cli("apply", "--help", columns=300)
    assert ".py is a pycaffe NetSpec script: it is EXECUTED" in r.stdout


def test_flag_given_a_value_writes_nothing(tmp_path: Path) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text(SEED.read_text())
    r = cli("apply", "freeze", str(net), "true", "--in-place", "--set", "upto=pool2/3x3_s2")
    assert r.returncode == 2
    assert "true: no such file (flags such as --in-place and --check take no value)" in r.stderr
    assert net.read_text() == SEED.read_text()


def test_one_default_phase_named_in_every_help() -> None:
    for command in ("explain", "graph", "shapes", "weights"):
        r = cli(command, "--help", columns=200)
        assert "[default: TRAIN]" in r.stdout, command


def test_deploy_takes_output_and_the_old_out(tmp_path: Path) -> None:
    for flag in ("--output", "-o", "--out"):
        target = tmp_path / f"deploy{flag}.prototxt"
        r = cli("deploy", str(SEED), flag, str(target), "-q")
        assert r.returncode == 0, r.stderr
        assert "input:" in target.read_text() or "Input" in target.read_text()
    assert "--out " not in cli("deploy", "--help", columns=200).stdout


def test_recipes_list_is_not_truncated_when_piped() -> None:
    r = cli("recipes")
    assert r.returncode == 0
    assert "The result is checked with Caffe's Net::Init and shape inference." in r.stdout
    assert "..." not in r.stdout


def test_builtin_recipe_on_a_net_without_its_layer_type_is_no_change() -> None:
    r = cli("apply", "bn-frozen", str(SEED))
    assert r.returncode == 0, r.stderr
    assert "no change: the net has no BatchNorm layer" in r.stderr
    assert r.stdout == ""


def test_builtin_recipe_errors_name_its_options_not_its_toml() -> None:
    r = cli("apply", "unfreeze", str(SEED))
    assert r.returncode == 2
    assert "recipe 'unfreeze' needs a selection: --set layers=A,B" in r.stderr
    assert "--set after=LAYER" in r.stderr and "--set lr_mult=1.0" in r.stderr
    assert "regex" not in r.stderr and "unfreeze.toml" not in r.stderr
    r = cli("apply", "freeze", str(SEED), "--set", "glob=nothing*")
    assert r.returncode == 2
    assert "recipe 'freeze': no layer of this net matches the selection" in r.stderr
    assert "allow_empty" not in r.stderr


def test_builtin_recipe_descriptions_promise_only_real_options() -> None:
    r = cli("recipes", "freeze")
    assert "a regex" in r.stdout and "  regex (string" in r.stdout
    r = cli("apply", "freeze", str(SEED), "--set", "regex=^conv1/")
    assert r.returncode == 0, r.stderr
    assert "1 layer(s)" in r.stderr
