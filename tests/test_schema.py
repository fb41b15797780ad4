"""Tests for rewriter.schema.runtime: the bundled BVLC Caffe schema and run-time fork schemas."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, text_format

from rewriter.schema.runtime import (
    Schema,
    SchemaError,
    compile_descriptor_set,
    default_descriptor_path,
    default_schema,
    schema_from_descriptor_set,
    schema_from_proto,
)

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto" / "caffe.proto"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus"
MANIFEST = CORPUS / "MANIFEST.tsv"
ORACLE = SHARED / "oracle"
UPGRADE_TSV = ORACLE / "corpus-upgrade.tsv"

NET = "caffe.NetParameter"
SOLVER = "caffe.SolverParameter"


def _needs_protoc() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed")


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _manifest() -> dict[str, dict[str, str]]:
    return {row["path"]: row for row in _read_tsv(MANIFEST)}


def _no_shared_param() -> Any:
    return pytest.param(None, id="no-shared")


def _skip_without_shared(*paths: Path) -> None:
    for path in (SHARED, *paths):
        if not path.exists():
            pytest.skip(f"../shared not found: {path}")


def _message_for_kind(kind: str) -> str:
    assert kind in ("net", "solver"), kind
    return NET if kind == "net" else SOLVER


# --------------------------------------------------------------------------- descriptor file


def test_regenerating_descriptor_reproduces_committed_file() -> None:
    _needs_protoc()
    committed = default_descriptor_path().read_bytes()
    regenerated = compile_descriptor_set(PROTO)
    # Semantic equality first (clearer failure), then byte-for-byte.
    assert descriptor_pb2.FileDescriptorSet.FromString(
        regenerated
    ) == descriptor_pb2.FileDescriptorSet.FromString(committed), (
        "rewriter/data/caffe.desc is stale: run tools/regen_descriptor.py"
    )
    assert regenerated == committed


def test_regeneration_is_deterministic() -> None:
    _needs_protoc()
    assert compile_descriptor_set(PROTO) == compile_descriptor_set(PROTO)


def test_regen_tool_check_mode() -> None:
    _needs_protoc()
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "regen_descriptor.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_committed_descriptor_is_one_proto2_file_in_package_caffe() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(default_descriptor_path().read_bytes())
    assert [f.name for f in fds.file] == ["caffe.proto"]
    (file_proto,) = fds.file
    assert file_proto.package == "caffe"
    assert file_proto.syntax in ("", "proto2")
    assert not file_proto.HasField("source_code_info")


# --------------------------------------------------------------------------- schema API

MESSAGES = [
    "BlobShape",
    "BlobProto",
    "BlobProtoVector",
    "Datum",
    "FillerParameter",
    "NetParameter",
    "SolverParameter",
    "SolverState",
    "NetState",
    "NetStateRule",
    "ParamSpec",
    "LayerParameter",
    "TransformationParameter",
    "LossParameter",
    "AccuracyParameter",
    "ArgMaxParameter",
    "BatchNormParameter",
    "BiasParameter",
    "ClipParameter",
    "ConcatParameter",
    "ContrastiveLossParameter",
    "ConvolutionParameter",
    "CropParameter",
    "DataParameter",
    "DropoutParameter",
    "DummyDataParameter",
    "EltwiseParameter",
    "ELUParameter",
    "EmbedParameter",
    "ExpParameter",
    "FlattenParameter",
    "HDF5DataParameter",
    "HDF5OutputParameter",
    "HingeLossParameter",
    "ImageDataParameter",
    "InfogainLossParameter",
    "InnerProductParameter",
    "InputParameter",
    "LogParameter",
    "LRNParameter",
    "MemoryDataParameter",
    "MVNParameter",
    "ParameterParameter",
    "PoolingParameter",
    "PowerParameter",
    "PReLUParameter",
    "PythonParameter",
    "RecurrentParameter",
    "ReductionParameter",
    "ReLUParameter",
    "ReshapeParameter",
    "ScaleParameter",
    "SigmoidParameter",
    "SliceParameter",
    "SoftmaxParameter",
    "SPPParameter",
    "SwishParameter",
    "TanHParameter",
    "ThresholdParameter",
    "TileParameter",
    "WindowDataParameter",
    "V1LayerParameter",
    "V0LayerParameter",
]

NESTED_ENUMS = [
    ("FillerParameter", "VarianceNorm"),
    ("SolverParameter", "SnapshotFormat"),
    ("SolverParameter", "SolverMode"),
    ("SolverParameter", "SolverType"),
    ("ParamSpec", "DimCheckMode"),
    ("LossParameter", "NormalizationMode"),
    ("ConvolutionParameter", "Engine"),
    ("DataParameter", "DB"),
    ("EltwiseParameter", "EltwiseOp"),
    ("HingeLossParameter", "Norm"),
    ("LRNParameter", "NormRegion"),
    ("LRNParameter", "Engine"),
    ("PoolingParameter", "PoolMethod"),
    ("PoolingParameter", "Engine"),
    ("PoolingParameter", "RoundMode"),
    ("ReductionParameter", "ReductionOp"),
    ("ReLUParameter", "Engine"),
    ("SigmoidParameter", "Engine"),
    ("SoftmaxParameter", "Engine"),
    ("TanHParameter", "Engine"),
    ("SPPParameter", "PoolMethod"),
    ("SPPParameter", "Engine"),
    ("V1LayerParameter", "LayerType"),
    ("V1LayerParameter", "DimCheckMode"),
    ("V0LayerParameter", "PoolMethod"),
]


def test_every_message_of_the_schema_is_listed() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(default_descriptor_path().read_bytes())
    assert sorted(m.name for m in fds.file[0].message_type) == sorted(MESSAGES)
    assert [e.name for e in fds.file[0].enum_type] == ["Phase"]


@pytest.mark.parametrize("name", MESSAGES)
def test_message_exists(name: str) -> None:
    s = default_schema()
    desc = s.descriptor(f"caffe.{name}")
    assert desc.full_name == f"caffe.{name}"
    msg = s.message_class(f"caffe.{name}")()
    assert msg.DESCRIPTOR is desc


@pytest.mark.parametrize(("message", "enum"), NESTED_ENUMS, ids=lambda v: str(v))
def test_nested_enum_exists(message: str, enum: str) -> None:
    desc = default_schema().descriptor(f"caffe.{message}")
    assert enum in desc.enum_types_by_name


def test_phase_enum() -> None:
    phase = default_schema().pool.FindEnumTypeByName("caffe.Phase")
    assert {v.name: v.number for v in phase.values} == {"TRAIN": 0, "TEST": 1}


# (message, field, number, type name or scalar type, label, default or None)
FIELD_SPOTS: list[tuple[str, str, int, str, str, object]] = [
    ("LayerParameter", "name", 1, "string", "optional", None),
    ("LayerParameter", "param", 6, "caffe.ParamSpec", "repeated", None),
    ("LayerParameter", "propagate_down", 11, "bool", "repeated", None),
    ("LayerParameter", "include", 8, "caffe.NetStateRule", "repeated", None),
    ("LayerParameter", "transform_param", 100, "caffe.TransformationParameter", "optional", None),
    ("LayerParameter", "convolution_param", 106, "caffe.ConvolutionParameter", "optional", None),
    ("LayerParameter", "batch_norm_param", 139, "caffe.BatchNormParameter", "optional", None),
    ("LayerParameter", "recurrent_param", 146, "caffe.RecurrentParameter", "optional", None),
    ("LayerParameter", "swish_param", 147, "caffe.SwishParameter", "optional", None),
    ("LayerParameter", "clip_param", 148, "caffe.ClipParameter", "optional", None),
    ("NetParameter", "layer", 100, "caffe.LayerParameter", "repeated", None),
    ("NetParameter", "layers", 2, "caffe.V1LayerParameter", "repeated", None),
    ("NetParameter", "input_dim", 4, "int32", "repeated", None),
    ("ParamSpec", "lr_mult", 3, "float", "optional", 1.0),
    ("ParamSpec", "decay_mult", 4, "float", "optional", 1.0),
    ("NetState", "phase", 1, "caffe.Phase", "optional", "TEST"),
    ("NetState", "level", 2, "int32", "optional", 0),
    ("SolverParameter", "type", 40, "string", "optional", "SGD"),
    ("SolverParameter", "solver_type", 30, "caffe.SolverParameter.SolverType", "optional", "SGD"),
    ("SolverParameter", "solver_mode", 17, "caffe.SolverParameter.SolverMode", "optional", "GPU"),
    ("SolverParameter", "random_seed", 20, "int64", "optional", -1),
    ("SolverParameter", "delta", 31, "float", "optional", pytest.approx(1e-8)),
    ("SolverParameter", "layer_wise_reduce", 41, "bool", "optional", True),
    ("SolverParameter", "weights", 42, "string", "repeated", None),
    ("SolverParameter", "test_initialization", 32, "bool", "optional", True),
    ("BlobShape", "dim", 1, "int64", "repeated", None),
    ("BlobProto", "data", 5, "float", "repeated", None),
    ("FillerParameter", "type", 1, "string", "optional", "constant"),
    ("FillerParameter", "std", 6, "float", "optional", 1.0),
    ("FillerParameter", "sparse", 7, "int32", "optional", -1),
    (
        "LossParameter",
        "normalization",
        3,
        "caffe.LossParameter.NormalizationMode",
        "optional",
        "VALID",
    ),
    ("ConvolutionParameter", "kernel_size", 4, "uint32", "repeated", None),
    ("ConvolutionParameter", "dilation", 18, "uint32", "repeated", None),
    ("ConvolutionParameter", "bias_term", 2, "bool", "optional", True),
    ("PoolingParameter", "round_mode", 13, "caffe.PoolingParameter.RoundMode", "optional", "CEIL"),
    ("BatchNormParameter", "moving_average_fraction", 2, "float", "optional", pytest.approx(0.999)),
    ("BatchNormParameter", "eps", 3, "float", "optional", pytest.approx(1e-5)),
    ("DataParameter", "prefetch", 10, "uint32", "optional", 4),
    ("DataParameter", "backend", 8, "caffe.DataParameter.DB", "optional", "LEVELDB"),
    ("LRNParameter", "beta", 3, "float", "optional", 0.75),
    ("DropoutParameter", "dropout_ratio", 1, "float", "optional", 0.5),
    ("CropParameter", "axis", 1, "int32", "optional", 2),
    ("InfogainLossParameter", "axis", 2, "int32", "optional", 1),
    ("WindowDataParameter", "crop_mode", 11, "string", "optional", "warp"),
    ("V1LayerParameter", "type", 5, "caffe.V1LayerParameter.LayerType", "optional", None),
    ("V1LayerParameter", "param", 1001, "string", "repeated", None),
    ("V1LayerParameter", "blobs_lr", 7, "float", "repeated", None),
    ("V1LayerParameter", "layer", 1, "caffe.V0LayerParameter", "optional", None),
    ("V0LayerParameter", "kernelsize", 8, "uint32", "optional", None),
    ("V0LayerParameter", "det_crop_mode", 59, "string", "optional", "warp"),
    ("V0LayerParameter", "hdf5_output_param", 1001, "caffe.HDF5OutputParameter", "optional", None),
]

_LABELS = {1: "optional", 2: "required", 3: "repeated"}


@pytest.mark.parametrize(
    ("message", "field", "number", "type_name", "label", "default"),
    FIELD_SPOTS,
    ids=[f"{m}.{f}" for m, f, *_ in FIELD_SPOTS],
)
def test_field_spot_checks(
    message: str, field: str, number: int, type_name: str, label: str, default: object
) -> None:
    from google.protobuf.descriptor import FieldDescriptor

    desc = default_schema().descriptor(f"caffe.{message}")
    fd = desc.fields_by_name[field]
    assert fd.number == number
    # FieldDescriptor.label is gone in recent protobuf: read the label from the descriptor set.
    fds = descriptor_pb2.FileDescriptorSet.FromString(default_schema().descriptor_set)
    (msg_proto,) = [m for m in fds.file[0].message_type if m.name == message]
    (field_proto,) = [f for f in msg_proto.field if f.name == field]
    assert _LABELS[field_proto.label] == label
    if fd.message_type is not None:
        assert fd.message_type.full_name == type_name
    elif fd.enum_type is not None:
        assert fd.enum_type.full_name == type_name
    else:
        scalar = {
            FieldDescriptor.TYPE_STRING: "string",
            FieldDescriptor.TYPE_BOOL: "bool",
            FieldDescriptor.TYPE_FLOAT: "float",
            FieldDescriptor.TYPE_INT32: "int32",
            FieldDescriptor.TYPE_INT64: "int64",
            FieldDescriptor.TYPE_UINT32: "uint32",
        }[fd.type]
        assert scalar == type_name
    if default is not None:
        assert fd.has_default_value
        value = fd.default_value
        if fd.enum_type is not None:
            value = fd.enum_type.values_by_number[value].name
        assert value == default


def test_packed_fields() -> None:
    s = default_schema()
    packed = {
        (d.name, f.name)
        for d in (s.descriptor("caffe.BlobShape"), s.descriptor("caffe.BlobProto"))
        for f in d.fields
        if f.GetOptions().packed
    }
    assert packed == {
        ("BlobShape", "dim"),
        ("BlobProto", "data"),
        ("BlobProto", "diff"),
        ("BlobProto", "double_data"),
        ("BlobProto", "double_diff"),
    }
    # Packed encoding of BlobShape.dim: tag 0x0a (field 1, wire type 2).
    shape = s.message_class("caffe.BlobShape")(dim=[1, 3, 224, 224])
    assert shape.SerializeToString().startswith(b"\x0a")


def test_default_schema_is_a_cached_singleton() -> None:
    assert default_schema() is default_schema()
    s = default_schema()
    assert s.message_class(NET) is s.message_class(NET)
    assert s.net_descriptor.full_name == NET
    assert s.solver_descriptor.full_name == SOLVER
    assert s.message_class(NET).DESCRIPTOR is s.net_descriptor


def test_message_defaults_at_runtime() -> None:
    s = default_schema()
    assert s.message_class("caffe.ParamSpec")().lr_mult == 1.0  # type: ignore[attr-defined]
    assert s.message_class("caffe.NetState")().phase == 1  # type: ignore[attr-defined]
    assert s.message_class(SOLVER)().type == "SGD"  # type: ignore[attr-defined]


def test_private_pool_is_not_the_default_pool() -> None:
    s = default_schema()
    assert s.pool is not descriptor_pool.Default()
    assert isinstance(s, Schema)


def test_unknown_message_raises_schema_error() -> None:
    with pytest.raises(SchemaError, match="caffe.NoSuchMessage"):
        default_schema().descriptor("caffe.NoSuchMessage")
    with pytest.raises(SchemaError):
        default_schema().message_class("caffe.NoSuchMessage")


def test_coexists_with_a_user_caffe_pb2_in_the_default_pool() -> None:
    # A user's generated caffe_pb2 registers caffe.proto in the default pool; simulate that in a
    # fresh interpreter (so this process' default pool stays clean) and use the schema alongside.
    code = (
        "from google.protobuf import descriptor_pb2, descriptor_pool, message_factory\n"
        "from rewriter.schema.runtime import default_schema, default_descriptor_path\n"
        "fds = descriptor_pb2.FileDescriptorSet.FromString("
        "default_descriptor_path().read_bytes())\n"
        "pool = descriptor_pool.Default()\n"
        "pool.AddSerializedFile(fds.file[0].SerializeToString())\n"
        "user_desc = pool.FindMessageTypeByName('caffe.NetParameter')\n"
        "if hasattr(message_factory, 'GetMessageClass'):\n"
        "    user_cls = message_factory.GetMessageClass(user_desc)\n"
        "else:  # protobuf 4.21\n"
        "    user_cls = message_factory.MessageFactory(pool).GetPrototype(user_desc)\n"
        "ours = default_schema().message_class('caffe.NetParameter')\n"
        "assert ours is not user_cls\n"
        "assert ours.DESCRIPTOR.file.pool is not pool\n"
        "m = ours(name='x'); u = user_cls(); u.ParseFromString(m.SerializeToString())\n"
        "assert u.name == 'x'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_schema_module_does_not_import_protobuf() -> None:
    code = (
        "import sys\n"
        "import rewriter\n"
        "before = 'google.protobuf' in sys.modules\n"
        "import rewriter.schema.runtime\n"
        "after = 'google.protobuf' in sys.modules\n"
        "print(before, after)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split()
    if before == "True":
        pytest.skip("the rewriter package itself already imports protobuf")
    assert after == "False", "importing rewriter.schema.runtime must not import google.protobuf"


def test_schema_from_descriptor_set(tmp_path: Path) -> None:
    path = tmp_path / "x.desc"
    path.write_bytes(default_descriptor_path().read_bytes())
    s = schema_from_descriptor_set(path)
    assert s.package == "caffe"
    assert s.net_descriptor.full_name == NET
    assert s.pool is not default_schema().pool


def test_bad_descriptor_set_raises_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.desc"
    path.write_bytes(b"\xff\xff\xff not a descriptor")
    with pytest.raises(SchemaError):
        schema_from_descriptor_set(path)
    with pytest.raises(SchemaError, match="cannot read"):
        schema_from_descriptor_set(tmp_path / "missing.desc")


# --------------------------------------------------------------------------- schema_from_proto


def test_schema_from_proto_compiles_the_bundled_proto() -> None:
    _needs_protoc()
    s = schema_from_proto(PROTO)
    assert s.pool is not default_schema().pool
    assert s.net_descriptor.full_name == NET
    assert s.solver_descriptor.full_name == SOLVER
    assert s.descriptor_set == default_descriptor_path().read_bytes()
    layer = s.descriptor("caffe.LayerParameter")
    assert layer.fields_by_name["convolution_param"].number == 106


FORK_ADDITION = """
  // fork-only fields
  optional float fork_gain = 9001 [default = 2.5];
  optional ForkParameter fork_param = 9002;
