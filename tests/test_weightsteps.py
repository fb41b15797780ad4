"""Steps that carry the .caffemodel (fold-bn, rename-layer with weights, fc-to-conv).

* the fixture pairs ``tests/fixtures/apply-weights_*``: the prototxt diff is checked by
  tests/test_apply_fixtures.py; here the weights: the input file made by
  :mod:`tests.weightgen` has the recorded digests, the written one too, untouched layer records
  are copied byte for byte, and the pair passes the ``weights`` and ``numeric`` checks;
* every BatchNorm case of ``../shared/oracle/forward``: folded, the new pair reproduces the
  outputs real Caffe computed from the old pair (relative to the output's scale, 1e-4);
* the refusals, the skipped numeric check without onnxruntime, the CLI writing both files or
  neither.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rewriter.errors import RewriterError
from rewriter.recipes.checks import CheckFailed
from rewriter.recipes.engine import apply
from rewriter.recipes.recipe import Recipe, Step
from tests.conftest import ORACLE, need_shared, run_cli
from tests.weightgen import digests, make_caffemodel

np = pytest.importorskip("numpy")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CASES = sorted(p for p in FIXTURES.glob("apply-*") if (p / "digests.json").is_file())
BN_CASES = [
    "batchnorm_scale",
    "batchnorm_defaults",
    "resnet50_quarter",
    "mobilenet_v1_quarter",
    "densenet40_cifar",
]


def _pair(case: Path, tmp: Path) -> tuple[Any, Path]:
    src = tmp / "before.caffemodel"
    make_caffemodel(case / "before.prototxt", src)
    recipe = Recipe.load(case / "recipe.toml")
    opts = case / "options.json"
    options = json.loads(opts.read_text()).get("options") if opts.is_file() else None
    result = apply(
        case / "before.prototxt",
        recipe,
        options=options,
        weights=src,
        weights_out=tmp / "out.caffemodel",
    )
    return result, src


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixture_weights(case: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    expected = json.loads((case / "digests.json").read_text())
    result, src = _pair(case, tmp_path)
    assert digests(src) == expected["before"]
    assert result.code == (case / "after.prototxt").read_text()
    checks = {c.name: c for c in result.checks}
    assert checks["weights"].ok and not checks["weights"].skipped
    assert checks["numeric"].ok and not checks["numeric"].skipped, checks["numeric"].detail
    result.write(tmp_path / "out.prototxt", tmp_path / "out.caffemodel")
    assert (tmp_path / "out.prototxt").read_text() == result.code
    assert digests(tmp_path / "out.caffemodel") == expected["after"]
    # untouched layers: their records are copied byte for byte
    from rewriter.recipes.weightsteps.store import WeightStore

    old, new = WeightStore.open(src), WeightStore.open(tmp_path / "out.caffemodel")
    old_bytes, new_bytes = src.read_bytes(), (tmp_path / "out.caffemodel").read_bytes()
    for name, hs in expected["after"].items():
        if expected["before"].get(name) == hs and name in old.by_name:
            r, s = old.records[old.by_name[name]], new.records[new.by_name[name]]
            assert old_bytes[r.start : r.end] == new_bytes[s.start : s.end]


def _oracle_fold(case: str, tmp: Path) -> tuple[Any, float]:
    from rewriter.onnx.check import run_check
    from rewriter.onnx.export import export

    d = ORACLE / "forward" / case
    result = apply(
        d / "net.prototxt",
        Step("fold-bn"),
        weights=d / "weights.caffemodel",
        weights_out=tmp / "folded.caffemodel",
    )
    result.write(tmp / "folded.prototxt", tmp / "folded.caffemodel")
    model = export(tmp / "folded.prototxt", tmp / "folded.caffemodel")
    report = run_check(model, d / "inputs", d / "outputs")
    return result, max(o.error or 0.0 for o in report)


@pytest.mark.parametrize("case", BN_CASES)
def test_oracle_folds_and_matches_caffe(case: str, tmp_path: Path) -> None:
    need_shared()
    pytest.importorskip("onnxruntime")
    result, err = _oracle_fold(case, tmp_path)
    assert err <= 1e-4, err
    assert "BatchNorm" not in {layer.type for layer in result.net.message.layer}
    numeric = next(c for c in result.checks if c.name == "numeric")
    assert numeric.ok and not numeric.skipped


def test_oracle_batch_stats_refused(tmp_path: Path) -> None:
    need_shared()
    d = ORACLE / "forward" / "batchnorm_batch_stats"
    with pytest.raises(RewriterError) as e:
        apply(d / "net.prototxt", Step("fold-bn"), weights=d / "weights.caffemodel",
              weights_out=tmp_path / "o.caffemodel")  # fmt: skip
    msg = str(e.value)
    assert "net.prototxt:4:" in msg and "use_global_stats: false" in msg and "^" in msg
    assert list(tmp_path.iterdir()) == []


NET = (
    'name: "n"\n'
    'layer { name: "data" type: "Input" top: "data" '
    "input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n"
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
    "convolution_param { num_output: 3 kernel_size: 1 } }\n"
    "%s"
)


def _refusal(tmp_path: Path, body: str, **step: Any) -> str:
    net = tmp_path / "net.prototxt"
    net.write_text(NET % body)
    make_caffemodel(net, tmp_path / "w.caffemodel")
    with pytest.raises(RewriterError) as e:
        apply(net, Step("fold-bn", **step), weights=tmp_path / "w.caffemodel")
    return str(e.value)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (  # the BatchNorm's input is read by another layer: folding would change what it reads
            'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" }\n'
            'layer { name: "other" type: "ReLU" bottom: "conv" top: "other" }\n',
            ["also read by other", "folding would change what they read", "net.prototxt:4:"],
        ),
        (  # a net that trains, statistics unset: TRAIN uses batch statistics
            'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "bn" bottom: "bn" top: "loss" }\n',
            ["statistics still training", "bn-frozen"],
        ),
    ],
    ids=["input-read-twice", "statistics-training"],
)
def test_refused(tmp_path: Path, body: str, words: list[str]) -> None:
    msg = _refusal(tmp_path, body)
    for w in words:
        assert w in msg, msg


def test_scale_with_a_second_bottom_is_not_folded(tmp_path: Path) -> None:
    body = (
        'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" '
        "batch_norm_param { use_global_stats: true } }\n"
        'layer { name: "sc" type: "Scale" bottom: "bn" bottom: "conv2" top: "sc" '
        "scale_param { axis: 0 } }\n"
    )
    net = tmp_path / "net.prototxt"
    text = (NET % body).replace(
        'layer { name: "bn"',
        'layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2" '
        'convolution_param { num_output: 3 kernel_size: 1 } }\nlayer { name: "bn"',
    )
    net.write_text(text)
    make_caffemodel(net, tmp_path / "w.caffemodel")
    result = apply(net, Step("fold-bn"), weights=tmp_path / "w.caffemodel")
    names = [layer.name for layer in result.net.message.layer]
    assert "bn" not in names and "sc" in names  # the BatchNorm folds into conv, the Scale stays
    # with nothing before it to fold into, the second bottom is the reason given
    text2 = text.replace('bottom: "conv" top: "bn"', 'bottom: "data" top: "bn"')
    net.write_text(text2)
    with pytest.raises(RewriterError, match="second bottom"):
        apply(net, Step("fold-bn"), weights=tmp_path / "w.caffemodel")


def test_unfoldable_skip_warns(tmp_path: Path) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text(NET % 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }\n')
    make_caffemodel(net, tmp_path / "w.caffemodel")
    result = apply(net, Step("fold-bn", unfoldable="skip"), weights=tmp_path / "w.caffemodel")
    assert not result.changed and any("not folded" in w for w in result.warnings)


def test_fold_needs_the_weights(tmp_path: Path) -> None:
    case = FIXTURES / "apply-weights_fold_bn_inplace"
    with pytest.raises(RewriterError, match="--weights IN.caffemodel --weights-out"):
        apply(case / "before.prototxt", Step("fold-bn"))


def test_numeric_check_is_skipped_not_passed_without_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rewriter.onnx as ox

    def missing(*modules: str) -> None:
        raise ox.MissingExtra("rewriter export onnx needs onnxruntime (not installed)")

    monkeypatch.setattr(ox, "require_extra", missing)
    result, _ = _pair(FIXTURES / "apply-weights_fold_bn_inplace", tmp_path)
    numeric = next(c for c in result.checks if c.name == "numeric")
    assert numeric.skipped and "skipped" in numeric.render() and "passed" not in numeric.render()


def test_numeric_check_catches_a_wrong_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from rewriter.recipes.weightsteps import fold_bn

    real = fold_bn._weight_op

    def off_by_eps(view: Any, fold: Any, msg: Any) -> Any:
        op = real(view, fold, msg)

        def wrong(store: Any) -> None:
            op(store)
            name = view.names[fold.target]
            blobs = store.blobs(name, "test")
            store.set(name, [blobs[0] * 1.01, *blobs[1:]], "test")

        return wrong

    monkeypatch.setattr(fold_bn, "_weight_op", off_by_eps)
    with pytest.raises(CheckFailed) as e:
        _pair(FIXTURES / "apply-weights_fold_bn_inplace", tmp_path)
    assert [f.name for f in e.value.failures] == ["numeric"]
    assert [p.name for p in tmp_path.iterdir()] == ["before.caffemodel"]


def test_cli_writes_both_files(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    case = FIXTURES / "apply-weights_fold_bn_deconv_scale"
    make_caffemodel(case / "before.prototxt", tmp_path / "w.caffemodel")
    out, wout = tmp_path / "o.prototxt", tmp_path / "o.caffemodel"
    args = ["apply", "--step", "fold-bn", str(case / "before.prototxt")]
    args += ["--weights", str(tmp_path / "w.caffemodel")]
    p = run_cli(*args, "-o", str(out))
    assert p.returncode == 2 and "--weights-out OUT.caffemodel" in p.stderr
    assert not out.exists()
    p = run_cli(*args, "-o", str(out), "--weights-out", str(wout))
    assert p.returncode == 0, p.stderr
    assert out.read_text() == (case / "after.prototxt").read_text()
    expected = json.loads((case / "digests.json").read_text())
    assert digests(wout) == expected["after"]
    p = run_cli("weights", str(out), str(wout))
    assert p.returncode == 0, p.stdout + p.stderr


def test_fc_to_conv_refusal_is_located(tmp_path: Path) -> None:
    case = FIXTURES / "apply-weights_fc_to_conv"
    make_caffemodel(case / "before.prototxt", tmp_path / "w.caffemodel")
    p = run_cli(
        "apply", "--step", "fc-to-conv layers=fc7", str(case / "before.prototxt"),
        "--weights", str(tmp_path / "w.caffemodel"),
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "before.prototxt:37:3: error: fc-to-conv: layer 'fc7'" in p.stderr
    assert "layers=fc6,fc7" in p.stderr


def test_unwritable_weights_out_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    case = FIXTURES / "apply-weights_rename"
    make_caffemodel(case / "before.prototxt", tmp_path / "w.caffemodel")
    out = tmp_path / "o.prototxt"
    p = run_cli(
        "apply", str(case / "recipe.toml"), str(case / "before.prototxt"),
        "--weights", str(tmp_path / "w.caffemodel"), "-o", str(out),
        "--weights-out", str(tmp_path / "missing" / "o.caffemodel"),
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "missing/o.caffemodel: cannot write" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["w.caffemodel"]


def test_legacy_4d_blobs_fold_to_caffe_shapes(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    case = FIXTURES / "apply-weights_fold_bn_inplace"
    src = tmp_path / "legacy.caffemodel"
    make_caffemodel(case / "before.prototxt", src, legacy=True)
    result = apply(case / "before.prototxt", Step("fold-bn"), weights=src)
    checks = {c.name: c for c in result.checks}
    assert checks["weights"].ok and checks["numeric"].ok and not checks["numeric"].skipped


def test_phase_twins_are_refused(tmp_path: Path) -> None:
    twins = (
        'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" include { phase: TRAIN } '
        "batch_norm_param { use_global_stats: false } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" include { phase: TEST } '
        "batch_norm_param { use_global_stats: true } }\n"
    )
    msg = _refusal(tmp_path, twins)
    assert "twin of the same name" in msg and "rewriter deploy" in msg
    assert "net.prototxt:4:" in msg and "net.prototxt:5:" in msg  # the layer and its twin


def test_result_writes_twice_and_json_names_the_weights(tmp_path: Path) -> None:
    from rewriter.recipes.engine import run_file

    case = FIXTURES / "apply-weights_rename"
    result, src = _pair(case, tmp_path)
    result.write(tmp_path / "a.prototxt", tmp_path / "a.caffemodel")
    result.write(tmp_path / "b.prototxt", tmp_path / "b.caffemodel")
    assert (tmp_path / "a.caffemodel").read_bytes() == (tmp_path / "b.caffemodel").read_bytes()
    with pytest.raises(RewriterError, match="--weights-out"):
        result.write(tmp_path / "c.prototxt")
    recipe = Recipe.load(case / "recipe.toml")
    data = run_file(str(case / "before.prototxt"), recipe, {}, weights=str(src))
    assert data["ok"] and data["weights"] == {"source": str(src), "written": None}
    assert not data.get("written")


TRAIN_VAL = """name: "tv"
layer { name: "d1" type: "Input" top: "data" top: "label" include { phase: TRAIN }
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "d2" type: "Input" top: "data" top: "label" include { phase: TEST }
        input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
        batch_norm_param { use_global_stats: true } }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


