"""Fork files are first-class: ``--lenient`` keeps what BVLC's schema does not know (fields and
enum values) byte for byte, in ``check`` and in ``upgrade``; a strict ``check`` / ``upgrade``
of a fork's file ends with the flag to pass.

The sweep runs every fork file of ../shared/corpus (MANIFEST.tsv, fork_specific) in-process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rewriter.errors import RewriterError, SchemaErrors
from rewriter.schema.bind import NET, SOLVER, bind, diagnose
from rewriter.text.cst import parse
from rewriter.upgrade.document import UpgradeError, upgrade_text

from .conftest import CORPUS, manifest, need_shared, run_cli

DEEPLAB = "TheLegendAli-DeepLab-Context/voc12/vgg128_noup/test_val.prototxt"
CRFRNN = "torrvision-crfasrnn/python-scripts/TVG_CRFRNN_COCO_VOC.prototxt"
RFCN = (
    "soeaver-caffe-model/det/rfcn/models/pascal_voc/resnet18/"
    "rfcn_voc_resnet18-priv-merge-ohem.prototxt"
)
SSD = "NVIDIA-caffe/models/VGGNet/coco/SSD_300x300/train.prototxt"
DENSENET = "shicai-DenseNet-Caffe/DenseNet_121.prototxt"


def _read(rel: str) -> tuple[Path, str]:
    need_shared()
    path = CORPUS / rel
    return path, path.read_bytes().decode("utf-8", "surrogateescape")


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


@pytest.mark.parametrize(
    ("rel", "token", "layer_field"),
    [
        (DEEPLAB, "IMAGE_SEG_DATA", ("layers", "type")),
        (CRFRNN, "CROP", ("layers", "type")),
        (RFCN, "PRE_FIXED", None),
    ],
)
def test_lenient_keeps_unknown_enum_values(
    rel: str, token: str, layer_field: tuple[str, str] | None
) -> None:
    path, text = _read(rel)
    line = _line_of(text, token)
    strict = bind(parse(text, str(path)), None, NET)
    enum_errors = [d for d in strict.errors if d.code == "unknown-enum"]
    assert enum_errors and enum_errors[0].location is not None
    assert enum_errors[0].location.line == line
    assert f"no value named '{token}'" in enum_errors[0].message

    doc = parse(text, str(path))
    bound = bind(doc, None, NET, lenient=True)
    assert not [d for d in bound.errors if d.code == "unknown-enum"]
    warned = [d for d in bound.warnings if d.code == "unknown-enum"]
    assert warned and warned[0].location is not None and warned[0].location.line == line
    assert "kept verbatim" in warned[0].message
    assert doc.code == text
    if layer_field is not None:  # the fork's V1 type is left unset, not guessed
        repeated, name = layer_field
        line_layers = [x for x in getattr(bound.message, repeated) if not x.HasField(name)]
        assert line_layers


def _fork_rows() -> list[dict[str, str]]:
    return [r for r in manifest() if r["fork_specific"] == "yes"]


def test_upgrade_lenient_sweep_keeps_every_fork_line() -> None:
    """Every fork file upgrades under --lenient, except those Caffe could not read either; each
    line holding an unknown field or enum value comes out unchanged, and the result binds with
    the same warnings and needs no second upgrade."""
    need_shared()
    rows = _fork_rows()
    assert rows
    upgraded = refused = 0
    for row in rows:
        path = CORPUS / row["path"]
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        root = SOLVER if row["kind"] == "solver" else NET
        _, diags = diagnose(text, str(path), None, root, lenient=True)
        errors = [d for d in diags if d.severity == "error"]
        warnings = [d for d in diags if d.severity == "warning"]
        try:
            result = upgrade_text(text, str(path), kind=row["kind"], lenient=True)
        except SchemaErrors as e:
            # only what --lenient cannot keep: shell templates, a field a fork made repeated
            assert errors, f"{row['path']}: {e}"
            refused += 1
            continue
        except UpgradeError as e:
            # a V1 layer whose type is the fork's own enum value: refused at that token
            loc = e.diagnostic.location
            assert loc is not None and "V1 layer type" in e.message, row["path"]
            assert any(d.code == "unknown-enum" and d.location == loc for d in warnings)
            refused += 1
            continue
        assert not errors, row["path"]
        out = result.document.code
        if result.changed:
            upgraded += 1
        out_lines = set(out.splitlines())
        src_lines = text.splitlines()
        for d in warnings:
            assert d.location is not None
            kept = src_lines[d.location.line - 1]
            assert kept in out_lines, f"{row['path']}:{d.location.line}: {kept!r} was rewritten"
        again = bind(parse(out, str(path)), None, root, lenient=True)
        assert not again.errors, again.errors[0].render()
        assert sorted(d.message for d in again.warnings) == sorted(d.message for d in warnings)
        assert not upgrade_text(out, str(path), kind=row["kind"], lenient=True).changed
    assert upgraded > 0 and refused < len(rows) // 10


def test_check_ends_with_the_fork_hint() -> None:
    path, _ = _read(SSD)
    res = _cli("check", str(path))
    assert res.returncode == 2
    tail = res.stderr.rstrip().splitlines()
    assert tail[-4].startswith("hint: ") and "caffe.proto does not know" in tail[-4]
    assert tail[-3].strip() == f"rewriter check --lenient {path}"
    assert tail[-1].strip() == f"rewriter check --proto FORK/src/caffe/proto/caffe.proto {path}"
    assert "Traceback" not in res.stderr
    ok = _cli("check", "--lenient", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "hint:" not in ok.stderr


@pytest.mark.parametrize(("command", "proto"), [("explain", True), ("shapes", False)])
def test_every_net_command_ends_with_its_own_fork_hint(command: str, proto: bool) -> None:
    """Not only check and upgrade: a fork file given to any command that takes --lenient ends
    with that command's own --lenient line (and --proto where it takes one), once."""
    path, _ = _read(SSD)
    res = _cli(command, str(path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("hint: ") == 1
    assert f"  rewriter {command} --lenient {path}" in res.stderr
    assert (f"rewriter {command} --proto FORK/" in res.stderr) is proto
    assert _cli(command, "--lenient", str(path)).returncode == 0


def test_check_typo_gets_no_fork_hint(tmp_path: Path) -> None:
    net = tmp_path / "typo.prototxt"
    net.write_text('name: "x"\nlayer { name: "a" type: "ReLU" bottom: 3 }\n')
    res = _cli("check", str(net))
    assert res.returncode == 2 and "hint:" not in res.stderr


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('name: "x"\nlayerr { name: "a" }\n', "did you mean 'layer'?"),
        (
            'name: "x"\nlayer { name: "a" type: "Pooling" pooling_param { pool: MAXX } }\n',
            "did you mean MAX?",
        ),
    ],
    ids=["field", "enum-value"],
)
def test_check_misspelt_name_gets_its_did_you_mean_not_the_fork_hint(
    tmp_path: Path, text: str, said: str
) -> None:
    """A name a letter away from a BVLC one is a typo; the fork hint (--lenient) would send the
    user the wrong way. SSD's multibox_loss_param, only loosely like loss_param, keeps the hint
    (test_check_ends_with_the_fork_hint)."""
    net = tmp_path / "typo.prototxt"
    net.write_text(text)
    res = _cli("check", str(net))
    assert res.returncode == 2 and said in res.stderr
    assert "hint:" not in res.stderr and "--lenient" not in res.stderr