"""


def _write_fork(tmp_path: Path) -> Path:
    text = PROTO.read_text(encoding="utf-8")
    anchor = "message LayerParameter {\n"
    assert text.count(anchor) == 1
    text = text.replace(anchor, anchor + FORK_ADDITION)
    text += "\nmessage ForkParameter {\n  optional int32 depth = 1 [default = 3];\n}\n"
    fork = tmp_path / "fork" / "caffe.proto"
    fork.parent.mkdir()
    fork.write_text(text, encoding="utf-8")
    return fork


def test_schema_from_proto_fork_with_extra_layer_field(tmp_path: Path) -> None:
    _needs_protoc()
    fork = schema_from_proto(_write_fork(tmp_path))
    layer = fork.descriptor("caffe.LayerParameter")
    assert layer.fields_by_name["fork_gain"].number == 9001
    assert layer.fields_by_name["fork_gain"].default_value == pytest.approx(2.5)
    fork_param_type = layer.fields_by_name["fork_param"].message_type
    assert fork_param_type is not None
    assert fork_param_type.full_name == "caffe.ForkParameter"
    # Standard fields are untouched.
    assert layer.fields_by_name["param"].number == 6

    text = 'name: "f" layer { name: "l" type: "X" fork_gain: 0.5 fork_param { depth: 7 } }'
    net = text_format.Parse(text, fork.message_class(NET)())
    assert net.layer[0].fork_gain == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert net.layer[0].fork_param.depth == 7  # type: ignore[attr-defined]

    # The bundled schema still refuses the fork field, and both coexist in one process.
    with pytest.raises(text_format.ParseError, match="fork_gain"):
        text_format.Parse(text, default_schema().message_class(NET)())
    assert fork.message_class(NET) is not default_schema().message_class(NET)


def test_schema_from_proto_reports_protoc_errors(tmp_path: Path) -> None:
    _needs_protoc()
    bad = tmp_path / "caffe.proto"
    bad.write_text(
        'syntax = "proto2";\npackage caffe;\nmessage NetParameter {\n'
        "  optional NoSuchType x = 1;\n}\n",
        encoding="utf-8",
    )
    with pytest.raises(SchemaError) as info:
        schema_from_proto(bad)
    message = str(info.value)
    assert message.startswith(f"{bad.resolve()}:4:12: error: ") or message.startswith(
        f"{bad}:4:12: error: "
    ), message
    assert "NoSuchType" in message
    assert "--proto takes a fork's caffe.proto" in message
    # one located line and its caret excerpt, not protoc's whole output
    assert len(message.splitlines()) == 3 and message.splitlines()[2].strip() == "^"


def test_schema_from_proto_without_net_parameter(tmp_path: Path) -> None:
    _needs_protoc()
    other = tmp_path / "other.proto"
    other.write_text('syntax = "proto2";\npackage caffe;\nmessage Foo {}\n', encoding="utf-8")
    with pytest.raises(SchemaError, match="NetParameter"):
        schema_from_proto(other)


def test_schema_from_proto_other_package(tmp_path: Path) -> None:
    _needs_protoc()
    text = PROTO.read_text(encoding="utf-8").replace("package caffe;", "package mycaffe;")
    path = tmp_path / "caffe.proto"
    path.write_text(text, encoding="utf-8")
    s = schema_from_proto(path)
    assert s.package == "mycaffe"
    assert s.net_descriptor.full_name == "mycaffe.NetParameter"


def test_schema_from_proto_missing_file(tmp_path: Path) -> None:
    _needs_protoc()
    with pytest.raises(SchemaError, match="not found"):
        schema_from_proto(tmp_path / "nope.proto")


def test_schema_from_proto_without_grpc_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name: str, package: str | None = None) -> Any:
        if name == "grpc_tools" or name.startswith("grpc_tools."):
            return None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(SchemaError) as info:
        schema_from_proto(PROTO)
    assert "pip install prototxt-rewriter[proto]" in str(info.value)
    assert "'proto' extra" in str(info.value)


# --------------------------------------------------------------------------- shared truth data


def _upgrade_rows() -> list[Any]:
    if not UPGRADE_TSV.is_file() or not MANIFEST.is_file():
        return [_no_shared_param()]
    rows = [r for r in _read_tsv(UPGRADE_TSV) if r["ok"] == "true"]
    return [pytest.param(r, id=r["path"]) for r in rows]


@pytest.mark.parametrize("row", _upgrade_rows())
def test_upgraded_corpus_sha256_matches_caffe_pb2(row: dict[str, str] | None) -> None:
    """Caffe's upgraded output, parsed with our schema, serializes to the oracle's bytes.

    The oracle parsed the same text with a caffe_pb2 generated from BVLC master and hashed
    ``SerializeToString(deterministic=True)``: equal hashes mean equal field numbers and types.
    """
    _skip_without_shared(UPGRADE_TSV, MANIFEST)
    assert row is not None
    kind = _manifest()[row["path"]]["kind"]
    upgraded = ORACLE / "corpus-upgrade" / f"{row['path']}.upgraded.prototxt"
    msg = default_schema().message_class(_message_for_kind(kind))()
    text_format.Parse(upgraded.read_text(encoding="utf-8"), msg)
    digest = hashlib.sha256(msg.SerializeToString(deterministic=True)).hexdigest()
    assert digest == row["sha256"]
    if kind == "net" and row["n_layers"]:
        assert len(msg.layer) == int(row["n_layers"])  # type: ignore[attr-defined]


def _manifest_rows(select: Any) -> list[Any]:
    if not MANIFEST.is_file():
        return [_no_shared_param()]
    return [pytest.param(r, id=r["path"]) for r in _read_tsv(MANIFEST) if select(r)]


@pytest.mark.parametrize(
    "row", _manifest_rows(lambda r: r["format"] == "V2" and r["fork_specific"] == "no")
)
def test_v2_corpus_file_parses(row: dict[str, str] | None) -> None:
    _skip_without_shared(MANIFEST)
    assert row is not None
    msg = default_schema().message_class(_message_for_kind(row["kind"]))()
    text_format.Parse((CORPUS / row["path"]).read_text(encoding="utf-8"), msg)


@pytest.mark.parametrize(
    "row", _manifest_rows(lambda r: r["format"] in ("V0", "V1") and r["fork_specific"] == "no")
)
def test_legacy_corpus_file_parses(row: dict[str, str] | None) -> None:
    """V0/V1 files bind to the legacy messages (V1LayerParameter, V0LayerParameter)."""
    _skip_without_shared(MANIFEST)
    assert row is not None
    msg = default_schema().message_class(_message_for_kind(row["kind"]))()
    text_format.Parse((CORPUS / row["path"]).read_text(encoding="utf-8"), msg)


def _caffe_parse_error(row: dict[str, str]) -> str | None:
    truth = json.loads(
        (ORACLE / "corpus-backward" / f"{row['path']}.json").read_text(encoding="utf-8")
    )
    for run in truth["runs"]:
        error = run.get("error") or ""
        if "Error parsing text-format" in error:
            return str(error)
    return None


@pytest.mark.parametrize("row", _manifest_rows(lambda r: r["kind"] == "net"))
def test_parse_agrees_with_caffe(row: dict[str, str] | None) -> None:
    """Where real Caffe refused a net at parse (fork fields/enums), our schema refuses it too.

    This checks the schema has no field BVLC master lacks. (Caffe ran on a copy whose data
    layers were replaced by DummyData, so a parse *success* of a fork file with substituted
    layers says nothing about those layers' fork-only fields.)
    """
    _skip_without_shared(MANIFEST, ORACLE / "corpus-backward")
    assert row is not None
    caffe_error = _caffe_parse_error(row)
    text = (CORPUS / row["path"]).read_text(encoding="utf-8")
    msg = default_schema().message_class(NET)()
    if caffe_error is not None:
        with pytest.raises(text_format.ParseError):
            text_format.Parse(text, msg)
    elif row["fork_specific"] == "no":
        text_format.Parse(text, msg)
