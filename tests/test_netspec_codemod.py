"""Recipes on NetSpec scripts: before/after fixtures, the script round trip, and refusals.

Every case runs the codemod on a script written for these tests (LeNet after Caffe's
01-learning-lenet notebook, an FCN with shelhamer/fcn-style helpers, a loop-built ResNet) and
compares with a hand-written expected script. Independently of the codemod's own verification,
the round trip is checked here: running the expected script gives exactly the nets that
rewriter's prototxt engine makes of the original script's nets.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rewriter.recipes.recipe import Step
from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "netspec"


def _step(kind: str, **params: object) -> Step:
    return Step(kind, **{("from" if k == "from_" else k): v for k, v in params.items()})


CASES = [
    ("lenet", "freeze", _step("freeze", upto="conv2", zero_decay=True)),
    ("lenet", "stop-gradient", _step("stop-gradient", from_="pool2", to="fc1")),
    ("lenet", "rename-layer", _step("rename-layer", from_="relu1", to="relu_fc1")),
    ("lenet", "rename-layer-name", _step("rename-layer", from_="conv1", to="conv1_mnist")),
    ("lenet", "set-lr", _step("set-lr", layers=["score"], value=10.0)),
    ("fcn", "freeze", _step("freeze", upto="relu7")),
    ("fcn", "set-lr", _step("set-lr", layers=["score_fr"], value=10.0)),
    ("fcn", "zero-decay", _step("zero-decay", layers=["score_fr"])),
    ("fcn", "unfreeze", _step("unfreeze", layers=["upscore"])),
    ("fcn", "zero-decay-frozen", _step("zero-decay-frozen")),
    ("fcn", "rename-layer", _step("rename-layer", from_="relu6", to="relu_fc6")),
    ("resnet", "bn-frozen", _step("freeze", type=["Convolution", "BatchNorm", "Scale"])),
    ("resnet", "stop-gradient", _step("stop-gradient", from_="pool5", to="fc")),
    ("resnet", "rename-layer", _step("rename-layer", from_="conv1_relu", to="relu_conv1")),
    ("resnet", "set-decay", _step("set-decay", layers=["fc"], value=0.5)),
    ("resnet", "bn-frozen-recipe", "bn-frozen"),  # the built-in recipe, by name
]


def _nets(path: Path, source: str | None = None) -> list[tuple[str, object]]:
    from rewriter.netspec.evaluator import run_script

    return [(o.name, o.message) for o in run_script(path, source=source).nets]


def _expected_nets(script: Path, step: Step | str) -> list[tuple[str, object]]:
    """The recipe applied by the prototxt engine to each net the original script writes."""
    from google.protobuf import text_format

    from rewriter.recipes.engine import apply_text
    from rewriter.schema.runtime import default_schema

    out = []
    cls = default_schema().message_class("caffe.NetParameter")
    for name, msg in _nets(script):
        msg2 = cls()
        text_format.Parse(apply_text(str(msg), step).code, msg2)
        out.append((name, msg2))
    return out


@pytest.mark.parametrize(("script", "case", "step"), CASES, ids=[f"{s}-{c}" for s, c, _ in CASES])
def test_codemod_fixture(script: str, case: str, step: Step | str) -> None:
    from rewriter.netspec.codemod import apply_file

    before = FIX / f"{script}.py"
    after = FIX / f"{script}.{case}.after.py"
    result = apply_file(before, step)
    assert result.problems == []
    assert result.verified is True
    assert result.changed
    assert result.code == after.read_text()
    # the script round trip, checked here without the codemod's own verification
    got = _nets(before, after.read_text())
    want = _expected_nets(before, step)
    assert [n for n, _ in got] == [n for n, _ in want]
    for (name, g), (_, w) in zip(got, want, strict=True):
        assert g == w, name
    # and the recipe did change the nets (the case is not vacuous)
    assert [m for _, m in got] != [m for _, m in _nets(before)]


def test_changes_name_the_edited_calls() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "lenet.py", _step("freeze", upto="conv2"))
    assert [str(c) for c in result.changes] == [
        "lenet.py:16:15: conv1: param=[dict(lr_mult=0), dict(lr_mult=0)]",
        "lenet.py:19:15: conv2: param=[dict(lr_mult=0), dict(lr_mult=0)]",
    ]
    assert result.outputs == ["lenet_auto_train.prototxt", "lenet_auto_test.prototxt"]
    changed_layers = {c.layer for cs in result.net_changes.values() for c in cs}
    assert changed_layers == {"conv1", "conv2"}


def test_helper_partly_selected_is_refused_with_location() -> None:
    """conv_relu makes conv1_1 ... fc7; freezing only up to pool2 cannot be done in it."""
    from rewriter.netspec.codemod import apply_file

    before = (FIX / "fcn.py").read_text()
    result = apply_file(FIX / "fcn.py", _step("freeze", upto="pool2"))
    assert result.code == before
    assert result.verified is None
    assert len(result.problems) == 1
    text = str(result.problems[0])
    assert text.startswith("fcn.py:10:12: this call creates 8 layers in each of 2 nets")
    assert "called from fcn.py:33:28, fcn.py:34:28" in text
    assert "changes param of conv1_1, conv1_2, conv2_1, conv2_2 but not of conv3_1" in text


def test_computed_names_are_reported_with_line() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "resnet.py", _step("rename-layer", from_="res2a_relu", to="x"))
    assert not result.changed
    assert [str(p) for p in result.problems] == [
        "resnet.py:36:5: NetSpec key 'res2a_relu' is computed here (not a literal name); "
        "rename it by hand"
    ]


def test_loop_layers_partly_selected_are_refused() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "resnet.py", _step("freeze", upto="pool1"))
    assert not result.changed
    wheres = sorted(p.where for p in result.problems)
    assert wheres == ["resnet.py:12:12", "resnet.py:14:10", "resnet.py:15:13"]


def test_rename_of_helper_layer_named_by_its_top_is_refused() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "fcn.py", _step("rename-layer", from_="fc6", to="fc6_conv"))
    assert not result.changed
    assert len(result.problems) == 1
    assert result.problems[0].where == "fcn.py:10:12"
    assert "a name= here would rename them all" in result.problems[0].message


def test_remove_layer_is_refused() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "lenet.py", _step("remove-layer", layers=["relu1"]))
    assert not result.changed
    assert result.problems


def test_rename_blob_keeps_the_layer_name() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "lenet.py", _step("rename-blob", from_="fc1", to="fc1_out"))
    assert result.problems == [] and result.verified is True
    assert "    n.fc1_out = L.InnerProduct(n.pool2, num_output=500," in result.code
    assert "name='fc1')" in result.code
    assert "    n.relu1 = L.ReLU(n.fc1_out, in_place=True)" in result.code


def test_set_field_edits_the_short_keyword() -> None:
    from rewriter.netspec.codemod import apply_file

    step = _step("set-field", layers=["conv1"], field="convolution_param.num_output", value=32)
    result = apply_file(FIX / "lenet.py", step)
    assert result.verified is True
    diff = [ln for ln in result.code.splitlines() if "kernel_size=5, num_output=" in ln]
    assert diff[0].endswith("kernel_size=5, num_output=32,")


def test_no_change_needed() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "fcn.py", _step("freeze", layers=["upscore"]))
    assert not result.changed and result.problems == [] and result.verified is None


def test_run_file_matches_the_engine_shape() -> None:
    from rewriter.netspec.codemod import run_file

    data = run_file(str(FIX / "lenet.py"), _step("freeze", upto="conv1"), {})
    assert data["ok"] and data["changed"]
    assert data["diff"].startswith(f"--- {FIX / 'lenet.py'}\n")
    assert {c["layer"] for c in data["changes"]} == {"conv1"}
    assert all(c["ok"] for c in data["checks"])
    bad = run_file(str(FIX / "fcn.py"), _step("freeze", upto="pool2"), {})
    assert not bad["ok"] and "fcn.py:10:12" in bad["error"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "rewriter"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_cli_netspec_apply(tmp_path: Path) -> None:
    script = tmp_path / "lenet.py"
    script.write_text((FIX / "lenet.py").read_text())
    r = _cli("netspec", "apply", "--step", "freeze upto=conv2 zero_decay=true", str(script))
    assert r.returncode == 0, r.stderr
    assert "+                            param=[dict(lr_mult=0, decay_mult=0)" in r.stdout
    assert script.read_text() == (FIX / "lenet.py").read_text()  # a diff only
    r = _cli("netspec", "apply", "--check", "--step", "freeze upto=conv2", str(script))
    assert r.returncode == 1
    r = _cli("netspec", "apply", "--in-place", "--step", "freeze upto=conv2 zero_decay=true",
             str(script))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert script.read_text() == (FIX / "lenet.freeze.after.py").read_text()
    fcn = tmp_path / "fcn.py"
    fcn.write_text((FIX / "fcn.py").read_text())
    r = _cli("netspec", "apply", "--in-place", "--step", "freeze upto=pool2", str(fcn))
    assert r.returncode == 2
    assert "fcn.py:10:12: this call creates" in r.stderr
    assert "Traceback" not in r.stderr
    assert fcn.read_text() == (FIX / "fcn.py").read_text()


def test_helper_argument_is_not_overwritten() -> None:
    """conv_relu(..., param=learned_param) passes its argument on: editing the call inside
    the helper would silently disable that argument, so the codemod says where to act."""
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "caffenet.py", _step("unfreeze", layers=["conv1", "conv2"]))
    assert not result.changed
    assert [p.where for p in result.problems] == ["caffenet.py:17:12"]
    assert "argument param of conv_relu()" in result.problems[0].message
    assert "(caffenet.py:33:24, caffenet.py:35:24)" in result.problems[0].message


def test_module_variable_is_replaced_at_the_call() -> None:
    from rewriter.netspec.codemod import apply_file

    result = apply_file(FIX / "caffenet.py", _step("freeze", layers=["fc7"], zero_decay=True))
    assert result.problems == [] and result.verified is True
    assert (
        "    n.fc7 = L.InnerProduct(n.relu6, num_output=10, "
        "param=[dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)])\n" in result.code
    )
    assert "learned_param = [weight_param, bias_param]\n" in result.code
