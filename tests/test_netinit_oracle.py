"""Net::Init backward analysis against what real BVLC Caffe printed (shared/oracle).

- every run of every case in ``oracle/backward/`` (layers, splits, verdicts, flags, lr_mult,
  loss weights, inputs, outputs, or Caffe's exact FATAL text);
- every file of ``oracle/corpus-backward/`` (the real-file corpus);
- the seed net's TRAIN log.

Run with ``-s`` to see the match counts printed by the ``*_summary`` tests.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from rewriter.caffe.graph import CaffeError, Graph, build_graph, upgrade_net_message
from rewriter.caffe.layer_params import ORACLE_BUILD_LAYER_TYPES
from rewriter.caffe.netinit import Backward, analyze

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BACKWARD = SHARED / "oracle" / "backward"
CORPUS = SHARED / "corpus"
CORPUS_BACKWARD = SHARED / "oracle" / "corpus-backward"
SEED = SHARED / "seed"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared truth data not found at {path} (expected next to the checkout)")


def _net_class() -> Any:
    from rewriter.schema.runtime import default_schema

    return default_schema().message_class("caffe.NetParameter")


def _parse(text: str | bytes, allow_unknown_field: bool = False) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(text, _net_class()(), allow_unknown_field=allow_unknown_field)


def _f32(x: float) -> float:
    """Caffe stores multipliers and loss weights as float: compare at float precision."""
    return float(struct.unpack("f", struct.pack("f", float(x)))[0])


def _f32s(xs: Any) -> list[float]:
    return [_f32(x) for x in xs]


# --------------------------------------------------------------------------- oracle/backward

Run = tuple[str, tuple[str, ...], int]


def oracle_runs(text: str) -> list[Run]:
    """Parse the ``# oracle-runs: TRAIN | TEST stage=a,b | TRAIN level=2`` line."""
    m = re.search(r"^# oracle-runs:(.*)$", text, re.M)
    assert m, "case without an oracle-runs line"
    runs: list[Run] = []
    for part in m.group(1).split("|"):
        words = part.split()
        stages: tuple[str, ...] = ()
        level = 0
        for word in words[1:]:
            key, value = word.split("=", 1)
            if key == "stage":
                stages = tuple(value.split(","))
            elif key == "level":
                level = int(value)
            else:
                raise AssertionError(f"unknown run option {word}")
        runs.append((words[0], stages, level))
    return runs


def _backward_params() -> list[Any]:
    if not BACKWARD.exists():
        return [pytest.param(None, 0, id="no-shared-data")]
    out = []
    for path in sorted(BACKWARD.glob("*.prototxt")):
        expect = json.loads(path.with_name(path.stem + ".expect.json").read_text())
        for i in range(len(expect["runs"])):
            out.append(pytest.param(path.stem, i, id=f"{path.stem}-{i}"))
    return out


def _layer_view(graph: Graph, result: Backward) -> list[dict[str, Any]]:
    return [
        {
            "name": layer.name,
            "type": layer.type,
            "inserted_split": layer.inserted_split,
            "bottoms": list(layer.bottoms),
            "tops": list(layer.tops),
            "needs_backward": v.needs_backward,
            "needs_backward_final": v.needs_backward_final,
            "bottom_need_backward": list(v.bottom_need_backward),
            "bottom_allow_force_backward": list(layer.allow_force_backward),
            "param_lr_mult": _f32s(v.param_lr_mult),
            "param_propagate_down": list(v.param_propagate_down),
            "loss_weights": _f32s(layer.loss_weights),
        }
        for layer, v in zip(graph.layers, result.layers, strict=True)
    ]


def _expected_view(run: dict[str, Any]) -> list[dict[str, Any]]:
    keys = (
        "name",
        "type",
        "inserted_split",
        "bottoms",
        "tops",
        "needs_backward",
        "needs_backward_final",
        "bottom_need_backward",
        "bottom_allow_force_backward",
        "param_propagate_down",
    )
    out = []
    for layer in run["layers"]:
        row = {k: layer[k] for k in keys}
        row["param_lr_mult"] = _f32s(layer["param_lr_mult"])
        row["loss_weights"] = _f32s(layer["loss_weights"])
        out.append(row)
    return out