def test_train_val_with_frozen_statistics_folds_checked_on_its_deploy_form(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    net = tmp_path / "train_val.prototxt"
    net.write_text(TRAIN_VAL)
    make_caffemodel(net, tmp_path / "w.caffemodel")
    result = apply(net, Step("fold-bn"), weights=tmp_path / "w.caffemodel")
    checks = {c.name: c for c in result.checks}
    assert [c.detail for c in result.checks if c.name == "structure"][1].startswith("TEST")
    numeric = checks["numeric"]
    assert numeric.ok and not numeric.skipped and "deploy form" in numeric.detail
    assert {x.name for x in result.net.message.layer} & {"bn", "sc"} == set()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--weights-out", "o.caffemodel", "-o", "o.prototxt"], "--weights-out needs --weights"),
        (["--weights", "w.caffemodel", "SECOND"], "--weights goes with one net"),
    ],
    ids=["out-without-in", "two-nets"],
)
def test_cli_usage_errors(tmp_path: Path, extra: list[str], words: str) -> None:
    net = FIXTURES / "apply-weights_rename" / "before.prototxt"
    extra = [str(net) if x == "SECOND" else x for x in extra]
    p = run_cli("apply", "--step", "fold-bn", str(net), *extra, cwd=tmp_path)
    assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []
