"""Net::Init errors are located like parse errors, and ``check`` refuses what Caffe refuses.

Inputs are real: the seed net with a typo'd bottom, the oracle's failing backward cases
(``oracle/backward/*.expect.json`` hold Caffe's exact message), a V0 file as a fork spells
one of its types, and the corpus nets Caffe initialises.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import CORPUS, ORACLE, REPO, need_shared
from .test_cli_explain import run

SEED = REPO / "examples" / "seed_net.prototxt"
TYPO = ('bottom: "pool1/norm1"', 'bottom: "pool1/norm_1"')


@pytest.fixture
def typo_net(tmp_path: Path) -> tuple[Path, int, int]:
    """The seed net with its first ``pool1/norm1`` bottom misspelt; (path, line, col)."""
    text = SEED.read_text()
    at = text.index(TYPO[0])
    bad = text[:at] + TYPO[1] + text[at + len(TYPO[0]) :]
    path = tmp_path / "seed_typo.prototxt"
    path.write_text(bad)
    line = bad.count("\n", 0, at) + 1
    col = at - bad.rfind("\n", 0, at) + len('bottom: "') - 1
    return path, line, col


def test_check_refuses_the_typo_with_its_line_and_a_did_you_mean(
    typo_net: tuple[Path, int, int],
) -> None:
    path, line, col = typo_net
    proc = run("check", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ok, net" not in proc.stdout
    assert f"{path}:{line}:{col}: error:" in proc.stderr
    assert "Unknown bottom blob 'pool1/norm_1' (layer 'conv2/3x3_reduce', bottom index 0)" in (
        proc.stderr
    )
    assert "did you mean 'pool1/norm1'?" in proc.stderr
    caret = proc.stderr.splitlines()
    i = next(k for k, t in enumerate(caret) if t.strip() == TYPO[1])
    assert caret[i + 1].index("^") == caret[i].index('"')
    assert "Traceback" not in proc.stderr


def test_check_json_carries_the_location(typo_net: tuple[Path, int, int]) -> None:
    path, line, col = typo_net
    proc = run("check", "--format", "json", str(path))
    assert proc.returncode == 2
    (entry,) = json.loads(proc.stdout)["files"]
    assert entry["ok"] is False
    (d,) = [d for d in entry["diagnostics"] if d["code"] == "net-init"]
    assert (d["severity"], d["path"], d["line"], d["col"]) == ("error", str(path), line, col)
    assert d["hint"] == "did you mean 'pool1/norm1'?"


@pytest.mark.parametrize("command", ["explain", "graph", "shapes"])
def test_graph_commands_print_the_same_located_error(
    typo_net: tuple[Path, int, int], command: str
) -> None:
    path, line, col = typo_net
    proc = run(command, str(path))
    assert proc.returncode == 2
    assert f"{path}:{line}:{col}: error:" in proc.stderr
    assert "did you mean 'pool1/norm1'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_seed_net_itself_still_checks() -> None:
    proc = run("check", str(SEED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(": ok, net\n")


# --- the oracle's refused nets --------------------------------------------------------------

# case -> (layer Caffe stops at, the text the caret must sit on): the cause each case's
# header comment names
_CAUSES = {
    "dup_top_error": ("fc", 'top: "feat"'),
    "loss_two_tops_default_weight_error": ("loss", 'top: "prob"'),
    "pd_count_mismatch": ("cat", "propagate_down: false"),
    "shared_params_lr_mismatch": ("fb", "lr_mult: 1"),
    "unknown_bottom_error": ("fc", 'bottom: "aux"'),
}


def _first_failure(case: str) -> dict[str, Any]:
    need_shared()
    expect = json.loads((ORACLE / "backward" / f"{case}.expect.json").read_text())
    return next(r for r in expect["runs"] if not r["ok"])


def _expected_place(path: Path, layer: str, needle: str) -> tuple[int, int]:
    lines = path.read_text().splitlines()
    n = next(i for i, t in enumerate(lines) if f'name: "{layer}"' in t)
    text = lines[n]
    value = needle.split(": ", 1)[1] if ": " in needle else needle
    return n + 1, text.index(needle) + len(needle) - len(value) + 1


def test_every_failing_oracle_case_is_covered() -> None:
    need_shared()
    failing = {
        p.name.removesuffix(".expect.json")
        for p in (ORACLE / "backward").glob("*.expect.json")
        if not all(r["ok"] for r in json.loads(p.read_text())["runs"])
    }
    assert failing == set(_CAUSES)


@pytest.mark.parametrize("case", sorted(_CAUSES))
def test_oracle_refusal_in_caffes_words_at_the_cause(case: str) -> None:
    run_ = _first_failure(case)
    path = ORACLE / "backward" / f"{case}.prototxt"
    line, col = _expected_place(path, *_CAUSES[case])
    phase = run_["phase"]
    proc = run("explain", "--phase", phase, str(path))
    assert proc.returncode == 2, proc.stdout
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"{path}:{line}:{col}: error: Caffe refuses the net in phase {phase}")
    assert first.endswith(f"({run_['error_location']}): {run_['error']}")
    assert "\n  help: " in proc.stderr


@pytest.mark.parametrize("case", sorted(_CAUSES))
def test_check_agrees_with_the_oracle(case: str) -> None:
    """Refused in every phase it is meant for: exit 2. Refused only where a phase rule leaves
    the producer out (unknown_bottom_error: TEST builds): a located warning, exit 0."""
    need_shared()
    expect = json.loads((ORACLE / "backward" / f"{case}.expect.json").read_text())
    path = ORACLE / "backward" / f"{case}.prototxt"
    line, col = _expected_place(path, *_CAUSES[case])
    proc = run("check", str(path))
    some_ok = any(r["ok"] for r in expect["runs"])
    assert proc.returncode == (0 if some_ok else 2), proc.stderr
    severity = "warning" if some_ok else "error"
    out = proc.stdout + proc.stderr  # warnings go to stdout, errors to stderr
    assert f"{path}:{line}:{col}: {severity}: " in out
    assert _first_failure(case)["error"] in out


# --- V0 files -----------------------------------------------------------------------------


def test_v0_fork_type_is_located_with_lenient(tmp_path: Path) -> None:
    """A fork's V0 spelling ``inner_product`` (BVLC: ``innerproduct``): Caffe's upgrade says
    only "Unknown layer name: inner_product"; we add the line and the BVLC spelling."""
    need_shared()
    src = CORPUS / "BVLC-caffe@2e33058" / "examples" / "lenet" / "lenet_train.prototxt"
    text = src.read_text()
    m = re.search(r'type: "innerproduct"', text)
    assert m is not None
    fork = text[: m.start()] + 'type: "inner_product"' + text[m.end() :]
    path = tmp_path / "v0_fork.prototxt"
    path.write_text(fork)
    line = fork.count("\n", 0, m.start()) + 1
    for command in ("explain", "check"):
        proc = run(command, "--lenient", str(path))
        assert proc.returncode == 2, proc.stdout
        assert f"{path}:{line}:" in proc.stderr
        assert "Unknown layer name: inner_product" in proc.stderr
        assert "did you mean 'innerproduct'?" in proc.stderr
        assert "Traceback" not in proc.stderr


# --- the corpus ---------------------------------------------------------------------------


def _initialised_corpus_nets() -> list[Path]:
    """Corpus nets the oracle's Caffe initialised in every run it made."""
    out = []
    for p in sorted((ORACLE / "corpus-backward").rglob("*.json")):
        runs = json.loads(p.read_text())["runs"]
        if runs and all(r["ok"] for r in runs):
            out.append(CORPUS / p.relative_to(ORACLE / "corpus-backward").with_suffix(""))
    return out


