"""`rewriter diff`: semantic changes of real nets, in every output format.

The reference change is the one of the issue: the seed net against its frozen version (every
layer up to ``pool2/3x3_s2`` frozen, with zero decay). Its "before" verdicts are checked against
real Caffe's log of the seed net; the diff's "after" side is checked against real Caffe on the
oracle cases (``test_oracle_cases_new_side_matches_caffe``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rewriter.review import semdiff
from rewriter.text.cst import parse
from rewriter.text.edit import Editor

from .conftest import ORACLE, REPO, SHARED, corpus_params, need_shared, read_corpus

SEED = REPO / "examples" / "seed_net.prototxt"
UPTO = "pool2/3x3_s2"

#: the layers whose parameters the freeze changes (every layer with params up to pool2)
FROZEN_CONVS = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"]
#: the TRAIN chain that stops needing backward (Caffe logs "needs backward" for all of them on
#: the original seed net; nothing upstream of pool2 learns after the freeze)
CHAIN = [
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


# ``python -m rewriter.cli`` would run cli.py as __main__, a second module object on which
# the commands of rewriter/cli/commands/ do not register: call the console entry point instead.
CLI = [sys.executable, "-c", "import sys; sys.argv[0] = 'rewriter'; "
       "from rewriter.cli import main; main()"]  # fmt: skip


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _apply_available() -> bool:
    """`rewriter apply` exists (another issue builds it; until then the Editor stands in)."""
    if importlib.util.find_spec("rewriter.recipes.engine") is None:
        return False
    return run("apply", "--help").returncode == 0


def freeze_with_editor(text: str, upto: str) -> str:
    """Every lr_mult / decay_mult of every layer up to ``upto`` (in file order) set to 0."""
    doc = parse(text)
    ed = Editor(doc)
    for i, f in enumerate(doc.fields):
        if f.name != "layer" or f.body is None:
            continue
        body = f.message
        for j, sub in enumerate(body.fields):
            if sub.name == "param" and sub.is_message:
                for k, g in enumerate(sub.message.fields):
                    if g.name in ("lr_mult", "decay_mult"):
                        ed.set_value((i, j, k), "0")
        name = body.get("name")
        if name is not None and name.value_text.strip('"') == upto:
            break
    return ed.apply().code


def frozen_seed(tmp_path: Path) -> Path:
    """The seed net frozen up to pool2/3x3_s2 with zero decay: built by `rewriter apply` once
    it exists, else directly with the Editor."""
    out = tmp_path / "frozen.prototxt"
    if _apply_available():
        res = run(
            "apply", "freeze", str(SEED), "--set", f"upto={UPTO}", "--set", "zero_decay=true",
            "-o", str(out),
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
    else:
        out.write_text(freeze_with_editor(SEED.read_text(), UPTO))
    return out


def test_apply_and_editor_fixtures_agree(tmp_path: Path) -> None:
    """The seed tests use `rewriter apply`; the Editor-built stand-in must be the same file."""
    if not _apply_available():
        pytest.skip("`rewriter apply` is not available: the tests use the Editor fixture")
    out = frozen_seed(tmp_path)
    assert out.read_text() == freeze_with_editor(SEED.read_text(), UPTO)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return frozen_seed(tmp_path_factory.mktemp("frozen"))


# --------------------------------------------------------------------------- the seed freeze


def test_seed_chain_needed_backward_in_caffes_own_log() -> None:
    """The "before" side of the expected sets is Caffe's: it ran backward for the whole chain."""
    need_shared()
    log = (SHARED / "seed" / "seed_caffe_train_log.txt").read_text()
    needs = {m.group(1) for m in re.finditer(r"\] (\S+) needs backward computation\.", log)}
    assert set(CHAIN) <= needs
    old = semdiff.diff_files(SEED, SEED)
    assert not old.has_changes


def _expected_params() -> set[tuple[str, int]]:
    return {(name, i) for name in FROZEN_CONVS for i in (0, 1)}


