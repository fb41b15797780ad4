"""`rewriter upgrade` against what real Caffe's upgrade tools did (../shared/oracle/upgrade).

Each case there holds the input, Caffe's output (``*.upgraded.prototxt``, re-printed by
protobuf) or its refusal (``*.error.txt``), and Caffe's log. Our upgrade must bind to exactly
Caffe's message, log Caffe's own lines, refuse what Caffe refuses with Caffe's message, and -
where Caffe drops every comment - keep every comment and every line that did not need to change.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format

from rewriter.schema.bind import bind
from rewriter.schema.runtime import default_schema
from rewriter.text.cst import parse
from rewriter.upgrade.document import (
    Refusal,
    UpgradeError,
    upgrade_net_message_caffe,
    upgrade_solver_message_caffe,
    upgrade_text,
)

from .conftest import ORACLE, REPO, need_shared

UPGRADE = ORACLE / "upgrade"
CASES = sorted(
    p.name.removesuffix(".prototxt")
    for p in UPGRADE.glob("*.prototxt")
    if not p.name.endswith(".upgraded.prototxt")
) or ["no-shared-oracle"]
UPGRADED = [c for c in CASES if not (UPGRADE / f"{c}.error.txt").exists()]

#: a line Caffe's upgrade may have to rewrite (the dims of a legacy input_shape move into the
#: Input layer; a lone '}' or blank line is only ever "removed" by the line diff's alignment; a
#: comment line moves with the field it describes, and comments are counted separately): any
#: other line must come out unchanged
LEGACY_LINE = re.compile(
    r"^\s*#|\blayers\b|\btype\s*:\s*[A-Z][A-Z0-9_]*\b|\bblobs_lr\b|\bweight_decay\b|\bparam\s*:"
    r"|\bblob_share_mode\b|\binput(_dim|_shape)?\b|\bsolver_type\b|\bdim\s*:|^\s*\}?\s*$"
    r"|\b(scale|mean_file|crop_size|mirror|lr_mult|decay_mult)\b|\b\w*param\s*\{"
)


def comments(text: str) -> list[str]:
    """Every ``#`` comment of a prototxt (full-line and trailing), '#' in strings ignored."""
    out: list[str] = []
    for line in text.splitlines():
        quote = None
        i = 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == "\\":
                    i += 2
                    continue
                if c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "#":
                out.append(line[i:].strip())
                break
            i += 1
    return out


def removed_lines(old: str, new: str) -> list[str]:
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return [ln[1:] for ln in diff if ln.startswith("-") and not ln.startswith("---")]


def _case(case: str) -> tuple[Path, str, str, dict[str, Any]]:
    need_shared()
    src = UPGRADE / f"{case}.prototxt"
    text = src.read_text()
    kind = "solver" if "# oracle-tool: solver" in text else "net"
    caffe = json.loads((UPGRADE / f"{case}.upgrade.json").read_text())
    return src, text, kind, caffe


def _root(kind: str) -> str:
    return "caffe.SolverParameter" if kind == "solver" else "caffe.NetParameter"


def _caffe_message(case: str, kind: str) -> Any:
    want = default_schema().message_class(_root(kind))()
    text_format.Parse((UPGRADE / f"{case}.upgraded.prototxt").read_text(), want)
    return want


def _caffe_log(caffe: dict[str, Any]) -> list[str]:
    """Caffe's upgrade_proto.cpp log lines (its FATAL line is the error, not a message)."""
    return [
        m["message"]
        for m in caffe["log"]
        if m["source"] == "upgrade_proto.cpp" and m["severity"] != "F"
    ]


@pytest.mark.parametrize("case", CASES)
def test_text_upgrade_binds_to_caffes_message(case: str) -> None:
    src, text, kind, caffe = _case(case)
    if (UPGRADE / f"{case}.error.txt").exists():
        with pytest.raises(UpgradeError) as info:
            upgrade_text(text, src.name, kind=kind)
        assert caffe["fatal"] in str(info.value)
        assert str(info.value).startswith(f"{src.name}:")
        return
    result = upgrade_text(text, src.name, kind=kind)
    assert result.changed
    assert result.deliberate_differences == []
    bound = bind(result.document, root=_root(kind))
    assert bound.errors == []
    assert bound.message == _caffe_message(case, kind)
    assert result.messages == _caffe_log(caffe)


