"""What a new user meets first: --help, flags, output options, built-in recipes, deploy outputs.

The CLI runs as ``python -m rewriter.cli`` with the interpreter running the tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rewriter.cli.help import reflow

from .conftest import CORPUS, REPO, need_shared, run_cli

SEED = REPO / "examples" / "seed_net.prototxt"


def cli(*args: str, cwd: Path | None = None, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    return run_cli(*args, cwd=cwd, env=env)


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
    # a misspelt layer name: the did-you-mean, the recipe's options, never its TOML file
    r = cli("apply", "freeze", str(SEED), "--set", "layers=conv1/7x7_s3")
    assert r.returncode == 2
    assert "no layer named 'conv1/7x7_s3'; did you mean 'conv1/7x7_s2'?" in r.stderr
    assert "options of 'freeze': --set upto=LAYER" in r.stderr
    assert "freeze.toml" not in r.stderr


def test_builtin_recipe_descriptions_promise_only_real_options() -> None:
    r = cli("recipes", "freeze")
    assert "a regex" in r.stdout and "  regex (string" in r.stdout
    r = cli("apply", "freeze", str(SEED), "--set", "regex=^conv1/")
    assert r.returncode == 0, r.stderr
    assert "1 layer(s)" in r.stderr


SIAMESE = "BVLC-caffe/examples/siamese/mnist_siamese_train_test.prototxt"
SIAMESE_DEPLOY = "BVLC-caffe/examples/siamese/mnist_siamese.prototxt"
EUCLID_ONLY = """name: "regress"
layer { name: "d" type: "Data" top: "x" top: "y" data_param { source: "db" batch_size: 4 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" top: "loss" }
"""


def test_deploy_keeps_the_prediction_of_a_loss_with_no_inference_form(tmp_path: Path) -> None:
    need_shared()
    net = str(CORPUS / SIAMESE)
    out = tmp_path / "deploy.prototxt"
    r = cli("deploy", net, "--set", "shape.pair_data=1,2,28,28", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "output feat: kept (ContrastiveLoss 'loss' read it)" in r.stdout
    assert "net outputs: feat, feat_p" in r.stdout and "(none)" not in r.stdout
    assert 'type: "ContrastiveLoss"' not in out.read_text()
    # --set outputs=all on a net with no Softmax loss keeps every loss's predictions
    r = cli("deploy", net, "--set", "shape.pair_data=1,2,28,28", "--set", "outputs=all")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) > 1000 and "net outputs: feat, feat_p" in r.stderr
    # any blob is an output; BVLC's own deploy net of this example ends at 'feat'
    r = cli("deploy", net, "--set", "shape.pair_data=1,2,28,28", "--set", "outputs=feat")
    assert r.returncode == 0, r.stderr
    assert "output feat: kept (asked for)" in r.stderr
    shipped = cli("shapes", str(CORPUS / SIAMESE_DEPLOY), "--format", "json")
    assert '"feat"' in shipped.stdout
    mine = tmp_path / "feat.prototxt"
    mine.write_text(r.stdout)
    ours = cli("shapes", str(mine))
    assert "feat  " in ours.stdout and "(1, 2)" in ours.stdout


def test_deploy_refuses_a_net_with_no_output(tmp_path: Path) -> None:
    net = tmp_path / "regress.prototxt"
    net.write_text(EUCLID_ONLY)
    out = tmp_path / "deploy.prototxt"
    r = cli("deploy", str(net), "--set", "shape.x=4,3", "-o", str(out))
    assert r.returncode == 2
    assert "the deploy net would have no output" in r.stderr
    assert "--set outputs=BLOB" in r.stderr
    assert not out.exists()


GOOGLENET_SOLVER = "BVLC-caffe/models/bvlc_googlenet/quick_solver.prototxt"


def test_a_solver_given_to_a_net_command_names_its_net() -> None:
    need_shared()
    solver = str(CORPUS / GOOGLENET_SOLVER)
    for command in ("shapes", "deploy", "graph"):
        r = cli(command, solver)
        assert r.returncode == 2, command
        assert "this is a solver (caffe.SolverParameter), not a net" in r.stderr
        assert 'net: "models/bvlc_googlenet/train_val.prototxt"' in r.stderr
        assert "unknown field" not in r.stderr and "Traceback" not in r.stderr
        assert f"{solver}:1:1: error" in r.stderr


def test_explain_solver_explains_the_net_it_trains() -> None:
    need_shared()
    r = cli("explain", str(CORPUS / GOOGLENET_SOLVER))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("TRAIN net GoogleNet: 169 layers")
    assert "a solver; explaining the net it trains (net: " in r.stderr
    inline = CORPUS / "BVLC-caffe/examples/mnist/lenet_consolidated_solver.prototxt"
    r = cli("explain", str(inline))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("TRAIN net LeNet")


PYTHON_NET = """layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "py" type: "Python" bottom: "x" top: "y" param { lr_mult: 1 }
        python_param { module: "m" layer: "L" } }
layer { name: "fb" type: "Frobnicate" bottom: "y" top: "z" param { lr_mult: 1 } }
"""


def test_hints_speak_cli(tmp_path: Path) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text(PYTHON_NET)
    r = cli("explain", str(net))
    assert r.returncode == 0, r.stderr
    assert "type 'Python' (1 layer(s): py) gets its parameter blobs from user code" in r.stdout
    assert "'Python' (1 layer(s): py) is unknown" not in r.stdout
    assert "to override: --param-count Python=N" in r.stdout
    assert "type 'Frobnicate' (1 layer(s): fb) is unknown to BVLC Caffe" in r.stdout
    data = tmp_path / "data.prototxt"
    data.write_text(
        'layer { name: "d" type: "Data" top: "data" top: "label" data_param { batch_size: 2 } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"\n'
        "        inner_product_param { num_output: 2 } }\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'
    )
    r = cli("deploy", str(data))
    assert r.returncode == 2
    assert "--set height=H --set width=W" in r.stderr
    assert "--set shape.data=N,C,H,W" in r.stderr
    assert "}}" not in r.stderr and "input_shapes={'data': [N, C, H, W]}" in r.stderr


def test_weights_tables_are_aligned(tmp_path: Path) -> None:
    need_shared()
    from .test_weights import LENET, LENET_NET, write_model

    model = write_model(tmp_path / "lenet.caffemodel", LENET)
    sets = ["--set", "channels=1", "--set", "height=28", "--set", "width=28"]
    r = cli("weights", str(CORPUS / LENET_NET), str(model), *sets)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("  ") and "(" in ln]
    assert len(rows) >= 4, r.stdout
    # every row's type and shape columns start at the same place
    type_cols = {ln.index(ln.split()[1], len(ln.split()[0]) + 2) for ln in rows}
    shape_cols = {ln.index("(") for ln in rows}
    assert len(type_cols) == 1 and len(shape_cols) == 1, r.stdout


def test_check_dir_ends_with_a_count(tmp_path: Path) -> None:
    (tmp_path / "a.prototxt").write_text('name: "a"\n')
    (tmp_path / "b.prototxt").write_text("layer {\n")
    (tmp_path / "c.prototxt").write_text('base_lr: 0.01\nlr_policy: "fixed"\n')
    r = cli("check", str(tmp_path))
    assert r.returncode == 2
    assert r.stdout.splitlines()[-1] == "3 file(s) checked: 2 ok, 1 invalid"


def test_deploy_output_does_not_start_with_a_blank_line() -> None:
    r = cli("deploy", str(SEED), "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('layer {\nname: "data"\ntype: "Input"'), r.stdout[:80]
    r = cli("apply", "deploy", str(SEED))
    assert r.returncode == 0, r.stderr
    assert "+++ " in r.stdout and "\n+\n" not in r.stdout.split("@@", 2)[-1][:200]
