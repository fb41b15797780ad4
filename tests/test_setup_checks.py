"""Caffe's set-up checks (issue 16) against what real BVLC Caffe printed.

``oracle/setup``: 43 small nets, each pinning one check Caffe makes while ``Net::Init`` sets
layers up (README there). Every run must give Caffe's verdict, its FATAL text, the source file
of the FATAL line and the layer being set up; a successful run must give every top shape and
parameter shape Caffe logged.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from rewriter.caffe.setup_checks import check_setup, field_of
from tests.conftest import ORACLE, need_shared, run_cli
from tests.test_shapes import _caffe_shape, _net

SETUP = ORACLE / "setup"


def _runs() -> list[Any]:
    if not SETUP.is_dir():
        return [pytest.param(None, None, id="no-shared-oracle")]
    out = []
    for exp in sorted(SETUP.glob("*.expect.json")):
        data = json.loads(exp.read_text())
        for run in data["runs"]:
            out.append(pytest.param(data, run, id=f"{data['case']}-{run['phase']}"))
    return out


@pytest.mark.parametrize(("case", "run"), _runs())
def test_setup_matches_caffe(case: Any, run: Any) -> None:
    need_shared()
    net = _net((SETUP / case["prototxt"]).read_text())
    report = check_setup(net, run["phase"])
    assert report.skipped == []
    if run["ok"]:
        assert report.error is None, report.error
        assert report.shapes is not None
        got = {ls.name: [list(t) for t in ls.top_shapes] for ls in report.shapes.layers}
        params = {ls.name: list(ls.params) for ls in report.shapes.layers}
        for layer in run["layers"]:
            assert got[layer["name"]] == layer["top_shapes"], layer["name"]
            want = [_caffe_shape(p["shape"]) for p in layer["params"]]
            assert params[layer["name"]] == want, layer["name"]
        return
    err = report.error
    assert err is not None, "Caffe refuses this net"
    assert err.message == run["error"]
    assert err.location == run["error_location"]
    assert report.layer == run["layers_created_before_error"][-1]
    # every failure names the field that causes it, for path:line:col
    assert getattr(err, "field", None), err.message


def test_every_setup_case_is_compared() -> None:
    need_shared()
    runs = [p for p in _runs() if p.values[0] is not None]
    assert len({p.values[0]["case"] for p in runs}) == 43
    assert sum(not p.values[1]["ok"] for p in runs) == 30


def test_python_api_setup() -> None:
    """``rewriter.load(path).setup(phase)``: the report, placed in the file on demand."""
    need_shared()
    import rewriter

    f = rewriter.load(SETUP / "conv_group_not_dividing_channels.prototxt")
    report = f.setup("TRAIN")
    assert report.layer == "conv" and not report.ok
    (diag,) = report.diagnostics(f.document)
    assert diag.location is not None and (diag.location.line, diag.location.col) == (7, 125)
    assert rewriter.load(SETUP / "conv_deconv_group_pass.prototxt").setup("TRAIN").ok


def test_fields_of_the_checks() -> None:
    """The field the caret goes to: the one the user must change."""
    assert field_of("Convolution", "Check failed: channels_ % group_ == 0 (1 vs. 0)") == (
        "convolution_param.group",
        None,
    )
    assert field_of("Eltwise", "... bottom[0]: 2 3 4 4 (96), bottom[1]: 2 3 2 8 (96)") == (
        "bottom",
        1,
    )
    assert field_of(
        "PReLU",
        "Check failed: param_size <= num_param_blobs (2 vs. 1) Too many params specified for "
        "layer prelu",
    ) == ("param", 1)


_INPUT = (
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 '
    "dim: 8 dim: 8 } } }\n"
)


def test_a_shape_check_of_an_earlier_layer_beats_a_later_graph_error() -> None:
    """Net::Init sets layers up in order: the group check of 'c' fires before the unknown
    bottom of 'late' is wired."""
    net = _net(
        _INPUT + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 2 kernel_size: 1 group: 2 } }\n"
        'layer { name: "late" type: "ReLU" bottom: "nowhere" top: "late" }\n'
    )
    report = check_setup(net, "TRAIN")
    assert report.error is not None
    assert report.error.message == "Check failed: channels_ % group_ == 0 (1 vs. 0)"
    assert report.layer == "c"


def test_shape_checks_of_a_layer_come_before_its_param_checks() -> None:
    """ "Too many params" is checked after SetUp: the layer's own Reshape CHECK wins."""
    net = _net(
        _INPUT + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" param {} param {} '
        "param {} convolution_param { num_output: 2 kernel_size: 1 group: 2 } }\n"
    )
    report = check_setup(net, "TRAIN")
    assert report.error is not None
    assert "group_" in report.error.message