@pytest.mark.parametrize("case", CASES)
def test_message_upgrade_matches_caffe(case: str) -> None:
    src, text, kind, caffe = _case(case)
    original = bind(parse(text, src.name), root=_root(kind))
    assert original.errors == []
    run = upgrade_solver_message_caffe if kind == "solver" else upgrade_net_message_caffe
    if (UPGRADE / f"{case}.error.txt").exists():
        with pytest.raises(Refusal) as info:
            run(original.message, src.name)
        assert info.value.message == caffe["fatal"]
        return
    up = run(original.message, src.name)
    assert up.message == _caffe_message(case, kind)
    assert up.log == _caffe_log(caffe)


@pytest.mark.parametrize("case", UPGRADED)
def test_comments_and_untouched_lines_survive(case: str) -> None:
    src, text, kind, _ = _case(case)
    out = upgrade_text(text, src.name, kind=kind).document.code
    assert parse(out).code == out
    assert not Counter(comments(text)) - Counter(comments(out))
    if not case.startswith("v0_"):  # a V0 layer is rewritten as a whole (its fields move)
        for line in removed_lines(text, out):
            assert LEGACY_LINE.search(line), f"needlessly rewritten: {line!r}"
    again = upgrade_text(out, src.name, kind=kind)
    assert not again.changed and again.document.code == out


def test_v1_layout_is_kept_line_by_line() -> None:
    """The oracle's comment-heavy V1 file: only the legacy lines change, each in place."""
    src, text, kind, _ = _case("v1_comments_everywhere")
    out = upgrade_text(text, src.name, kind=kind).document.code
    removed = removed_lines(text, out)
    assert removed == [
        'input: "data"   # legacy input',
        "input_dim: 1    # N",
        "input_dim: 3    # C",
        "input_dim: 8    # H",
        "input_dim: 8    # W",
        "layers {   # first conv",
        "  type: CONVOLUTION      # type before name on purpose",
        "  blobs_lr: 1; blobs_lr: 2   # semicolons",
        'layers{name:"relu1" type:RELU bottom:"conv1" top:"conv1"}   # compact',
        "layers {",
        "  type: SOFTMAX",
    ]
    # the include-before-name order Caffe re-sorts stays as written
    assert "layer {\n  include { phase: TEST }    # include written before name\n  name:" in out
    assert '  type: "Convolution"      # type before name on purpose\n  name: "conv1"' in out


def test_refusals_point_at_the_offending_field() -> None:
    src, text, kind, _ = _case("mixed_layer_and_layers_error")
    with pytest.raises(UpgradeError) as info:
        upgrade_text(text, src.name, kind=kind)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("layers"))
    assert str(info.value).startswith(f"{src.name}:{line}:1: error: Refusing to upgrade")
    src, text, kind, _ = _case("solver_type_conflict_error")
    with pytest.raises(UpgradeError) as info:
        upgrade_text(text, src.name, kind=kind)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("solver_type"))
    assert str(info.value).startswith(f"{src.name}:{line}:1: error: Check failed")


def test_solver_type_and_type_are_refused_even_when_they_agree() -> None:
    """Caffe's rule is CHECK(!has_solver_type() || !has_type()): agreement does not help."""
    with pytest.raises(UpgradeError, match="cannot be both specified"):
        upgrade_text('base_lr: 0.1\nsolver_type: SGD\ntype: "SGD"\n', "s.prototxt", kind="solver")


def test_batchnorm_names_are_kept_like_caffe() -> None:
    """Caffe does not wipe BatchNorm param names: it only zeroes lr_mult and decay_mult."""
    src, text, kind, _ = _case("batchnorm_three_params")
    want = _caffe_message("batchnorm_three_params", kind)
    assert want.layer[1].param[0].name == "bn3_mean"
    out = upgrade_text(text, src.name, kind=kind).document.code
    assert 'param { lr_mult: 0 decay_mult: 0 name: "bn3_mean" }' in out


