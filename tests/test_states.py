"""One vocabulary for layer and parameter states (rewriter.caffe.states), across every command.

- the states follow from what real Caffe decided (shared/oracle/backward): a blob with rate 0
  is frozen, one with a rate is trainable when Caffe gives it a gradient, else decay-only;
- the seed net, its seed-freeze output and a variant whose early layers lose their gradient
  show the same word for the same layer in ``explain``, ``diff`` and ``graph``;
- ``explain --layer test/pool_proj`` answers the seed question completely, and the command it
  suggests runs.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from rewriter.caffe import states as st
from rewriter.caffe.graph import build_graph
from rewriter.schema.bind import NET, bind
from rewriter.text.cst import parse

from .conftest import REPO, SHARED, need_shared, run_cli

SEED = REPO / "examples" / "seed_net.prototxt"
BACKWARD = SHARED / "oracle" / "backward"


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


def _graph(text: str, phase: str = "TRAIN") -> Any:
    return build_graph(bind(parse(text), root=NET).message, phase=phase)


# --------------------------------------------------------------------------- against Caffe


def _caffe_param_states(run: dict[str, Any]) -> dict[str, list[str]]:
    """Blob states written from Caffe's own dump: lr_mult, decay_mult, sharing, the final
    layer verdict and param_propagate_down. BatchNorm is left out (its statistics are not in
    the dump)."""
    layers = run["layers"]
    first = {}
    for li, layer in enumerate(layers):
        first.setdefault(layer["name"], li)
    gradient = set()
    for li, layer in enumerate(layers):
        if not layer["needs_backward_final"]:
            continue
        for pi, p in enumerate(layer.get("params", [])):
            if layer["param_propagate_down"][pi]:
                sf = p["shared_from"]
                gradient.add((first[sf["layer"]], sf["param_index"]) if sf else (li, pi))
    out: dict[str, list[str]] = {}
    for li, layer in enumerate(layers):
        if layer["type"] == "BatchNorm" or layer["name"] in out:
            continue
        words = []
        for pi, p in enumerate(layer.get("params", [])):
            sf = p["shared_from"]
            owner = (first[sf["layer"]], sf["param_index"]) if sf else (li, pi)
            if p["lr_mult"] != 0 and owner in gradient:
                words.append("trainable")
            elif p["lr_mult"] != 0 and p["decay_mult"] != 0:
                words.append("decay-only")
            else:
                words.append("frozen")
        out[layer["name"]] = words
    return out


def test_param_states_follow_caffe_on_every_oracle_case() -> None:
    need_shared()
    from .test_netinit_oracle import _parse, oracle_runs

    checked = 0
    seen = set()
    for path in sorted(BACKWARD.glob("*.prototxt")):
        text = path.read_text()
        expect = json.loads(path.with_name(f"{path.stem}.expect.json").read_text())
        for (phase, stages, level), r in zip(oracle_runs(text), expect["runs"], strict=True):
            if not r["ok"]:
                continue
            bw = build_graph(_parse(text), phase, stages, level).backward()
            states = bw.states
            want = _caffe_param_states(r)
            for layer in bw.graph.layers:
                if layer.name not in want:
                    continue
                got = list(states.params[layer.index])
                assert got == want.pop(layer.name), (path.name, phase, layer.name)
                checked += len(got)
                seen.update(got)
    assert checked > 100
    assert seen == {"trainable", "decay-only", "frozen"}


def test_layer_state_is_its_strongest_blob_and_batchnorm_statistics() -> None:
    text = """
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        param { lr_mult: 0 decay_mult: 1 } param { lr_mult: 1 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "bn_fixed" type: "BatchNorm" bottom: "c1" top: "c1"
        batch_norm_param { use_global_stats: true } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "c2" top: "ip" propagate_down: false
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    bw = _graph(text).backward()
    s = bw.states
    by = {layer.name: layer.index for layer in bw.graph.layers}
    # c1: lr_mult 0 with decay is frozen (decay scales with the rate); its bias has a rate but
    # the cut below ip leaves it no gradient, and decay_mult 0: nothing moves it
    assert s.params[by["c1"]] == ("frozen", "frozen") and s.layers[by["c1"]] == "frozen"
    # c2: default rates, no gradient: weight decay alone moves it (Caffe's analysis warns too)
    assert s.layers[by["c2"]] == "decay-only"
    assert any(w.kind == "decay-without-gradient" and w.layer == "c2" for w in bw.warnings)
    assert s.layers[by["bn"]] == "statistics-only"
    assert s.layers[by["bn_fixed"]] == "frozen"
    assert s.layers[by["ip"]] == "trainable"
    assert s.layers[by["loss"]] == "backward only" and s.layers[by["data"]] == "no backward"
    # in TEST, BatchNorm uses the global statistics unless told otherwise
    test = _graph(text, "TEST").backward().states
    assert test.layers[by["bn"]] == "frozen"


def test_renderers_know_every_state() -> None:
    from rewriter.review.render import STATES
    from rewriter.review.render.dot import FILL

    assert tuple(STATES) == st.LAYER_STATES
    assert tuple(FILL) == st.LAYER_STATES


# --------------------------------------------------------------------------- across commands


_STATE_RE = "|".join(re.escape(s) for s in st.LAYER_STATES)


@cache
def _explain_states(net: Path) -> dict[str, str]:
    res = run("explain", str(net), "--format", "json")
    assert res.returncode == 0, res.stderr
    return {x["name"]: x["state"] for x in json.loads(res.stdout)["layers"]}


@cache
def _table_states(net: Path) -> dict[str, str]:
    res = run("explain", str(net))
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.splitlines()[2:]:
        m = re.match(rf"(\S+)\s+\S+\s+({_STATE_RE})\s", line + " ")
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _graph_states(net: Path) -> dict[str, str]:
    res = run("graph", str(net), "--format", "dot")
    assert res.returncode == 0, res.stderr
    out = {}
    for tip in re.findall(r'tooltip="([^"]*)"', res.stdout):
        for name, state in re.findall(rf"(\S+) \([^)]*\): ({_STATE_RE})", tip):
            out[name] = state
    return out


def _diff_states(old: Path, new: Path) -> dict[str, tuple[str, str]]:
    res = run("diff", str(old), str(new), "--format", "json")
    assert res.returncode in (0, 1), res.stderr
    (f,) = json.loads(res.stdout)["files"]
    return {b["layer"]: (b["old_state"], b["new_state"]) for b in f["phases"]["TRAIN"]["backward"]}


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("states")
    frozen, cut = tmp / "frozen.prototxt", tmp / "cut.prototxt"
    res = run("apply", "seed-freeze", str(SEED), "-o", str(frozen), "-q")
    assert res.returncode == 0, res.stderr
    # every path into pool2 is cut: the layers below keep their rates but get no gradient
    res = run("apply", "--step", "stop-gradient from=pool2/3x3_s2 to=test/5x5_reduce",
              str(SEED), "-o", str(cut), "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return {"seed": SEED, "frozen": frozen, "cut": cut}


@pytest.mark.parametrize("name", ["frozen", "cut"])
def test_same_word_for_the_same_layer_in_explain_diff_and_graph(
    variants: dict[str, Path], name: str
) -> None:
    net = variants[name]
    explained = _explain_states(net)
    assert _table_states(net) == explained
    drawn = _graph_states(net)
    assert drawn and all(explained[layer] == state for layer, state in drawn.items())
    diffed = _diff_states(SEED, net)
    assert diffed
    seed = _explain_states(SEED)
    for layer, (old, new) in diffed.items():
        assert (old, new) == (seed[layer], explained[layer]), layer
    expect = {"frozen": "frozen", "cut": "decay-only"}[name]
    assert explained["conv1/7x7_s2"] == expect
    assert diffed["conv1/7x7_s2"] == ("trainable", expect)
    assert drawn["conv1/7x7_s2"] == expect


# --------------------------------------------------------------------------- the seed question


def test_layer_answer_lists_causes_and_its_command_runs(tmp_path: Path) -> None:
    shutil.copy(SEED, tmp_path / "seed_net.prototxt")
    res = run("explain", "seed_net.prototxt", "--layer", "test/pool_proj", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "-> updates" not in out
    assert 'Caffe logs "test/pool_proj needs backward computation." because any of:' in out
    alternatives = [line.strip() for line in out.splitlines() if line.startswith("    - ")]
    assert len(alternatives) == 3
    assert alternatives[0].startswith("- param 0 (weights) has lr_mult 1")
    # the input is counted although the table lists its producer as "no backward": say so
    assert "its input 'test/pool'" in alternatives[2]
    assert "propagate_down: false does not clear that mark" in alternatives[2]
    assert "test/pool gets none (no backward)" in alternatives[2]
    assert _table_states(SEED)["test/pool"] == "no backward"

    (advice,) = [line for line in out.splitlines() if line.startswith("  to freeze it: ")]
    cmd = shlex.split(advice.split(": ", 1)[1])
    assert cmd[:3] == ["rewriter", "apply", "freeze"]
    done = subprocess.run([sys.executable, "-m", "rewriter.cli", *cmd[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    frozen = tmp_path / cmd[cmd.index("-o") + 1]
    assert frozen.is_file()
    assert 'after that, Caffe will still log "test/pool_proj needs backward computation."' in out
    assert "no gradient passes down to test/pool" in out

    # what was promised: Caffe's log line stays, the layer is frozen
    log = run("explain", str(frozen), "--format", "log")
    assert "test/pool_proj needs backward computation." in log.stdout.splitlines()
    assert _explain_states(frozen)["test/pool_proj"] == "frozen"
    after = run("explain", str(frozen), "--layer", "test/pool_proj").stdout
    assert "test/pool_proj (Convolution), layer 17 of the TRAIN net: frozen" in after
    assert "its parameters do not change" in after and "to freeze it" not in after
    assert "-> updates" not in after


def test_layer_answer_never_says_updates_for_a_still_blob(variants: dict[str, Path]) -> None:
    res = run("explain", str(variants["cut"]), "--layer", "conv1/7x7_s2")
    assert res.returncode == 0, res.stderr
    assert "-> updates" not in res.stdout
    # weights decay (decay_mult 1), the bias does not (decay_mult 0): nothing moves it
    assert "param 0 (weights): lr_mult 1, decay_mult 1 -> decay-only" in res.stdout
    assert "param 1 (bias): lr_mult 2, decay_mult 0 -> frozen" in res.stdout
    assert "to freeze it: rewriter apply freeze" in res.stdout


BN_NET = """layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        param { lr_mult: 0 } param { lr_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "ip" type: "InnerProduct" bottom: "c1" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_batchnorm_answer_freezes_its_statistics(tmp_path: Path) -> None:
    (tmp_path / "bn.prototxt").write_text(BN_NET)
    res = run("explain", "bn.prototxt", "--layer", "bn", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("bn (BatchNorm), layer 2 of the TRAIN net: statistics-only")
    # Net::Init logs it from the default rate 1; the solver's rate is the 0 Caffe forces
    assert "has lr_mult 1 (the default: no lr_mult given); Net::Init tests this" in res.stdout
    (advice,) = [x for x in res.stdout.splitlines() if x.startswith("  to freeze its statistics:")]
    cmd = shlex.split(advice.split(": ", 1)[1])
    done = subprocess.run([sys.executable, "-m", "rewriter.cli", *cmd[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = run("explain", cmd[cmd.index("-o") + 1], "--layer", "bn", cwd=tmp_path).stdout
    assert after.startswith("bn (BatchNorm), layer 2 of the TRAIN net: frozen")
    assert "the solver's rates are 0: its parameters do not change" in after