def test_nets_caffe_initialises_pass_check() -> None:
    need_shared()
    from rewriter.caffe.diagnose import net_init_diagnostics
    from rewriter.schema.bind import diagnose
    from rewriter.text.fileio import read_text

    nets = _initialised_corpus_nets()
    assert len(nets) > 90
    refused = []
    for path in nets:
        bound, _ = diagnose(read_text(path), str(path), lenient=True)
        assert bound is not None
        errors = [
            d for d in net_init_diagnostics(bound.document, bound.message) if d.severity == "error"
        ]
        refused += [d.render() for d in errors]
    assert refused == []


def test_a_fork_filler_is_a_warning_at_its_type() -> None:
    """intel's ``gabor`` filler: BVLC stops on it (the oracle says so), a fork may not."""
    need_shared()
    rel = "BVLC-caffe@intel/models/intel_optimized_models/alexnet/train_val_gabor_init.prototxt"
    oracle = json.loads((ORACLE / "corpus-backward" / f"{rel}.json").read_text())
    (message,) = {r["error"] for r in oracle["runs"]}
    path = CORPUS / rel
    proc = run("check", str(path))
    assert proc.returncode == 0
    lines = path.read_text().splitlines()
    line = next(i for i, t in enumerate(lines) if 'type: "gabor"' in t) + 1
    assert f"{path}:{line}:" in proc.stdout
    assert message.removeprefix("F filler.hpp: ") in proc.stdout