def test_upgrade_lenient_cli_keeps_fork_fields(tmp_path: Path) -> None:
    path, text = _read(DENSENET)
    strict = _cli("upgrade", str(path))
    assert strict.returncode == 2
    assert "unknown field 'ceil_mode'" in strict.stderr
    assert f"rewriter upgrade --lenient {path}" in strict.stderr
    assert "--proto" not in strict.stderr  # upgrade has no --proto
    out = tmp_path / "out.prototxt"
    res = _cli("upgrade", "--lenient", str(path), "-o", str(out))
    assert res.returncode == 0, res.stderr
    new = out.read_text()
    fork_lines = [ln for ln in text.splitlines() if "ceil_mode" in ln]
    assert fork_lines and [ln for ln in new.splitlines() if "ceil_mode" in ln] == fork_lines
    assert 'type: "Input"' in new and "input_dim" not in new


def test_upgrade_refuses_a_fork_v1_type_at_its_token() -> None:
    path, text = _read(CRFRNN)
    res = _cli("upgrade", "--lenient", str(path))
    assert res.returncode == 2
    line = _line_of(text, "type: CROP")
    col = text.splitlines()[line - 1].index("CROP") + 1
    assert (
        f"{path}:{line}:{col}: error: V1 layer types CROP, MULTI_STAGE_MEANFIELD are not BVLC"
        in res.stderr
    )
    want = "--v1-type CROP=Crop --v1-type MULTI_STAGE_MEANFIELD=MultiStageMeanfield FILE"
    assert want in res.stderr and "Traceback" not in res.stderr