def test_sharing_checks_use_inferred_param_shapes() -> None:
    """Issue 16's example: two convolutions sharing 'w' with different weight shapes."""
    net = _net(
        _INPUT
        + 'layer { name: "fa" type: "Convolution" bottom: "data" top: "fa" param { name: "w" }'
        " convolution_param { num_output: 4 kernel_size: 1 bias_term: false } }\n"
        'layer { name: "fb" type: "Convolution" bottom: "fa" top: "fb" param { name: "w" }'
        " convolution_param { num_output: 2 kernel_size: 1 bias_term: false } }\n"
    )
    report = check_setup(net, "TRAIN")
    assert report.error is not None
    assert report.error.message == (
        "Check failed: this_blob->shape() == owner_blob->shape() Cannot share param 'w' owned "
        "by layer 'fa' with layer 'fb'; shape mismatch.  Owner layer param shape is 4 3 1 1 "
        "(12); sharing layer expects shape 2 4 1 1 (8)"
    )
    assert report.error.location == "net.cpp"
    assert (report.layer, getattr(report.error, "field", None)) == ("fb", "param.name")


def test_unknown_shapes_name_the_skipped_layers() -> None:
    """A layer whose shapes cannot be known: its checks and those after it are skipped, and
    the report says so (never a silent pass)."""
    net = _net(
        _INPUT + 'layer { name: "f" type: "ForkOnlyLayer" bottom: "data" top: "f" }\n'
        'layer { name: "r" type: "ReLU" bottom: "f" top: "r" }\n'
    )
    report = check_setup(net, "TRAIN", param_counts={"ForkOnlyLayer": 0})
    assert report.error is None
    assert report.skipped == ["f", "r"]
    assert "ForkOnlyLayer" in (report.skipped_reason or "")
    assert "skipped for 2 layer(s) from 'f'" in report.summary()


def _failing_runs() -> list[Any]:
    return [p for p in _runs() if p.values[0] is None or not p.values[1]["ok"]]


@pytest.mark.parametrize(("case", "run"), _failing_runs())
def test_failure_is_located_at_its_field(case: Any, run: Any) -> None:
    """path:line:col with the caret on the field that makes the check fail (on the layer's
    name when that field is not written, e.g. a missing input_dim)."""
    need_shared()
    from rewriter.schema.bind import bind
    from rewriter.text.cst import parse

    path = SETUP / case["prototxt"]
    text = path.read_text()
    doc = parse(text, path.name)
    report = check_setup(bind(doc, root="caffe.NetParameter").message, run["phase"])
    assert report.error is not None
    (diag,) = report.diagnostics(doc)
    loc = diag.location
    assert loc is not None and loc.path == path.name
    assert run["error"] in diag.render() and diag.render().startswith(f"{loc}: error: ")
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if f'name: "{report.layer}"' in ln)
    end = next((i for i in range(start + 1, len(lines)) if "layer {" in lines[i]), len(lines))
    assert start < loc.line <= end, "the caret is inside the failing layer's block"
    seg = (report.error.field or "").rsplit(".", 1)[-1]
    line = lines[loc.line - 1]
    block = "\n".join(lines[start:end])
    if f"{seg}:" in block or f"{seg} {{" in block:
        before, at = line[: loc.col - 1], line[loc.col - 1 :]
        assert before.rstrip().endswith(f"{seg}:") or at.startswith(seg), (seg, line)
    else:  # not written: the block that would hold it, else the layer's name
        at = line[loc.col - 1 :]
        assert at.startswith(f'"{report.layer}"') or at.startswith(
            (report.error.field or "").split(".")[0]
        ), (report.error.field, line)


def _first_error(layer: str) -> tuple[str, str]:
    report = check_setup(_net(_INPUT + layer + "\n"), "TRAIN")
    assert report.error is not None
    return report.error.message, report.error.location