# --- legacy formats and net-level fields ----------------------------------------------------


def test_v1_shared_param_mismatch_points_at_its_blobs_lr(tmp_path: Path) -> None:
    """The oracle's V1 case (legacy inputs, ``blobs_lr``) with conv2 sharing conv1's weights
    under another lr: V1 spells ``param { name lr_mult }`` as ``param:`` and ``blobs_lr:``."""
    need_shared()
    text = (ORACLE / "backward" / "legacy_v1_layers_blobs_lr.prototxt").read_text()
    first = "blobs_lr: 0 blobs_lr: 0 weight_decay: 0"
    second = "blobs_lr: 0 blobs_lr: 2 weight_decay: 1"
    assert text.count(first) == text.count(second) == 1
    text = text.replace(first, 'param: "w" blobs_lr: 1 blobs_lr: 0 weight_decay: 0')
    text = text.replace(second, 'param: "w" blobs_lr: 0 blobs_lr: 2 weight_decay: 1')
    path = tmp_path / "v1_shared.prototxt"
    path.write_text(text)
    lines = text.splitlines()
    n = next(i for i, t in enumerate(lines) if 'param: "w" blobs_lr: 0' in t)
    col = lines[n].index("blobs_lr: 0") + len("blobs_lr: ") + 1
    proc = run("check", str(path))
    assert proc.returncode == 2
    assert f"{path}:{n + 1}:{col}: error:" in proc.stderr
    assert "Shared param 'w' has mismatched lr_mult." in proc.stderr
    assert "layer 'conv1' shares this param with lr_mult: 1" in proc.stderr


def test_mixed_layer_formats_in_caffes_words() -> None:
    need_shared()
    case = ORACLE / "upgrade" / "mixed_layer_and_layers_error"
    words = (case.parent / f"{case.name}.error.txt").read_text().strip()
    path = case.parent / f"{case.name}.prototxt"
    lines = path.read_text().splitlines()
    line = next(i for i, t in enumerate(lines) if t.startswith("layers")) + 1
    proc = run("check", str(path))
    assert proc.returncode == 2
    assert f"{path}:{line}:1: error: Caffe refuses the net (upgrade_proto.cpp): {words}" in (
        proc.stderr
    )


def test_legacy_input_dims_point_at_input_dim(tmp_path: Path) -> None:
    path = tmp_path / "dims.prototxt"
    path.write_text(
        'input: "a"\ninput: "b"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 4\ninput_dim: 4\n'
        'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }\n'
    )
    proc = run("check", str(path))
    assert proc.returncode == 2
    assert f"{path}:3:12: error: " in proc.stderr
    assert "Incorrect input blob dimension specifications." in proc.stderr
    assert "give 4 input_dim per input (8 in all)" in proc.stderr