# --------------------------------------------------------------------------- command line


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from rewriter.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_cli_diff_check_write_and_refusal(tmp_path: Path) -> None:
    need_shared()
    for case in ("v1_conv_blobs_lr", "solver_type_conflict_error", "batchnorm_three_params"):
        (tmp_path / f"{case}.prototxt").write_bytes((UPGRADE / f"{case}.prototxt").read_bytes())
    net = tmp_path / "v1_conv_blobs_lr.prototxt"
    before = net.read_bytes()

    diff = cli("upgrade", net.name, cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    assert "-layers {\n+layer {\n" in diff.stdout
    assert '-  type: CONVOLUTION\n+  type: "Convolution"\n' in diff.stdout
    assert net.read_bytes() == before  # the default writes nothing
    assert cli("upgrade", "--exit-code", net.name, cwd=tmp_path).returncode == 1

    check = cli("upgrade", "--check", net.name, cwd=tmp_path)
    assert check.returncode == 1 and "needs upgrading (V1 layers)" in check.stdout

    out = tmp_path / "out.prototxt"
    write = cli("upgrade", net.name, "-o", out.name, cwd=tmp_path)
    assert write.returncode == 0, write.stderr
    assert net.read_bytes() == before
    current = cli("upgrade", "--check", out.name, cwd=tmp_path)
    assert current.returncode == 0
    assert "already in the current format" in current.stderr
    unchanged = out.read_bytes()
    assert cli("upgrade", "--in-place", out.name, cwd=tmp_path).returncode == 0
    assert out.read_bytes() == unchanged  # already current: byte-identical

    assert cli("upgrade", "--in-place", net.name, cwd=tmp_path).returncode == 0
    assert net.read_bytes() == unchanged

    bad = cli("upgrade", "solver_type_conflict_error.prototxt", cwd=tmp_path)
    assert bad.returncode == 2
    assert re.search(r"solver_type_conflict_error.prototxt:\d+:1: error: Check failed", bad.stderr)
    assert "Traceback" not in bad.stderr

    usage = cli("upgrade", "--check", "--in-place", net.name, cwd=tmp_path)
    assert usage.returncode == 2 and "only one of" in usage.stderr
    missing = cli("upgrade", "nope.prototxt", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.prototxt" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_cli_help_is_listed() -> None:
    out = cli("--help", cwd=REPO)
    assert out.returncode == 0 and "upgrade" in out.stdout


# --------------------------------------------------------------------------- beyond the oracle
# Inputs the oracle does not cover. The expected messages come from the message-level port
# (`upgrade_net_message_caffe`, held to real Caffe above) and graph.py's own in-memory upgrade,
# which upgrade_document checks itself against; these tests pin the text side.


def test_crlf_file_stays_crlf_and_comments_follow_their_values() -> None:
    text = (
        'name: "crlf"\r\ninput: "data"   # in\r\ninput_dim: 1\r\ninput_dim: 3  # C\r\n'
        'input_dim: 4\r\ninput_dim: 4\r\nlayers {\r\n  name: "c"\r\n  type: CONVOLUTION\r\n'
        '  bottom: "data"\r\n  top: "c"\r\n  blobs_lr: 1  # w\r\n  # bias lr\r\n'
        "  blobs_lr: 2  # b\r\n  weight_decay: 1\r\n  weight_decay: 0\r\n"
        "  convolution_param { num_output: 2 kernel_size: 1 }\r\n}\r\n"
    )
    out = upgrade_text(text, "crlf.prototxt").document.code
    assert "\n" not in out.replace("\r\n", "")
    assert '  top: "data"   # in\r\n' in out and "      dim: 3  # C\r\n" in out
    assert (
        "  param {\r\n    lr_mult: 1  # w\r\n    decay_mult: 1\r\n  }\r\n"
        "  param {\r\n    # bias lr\r\n    lr_mult: 2  # b\r\n    decay_mult: 0\r\n  }\r\n"
    ) in out


def test_moved_transformation_value_wins_and_keeps_comments() -> None:
    text = (
        'name: "d"\nlayers {\n  name: "data"\n  type: DATA\n  top: "data"\n'
        "  transform_param {\n    scale: 0.5  # old scale\n    mean_value: 104\n  }\n"
        '  data_param {\n    source: "x"\n    # the real scale\n    scale: 0.25  # wins\n'
        "    mirror: true  # flip\n  }\n}\n"
        'layers {\n  name: "img"\n  type: IMAGE_DATA\n  top: "img"\n}\n'
    )
    result = upgrade_text(text, "d.prototxt")
    net = bind(result.document).message
    assert net == upgrade_net_message_caffe(bind(parse(text)).message).message
    assert net.layer[0].transform_param.scale == 0.25 and net.layer[0].transform_param.mirror
    assert net.layer[1].HasField("transform_param")  # as Caffe's mutable_transform_param()
    out = result.document.code
    assert "    # old scale\n    # the real scale\n    scale: 0.25  # wins\n" in out
    assert '    mirror: true  # flip\n  }\n  data_param {\n    source: "x"\n  }\n' in out


def test_embedded_nets_of_a_solver_are_upgraded_and_reported() -> None:
    text = (
        "solver_type: ADAM   # adam\nbase_lr: 0.1\n"
        'test_net_param {\n  name: "t1"\n  layers { name: "a" type: RELU bottom: "x" top: "y" }\n'
        '  input: "x"\n  input_dim: [1, 2, 3, 4]\n}\n'
        'test_net_param {\n  name: "t2"\n'
        '  layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n}\n'
    )
    result = upgrade_text(text, "s.prototxt")
    assert result.kind == "solver"
    assert result.document.code.startswith('type: "Adam"   # adam\n')
    assert [d.split(":")[0] for d in result.deliberate_differences] == ["test_net_param[0]"]
    solver = bind(result.document).message
    original = bind(parse(text)).message
    assert solver.test_net_param[0] == upgrade_net_message_caffe(original.test_net_param[0]).message
    assert solver.test_net_param[1] == original.test_net_param[1]
    assert [layer.name for layer in solver.test_net_param[0].layer] == ["input", "a"]


def test_v0_fields_caffe_drops_stay_as_comments() -> None:
    text = (
        'name: "v0"\ninput: "data"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 4\ninput_dim: 4\n'
        'layers {\n  # pad the input\n  layer { name: "pad1" type: "padding" pad: 1 }\n'
        '  bottom: "data"\n  top: "pad1"\n}\n'
        'layers {\n  layer {\n    name: "pool1"\n    type: "pool"\n'
        "    num_output: 3  # meaningless\n"
        '    kernelsize: 2\n  }\n  bottom: "pad1"\n  top: "pool1"\n}\n'
    )
    result = upgrade_text(text, "v0.prototxt")
    net = bind(result.document).message
    expected = upgrade_net_message_caffe(bind(parse(text)).message)
    assert net == expected.message
    assert "Unknown parameter num_output for layer type pool" in expected.log
    assert net.layer[1].pooling_param.pad == 1 and list(net.layer[1].bottom) == ["data"]
    out = result.document.code
    assert "# pad the input" in out
    assert "  # num_output: 3  # meaningless\n" in out
    assert result.deliberate_differences == [
        "layer 'pool1': V0 field 'num_output' has no V1 equivalent for type 'pool' and is kept "
        "as a comment; Caffe drops it"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'layers { layer { name: "a" type: "relu" } bottom: "x" top: "x" }\n',
            "Unknown blob input x to layer 0",
        ),
        (
            'input: "x"\n'
            'layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }\n'
            'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }\n',
            "Padding layer input to non-convolutional / non-pooling layer type relu",
        ),
        (
            'input: "x"\nlayers { layer { name: "a" type: "sparkle" } bottom: "x" top: "y" }\n',
            "Unknown layer name: sparkle",
        ),
        (
            'input: "x"\nlayers { layer { name: "a" type: "relu" } bottom: "x" top: "y" }\n'
            'layers { name: "b" type: RELU bottom: "y" top: "z" }\n',
            "without a nested 'layer'",
        ),
        (
            'input: "x"\ninput: "y"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 1\ninput_dim: 1\n'
            'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n',
            "Incorrect input blob dimension specifications",
        ),
    ],
)
def test_refusals_beyond_the_oracle(text: str, message: str) -> None:
    with pytest.raises(UpgradeError, match=re.escape(message)) as info:
        upgrade_text(text, "bad.prototxt")
    assert re.match(r"bad\.prototxt:\d+:\d+: error: ", str(info.value))


