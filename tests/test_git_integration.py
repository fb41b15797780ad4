"""`rewriter diff` inside git and CI, against a real git repository made in the test:
``--git REV``, ``git difftool``, the ``textconv`` driver, the pre-commit hooks and the example
GitHub Actions workflow's diff step."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO
from .test_diff import CHAIN, SEED, freeze_with_editor, run

GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")

IDENT = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]


@pytest.fixture()
def tools(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a `rewriter` that runs this checkout's CLI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "rewriter"
    exe.write_text(
        f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
        "\"import sys; sys.argv[0] = 'rewriter'; from rewriter.cli import main; main()\" "
        '"$@"\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["HOME"] = str(tmp_path)  # no user git config
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["NO_COLOR"] = "1"
    return env


def git(
    env: dict[str, str], cwd: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    assert GIT is not None
    res = subprocess.run(
        [GIT, *IDENT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert res.returncode == 0, f"git {' '.join(args)}: {res.stderr}"
    return res


@pytest.fixture()
def repo(tmp_path: Path, tools: dict[str, str]) -> Path:
    """A repository whose HEAD has the seed net; the working copy has it frozen."""
    r = tmp_path / "repo"
    (r / "models").mkdir(parents=True)
    git(tools, tmp_path, "-c", "init.defaultBranch=main", "init", "-q", str(r))
    net = r / "models" / "train_val.prototxt"
    net.write_text(SEED.read_text())
    git(tools, r, "add", ".")
    git(tools, r, "commit", "-q", "-m", "seed net")
    net.write_text(freeze_with_editor(SEED.read_text(), "pool2/3x3_s2"))
    return r


def _assert_semantic(out: str) -> None:
    for name in CHAIN:
        assert f"{name} (" in out and "stops needing backward" in out, name
    assert "conv1/7x7_s2 param 0 (weights) becomes frozen (lr_mult 1 -> 0)" in out


def test_diff_against_a_git_revision(repo: Path, tools: dict[str, str]) -> None:
    res = subprocess.run(
        ["rewriter", "diff", "--git", "HEAD", "models/train_val.prototxt", "--exit-code"],
        cwd=repo, env=tools, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert res.stdout.startswith("--- HEAD:models/train_val.prototxt\n")
    _assert_semantic(res.stdout)
    # from elsewhere, with an absolute path
    res = run("diff", "--git", "HEAD", str(repo / "models" / "train_val.prototxt"))
    assert res.returncode == 0, res.stderr
    _assert_semantic(res.stdout)
    # a file the revision does not have is an added file
    new = repo / "models" / "solver.prototxt"
    new.write_text('net: "train_val.prototxt"\nbase_lr: 0.01\n')
    res = run("diff", "--git", "HEAD", str(new))
    assert res.returncode == 0 and "solver file added" in res.stdout, res.stderr
    # an unknown revision is an input error
    res = run("diff", "--git", "no-such-rev", str(new))
    assert res.returncode == 2 and "no-such-rev" in res.stderr and "Traceback" not in res.stderr


def test_git_difftool_runs_the_semantic_diff(repo: Path, tools: dict[str, str]) -> None:
    res = git(tools, repo, "difftool", "-y", "-x", "rewriter diff", "HEAD", "--", "models")
    _assert_semantic(res.stdout)
    # or as a configured tool
    git(tools, repo, "config", "difftool.prototxt.cmd", 'rewriter diff "$LOCAL" "$REMOTE"')
    res = git(tools, repo, "difftool", "-y", "--tool=prototxt", "HEAD")
    _assert_semantic(res.stdout)


def test_textconv_makes_git_diff_semantic(repo: Path, tools: dict[str, str]) -> None:
    (repo / ".gitattributes").write_text("*.prototxt diff=prototxt\n")
    git(tools, repo, "config", "diff.prototxt.textconv", "rewriter textconv")
    res = git(tools, repo, "diff", "HEAD", "--", "models")
    lines = res.stdout.splitlines()
    assert "-layer[conv1/7x7_s2].param[0].lr_mult = 1" in lines
    assert "+layer[conv1/7x7_s2].param[0].lr_mult = 0" in lines
    assert "-TRAIN conv1/7x7_s2: trainable" in lines
    assert "+TRAIN conv1/7x7_s2: frozen" in lines
    assert "+TRAIN pool2/3x3_s2: no backward" in lines
    changed = [x for x in lines if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    assert all(re.search(r"lr_mult|decay_mult|^[-+](TRAIN|TEST) ", x) for x in changed), changed
    # a file that does not parse still diffs (shown as it is)
    broken = repo / "models" / "broken.prototxt"
    broken.write_text("layer {\n")
    git(tools, repo, "add", "-N", str(broken))
    res = git(tools, repo, "diff", "--", str(broken))
    assert "+layer {" in res.stdout


# --------------------------------------------------------------------------- pre-commit


def _hooks() -> list[dict[str, object]]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(data, list)
    return data


def _run_hook(
    hook: dict[str, object], args: list[str], files: list[Path], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """What pre-commit runs: entry, then the user's args, then the staged file names."""
    entry = shlex.split(str(hook["entry"]))
    return subprocess.run(
        [*entry, *args, *map(str, files)], env=env, capture_output=True, text=True, timeout=300
    )