def test_every_known_type_names_a_real_source_file() -> None:
    """error_location is the file of the FATAL line: it must exist in Caffe's sources."""
    need_shared()
    from rewriter.caffe.shapes import KNOWN_TYPES, _source_file

    layers = ORACLE.parent / "reference" / "caffe-9b89154" / "src" / "caffe" / "layers"
    include = ORACLE.parent / "reference" / "caffe-9b89154" / "include" / "caffe" / "layers"
    for t in KNOWN_TYPES:
        f = _source_file(t)
        assert (layers / f).is_file() or (include / f).is_file(), (t, f)


def test_checks_outside_the_oracle_follow_caffe_sources() -> None:
    """Set-up CHECKs the oracle has no case for, written from the sources at its commit
    (CHECK_LE(a, b) prints "a <= b (a vs. b)")."""
    assert _first_error(
        'layer { name: "l" type: "Log" bottom: "data" top: "l" log_param { base: -2 } }'
    ) == ("Check failed: base > 0 (-2 vs. 0) base must be strictly positive.", "log_layer.cpp")
    assert _first_error(
        'layer { name: "m" type: "ArgMax" bottom: "data" top: "m" argmax_param { top_k: 4 '
        "axis: 1 } }"
    ) == (
        "Check failed: top_k_ <= bottom[0]->shape(axis_) (4 vs. 3) top_k must be less than or "
        "equal to the dimension of the axis.",
        "argmax_layer.cpp",
    )
    # "axis == 1" is literal text in Caffe's message (softmax_loss_layer.cpp), whatever the axis
    net = (
        'layer { name: "lab" type: "Input" top: "lab" input_param { shape { dim: 1 dim: 5 } } }\n'
        'layer { name: "l" type: "SoftmaxWithLoss" bottom: "data" bottom: "lab" top: "l" '
        "softmax_param { axis: 2 } }"
    )
    message, where = _first_error(net)
    assert where == "softmax_loss_layer.cpp"
    assert message.startswith(
        "Check failed: outer_num_ * inner_num_ == bottom[1]->count() (24 vs. 5) Number of "
        "labels must match number of predictions; e.g., if softmax axis == 1 and"
    )
    # Im2col's copy of the sentence ends with ");" (im2col_layer.cpp)
    assert _first_error(
        'layer { name: "i" type: "Im2col" bottom: "data" top: "i" convolution_param { '
        "kernel_size: 1 kernel_size: 1 kernel_size: 1 } }"
    ) == (
        "Check failed: num_kernel_dims == 1 || num_kernel_dims == num_spatial_axes_ "
        "kernel_size must be specified once, or once per spatial dimension (kernel_size "
        "specified 3 times; 2 spatial dims);",
        "im2col_layer.cpp",
    )
    assert _first_error(
        'layer { name: "t" type: "Tile" bottom: "data" top: "t" tile_param { axis: 1 } }'
    ) == (
        "Check failed: tile_param.has_tiles() Number of tiles must be specified",
        "tile_layer.cpp",
    )


# --------------------------------------------------------------------------- wiring


def test_apply_refuses_a_result_that_fails_setup() -> None:
    """The 'setup' round-trip check: the input sets up, the result would not (a group that
    does not divide the 3 input channels), so nothing is written."""
    from rewriter.recipes.checks import CheckFailed
    from rewriter.recipes.engine import apply
    from rewriter.recipes.recipe import Step
    from rewriter.text.cst import parse

    text = _INPUT + (
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 6 kernel_size: 1 } }\n"
    )
    step = Step("set-field", layers=["c"], field="convolution_param.group", value=2)
    with pytest.raises(CheckFailed) as err:
        apply(parse(text, "net.prototxt"), step)
    bad = next(f for f in err.value.failures if f.name == "setup")
    assert bad.layer == "c"
    assert "Check failed: channels_ % group_ == 0 (1 vs. 0)" in bad.detail
    assert "net.prototxt:2:" in bad.detail  # located in the result
    ok = apply(parse(text, "net.prototxt"), Step("set-field", layers=["c"],
               field="convolution_param.group", value=3))  # fmt: skip
    assert any(c.name == "setup" and c.ok for c in ok.checks)


