"""The seed scenario end to end on ../shared/seed/seed_net.prototxt, against Caffe's own log.

"Freeze everything up to pool2/3x3_s2, stop the gradient from test/pool into test/pool_proj,
zero the decay of the frozen layers": the diff touches only lr_mult/decay_mult lines, and the
backward verdicts afterwards are Caffe's logged verdicts with exactly the frozen layers (and the
Split layer that only carries pool2's output) turned into "does not need backward computation".
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rewriter.recipes.engine import apply
from rewriter.recipes.recipe import Recipe, Step
from tests.conftest import SHARED, need_shared

SEED = SHARED / "seed" / "seed_net.prototxt"
LOG = SHARED / "seed" / "seed_caffe_train_log.txt"

#: pool2/3x3_s2 and its ancestors in the TRAIN net (read off the seed file by hand: the chain
#: conv1 -> relu (in place) -> pool1 -> norm1 -> conv2 reduce -> relu -> conv2 -> relu -> norm2
#: -> pool2, fed by the TRAIN data layer)
FROZEN = [
    "data",
    "conv1/7x7_s2",
    "conv1/relu_7x7",
    "pool1/3x3_s2",
    "pool1/norm1",
    "conv2/3x3_reduce",
    "conv2/relu_3x3_reduce",
    "conv2/3x3",
    "conv2/relu_3x3",
    "conv2/norm2",
    "pool2/3x3_s2",
]
#: the Split Caffe inserts after pool2/3x3_s2 (it appears in Caffe's log): it has no
#: parameters and its only input is pool2's output, so it no longer needs backward either
SPLIT = "pool2/3x3_s2_pool2/3x3_s2_0_split"
CONV_WITH_PARAMS = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"]


def caffe_verdicts() -> list[tuple[str, bool]]:
    out = []
    for line in LOG.read_text().splitlines():
        m = re.search(r"\] (\S+) (needs|does not need) backward computation\.$", line)
        if m:
            out.append((m.group(1), m.group(2) == "needs"))
    return out


def test_seed_freeze_upto_pool2_and_zero_decay() -> None:
    need_shared()
    recipe = Recipe(
        name="seed",
        steps=[Step("freeze", upto="pool2/3x3_s2"), Step("zero-decay-frozen")],
    )
    result = apply(SEED, recipe)
    assert all(c.ok for c in result.checks)
    changed = [
        line
        for line in result.diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed, "the seed must change"
    assert all(re.fullmatch(r"[+-](lr_mult|decay_mult): [0-9.]+", line) for line in changed)
    assert not any("param" in line for line in changed)  # no param block had to be added
    # one changed value per line; every conv below the cut: both lr_mult 0, weights decay 0
    assert sorted(line for line in changed if line.startswith("+")) == sorted(
        ["+lr_mult: 0"] * 6 + ["+decay_mult: 0"] * 3
    )
    layers = {c.layer for c in result.changes}
    assert layers == set(CONV_WITH_PARAMS)
    assert {c.path for c in result.changes} == {
        "param[0].lr_mult",
        "param[1].lr_mult",
        "param[0].decay_mult",
    }
    # Caffe's log, with the frozen layers (and the split carrying pool2) no longer training
    assert result.net is not None
    ours = [(v.name, v.needs_backward) for v in reversed(result.net.backward("TRAIN").layers)]
    expected = [
        (name, False if name in FROZEN or name == SPLIT else needs)
        for name, needs in caffe_verdicts()
    ]
    assert ours == expected
    flipped = [
        name
        for (name, before), (_, after) in zip(caffe_verdicts(), ours, strict=True)
        if before != after
    ]
    assert set(flipped) == set(FROZEN[1:]) | {SPLIT}


def test_seed_builtin_recipe_and_stop_gradient_is_a_no_op_there() -> None:
    need_shared()
    # the seed already cuts test/pool -> test/pool_proj: that step changes nothing
    only_cut = apply(SEED, Step("stop-gradient", **{"from": "test/pool", "to": "test/pool_proj"}))
    assert not only_cut.changed and only_cut.code == SEED.read_text()
    assert "propagate_down:false" in only_cut.code
    # the built-in seed-freeze recipe = freeze + (no-op) stop-gradient + zero-decay-frozen
    full = apply(SEED, "seed-freeze")
    manual = apply(
        SEED, Recipe(steps=[Step("freeze", upto="pool2/3x3_s2"), Step("zero-decay-frozen")])
    )
    assert full.code == manual.code
    assert full.steps[1].startswith("2:stop-gradient (no change")
    assert all(c.ok for c in full.checks)


def test_seed_cli_in_place_and_check(tmp_path: Path) -> None:
    need_shared()
    exe = shutil.which("rewriter", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("rewriter console script not installed")
    net = tmp_path / "seed_net.prototxt"
    shutil.copyfile(SEED, net)
    run = [exe, "apply", "seed-freeze"]
    check = subprocess.run(run + ["--check", str(net)], capture_output=True, text=True)
    assert check.returncode == 1, check.stderr
    assert "would change" in check.stdout
    diff = subprocess.run(run + [str(net), "--color", "never"], capture_output=True, text=True)
    assert diff.returncode == 0 and diff.stdout.startswith(f"--- {net}")
    assert net.read_bytes() == SEED.read_bytes()  # the default writes nothing
    done = subprocess.run(run + ["--in-place", str(net)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert net.read_text() != SEED.read_text()
    again = subprocess.run(run + ["--check", str(net)], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    explain = subprocess.run(
        [exe, "explain", str(net), "--format", "log"], capture_output=True, text=True
    )
    assert "conv1/7x7_s2 does not need backward computation." in explain.stdout
    assert "test/5x5_reduce needs backward computation." in explain.stdout