def test_near_miss_layer_type_is_a_located_warning(tmp_path: Path) -> None:
    """BVLC has no ``Convolutoin``; a fork might, so check warns (exit 0) and suggests."""
    text = SEED.read_text()
    at = text.index('type: "Convolution"')
    bad = text[:at] + 'type: "Convolutoin"' + text[at + len('type: "Convolution"') :]
    path = tmp_path / "type_typo.prototxt"
    path.write_text(bad)
    line = bad.count("\n", 0, at) + 1
    proc = run("check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"{path}:{line}:" in proc.stdout
    assert "Unknown layer type: Convolutoin" in proc.stdout
    assert "did you mean 'Convolution'?" in proc.stdout
    # and the set-up checks say they stopped at the unknown type (one warning for both phases)
    assert "phase TRAIN and TEST: set-up checks skipped for" in proc.stdout
    assert "ok, net (2 warning(s))" in proc.stdout


def test_include_and_exclude_rules_point_at_exclude(tmp_path: Path) -> None:
    text = SEED.read_text()
    at = text.index('type: "Convolution"')
    both = "include { phase: TRAIN }\n  exclude { phase: TEST }\n  "
    path = tmp_path / "both_rules.prototxt"
    path.write_text(text[:at] + both + text[at:])
    line = text.count("\n", 0, at) + 2
    proc = run("check", str(path))
    assert proc.returncode == 2
    assert f"{path}:{line}:" in proc.stderr
    assert "Specify either include rules or exclude rules; not both." in proc.stderr


def test_explain_layer_typo_suggests_the_name() -> None:
    proc = run("explain", str(SEED), "--layer", "conv2/3x3_reduc")
    assert proc.returncode == 2
    assert "did you mean 'conv2/3x3_reduce'?" in proc.stderr


@pytest.mark.parametrize(("phase", "want"), [("TRAIN", 0), ("TEST", 1)])
def test_a_name_shared_by_phases_is_located_in_the_phase_kept(phase: str, want: int) -> None:
    """An error naming only the layer (as shape checks may) goes to the block the phase
    keeps: lenet's TRAIN and TEST data layers are both called "mnist"."""
    need_shared()
    from rewriter.caffe.diagnose import diagnostic
    from rewriter.caffe.graph import CaffeError
    from rewriter.text.cst import parse

    path = CORPUS / "BVLC-caffe" / "examples" / "mnist" / "lenet_train_test.prototxt"
    text = path.read_text()
    lines = text.splitlines()
    label_lines = [i + 1 for i, t in enumerate(lines) if t.strip() == 'top: "label"'][:2]
    err = CaffeError("made up", "net.cpp", layer="mnist", field="top", index=1)
    err.phase = phase
    loc = diagnostic(err, parse(text, str(path))).location
    assert loc is not None and loc.line == label_lines[want]


@pytest.mark.parametrize(
    ("field", "anchor"),
    [
        ("top", 'top: "feat"'),  # written: its value
        ("inner_product_param.axis", "inner_product_param {"),  # default: the enclosing block
        ("param[1].lr_mult", 'name: "fc"'),  # no param block at all: the layer's name
    ],
)
def test_an_unwritten_field_falls_back_to_what_encloses_it(field: str, anchor: str) -> None:
    need_shared()
    from rewriter.caffe.diagnose import diagnostic
    from rewriter.caffe.graph import CaffeError
    from rewriter.text.cst import parse

    path = ORACLE / "backward" / "dup_top_error.prototxt"
    text = path.read_text()
    lines = text.splitlines()
    n = next(i for i, t in enumerate(lines) if 'name: "fc"' in t)
    value = anchor.split(": ", 1)[1] if ": " in anchor else anchor
    col = lines[n].index(anchor) + len(anchor) - len(value) + 1
    err = CaffeError("made up", "net.cpp", layer="fc", layer_index=3, field=field)
    loc = diagnostic(err, parse(text, str(path))).location
    assert loc is not None and (loc.line, loc.col) == (n + 1, col)


def test_schema_only_skips_the_wiring(typo_net: tuple[Path, int, int]) -> None:
    """Net fragments and templates are not whole nets: ``--schema-only`` checks the schema."""
    path, _, _ = typo_net
    proc = run("check", "--schema-only", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{path}: ok, net\n"