def test_apply_does_not_blame_the_rewrite_for_an_old_failure() -> None:
    """An input Caffe already refuses: the check passes and says so. (A freeze changes only
    what Caffe's set-up does not read: its result sets up as the input does, refused too.)"""
    from rewriter.recipes.engine import apply
    from rewriter.recipes.recipe import Step
    from rewriter.text.cst import parse

    text = _INPUT + (
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 6 kernel_size: 1 group: 2 } }\n"
    )
    step = Step("set-field", layers=["c"], field="convolution_param.bias_term", value=False)
    result = apply(parse(text), step)
    setup = next(c for c in result.checks if c.name == "setup")
    assert setup.ok and "refused as well" in setup.detail
    result = apply(parse(text), Step("freeze", layers=["c"]))
    setup = next(c for c in result.checks if c.name == "setup")
    assert setup.ok and "sets up as the input does" in setup.detail


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


def test_cli_explain_and_check_refuse_like_caffe() -> None:
    need_shared()
    case = SETUP / "share_strict_shape_mismatch.prototxt"
    proc = _cli("explain", str(case))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"{case}:8:77: error: Caffe refuses the net in phase TRAIN (net.cpp)")
    assert "shape mismatch.  Owner layer param shape is 3 4 (12)" in first
    passing = SETUP / "share_tied_transposed_ip.prototxt"
    proc = _cli("check", "--format", "json", str(case), str(passing))
    assert proc.returncode == 2
    files = json.loads(proc.stdout)["files"]
    assert [f["ok"] for f in files] == [False, True]
    (diag,) = files[0]["diagnostics"]
    assert (diag["line"], diag["col"], diag["code"]) == (8, 77, "net-init")


def test_cli_check_says_what_it_skipped_and_set_gives_the_sizes() -> None:
    """A Data layer's image size lives in its database: check warns that the set-up checks
    were skipped (exit 0), and --set gives the sizes they need (mnist pairs: 2x28x28)."""
    need_shared()
    from tests.conftest import CORPUS

    net = CORPUS / "BVLC-caffe" / "examples" / "siamese" / "mnist_siamese_train_test.prototxt"
    proc = _cli("check", str(net))
    assert proc.returncode == 0, proc.stderr
    assert "phase TRAIN and TEST: set-up checks skipped for 19 and 19 layer(s) from " in (
        proc.stdout
    )
    proc = _cli("check", str(net), "--set", "height=28", "--set", "width=28", "--set",
                "channels=2")  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith(": ok, net"), proc.stdout


# --------------------------------------------------------------------------- corpus truth

from tests.test_shapes import _oracle_inputs, _oracle_runs  # noqa: E402


@pytest.mark.parametrize(("row", "run", "notes"), _oracle_runs())
def test_corpus_nets_caffe_initialised_pass_setup(row: Any, run: Any, notes: list[str]) -> None:
    """Every corpus net real Caffe initialised passes every set-up check (sharing included),
    with nothing skipped: no false refusal."""
    need_shared()
    from rewriter.api import load
    from tests.conftest import CORPUS

    assert row is not None
    net = load(CORPUS / row["path"]).message
    opts = _oracle_inputs(row["path"], net, run["phase"], notes)
    report = check_setup(net, run["phase"], stages=run["stages"], level=run["level"], **opts)
    assert report.error is None, report.error
    assert report.skipped == []


def test_deploy_refuses_a_deploy_net_caffe_would_refuse() -> None:
    """deploy's verification makes the set-up checks: two layers sharing 'w' with different
    weight shapes give a deploy net Caffe refuses, reported located."""
    from rewriter.recipes.deploy import DeployError, deploy_document
    from rewriter.text.cst import parse

    text = _INPUT + (
        'layer { name: "fa" type: "Convolution" bottom: "data" top: "fa" param { name: "w" }'
        " convolution_param { num_output: 4 kernel_size: 1 bias_term: false } }\n"
        'layer { name: "fb" type: "Convolution" bottom: "fa" top: "fb" param { name: "w" }'
        " convolution_param { num_output: 2 kernel_size: 1 bias_term: false } }\n"
    )
    with pytest.raises(DeployError) as err:
        deploy_document(parse(text, "tiny.prototxt"))
    text_of = str(err.value)
    assert "Caffe would refuse the deploy net: tiny.prototxt:" in text_of
    assert "Cannot share param 'w' owned by layer 'fa' with layer 'fb'; shape mismatch." in text_of