def test_v1_type_names_a_fork_v1_layer_type() -> None:
    """With the V2 names given, a fork's V1 net upgrades: those layers get them, the rest is
    Caffe's upgrade, and the fork's own fields stay as they were."""
    path, text = _read(CRFRNN)
    names = {"CROP": "Crop", "MULTI_STAGE_MEANFIELD": "MultiStageMeanfield"}
    result = upgrade_text(text, str(path), lenient=True, v1_types=names)
    assert result.changed
    out = result.document.code
    bound = bind(parse(out, str(path)), None, NET, lenient=True)
    assert not bound.errors and not bound.message.layers
    types = [layer.type for layer in bound.message.layer]
    assert types.count("Crop") == text.count("type: CROP")
    assert types.count("MultiStageMeanfield") == text.count("type: MULTI_STAGE_MEANFIELD")
    assert "" not in types
    src_lines = text.splitlines()
    before = bind(parse(text, str(path)), None, NET, lenient=True)
    fields = [d for d in before.warnings if d.code == "unknown-field"]
    assert fields
    out_lines = set(out.splitlines())
    for d in fields:
        assert d.location is not None
        assert src_lines[d.location.line - 1] in out_lines
    assert not upgrade_text(out, str(path), lenient=True).changed


def test_v1_type_usage_errors() -> None:
    path, _ = _read(CRFRNN)
    res = _cli("upgrade", "--v1-type", "CROP=Crop", str(path))
    assert res.returncode == 2 and "--v1-type needs --lenient" in res.stderr
    res = _cli("upgrade", "--lenient", "--v1-type", "CROP", str(path))
    assert res.returncode == 2 and "--v1-type takes TOKEN=Type" in res.stderr


# ------------------------------------------------------------------ item 11: nets that build

V0_INPUT_SHAPE = """\
name: "v0net"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layers {
  layer {
    name: "conv1"
    type: "conv"
    num_output: 4
    kernelsize: 3
  }
  bottom: "data"
  top: "conv1"
}
"""


def test_v0_input_shape_becomes_an_input_layer() -> None:
    from rewriter.caffe.graph import CaffeError, build_graph

    original = bind(parse(V0_INPUT_SHAPE), None, NET).message
    # What Caffe does (upgrade_proto.cpp UpgradeV0Net copies input and input_dim only): the
    # input is gone and Net::Init stops at the first layer.
    with pytest.raises(CaffeError, match="Unknown bottom blob 'data'"):
        build_graph(original, "TRAIN")
    result = upgrade_text(V0_INPUT_SHAPE, "v0.prototxt")
    assert any("input_shape is kept" in n for n in result.deliberate_differences)
    assert "    shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n" in result.document.code
    upgraded = bind(result.document, None, NET).message
    assert not upgraded.input and not upgraded.input_shape and not upgraded.layers
    first = upgraded.layer[0]
    assert first.type == "Input" and list(first.top) == ["data"]
    assert list(first.input_param.shape[0].dim) == [1, 3, 8, 8]
    for phase in ("TRAIN", "TEST"):
        graph = build_graph(upgraded, phase)
        assert [layer.name for layer in graph.layers] == ["input", "conv1"]


