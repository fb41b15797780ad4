"""The binder writes wire format (rewriter/schema/wire.py) and memoizes repeated fields: its
messages must still equal protobuf's own ``text_format.Parse`` bit for bit at the edges of each
encoding, and a memoized text must still report its problems at every place it occurs."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from google.protobuf import text_format

from rewriter.schema import wire
from rewriter.schema.bind import NET, bind
from rewriter.schema.runtime import default_schema
from rewriter.text.cst import parse


def _theirs(text: str) -> Any:
    msg = default_schema().message_class(NET)()
    text_format.Parse(text, msg)
    return msg


def _same_as_protobuf(text: str) -> Any:
    bound = bind(parse(text), root=NET)
    assert bound.diagnostics == [], [d.render() for d in bound.diagnostics]
    theirs = _theirs(text)
    ours = bound.message
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    return ours


FLOATS = [
    "1e39", "-1e39", "3.4028235e38", "3.40282356e38", "3.4028236e38", "-0.0", "0", "-0",
    "nan", "inf", "-inf", "infinity", "1e-45", "1e-46", "7e-46", "1.4e-45", "0.1",
    "1.5f", ".5", "5.", "1e308", "-1e-320", "123456789",
]  # fmt: skip


@pytest.mark.parametrize("token", FLOATS)
def test_float_and_double_values_encode_as_protobuf_stores_them(token: str) -> None:
    _same_as_protobuf(
        f"layer {{ convolution_param {{ weight_filler {{ value: {token} }} }} }}\n"
        f"layer {{ blobs {{ data: {token} double_data: {token} data: [{token}, 2] }} }}\n"
    )


def test_minus_nan_is_the_quiet_nan_the_setattr_binder_stored() -> None:
    """protobuf's text_format keeps -nan's sign bit; our binder has always stored math.nan."""
    bound = bind(parse("layer { blobs { data: -nan double_data: -nan } }"), root=NET)
    blob = bound.message.layer[0].blobs[0]
    assert struct.pack("<f", blob.data[0]) == struct.pack("<f", math.nan)
    assert struct.pack("<d", blob.double_data[0]) == struct.pack("<d", math.nan)


def test_float_overflow_is_infinity_not_an_error() -> None:
    ours = _same_as_protobuf("layer { convolution_param { weight_filler { std: -1e39 } } }")
    assert ours.layer[0].convolution_param.weight_filler.std == -math.inf
    assert math.copysign(1, _same_as_protobuf("layer { blobs { data: -0.0 } }").layer[0].blobs[0]
                         .data[0]) == -1  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "layer { convolution_param { axis: -1 num_output: 4294967295 } }",
        "layer { convolution_param { axis: -2147483648 } }",
        "layer { convolution_param { axis: 0x7fffffff } }",
        "input_shape { dim: -1 dim: -9223372036854775808 dim: 9223372036854775807 }",
        "input_shape { dim: [1, 3, 224, 224] } input_dim: [-5, 0]",
        "layer { phase: TEST pooling_param { pool: AVE } } state { phase: 1 level: -3 }",
        "layer { convolution_param { bias_term: false } } force_backward: true",
        "layer { include { } exclude { } convolution_param { } } state { }",
        'layer { name: "a\\"b\\n\\x41\\303\\251\\\'" bottom: \'sq\' top: "é ü 中" }',
        'layer { name: "con" "cat" "enated" type: "" }',
        'name: "x" layer { } layer { name: "" }',
    ],
)
def test_edge_values_bind_as_protobuf_parses_them(text: str) -> None:
    _same_as_protobuf(text)


def test_repeated_memoized_fields_bind_as_protobuf_parses_them() -> None:
    layer = (
        'layer {{ name: "l{i}" param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 1 }}\n'
        '  convolution_param {{ num_output: 8 weight_filler {{ type: "xavier" }} }} }}\n'
    )
    _same_as_protobuf("".join(layer.format(i=i) for i in range(50)))


def test_duplicate_singular_fields_keep_the_first_value() -> None:
    text = (
        "layer {\n"
        '  name: "a"\n'
        '  name: "b"\n'
        "  convolution_param { num_output: 1 }\n"
        "  convolution_param { num_output: 2 }\n"
        "}\n"
        "layer {\n"
        "  convolution_param { num_output: 1 }\n"
        "  convolution_param { num_output: 1 }\n"
        "  phase: TEST\n"
        "  phase: TEST\n"
        "}\n"
    )
    bound = bind(parse(text), root=NET)
    assert [(d.code, d.location.line if d.location else 0) for d in bound.diagnostics] == [
        ("duplicate", 3),
        ("duplicate", 5),
        ("duplicate", 9),
        ("duplicate", 11),
    ]
    first = _theirs(
        'layer { name: "a" convolution_param { num_output: 1 } }\n'
        "layer { convolution_param { num_output: 1 } phase: TEST }\n"
    )
    assert bound.message == first


def test_a_memoized_text_reports_its_problems_at_each_place() -> None:
    text = (
        'layer { name: "a" convolution_param { weight_filler { type: "xavier" } } }\n'
        'layer { name: "b" convolution_param { weight_filler { tyep: "xavier" } } }\n'
        'layer { name: "c" convolution_param { weight_filler { type: "xavier" } } }\n'
        'layer { name: "d" convolution_param { weight_filler { tyep: "xavier" } } }\n'
        'layer { name: "e" pooling_param { pool: MAXX } pooling_param { pool: MAXX } }\n'
        'layer { name: "f" pooling_param { pool: MAXX } }\n'
    )
    for lenient in (False, True):
        bound = bind(parse(text), root=NET, lenient=lenient)
        found = [(d.code, d.location.line, d.location.col) for d in bound.diagnostics if d.location]
        assert found == [
            ("unknown-field", 2, 55),
            ("unknown-field", 4, 55),
            ("unknown-enum", 5, 41),
            ("duplicate", 5, 48),
            ("unknown-enum", 6, 41),
        ]
        # the fields that did bind are in the message, memoized or not
        layers = bound.message.layer
        fillers = [la.convolution_param.weight_filler for la in layers[:4]]
        assert [w.HasField("type") for w in fillers] == [True, False, True, False]
        assert [la.convolution_param.HasField("weight_filler") for la in layers[:4]] == [True] * 4
        assert [la.HasField("pooling_param") for la in layers[4:]] == [True, True]


def test_a_string_that_is_not_utf8_is_an_error_and_leaves_the_field_unset() -> None:
    src = 'layer { name: "a\udcff" top: "t" bottom: ["x", "y\udcff"] }'
    bound = bind(parse(src), root=NET)
    assert [d.code for d in bound.errors] == ["value", "value"]
    layer = bound.message.layer[0]
    assert not layer.HasField("name") and list(layer.top) == ["t"] and list(layer.bottom) == []


def test_varints_and_fixed_widths() -> None:
    assert wire.varint(0) == b"\x00"
    assert wire.varint(300) == b"\xac\x02"
    assert wire.varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
    assert wire.varint(-1) == b"\xff" * 9 + b"\x01"  # int32/int64/enum -1: ten bytes
    assert wire.encoder(17)(-1) == b"\x01" and wire.encoder(17)(1) == b"\x02"  # sint32
    assert wire.encoder(18)(-(2**63)) == wire.varint(2**64 - 1)  # sint64
    assert wire.encoder(7)(2**32 - 1) == b"\xff\xff\xff\xff"  # fixed32
    assert wire.encoder(16)(-1) == struct.pack("<q", -1)  # sfixed64
    assert wire.tag(1, 2) == b"\x0a" and wire.tag(100, 0) == b"\xa0\x06"