def check_backward_run(case: str, index: int) -> str | None:
    """None when the run matches Caffe, else a description of the first difference."""
    path = BACKWARD / f"{case}.prototxt"
    text = path.read_text()
    expect = json.loads(path.with_name(f"{case}.expect.json").read_text())
    run = expect["runs"][index]
    phase, stages, level = oracle_runs(text)[index]
    assert (phase, list(stages), level) == (run["phase"], run["stages"], run["level"])
    net = _parse(text)
    try:
        graph = build_graph(net, phase, stages, level)
        result = analyze(graph)
    except CaffeError as exc:
        if run["ok"]:
            return f"unexpected error {exc}"
        if exc.message != run["error"]:
            return f"error {exc.message!r} != {run['error']!r}"
        if exc.location != run["error_location"]:
            return f"error location {exc.location} != {run['error_location']}"
        return None
    if not run["ok"]:
        return f"no error, Caffe says {run['error']!r}"
    got, want = _layer_view(graph, result), _expected_view(run)
    if len(got) != len(want):
        return f"layers {[g['name'] for g in got]} != {[w['name'] for w in want]}"
    for g, w in zip(got, want, strict=True):
        if g != w:
            diff = {k: (g[k], w[k]) for k in w if g[k] != w[k]}
            return f"layer {w['name']}: {diff}"
    splits = [
        {
            "name": layer.name,
            "index": layer.index,
            "bottom": layer.bottoms[0],
            "tops": list(layer.tops),
            "loss_weights": _f32s(layer.loss_weights),
        }
        for layer in graph.layers
        if layer.inserted_split
    ]
    want_splits = [dict(s, loss_weights=_f32s(s["loss_weights"])) for s in run["splits"]]
    checks = {
        "splits": (splits, want_splits),
        "outputs": (list(graph.outputs), run["outputs"]),
        "inputs": (list(graph.inputs), run["inputs"]),
        "net_name": (graph.net_name, run["net_name"]),
        "force_backward": (graph.force_backward, run["force_backward"]),
        "stages": (list(graph.stages), run["net_state"]["stages"]),
    }
    for what, (g2, w2) in checks.items():
        if g2 != w2:
            return f"{what}: {g2} != {w2}"
    # params: sharing owner and effective decay_mult too
    for layer, want_layer in zip(graph.layers, run["layers"], strict=True):
        for p, wp in zip(layer.params, want_layer["params"], strict=True):
            owner = None
            if p.shared_from is not None:
                owner = {"layer": p.shared_from_name, "param_index": p.shared_from[1]}
            if owner != wp["shared_from"] or _f32(p.decay_mult) != _f32(wp["decay_mult"]):
                return f"param {layer.name}[{p.index}]: {p} vs {wp}"
            if p.name != wp["name"]:
                return f"param name {layer.name}[{p.index}]: {p.name!r} != {wp['name']!r}"
    final = run["force_backward_final"]
    if (
        final is not None
        and [v.needs_backward_final for v in result.layers] != final["needs_backward"]
    ):
        return "force_backward_final differs"
    return None


@pytest.mark.parametrize(("case", "index"), _backward_params())
def test_backward_case(case: str | None, index: int) -> None:
    _need(BACKWARD)
    assert case is not None
    assert check_backward_run(case, index) is None


def test_backward_summary() -> None:
    _need(BACKWARD)
    cases = sorted(BACKWARD.glob("*.prototxt"))
    runs = ok = 0
    cases_ok = 0
    for path in cases:
        n = len(json.loads(path.with_name(path.stem + ".expect.json").read_text())["runs"])
        good = sum(check_backward_run(path.stem, i) is None for i in range(n))
        runs += n
        ok += good
        cases_ok += good == n
    print(f"\noracle/backward: {cases_ok}/{len(cases)} cases, {ok}/{runs} runs match Caffe")
    assert (cases_ok, ok) == (len(cases), runs)


# --------------------------------------------------------------------------- seed


def test_seed_train_log() -> None:
    _need(SEED)
    net = _parse((SEED / "seed_net.prototxt").read_text())
    result = analyze(build_graph(net, "TRAIN"))
    want = [
        line.split("] ", 1)[1]
        for line in (SEED / "seed_caffe_train_log.txt").read_text().splitlines()
        if "backward computation." in line
    ]
    assert want, "no verdict lines in the seed log"
    assert result.log_lines() == want
    outputs = [
        line.split("This network produces output ", 1)[1]
        for line in (SEED / "seed_caffe_train_log.txt").read_text().splitlines()
        if "This network produces output " in line
    ]
    assert list(result.graph.outputs) == outputs


# --------------------------------------------------------------------------- corpus


def _corpus_files() -> list[Path]:
    if not CORPUS_BACKWARD.exists():
        return []
    return sorted(CORPUS_BACKWARD.rglob("*.json"))


def _substituted_copy(net: Any, names: list[str]) -> Any:
    """The oracle's copy: substituted data layers (no bottoms) become DummyData.

    Done on the upgraded (V2) view, as the oracle did for V0 files.
    """
    copy = type(net)()
    copy.CopyFrom(upgrade_net_message(net))
    wanted = set(names)
    for layer in copy.layer:
        if layer.name in wanted and not layer.bottom:
            layer.type = "DummyData"
    return copy