def test_batchnorm_already_at_zero_counts_as_current() -> None:
    text = (
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"\n'
        "  param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }\n"
        "  param { lr_mult: 0 decay_mult: 0 } }\n"
    )
    result = upgrade_text(text, "bn.prototxt")
    assert not result.changed and result.document.code == text


_V1_TYPES = ["CONVOLUTION", "INNER_PRODUCT", "RELU", "POOLING", "DROPOUT", "DATA", "IMAGE_DATA"]


def _generated_v1(seed: int) -> str:
    """A random V1 net in random layouts: one-line / multi-line / several fields per line,
    comments everywhere, legacy param fields in any order, data layers with transform fields."""
    import random

    rng = random.Random(seed)
    parts = ['name: "gen"']
    if rng.random() < 0.5:
        parts.append(
            'input: "data"  # in\ninput_dim: 1\ninput_dim: 3  # C\ninput_dim: 4\ninput_dim: 4'
        )
    else:
        parts.append('layers { name: "d" type: DUMMY_DATA top: "data" }')
    bottom = "data"
    for i in range(rng.randint(1, 5)):
        kind = rng.choice(_V1_TYPES)
        fields = [f'name: "l{i}"', f"type: {kind}", f'top: "t{i}"']
        if kind not in ("DATA", "IMAGE_DATA"):
            fields.insert(2, f'bottom: "{bottom}"')
            bottom = f"t{i}"
        legacy = [f'param: "p{i}{k}"' for k in range(rng.randint(0, 2))]
        legacy += [f"blob_share_mode: {rng.choice(['STRICT', 'PERMISSIVE'])}"] * rng.randint(0, 1)
        legacy += [
            f"blobs_lr: {rng.choice(['1', '2', '0.5', '1.'])}" for _ in range(rng.randint(0, 3))
        ]
        legacy += [f"weight_decay: {rng.choice(['1', '0'])}" for _ in range(rng.randint(0, 3))]
        rng.shuffle(legacy)
        if kind == "DATA":
            dp = ['source: "x"', "scale: 0.5", "mirror: true"]
            rng.shuffle(dp)
            legacy.append("data_param { " + " ".join(dp) + " }")
        at = rng.randint(0, len(fields))
        fields[at:at] = legacy
        style = rng.choice(["one", "multi", "mixed"])
        if style == "one":
            parts.append("layers { " + " ".join(fields) + " }")
            continue
        lines = ["layers {" + (" # open" if rng.random() < 0.3 else "")]
        cur = ""
        for f in fields:
            if rng.random() < 0.25:
                lines.append(f"  # about {f.split(':')[0].split('{')[0].strip()}")
            if style == "mixed" and rng.random() < 0.4:
                cur += f + rng.choice([" ", "; "])
                continue
            lines.append(
                f"  {cur}{f}" + (f"  # c{rng.randint(0, 99)}" if rng.random() < 0.25 else "")
            )
            cur = ""
        if cur:
            lines.append("  " + cur.rstrip())
        lines.append("}")
        parts.append("\n".join(lines))
    text = "\n".join(parts) + "\n"
    return text.replace("\n", "\r\n") if rng.random() < 0.1 else text


@pytest.mark.parametrize("seed", range(120))
def test_generated_v1_nets(seed: int) -> None:
    text = _generated_v1(seed)
    result = upgrade_text(text, f"gen{seed}.prototxt")  # verifies message and graph itself
    out = result.document.code
    original = bind(parse(text)).message
    assert bind(result.document).message == upgrade_net_message_caffe(original).message
    assert not Counter(comments(text)) - Counter(comments(out))
    for line in removed_lines(text, out):
        assert LEGACY_LINE.search(line), f"needlessly rewritten: {line!r}"
    assert not upgrade_text(out, "again.prototxt").changed