def test_pre_commit_hooks_manifest(tools: dict[str, str], tmp_path: Path) -> None:
    hooks = {str(h["id"]): h for h in _hooks()}
    assert set(hooks) == {"rewriter-check", "rewriter-policy"}
    for h in hooks.values():
        assert {"id", "name", "entry", "language", "files"} <= set(h)
        assert h["language"] == "python"
        assert re.search(str(h["files"]), "models/train_val.prototxt")
        assert not re.search(str(h["files"]), "models/solver.py")
    check = hooks["rewriter-check"]
    assert _run_hook(check, [], [SEED], tools).returncode == 0
    bad = tmp_path / "bad.prototxt"
    bad.write_text(SEED.read_text().replace("lr_mult: 2", "lr_mul: 2", 1))
    res = _run_hook(check, [], [SEED, bad], tools)
    assert res.returncode != 0 and "lr_mul" in res.stdout + res.stderr


def test_pre_commit_policy_hook(tools: dict[str, str], tmp_path: Path) -> None:
    hooks = {str(h["id"]): h for h in _hooks()}
    policy = hooks["rewriter-policy"]
    assert policy["entry"] == "rewriter apply --check"
    if run("apply", "--help").returncode != 0:
        pytest.skip("`rewriter apply` is not available yet")
    args = ["freeze", "--set", "upto=pool2/3x3_s2"]
    # the seed is not frozen: the policy fails
    assert _run_hook(policy, args, [SEED], tools).returncode == 1
    frozen = tmp_path / "frozen.prototxt"
    frozen.write_text(freeze_with_editor(SEED.read_text(), "pool2/3x3_s2"))
    res = _run_hook(policy, args, [frozen], tools)
    assert res.returncode == 0, res.stdout + res.stderr


# --------------------------------------------------------------------------- GitHub Actions


def test_github_actions_example_diff_step(tmp_path: Path, tools: dict[str, str]) -> None:
    """Run the workflow's diff step, as written, in a clone whose pull request branch freezes
    the net and adds a solver, and check the Markdown it would post."""
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((REPO / "examples" / "github-actions" / "prototxt-diff.yml").read_text())
    on = wf.get("on", wf.get(True))
    assert "pull_request" in on
    steps = wf["jobs"]["prototxt-diff"]["steps"]
    (diff_step,) = [s for s in steps if "rewriter diff" in s.get("run", "")]
    assert "--format markdown" in diff_step["run"] and "--git" in diff_step["run"]
    post = [s for s in steps if "gh pr comment" in s.get("run", "")]
    assert post and post[0]["if"] == "steps.diff.outputs.changed == 'true'"

    origin = tmp_path / "origin.git"
    git(tools, tmp_path, "-c", "init.defaultBranch=main", "init", "-q", "--bare", str(origin))
    work = tmp_path / "work"
    git(tools, tmp_path, "clone", "-q", str(origin), str(work))
    git(tools, work, "checkout", "-q", "-b", "main")
    (work / "models").mkdir()
    net = work / "models" / "train_val.prototxt"
    net.write_text(SEED.read_text())
    (work / "README").write_text("x\n")
    git(tools, work, "add", ".")
    git(tools, work, "commit", "-q", "-m", "base")
    git(tools, work, "push", "-q", "origin", "main")
    git(tools, work, "checkout", "-q", "-b", "pr")
    net.write_text(freeze_with_editor(SEED.read_text(), "pool2/3x3_s2"))
    (work / "models" / "solver.prototxt").write_text('net: "train_val.prototxt"\nbase_lr: 0.1\n')
    (work / "README").write_text("y\n")
    git(tools, work, "add", ".")
    git(tools, work, "commit", "-q", "-m", "freeze")
    git(tools, work, "fetch", "-q", "origin")
    out = tmp_path / "github_output"
    env = {**tools, "BASE_REF": "main", "GITHUB_OUTPUT": str(out)}
    res = subprocess.run(
        ["bash", "-c", diff_step["run"]], cwd=work, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert out.read_text().strip() == "changed=true"
    md = (work / "prototxt-diff.md").read_text()
    assert md.startswith("## Prototxt semantic diff")
    assert "### `models/train_val.prototxt`" in md and "### `models/solver.prototxt`" in md
    assert "| stops needing backward | `pool2/3x3_s2` |" in md
    assert "```mermaid" in md and "README" not in md