def test_seed_freeze_json_lists_exactly_the_changes(frozen: Path) -> None:
    res = run("diff", str(SEED), str(frozen), "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["schema_version"] == 1
    assert data["semantic_changes"] is True
    (f,) = data["files"]
    assert f["kind"] == "net" and f["status"] == "modified"
    assert f["fields"] == [] and f["weights"] == []
    assert [c["name"] for c in f["layers"]] == FROZEN_CONVS
    for c in f["layers"]:
        assert c["change"] == "modified"
        paths = {x["path"] for x in c["fields"]}
        # lr_mult / decay_mult only; the bias's decay_mult was already 0
        assert paths == {"param[0].lr_mult", "param[0].decay_mult", "param[1].lr_mult"}
        assert all(x["new"] == 0 for x in c["fields"])
    for phase in ("TRAIN", "TEST"):
        p = f["phases"][phase]
        assert p["old_error"] is None and p["new_error"] is None
        assert [b["layer"] for b in p["backward"]] == CHAIN
        assert all(b["change"] == "stops" for b in p["backward"])
        assert {(x["layer"], x["index"]) for x in p["params"]} == _expected_params()
        assert {x["change"] for x in p["params"]} == {"frozen"}
        assert p["gradient"] == [] and p["edges"] == [] and p["losses"] == []
        assert p["warnings"] == []


def _text_names(out: str) -> tuple[set[str], set[str], set[tuple[str, int]]]:
    layers, backward, params = set(), set(), set()
    section = ""
    for line in out.splitlines():
        if not line.startswith(" "):
            section = line
            continue
        s = line.strip()
        if section == "layers:" and s.startswith(("~ ", "+ ", "- ", "> ")):
            layers.add(s[2:].split(" (")[0])
        elif section.endswith("consequences:"):
            m = re.match(r"~ (\S+) \(\w+\) (?:stops|starts) needing backward", s)
            if m:
                backward.add(m.group(1))
                continue
            m = re.match(r"~ (\S+) param (\d+) \(\w+\) becomes frozen", s)
            assert m, f"unexpected consequence line: {s}"
            params.add((m.group(1), int(m.group(2))))
    return layers, backward, params


def test_seed_freeze_text_lists_exactly_the_changes(frozen: Path) -> None:
    res = run("diff", str(SEED), str(frozen))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "\x1b[" not in out  # not a terminal: no colours
    layers, backward, params = _text_names(out)
    assert layers == set(FROZEN_CONVS)
    assert backward == set(CHAIN)
    assert params == _expected_params()
    assert "TEST: same consequences as TRAIN" in out
    assert "pretrained weights" not in out and "gradient" not in out and "edge" not in out
    assert out.count("lr_mult: 1 -> 0") == 3 and out.count("decay_mult: 1 -> 0") == 3


def _md_tables(md: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    cur: list[list[str]] | None = None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cur is None:
                cur = []
                tables.append(cur)
            if not all(set(c) <= {"-"} for c in cells):
                cur.append(cells)
        else:
            cur = None
    return tables


def _code(cell: str) -> str:
    m = re.fullmatch(r"`([^`]*)`", cell)
    assert m, cell
    return m.group(1)


def mermaid_block(md: str) -> str:
    m = re.search(r"```mermaid\n(.*?)```", md, re.S)
    assert m, "no mermaid block"
    return m.group(1)


def test_seed_freeze_markdown_lists_exactly_the_changes(frozen: Path) -> None:
    res = run("diff", str(SEED), str(frozen), "--format", "markdown", "--exit-code")
    assert res.returncode == 1, res.stderr  # --exit-code: semantic changes found
    md = res.stdout
    summary, consequences = _md_tables(md)
    assert summary[0] == ["change", "layer", "type", "details"]
    assert [_code(r[1]) for r in summary[1:]] == FROZEN_CONVS
    assert all(r[0] == "modified" for r in summary[1:])
    for r in summary[1:]:
        assert re.findall(r"`(param\[\d\]\.\w+)`", r[3]) == [
            "param[0].lr_mult", "param[0].decay_mult", "param[1].lr_mult"
        ]  # fmt: skip
    assert consequences[0] == ["consequence", "layer", "details"]
    rows = consequences[1:]
    assert [_code(r[1]) for r in rows if r[0] == "stops needing backward"] == CHAIN
    frozen_rows = [r for r in rows if r[0] == "parameter frozen"]
    assert {(_code(r[1]), int(r[2].split()[1])) for r in frozen_rows} == _expected_params()
    assert len(rows) == len(CHAIN) + len(frozen_rows)
    assert "TEST: same consequences as TRAIN." in md
    assert "**weights:**" not in md
    # the graph: the changed layers plus one hop (data before, the two readers of pool2 after)
    block = mermaid_block(md)
    heads = re.findall(r'^  n\d+\["<b>(.*?)</b>', block, re.M)
    assert set(heads) == {
        "data", "conv1/7x7_s2", "pool1/3x3_s2", "pool1/norm1", "conv2/3x3_reduce",
        "conv2/3x3", "conv2/norm2", "pool2/3x3_s2", "test/5x5_reduce", "test/pool",
    }  # fmt: skip
    assert "classDef changed" in block and "classDef frozen" in block


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_seed_freeze_html_lists_exactly_the_changes(frozen: Path, tmp_path: Path) -> None:
    out = tmp_path / "diff.html"
    res = run("diff", str(SEED), str(frozen), "--format", "html", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    page = out.read_text()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/', "").replace(
        'xmlns:xlink="http://www.w3.org/', ""
    )
    assert "<script" not in page
    parser = _Cells()
    parser.feed(page)
    summary, consequences = parser.tables
    assert [r[1] for r in summary[1:]] == FROZEN_CONVS
    rows = consequences[1:]
    assert [r[1] for r in rows if r[0] == "stops needing backward"] == CHAIN
    frozen_rows = [r for r in rows if r[0] == "parameter frozen"]
    assert {(r[1], int(r[2].split()[1])) for r in frozen_rows} == _expected_params()
    assert len(rows) == len(CHAIN) + len(frozen_rows)


# --------------------------------------------------------------------------- renames


def _rename_name_only(text: str, old: str, new: str) -> str:
    line = f'name: "{old}"'
    assert text.count(line) == 1
    return text.replace(line, f'name: "{new}"')


def test_renamed_layer_is_a_rename_with_weight_warning(tmp_path: Path) -> None:
    text = SEED.read_text()
    new = tmp_path / "renamed.prototxt"
    new.write_text(_rename_name_only(text, "conv2/3x3", "conv2/3x3 v2"))
    fd = semdiff.diff_files(SEED, new)
    assert [(c.change, c.old_name, c.name) for c in fd.layers] == [
        ("renamed", "conv2/3x3", "conv2/3x3 v2")
    ]
    assert [(w.reason, w.old_layer, w.layer) for w in fd.weights] == [
        ("renamed", "conv2/3x3", "conv2/3x3 v2")
    ]
    assert "will not load" in fd.weights[0].message
    # the rename changes no wiring and no verdict
    assert not any(p.has_changes for p in fd.phases.values())
    res = run("diff", str(SEED), str(new))
    assert "> conv2/3x3 -> conv2/3x3 v2 (Convolution) renamed" in res.stdout
    assert "pretrained weights of 'conv2/3x3' will not load" in res.stdout
    assert "added" not in res.stdout and "removed" not in res.stdout


def test_rename_carrying_its_own_blob_name_is_still_a_rename(tmp_path: Path) -> None:
    text = SEED.read_text().replace('"conv2/3x3_reduce"', '"conv2/reduce"')
    new = tmp_path / "renamed.prototxt"
    new.write_text(text)
    fd = semdiff.diff_files(SEED, new)
    kinds = [(c.change, c.name) for c in fd.layers]
    assert ("renamed", "conv2/reduce") in kinds
    assert not [c for c in fd.layers if c.change in ("added", "removed")]
    assert [w.reason for w in fd.weights] == ["renamed"]
    # blob renamed consistently: same wiring, same training
    assert not any(p.has_changes for p in fd.phases.values())


def test_renamed_and_changed_layer_is_removed_plus_added(tmp_path: Path) -> None:
    text = _rename_name_only(SEED.read_text(), "conv2/3x3", "conv2/new")
    text = text.replace("num_output: 192", "num_output: 128")
    new = tmp_path / "new.prototxt"
    new.write_text(text)
    fd = semdiff.diff_files(SEED, new)
    assert [(c.change, c.name) for c in fd.layers] == [
        ("added", "conv2/new"),
        ("removed", "conv2/3x3"),
    ]
    assert fd.weights == []


def test_num_output_change_warns_that_weights_no_longer_fit(tmp_path: Path) -> None:
    new = tmp_path / "new.prototxt"
    new.write_text(SEED.read_text().replace("num_output: 192", "num_output: 128"))
    fd = semdiff.diff_files(SEED, new)
    assert [(c.change, c.name) for c in fd.layers] == [("modified", "conv2/3x3")]
    assert [(w.reason, w.layer) for w in fd.weights] == [("shape", "conv2/3x3")]
    assert not any(p.has_changes for p in fd.phases.values())


# --------------------------------------------------------------------------- other changes


def test_identical_and_comment_only_changes_have_no_semantic_changes(tmp_path: Path) -> None:
    res = run("diff", str(SEED), str(SEED), "--exit-code")
    assert res.returncode == 0 and res.stdout == "no semantic changes\n"
    text = SEED.read_text()
    noisy = "# a comment\n" + text.replace("lr_mult: 1\n", "lr_mult: 1.0  # same value\n")
    noisy = noisy.replace("  ", "\t")
    other = tmp_path / "noisy.prototxt"
    other.write_text(noisy)
    res = run("diff", str(SEED), str(other), "--exit-code", "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["semantic_changes"] is False
    assert data["files"][0]["status"] == "unchanged"


def test_restoring_a_cut_gradient(tmp_path: Path) -> None:
    """The seed cuts the gradient into test/pool_proj (propagate_down: false); Caffe says
    test/pool then needs no backward. Removing the cut restores it."""
    text = SEED.read_text()
    assert text.count("propagate_down:false\n") == 1
    new = tmp_path / "new.prototxt"
    new.write_text(text.replace("propagate_down:false\n", ""))
    fd = semdiff.diff_files(SEED, new)
    assert [(c.name, [f.path for f in c.fields]) for c in fd.layers] == [
        ("test/pool_proj", ["propagate_down"])
    ]
    train = fd.phases["TRAIN"]
    # both edges of the branch were cut: the one with propagate_down, and the one into
    # test/pool, which Caffe skipped because its only reader sent nothing back
    assert [(g.layer, g.bottom, g.blob, g.source, g.change) for g in train.gradient] == [
        ("test/pool", 0, "pool2/3x3_s2", "pool2/3x3_s2", "restored"),
        ("test/pool_proj", 0, "test/pool", "test/pool", "restored"),
    ]
    assert [(b.layer, b.change) for b in train.backward] == [("test/pool", "starts")]
    assert train.params == [] and train.edges == []
    # and back again: the cut
    back = semdiff.diff_files(new, SEED)
    assert [g.change for g in back.phases["TRAIN"].gradient] == ["cut", "cut"]


def test_added_layer_rewires_edges_and_loss_weight_change(tmp_path: Path) -> None:
    text = SEED.read_text()
    extra = (
        'layer {\n  name: "drop"\n  type: "Dropout"\n  bottom: "test/output"\n'
        '  top: "test/output"\n}\n'
    )
    at = text.index('layer {\nname: "classifier"')
    new_text = text[:at] + extra + text[at:]
    assert new_text.count('top: "loss3"\nloss_weight: 1\n') == 1
    new_text = new_text.replace(
        'top: "loss3"\nloss_weight: 1\n', 'top: "loss3"\nloss_weight: 0.3\n'
    )
    new = tmp_path / "new.prototxt"
    new.write_text(new_text)
    fd = semdiff.diff_files(SEED, new)
    assert [(c.change, c.name) for c in fd.layers] == [("added", "drop"), ("modified", "loss3")]
    train = fd.phases["TRAIN"]
    edges = {(e.source, e.target, e.blob, e.change) for e in train.edges}
    assert edges == {
        ("test_output/pool", "drop", "test/output", "added"),
        ("drop", "classifier", "test/output", "added"),
        ("test_output/pool", "classifier", "test/output", "removed"),
    }
    assert [(x.blob, x.old_weight, x.new_weight) for x in train.losses] == [
        ("loss3", 1.0, pytest.approx(0.3))
    ]


def test_net_that_no_longer_builds_reports_caffes_error(tmp_path: Path) -> None:
    new = tmp_path / "new.prototxt"
    new.write_text(SEED.read_text().replace('bottom: "pool1/norm1"', 'bottom: "pool1/nrom1"'))
    fd = semdiff.diff_files(SEED, new)
    for phase in ("TRAIN", "TEST"):
        p = fd.phases[phase]
        assert p.old_error is None
        assert p.new_error is not None and "Unknown bottom blob 'pool1/nrom1'" in p.new_error
    res = run("diff", str(SEED), str(new))
    assert res.returncode == 0
    assert "the net no longer builds" in res.stdout


def test_solver_gets_a_plain_field_diff(tmp_path: Path) -> None:
    old = tmp_path / "solver.prototxt"
    old.write_text('net: "train_val.prototxt"\nbase_lr: 0.01\nmax_iter: 1000\n')
    new = tmp_path / "solver2.prototxt"
    new.write_text('net: "train_val.prototxt"\nbase_lr: 0.001\nmax_iter: 1000\ntype: "Adam"\n')
    fd = semdiff.diff_files(old, new)
    assert fd.kind == "solver"
    assert [(f.path, f.change, f.old, f.new) for f in fd.fields] == [
        ("base_lr", "changed", 0.01, 0.001),
        ("type", "added", None, "Adam"),
    ]
    assert fd.phases == {} and fd.layers == []


def test_directories_pair_files_by_relative_path(tmp_path: Path, frozen: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "models").mkdir(parents=True)
    (a / "models" / "net.prototxt").write_text(SEED.read_text())
    (b / "models" / "net.prototxt").write_text(frozen.read_text())
    (a / "same.prototxt").write_text(SEED.read_text())
    (b / "same.prototxt").write_text(SEED.read_text())
    (a / "gone.prototxt").write_text('base_lr: 0.1\nnet: "x"\n')
    (b / "new.prototxt").write_text('base_lr: 0.1\nnet: "x"\n')
    res = run("diff", str(a), str(b), "--format", "json", "--exit-code")
    assert res.returncode == 1, res.stderr
    files = {
        (Path(f["new"] or f["old"]).relative_to(b if f["new"] else a).as_posix()): f
        for f in json.loads(res.stdout)["files"]
    }
    assert {k: f["status"] for k, f in files.items()} == {
        "gone.prototxt": "removed",
        "models/net.prototxt": "modified",
        "new.prototxt": "added",
        "same.prototxt": "unchanged",
    }
    res = run("diff", str(a), str(b))
    assert "1 other file(s): no semantic changes" in res.stdout


def test_input_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer {\n  name: "x"\n')
    res = run("diff", str(SEED), str(bad))
    assert res.returncode == 2
    assert "bad.prototxt:1:7" in res.stderr and "Traceback" not in res.stderr
    res = run("diff", str(SEED))
    assert res.returncode == 2 and "OLD and NEW" in res.stderr
    res = run("diff", str(SEED), str(tmp_path / "missing.prototxt"))
    assert res.returncode == 2 and "cannot read" in res.stderr
    res = run("diff", str(SEED), str(SEED), "--format", "yaml")
    assert res.returncode == 2 and "--format" in res.stderr
    unknown = tmp_path / "unknown.prototxt"
    unknown.write_text(SEED.read_text().replace("lr_mult: 2", "lr_multt: 2", 1))
    res = run("diff", str(SEED), str(unknown))
    assert res.returncode == 2 and "lr_multt" in res.stderr and "Traceback" not in res.stderr


def test_color_only_when_asked_or_on_a_terminal(frozen: Path) -> None:
    res = run("diff", str(SEED), str(frozen), "--color", "always")
    assert "\x1b[33m" in res.stdout
    res = run("diff", str(SEED), str(frozen), "--color", "never")
    assert "\x1b[" not in res.stdout


def test_textconv_is_one_value_per_line_by_layer_name() -> None:
    res = run("textconv", str(SEED))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "layer[conv1/7x7_s2].param[0].lr_mult = 1" in lines
    assert "layer[data].include[0].phase = TRAIN" in lines
    assert "layer[data@2].include[0].phase = TEST" in lines
    assert "layer[conv1/7x7_s2].convolution_param.bias_filler.value = 0.2" in lines
    assert "TRAIN conv1/7x7_s2: trainable" in lines
    assert "TRAIN test/pool_proj: gradient from test/pool ('test/pool') cut" in lines
    assert not any("#" in line for line in lines)


# --------------------------------------------------------------------------- oracle and corpus


def _oracle_cases() -> list[Any]:
    folder = ORACLE / "backward"
    if not folder.is_dir():
        return [pytest.param(None, id="no-shared-oracle")]
    out = []
    for p in sorted(folder.glob("*.prototxt")):
        text = p.read_text()
        if re.search(r"propagate_down|lr_mult", text):
            out.append(pytest.param(p, id=p.stem))
    return out


def _unfreeze(text: str) -> str:
    """The case without its cuts and freezes: no propagate_down, every lr_mult 1."""
    text = re.sub(r"propagate_down\s*:\s*\w+", "", text)
    return re.sub(r"lr_mult\s*:\s*[-+0-9.eE]+", "lr_mult: 1", text)


@pytest.mark.parametrize("case", _oracle_cases())
def test_oracle_cases_new_side_matches_caffe(case: Path | None) -> None:
    """Diff the case with its cuts and freezes removed against the case itself: every reported
    consequence must agree with what real Caffe printed for the case."""
    need_shared()
    assert case is not None
    expect = json.loads(case.with_suffix("").with_suffix(".expect.json").read_text())
    runs = {
        r["phase"]: r for r in expect["runs"] if r["ok"] and not r["stages"] and r["level"] == 0
    }
    text = case.read_text()
    fd = semdiff.diff_texts(_unfreeze(text), text, "old", case.name)
    if not runs:
        pytest.skip("no plain TRAIN/TEST run that Caffe completed")
    if not fd.has_changes:
        pytest.skip("the case has no propagate_down or lr_mult value to undo")
    checked = 0
    for phase, r in runs.items():
        pd = fd.phases[phase]
        assert pd.new_error is None, pd.new_error
        layers = [x for x in r["layers"] if not x["inserted_split"]]
        names = [x["name"] for x in layers]
        caffe = {x["name"]: x for x in layers if names.count(x["name"]) == 1}
        for b in pd.backward:
            if b.layer in caffe:
                assert b.new_needs_backward == caffe[b.layer]["needs_backward_final"], b
                checked += 1
        for p in pd.params:
            if p.layer in caffe:
                # a blob with rate 0 never moves; one with a rate is trainable or decay-only
                moves = caffe[p.layer]["param_lr_mult"][p.index] != 0
                assert (p.change in ("trainable", "decay-only")) == moves, p
                checked += 1
        for g in pd.gradient:
            if g.layer in caffe:
                flows = caffe[g.layer]["bottom_need_backward"][g.bottom]
                assert flows == (g.change == "restored"), g
                checked += 1
        if pd.old_error is None:
            # completeness: every verdict Caffe gives that differs from the old net's is listed
            old_facts, new_facts = fd.old_facts[phase], fd.new_facts[phase]
            reported = {b.layer for b in pd.backward}
            for name, x in caffe.items():
                key = (name, 0)
                if key in old_facts.by_key:
                    was = old_facts.backward.layers[old_facts.by_key[key]].needs_backward_final
                    if was != x["needs_backward_final"]:
                        assert name in reported, (phase, name)
                        checked += 1
            assert len(new_facts.graph.layers) == len(r["layers"])
    if any(p.backward or p.params or p.gradient for p in fd.phases.values()):
        assert checked > 0


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2", fork="no"))
def test_corpus_reformatted_by_protobuf_is_semantically_identical(row: Any) -> None:
    """protobuf's own printer drops comments and changes layout and number spelling: no
    semantic change. Renaming one layer with parameters is a rename, nothing more."""
    path, text = read_corpus(row)
    from google.protobuf import text_format

    from rewriter.errors import RewriterError
    from rewriter.schema.runtime import default_schema

    net_class = default_schema().message_class("caffe.NetParameter")
    try:
        msg = text_format.Parse(text, net_class())
    except text_format.ParseError:
        pytest.skip("protobuf does not parse this file")
    reprinted = text_format.MessageToString(msg)
    try:
        fd = semdiff.diff_texts(text, reprinted, str(path), "reprinted")
    except RewriterError as e:
        pytest.skip(f"not a valid BVLC net: {e}")
    assert not fd.has_changes, fd.to_json()
    # rename the first layer with parameters whose name is unique and no blob's name
    names = [layer.name for layer in msg.layer]
    blobs = {b for layer in msg.layer for b in list(layer.top) + list(layer.bottom)}
    target = next(
        (
            layer.name
            for layer in msg.layer
            if len(layer.param) and names.count(layer.name) == 1 and layer.name not in blobs
        ),
        None,
    )
    if target is None:
        return
    renamed = type(msg)()
    renamed.CopyFrom(msg)
    for layer in renamed.layer:
        if layer.name == target:
            layer.name = target + "_renamed"
    fd = semdiff.diff_texts(text, text_format.MessageToString(renamed), str(path), "renamed")
    assert [(c.change, c.old_name, c.name) for c in fd.layers] == [
        ("renamed", target, target + "_renamed")
    ]
    assert [w.reason for w in fd.weights] == ["renamed"]
    for p in fd.phases.values():
        assert not (p.backward or p.params or p.gradient or p.edges or p.losses), p