@cache
def check_corpus_file(rel: str) -> tuple[str, int, int, str | None]:
    """(status, runs, matching runs, first difference) for one corpus-backward file.

    status: "compared" (analysed and compared), "parse-error" (protobuf refuses the file, as it
    refused Caffe's copy: nothing more to compare).
    """
    data = json.loads((CORPUS_BACKWARD / rel).read_text())
    raw = (CORPUS / data["source"]).read_bytes()
    runs = data["runs"]
    try:
        net = _parse(raw)
    except Exception as exc:  # protobuf's ParseError
        caffe_parse_failed = all(
            not r["ok"] and (r["error"] or "").startswith("[libprotobuf ERROR") for r in runs
        )
        if caffe_parse_failed:
            return "parse-error", len(runs), len(runs), None
        if all(r["ok"] or "layer_factory" in (r["error"] or "") for r in runs):
            # Unknown fields only inside data layers the oracle substituted (their *_param
            # was dropped in Caffe's copy): ignore them like the copy did.
            net = _parse(raw, allow_unknown_field=True)
        else:
            return "compared", len(runs), 0, f"parse error {exc} but Caffe parsed the copy"
    copy = _substituted_copy(net, data["substituted"])
    good = 0
    first: str | None = None
    for run in runs:
        problem = _check_corpus_run(net, copy, run)
        if problem is None:
            good += 1
        elif first is None:
            first = f"{run['phase']} {run['stages']}: {problem}"
    return "compared", len(runs), good, first


def _check_corpus_run(net: Any, copy: Any, run: dict[str, Any]) -> str | None:
    args = (run["phase"], tuple(run["stages"]), run["level"])
    # The oracle's own build: a type it lacks is a FATAL error, as in Caffe.
    try:
        build_graph(copy, *args, registered_types=ORACLE_BUILD_LAYER_TYPES)
        strict_error: CaffeError | None = None
    except CaffeError as exc:
        strict_error = exc
    try:
        graph = build_graph(net, *args)
        result = analyze(graph)
    except CaffeError as exc:
        if run["ok"]:
            return f"unexpected error {exc}"
        if strict_error is None or f"F {exc.location}: {exc.message}" != run["error"]:
            return f"error {exc} != {run['error']}"
        return None
    if not run["ok"]:
        if strict_error is None:
            return f"no error, Caffe says {run['error']}"
        if f"F {strict_error.location}: {strict_error.message}" != run["error"]:
            return f"error {strict_error} != {run['error']}"
        return None
    if strict_error is not None:
        return f"unexpected error in the oracle build: {strict_error}"
    got = [
        (layer.name, layer.type, v.needs_backward_final, list(v.bottom_need_backward))
        + (_f32s(v.param_lr_mult),)
        for layer, v in zip(graph.layers, result.layers, strict=True)
    ]
    want = [
        (w["name"], w["type"], w["needs_backward"], w["bottom_need_backward"])
        + (_f32s(w["param_lr_mult"]),)
        for w in run["layers"]
    ]
    if got != want:
        if len(got) != len(want):
            return f"{len(got)} layers != {len(want)}"
        first = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
        return f"layer {first}: {got[first]} != {want[first]}"
    splits = [layer.name for layer in graph.layers if layer.inserted_split]
    for what, g2, w2 in (
        ("splits", splits, run["splits"]),
        ("outputs", list(graph.outputs), run["outputs"]),
        ("inputs", list(graph.inputs), run["inputs"]),
    ):
        if g2 != w2:
            return f"{what}: {g2} != {w2}"
    return None


def _corpus_params() -> list[Any]:
    files = _corpus_files()
    if not files:
        return [pytest.param(None, id="no-shared-data")]
    return [pytest.param(str(p.relative_to(CORPUS_BACKWARD)), id=str(p.stem)) for p in files]


@pytest.mark.parametrize("rel", _corpus_params())
def test_corpus_file(rel: str | None) -> None:
    _need(CORPUS_BACKWARD)
    assert rel is not None
    status, runs, good, problem = check_corpus_file(rel)
    assert good == runs, problem


def test_corpus_summary() -> None:
    _need(CORPUS_BACKWARD)
    counts: Counter[str] = Counter()
    for path in _corpus_files():
        status, runs, good, _ = check_corpus_file(str(path.relative_to(CORPUS_BACKWARD)))
        counts[f"{status} files"] += 1
        counts[f"{status} runs"] += runs
        counts[f"{status} runs matching"] += good
        counts[f"{status} files matching"] += good == runs
    total = len(_corpus_files())
    print(
        f"\noracle/corpus-backward: {total} files; compared: "
        f"{counts['compared files matching']}/{counts['compared files']} files, "
        f"{counts['compared runs matching']}/{counts['compared runs']} runs match Caffe; "
        f"protobuf refuses {counts['parse-error files']} files "
        f"({counts['parse-error runs']} runs) exactly where Caffe's parser did"
    )
    assert counts["compared runs matching"] == counts["compared runs"]