def test_upgrade_refuses_a_net_that_would_lose_its_input(tmp_path: Path) -> None:
    net = tmp_path / "names_only.prototxt"
    net.write_text(
        'name: "x"\ninput: "data"\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    )
    out = tmp_path / "out.prototxt"
    res = _cli("upgrade", str(net), "-o", str(out))
    assert res.returncode == 2
    assert f"{net}:2:8: error: the upgraded net would not build" in res.stderr
    assert "Unknown bottom blob 'data'" in res.stderr and "input_dim" in res.stderr
    assert not out.exists()


def test_a_net_broken_before_the_upgrade_is_a_warning() -> None:
    """Caffe's tool upgrades a net that cannot build anyway (oracle/upgrade: exit 0, written);
    so do we, with a warning, as the upgrade did not break it."""
    from .conftest import ORACLE

    need_shared()
    path = ORACLE / "upgrade" / "batchnorm_three_params.prototxt"
    result = upgrade_text(path.read_text(), str(path))
    assert result.changed
    assert len(result.warnings) == 1 and "batch_norm_layer.cpp" in result.warnings[0]


def test_lenient_errors_are_still_rewriter_errors() -> None:
    with pytest.raises(RewriterError):
        upgrade_text("layers { type: CROP }\n", "x.prototxt", lenient=True)


# ------------------------------------------------------------------ export netspec --lenient


@pytest.mark.parametrize(
    "rel",
    [
        "chuanqi305-MobileNet-SSD/voc/MobileNetSSD_test.prototxt",
        DENSENET,
        RFCN,
        "alexgkendall-SegNet-Tutorial/Models/segnet_basic_inference.prototxt",
    ],
)
def test_export_netspec_lenient_carries_fork_fields(rel: str, tmp_path: Path) -> None:
    """The script rebuilds what BVLC knows exactly and merges every fork field's own text."""
    import ast

    from rewriter.netspec.evaluator import run_script
    from rewriter.netspec.export import export_file

    path, text = _read(rel)
    with pytest.raises(SchemaErrors):
        export_file(path)
    script = export_file(path, output="out.prototxt", lenient=True)
    merges = [line for line in script.splitlines() if "text_format.Merge(" in line]
    assert merges
    merged = [
        ast.literal_eval(line.split("text_format.Merge(", 1)[1].split(", net", 1)[0])
        for line in merges
    ]
    bound = bind(parse(text, str(path)), None, NET, lenient=True)
    src_lines = text.splitlines()
    for d in bound.warnings:  # each unknown field's or value's line is inside a merged text
        assert d.location is not None
        line = src_lines[d.location.line - 1].strip()
        assert any(line in m.splitlines() or line in m for m in merged), line
    # Without the merges (BVLC's caffe_pb2 cannot take them) the script gives the BVLC part.
    bvlc_only = "\n".join(line for line in script.splitlines() if line not in merges)
    out = tmp_path / "make_net.py"
    out.write_text(bvlc_only)
    run = run_script(out)
    from google.protobuf import text_format

    again = type(bound.message)()
    text_format.Parse(run.outputs[0].text, again)
    assert again == bound.message


def test_cli_export_netspec_takes_lenient(tmp_path: Path) -> None:
    path, _ = _read(DENSENET)
    res = _cli("export", "netspec", "--lenient", str(path), "-o", str(tmp_path / "s.py"))
    assert res.returncode == 0, res.stderr
    assert 'text_format.Merge("ceil_mode: false", net.layer[' in (tmp_path / "s.py").read_text()


def test_apply_upgrade_step_is_lenient_with_apply(tmp_path: Path) -> None:
    """A recipe's ``upgrade`` step follows ``apply --lenient`` (it bound strictly before)."""
    path, text = _read(DENSENET)
    recipe = tmp_path / "up.toml"
    recipe.write_text('name = "upgrade"\n[[steps]]\nstep = "upgrade"\n')
    out = tmp_path / "out.prototxt"
    assert _cli("apply", str(recipe), str(path), "-o", str(out)).returncode == 2
    res = _cli("apply", str(recipe), str(path), "--lenient", "-o", str(out))
    assert res.returncode == 0, res.stderr
    new = out.read_text()
    assert 'type: "Input"' in new
    fork_lines = [ln for ln in text.splitlines() if "ceil_mode" in ln]
    assert [ln for ln in new.splitlines() if "ceil_mode" in ln] == fork_lines


def test_lenient_keeps_a_list_for_a_field_a_fork_made_repeated() -> None:
    path, text = _read("yjxiong-caffe/models/action_recognition/vgg_16_rgb_solver.prototxt")
    line = _line_of(text, "device_id")
    strict = bind(parse(text, str(path)), None, SOLVER)
    assert [d.location.line for d in strict.errors if d.location] == [line]
    bound = bind(parse(text, str(path)), None, SOLVER, lenient=True)
    assert not bound.errors
    assert [(d.code, d.location.line if d.location else 0) for d in bound.warnings] == [
        ("not-repeated", line)
    ]
    assert not bound.message.HasField("device_id")
    result = upgrade_text(text, str(path), kind="solver", lenient=True)
    assert text.splitlines()[line - 1] in result.document.code.splitlines()


def test_check_hint_for_many_files_names_no_file_list() -> None:
    need_shared()
    res = _cli("check", str(CORPUS / "chuanqi305-MobileNet-SSD"))
    assert res.returncode == 2
    assert "  rewriter check --lenient FILE...\n" in res.stderr
