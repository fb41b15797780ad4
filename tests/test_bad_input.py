"""The bad-input matrix: every kind of broken input, through the real command line.

Each row is (input files, command line, expected exit code, a fragment the output must contain,
and the ``path:line:col`` it must name when the problem has a place). Every run also asserts
that no Python traceback reaches the user. The CLI runs as ``python -m rewriter.cli`` with the
interpreter running the tests (CI uses its own virtualenv).

Graph errors are Caffe's: their expected text is read from ``../shared/oracle`` (what real Caffe
printed), not written down from our own output.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ORACLE, REPO, need_shared

SEED = REPO / "examples" / "seed_net.prototxt"
IN = "in.prototxt"


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rewriter.cli", *args],
        capture_output=True,
        text=True,
        errors="replace",
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def oracle_error(case: str, phase: str = "TRAIN") -> str:
    data = json.loads((ORACLE / "backward" / f"{case}.expect.json").read_text())
    run_ = next(r for r in data["runs"] if r["phase"] == phase)
    assert run_["ok"] is False
    return str(run_["error"])


def oracle_file(sub: str, name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        need_shared()
        return (ORACLE / sub / name).read_bytes()

    return read


@dataclass
class Row:
    id: str
    args: list[str]
    files: dict[str, bytes | Callable[[], bytes]] = field(default_factory=dict)
    code: int = 2
    fragment: str | Callable[[], str] = ""
    where: str | None = None  # "line:col" after the input's path, when the error has a place
    absent: tuple[str, ...] = ()  # text that must NOT appear in the output

    def param(self) -> object:
        return pytest.param(self, id=self.id)


def net(body: str) -> bytes:
    return body.encode("utf-8", "surrogateescape")


INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
FC = 'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
FC += "inner_product_param { num_output: 2 } }\n"

ROWS = [
    # --- text that is fine, or only looks odd ----------------------------------------------
    Row("empty-file", ["check", IN], {IN: b""}, 0, "ok, net"),
    Row("only-comments", ["check", IN], {IN: b"# nothing\n# at all\n"}, 0, "ok, net"),
    Row("only-whitespace", ["check", IN], {IN: b" \n\t\r\n\f\v\n"}, 0, "ok, net"),
    Row("bom", ["check", IN], {IN: b'\xef\xbb\xbfname: "bom"\n'}, 0, "ok, net"),
    Row("crlf", ["check", IN], {IN: b'name: "x"\r\nlayer {\r\n  name: "a"\r\n}\r\n'}, 0, "ok"),
    Row("lone-cr", ["check", IN], {IN: b'name: "x"\rforce_backward: true\r'}, 0, "ok, net"),
    Row("latin1-comment-kept", ["check", IN], {IN: b'name: "x"  # caf\xe9\n'}, 0, "ok, net"),
    Row(
        "float-1e999-is-inf",
        ["check", IN],
        {IN: net(f"{INPUT}{FC[:-3]} param {{ lr_mult: 1e999 }} }}\n")},
        0,
        "ok, net",
    ),
    Row("nul-in-string-as-protobuf", ["check", IN], {IN: b'name: "a\x00b"\n'}, 0, "ok, net"),
    Row("escapes-are-bytes", ["check", IN], {IN: b'name: "\\303\\251\\n\\x41"\n'}, 0, "ok"),
    Row(
        "list-syntax",
        ["check", IN],
        {IN: b'input: ["a", "b"] input_dim: [1, 2, 3, 4]\ninput_dim: [1, 2, 3, 4]\n'},
        0,
        "ok, net",
    ),
    Row("angle-brackets", ["check", IN], {IN: b'layer < name: "a" >\n'}, 0, "ok, net"),
    Row("solver-detected", ["check", IN], {IN: b"base_lr: 0.01\nmax_iter: 10\n"}, 0, "solver"),
    # --- bytes that are not text format -----------------------------------------------------
    Row("nul-bytes-binary", ["check", IN], {IN: b"\x00\x00\x00\x01layer"}, 2, "not a text file"),
    Row(
        "caffemodel-bytes",
        ["check", IN],
        {IN: b"\n\x05hello\x12\x03abc"},
        2,
        "not a text file (12 bytes of binary data)",
        absent=("hello",),
    ),
    Row("nul-byte-in-text", ["check", IN], {IN: b"layer {\x00\n"}, 2, "NUL byte", "1:8"),
    Row(
        "binary-to-net-command",
        ["explain", IN],
        {IN: bytes(range(256)) * 4},
        2,
        "not a text file (1,024 bytes of binary data)",
        absent=("\ufffd", "?????"),
    ),
    Row("empty-file-to-net-command", ["shapes", IN], {IN: b""}, 2, "is empty (0 bytes)"),
    Row(
        "comments-only-to-deploy",
        ["deploy", IN],
        {IN: b"# nothing\n"},
        2,
        "holds only comments and blank lines: there is no net in it",
    ),
    Row(
        "prototxt-as-weights",
        ["weights", "seed.prototxt", IN],
        {IN: b'name: "x"\n', "seed.prototxt": SEED.read_bytes()},
        2,
        "a text file (a prototxt?), not a binary .caffemodel",
    ),
    Row(
        "write-into-missing-directory",
        ["deploy", "seed.prototxt", "-o", "no/such/dir/out.prototxt"],
        {"seed.prototxt": SEED.read_bytes()},
        2,
        "no does not exist (create it first)",
    ),
    Row("latin1-in-string", ["check", IN], {IN: b'name: "caf\xe9"\n'}, 2, "not valid UTF-8", "1:7"),
    Row(
        "escaped-invalid-utf8", ["check", IN], {IN: b'name: "\\xff"\n'}, 2, "not valid UTF-8", "1:7"
    ),
    Row("unicode-space", ["check", IN], {IN: 'name:\u00a0"x"\n'.encode()}, 2, "U+00A0", "1:6"),
    Row(
        "utf16-file",
        ["check", IN],
        {IN: 'name: "x"\n'.encode("utf-16")},
        2,
        "UTF-16LE text; Caffe reads prototxt files as UTF-8",
        "1:1",
    ),
    # --- broken syntax ----------------------------------------------------------------------
    Row(
        "truncated-in-name",
        ["check", IN],
        {IN: b'name: "x"\nlayer {\n  name: "a"\n  ty'},
        2,
        "the file ends after field name 'ty'",
        "4:5",
    ),
    Row(
        "truncated-in-block",
        ["check", IN],
        {IN: b'layer {\n  name: "a"\n'},
        2,
        "block 'layer' is never closed",
        "1:7",
    ),
    Row("truncated-after-colon", ["check", IN], {IN: b"layer {\n  name:"}, 2, "a value", "2:8"),
    Row(
        "unbalanced-close",
        ["check", IN],
        {IN: b'layer {\n  name: "a"\n}\n}\n'},
        2,
        "unexpected '}' at the top level",
        "4:1",
    ),
    Row(
        "unbalanced-open",
        ["check", IN],
        {IN: b"layer {\n  param {\n    lr_mult: 1\n}\n"},
        2,
        "never closed",
        "1:7",
    ),
    Row(
        "mismatched-brackets",
        ["check", IN],
        {IN: b"layer <\n  name: 'a'\n}\n"},
        2,
        "unexpected '}'",
        "3:1",
    ),
    Row(
        "unterminated-string",
        ["check", IN],
        {IN: b'name: "abc\nlayer {}\n'},
        2,
        "unterminated string",
        "1:7",
    ),
    Row(
        "bad-escape",
        ["check", IN],
        {IN: b'name: "a\\qb"\n'},
        2,
        "invalid escape sequence '\\q'",
        "1:9",
    ),
    Row("bad-hex-escape", ["check", IN], {IN: b'name: "\\xZZ"\n'}, 2, "invalid escape", "1:8"),
    Row("missing-colon", ["check", IN], {IN: b'name "x"\n'}, 2, "':' or '{'", "1:6"),
    Row("double-separator", ["check", IN], {IN: b'name: "x";;\n'}, 2, "unexpected ';'", "1:11"),
    Row(
        "list-never-closed",
        ["check", IN],
        {IN: b"input_dim: [1, 2\n"},
        2,
        "list is never closed",
        "1:12",
    ),
    Row(
        "deep-nesting-10000",
        ["check", IN],
        {IN: b"layer { " * 10000 + b"}" * 10000},
        2,
        "unknown field 'layer' in caffe.LayerParameter",
        "1:9",
        ("RecursionError",),
    ),
    Row("deep-nesting-unclosed", ["check", IN], {IN: b"layer { " * 10000}, 2, "never closed"),
    Row(
        "deep-list-nesting",
        ["check", IN],
        {IN: b"a: [" + b"{ a: [" * 3000 + b"1" + b"]}" * 3000 + b"]\n"},
        2,
        "nested deeper than 100 levels",
        None,
        ("RecursionError",),
    ),
    Row(
        "error-inside-list-message",
        ["check", IN],
        {IN: b'name: "x"\n\nlayer: [ {\n  name: ] } ]\n'},
        2,
        "unexpected ']'",
        "4:9",
    ),
    Row(
        "errors-in-file-order",
        ["check", IN],
        {IN: b'nmae: "x"\nlayer {\n  name: "a"\n  ty'},
        2,
        "unknown field 'nmae'",
        "1:1",
    ),
    # --- valid syntax, invalid for the schema -----------------------------------------------
    Row(
        "int32-out-of-range",
        ["check", IN],
        {IN: b"layer { convolution_param { axis: 2147483648 } }\n"},
        2,
        "integer 2147483648 out of range for int32",
        "1:35",
    ),
    Row(
        "uint32-negative",
        ["check", IN],
        {IN: b"layer { convolution_param { num_output: -1 } }\n"},
        2,
        "out of range for uint32",
        "1:41",
    ),
    Row(
        "uint32-huge",
        ["check", IN],
        {IN: b"layer { convolution_param { num_output: 99999999999999999999999 } }\n"},
        2,
        "out of range for uint32",
        "1:41",
    ),
    Row(
        "int64-too-big",
        ["check", IN],
        {IN: b"layer { input_param { shape { dim: 9223372036854775808 } } }\n"},
        2,
        "out of range for int64",
        "1:36",
    ),
    Row(
        "float-malformed",
        ["check", IN],
        {IN: b"layer { loss_weight: 1e }\n"},
        2,
        "invalid number '1e'",
        "1:22",
    ),
    Row(
        "float-hex-refused",
        ["check", IN],
        {IN: b"layer { loss_weight: 0x10 }\n"},
        2,
        "invalid number '0x10'",
        "1:22",
    ),
    Row(
        "float-octal-refused",
        ["check", IN],
        {IN: b"layer { loss_weight: 010 }\n"},
        2,
        "invalid octal number '010'",
        "1:22",
    ),
    Row(
        "int-given-float",
        ["check", IN],
        {IN: b"layer { convolution_param { num_output: 1.5 } }"},
        2,
        "invalid integer '1.5'",
        "1:41",
    ),
    Row(
        "unknown-field-did-you-mean",
        ["check", IN],
        {IN: b'layer {\n  nmae: "a"\n}\n'},
        2,
        "unknown field 'nmae' in caffe.LayerParameter; did you mean 'name'?",
        "2:3",
    ),
    Row(
        "unknown-top-level-field",
        ["check", IN],
        {IN: b'layr {\n  name: "a"\n}\n'},
        2,
        "did you mean 'layer'?",
        "1:1",
    ),
    Row(
        "unknown-extension", ["check", IN], {IN: b"[caffe.foo]: 1\n"}, 2, "unknown extension", "1:1"
    ),
    Row(
        "wrong-type-int-for-string",
        ["check", IN],
        {IN: b"layer { name: 5 }\n"},
        2,
        "takes a string",
        "1:15",
    ),
    Row(
        "wrong-type-string-for-int",
        ["check", IN],
        {IN: b'layer { convolution_param { num_output: "3" } }\n'},
        2,
        "not a string",
        "1:41",
    ),
    Row("scalar-for-message", ["check", IN], {IN: b"layer: 3\n"}, 2, "is a message", "1:8"),
    Row("message-for-scalar", ["check", IN], {IN: b"name { }\n"}, 2, "not a message", "1:6"),
    Row(
        "messages-in-scalar-list",
        ["check", IN],
        {IN: b"input_dim: [1, { a: 1 }]\n"},
        2,
        "not a message",
        "1:16",
    ),
    Row("list-for-singular", ["check", IN], {IN: b'name: ["a", "b"]\n'}, 2, "not repeated", "1:7"),
    Row(
        "bad-enum-did-you-mean",
        ["check", IN],
        {IN: b"state { phase: TRAINING }\n"},
        2,
        "enum caffe.Phase has no value named 'TRAINING'; did you mean TRAIN?",
        "1:16",
    ),
    Row(
        "bad-enum-number",
        ["check", IN],
        {IN: b"state { phase: 7 }\n"},
        2,
        "has no value numbered 7",
        "1:16",
    ),
    Row(
        "bad-bool",
        ["check", IN],
        {IN: b"force_backward: yes\n"},
        2,
        "invalid bool value 'yes'",
        "1:17",
    ),
    Row(
        "repeated-singular-scalar",
        ["check", IN],
        {IN: b'name: "a"\nname: "b"\n'},
        2,
        "field 'name' is set more than once",
        "2:1",
    ),
    Row(
        "repeated-singular-message",
        ["check", IN],
        {IN: b"layer { convolution_param { } convolution_param { } }\n"},
        2,
        "'convolution_param' is set more than once",
        "1:31",
    ),
    Row(
        "net-checked-as-solver",
        ["check", "--kind", "solver", IN],
        {IN: SEED.read_bytes()},
        2,
        "unknown field 'layer' in caffe.SolverParameter",
        "1:1",
    ),
    Row(
        "json-report-on-error",
        ["check", "--format", "json", IN],
        {IN: b"name: 5\n"},
        2,
        '"ok": false',
    ),
    # --- graph errors: Caffe's FATAL text (from the oracle) ---------------------------------
    Row(
        "unknown-bottom",
        ["explain", IN],
        {IN: oracle_file("backward", "unknown_bottom_error.prototxt")},
        2,
        lambda: oracle_error("unknown_bottom_error"),
    ),
    Row(
        "top-produced-twice",
        ["explain", IN],
        {IN: oracle_file("backward", "dup_top_error.prototxt")},
        2,
        lambda: oracle_error("dup_top_error"),
    ),
    Row(
        "propagate-down-count",
        ["explain", IN],
        {IN: oracle_file("backward", "pd_count_mismatch.prototxt")},
        2,
        lambda: oracle_error("pd_count_mismatch"),
    ),
    Row(
        "shared-param-lr-mismatch",
        ["explain", IN],
        {IN: oracle_file("backward", "shared_params_lr_mismatch.prototxt")},
        2,
        lambda: oracle_error("shared_params_lr_mismatch"),
    ),
    Row(
        "loss-weight-count",
        ["explain", "--phase", "TEST", IN],
        {IN: oracle_file("backward", "loss_two_tops_default_weight_error.prototxt")},
        2,
        lambda: oracle_error("loss_two_tops_default_weight_error", "TEST"),
    ),
    # (Caffe's net.cpp FilterNet: CHECK(include_size() == 0 || exclude_size() == 0))
    Row(
        "include-and-exclude",
        ["explain", IN],
        {
            IN: net(
                INPUT + 'layer { name: "r" type: "ReLU" '
                'bottom: "x" top: "x" include { phase: TRAIN } exclude { phase: TEST } }\n'
            )
        },
        2,
        "Specify either include rules or exclude rules; not both.",
    ),
    Row(
        "too-many-params",
        ["explain", IN],
        {
            IN: net(
                INPUT + 'layer { name: "r" type: "ReLU" '
                'bottom: "x" top: "x" param { lr_mult: 1 } }\n'
            )
        },
        2,
        "Too many params specified for layer r",
    ),
    Row(
        "unknown-layer-type-checked",
        ["check", IN],
        {IN: net(INPUT + 'layer { name: "r" type: "Frobnicate" bottom: "x" top: "y" }\n')},
        0,
        "ok, net",
    ),
    # Caffe's Net::Init does not refuse two layers of the same name (no check in net.cpp):
    Row(
        "duplicate-layer-names",
        ["explain", IN],
        {IN: net(INPUT + 'layer { name: "in" type: "ReLU" bottom: "x" top: "x" }\n')},
        0,
        "ReLU",
    ),
    Row("explain-syntax-error", ["explain", IN], {IN: b"layer {\n"}, 2, "never closed", "1:7"),
    Row(
        "explain-solver-file",
        ["explain", IN],
        {IN: b"base_lr: 0.1\n"},
        2,
        "this is a solver (caffe.SolverParameter), not a net, and it names no net",
        "1:1",
    ),
    Row(
        "explain-bad-phase",
        ["explain", "--phase", "VAL", IN],
        {IN: SEED.read_bytes()},
        2,
        "--phase must be TRAIN or TEST",
    ),
    Row(
        "explain-no-such-layer",
        ["explain", "--layer", "nope", IN],
        {IN: SEED.read_bytes()},
        2,
        "no layer named 'nope'",
    ),
    Row(
        "explain-bad-param-count",
        ["explain", "--param-count", "X", IN],
        {IN: SEED.read_bytes()},
        2,
        "--param-count takes TYPE=N",
    ),
    # --- usage errors -----------------------------------------------------------------------
    Row("missing-argument", ["check"], {}, 2, "Missing argument"),
    Row("unknown-command", ["frobnicate"], {}, 2, "No such command"),
    Row("unknown-option", ["check", "--frob", IN], {IN: b""}, 2, "No such option"),
    Row("bad-int-option", ["explain", "--level", "x", IN], {IN: b""}, 2, "--level"),
    Row("bad-format", ["check", "--format", "yaml", IN], {IN: b""}, 2, "--format must be"),
    Row("bad-kind", ["check", "--kind", "model", IN], {IN: b""}, 2, "--kind must be"),
    # --- files ------------------------------------------------------------------------------
    Row("missing-file", ["check", "nope.prototxt"], {}, 2, "nope.prototxt: cannot read"),
    Row("one-good-one-missing", ["check", IN, "nope.prototxt"], {IN: b""}, 2, "cannot read"),
    Row("directory-as-net", ["explain", "adir"], {"adir/x.txt": b""}, 2, "is a directory"),
    Row("empty-directory", ["check", "adir"], {"adir/x.txt": b""}, 2, "no *.prototxt files"),
    Row("device-as-input", ["check", "/dev/zero"], {}, 2, "/dev/zero: is a device, not a file"),
    Row("path-through-a-file", ["check", f"{IN}/x.prototxt"], {IN: b""}, 2, "cannot read"),
    Row(
        "output-dir-missing",
        ["apply", "freeze", "--set", "upto=in", IN, "-o", "no/dir/o.prototxt"],
        {IN: net(INPUT)},
        2,
        "cannot write",
    ),
]

# --- recipes (rewriter apply) and upgrade, when present ----------------------------------------
RECIPE_ROWS = [
    Row(
        "recipe-unknown-builtin",
        ["apply", "nosuch", IN],
        {IN: SEED.read_bytes()},
        2,
        "no built-in recipe named 'nosuch'",
    ),
    Row(
        "recipe-unknown-step",
        ["apply", "r.toml", IN],
        {
            IN: SEED.read_bytes(),
            "r.toml": b'name = "x"\n[[steps]]\nstep = "frezze"\nupto = "pool1/3x3_s2"\n',
        },
        2,
        "unknown step; did you mean 'freeze'?",
        None,
    ),
    Row(
        "recipe-step-as-code",
        ["apply", "r.toml", IN],
        {
            IN: SEED.read_bytes(),
            "r.toml": b"name = 'x'\n[[steps]]\nstep = \"__import__('os').system('touch PWNED')\"\n",
        },
        2,
        "unknown step",
    ),
    Row(
        "recipe-wrong-option-type",
        ["apply", "r.toml", "--set", "n=abc", IN],
        {
            IN: SEED.read_bytes(),
            "r.toml": b'name = "x"\n[options.n]\ntype = "int"\n[[steps]]\nstep = "freeze"\n'
            b'upto = "{n}"\n',
        },
        2,
        "not a valid int",
    ),
    Row(
        "recipe-missing-option",
        ["apply", "freeze", IN],
        {IN: SEED.read_bytes()},
        2,
        "needs a selection",
    ),
    Row(
        "recipe-unknown-option",
        ["apply", "freeze", "--set", "bogus=1", IN],
        {IN: SEED.read_bytes()},
        2,
        "has no option 'bogus'",
    ),
    Row(
        "recipe-unknown-layer",
        ["apply", "freeze", "--set", "upto=nosuch", IN],
        {IN: SEED.read_bytes()},
        2,
        "no layer named 'nosuch'",
    ),
    Row(
        "recipe-empty-selection",
        ["apply", "--step", "freeze glob=zzz*", IN],
        {IN: SEED.read_bytes()},
        2,
        "the selection is empty",
    ),
    Row(
        "recipe-include-cycle",
        ["apply", "a.toml", IN],
        {
            IN: SEED.read_bytes(),
            "a.toml": b'name = "a"\ninclude = ["b.toml"]\n',
            "b.toml": b'name = "b"\ninclude = ["a.toml"]\n',
        },
        2,
        "include cycle",
    ),
    Row(
        "recipe-include-missing",
        ["apply", "a.toml", IN],
        {IN: SEED.read_bytes(), "a.toml": b'name = "a"\ninclude = ["nope.toml"]\n'},
        2,
        "not found",
        "2:1",
    ),
    Row(
        "recipe-include-escapes",
        ["apply", "r/a.toml", IN],
        {IN: SEED.read_bytes(), "r/a.toml": b'name = "a"\ninclude = ["../../../../etc/passwd"]\n'},
        2,
        "outside the recipe's folder",
    ),
    Row(
        "recipe-include-absolute",
        ["apply", "r/a.toml", IN],
        {IN: SEED.read_bytes(), "r/a.toml": b'name = "a"\ninclude = ["/etc/passwd"]\n'},
        2,
        "outside the recipe's folder",
    ),
    Row(
        "recipe-bad-toml",
        ["apply", "r.toml", IN],
        {IN: SEED.read_bytes(), "r.toml": b'name = "x\n'},
        2,
        "not valid TOML",
    ),
    Row(
        "recipe-on-broken-net",
        ["apply", "freeze", "--set", "upto=a", IN],
        {IN: b"layer {\n"},
        2,
        "never closed",
        "1:7",
    ),
    Row(
        "recipe-in-place-and-output",
        ["apply", "freeze", "--set", "upto=a", "--in-place", "-o", "o.prototxt", IN],
        {IN: SEED.read_bytes()},
        2,
        "not both",
    ),
]
RECIPE_ROWS += [
    Row(
        "recipe-unknown-key-output",
        ["apply", "r.toml", IN],
        {
            IN: SEED.read_bytes(),
            "r.toml": b'name = "a"\noutput = "/tmp/evil.prototxt"\n[[steps]]\nstep = "freeze"\n'
            b'upto = "pool2/3x3_s2"\n',
        },
        2,
        "unknown recipe key 'output'",
    ),
]
UPGRADE_ROWS = [
    Row(
        "upgrade-layer-and-layers",
        ["upgrade", IN],
        {IN: oracle_file("upgrade", "mixed_layer_and_layers_error.prototxt")},
        2,
        lambda: (ORACLE / "upgrade" / "mixed_layer_and_layers_error.error.txt").read_text().strip(),
    ),
    Row(
        "upgrade-solver-type-conflict",
        ["upgrade", IN],
        {IN: oracle_file("upgrade", "solver_type_conflict_error.prototxt")},
        2,
        lambda: (ORACLE / "upgrade" / "solver_type_conflict_error.error.txt").read_text().strip(),
    ),
    Row(
        "upgrade-broken-file",
        ["upgrade", IN],
        {IN: b'layers {\n  name: "a"\n'},
        2,
        "never closed",
        "1:8",
    ),
    Row(
        "diff-missing-new",
        ["diff", IN, "nope.prototxt"],
        {IN: SEED.read_bytes()},
        2,
        "nope.prototxt: cannot read",
    ),
    Row(
        "diff-broken-new",
        ["diff", IN, "b.prototxt"],
        {IN: SEED.read_bytes(), "b.prototxt": b'name: "a\\q"\n'},
        2,
        "invalid escape sequence",
        None,
    ),
    Row("diff-one-path", ["diff", IN], {IN: SEED.read_bytes()}, 2, "OLD and NEW"),
]


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"rewriter.{module}") is not None


ALL_ROWS = (
    ROWS
    + (RECIPE_ROWS if _have("recipes.engine") else [])
    + (UPGRADE_ROWS if _have("upgrade.document") else [])
)


def test_the_matrix_is_large() -> None:
    assert len(ALL_ROWS) >= 60
    assert len({r.id for r in ALL_ROWS}) == len(ALL_ROWS)


@pytest.mark.parametrize("row", [r.param() for r in ALL_ROWS])
def test_bad_input(row: Row, tmp_path: Path) -> None:
    for name, content in row.files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content() if callable(content) else content)
    res = run(row.args, tmp_path)
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    assert res.returncode == row.code, out
    fragment = row.fragment() if callable(row.fragment) else row.fragment
    assert fragment in out, out
    if row.where is not None:
        path = next(a for a in row.args if a.endswith(".prototxt") or a.endswith(".toml"))
        assert f"{path}:{row.where}:" in out, out
        if row.code == 2:
            assert "^" in out  # the caret excerpt under the spot
    for text in row.absent:
        assert text not in out
    assert not (tmp_path / "PWNED").exists()


def test_recipe_include_through_a_symlink_out_of_its_folder(tmp_path: Path) -> None:
    (tmp_path / IN).write_bytes(SEED.read_bytes())
    (tmp_path / "r").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "evil.toml").write_text(
        'name = "o"\n[[steps]]\nstep = "freeze"\nupto = "pool2/3x3_s2"\n'
    )
    (tmp_path / "r" / "link.toml").symlink_to(tmp_path / "outside" / "evil.toml")
    (tmp_path / "r" / "a.toml").write_text('name = "a"\ninclude = ["link.toml"]\n')
    res = run(["apply", "r/a.toml", IN], tmp_path)
    assert res.returncode == 2
    assert "outside the recipe's folder" in res.stderr
    assert "Traceback" not in res.stderr


def test_recipe_writes_only_the_requested_output(tmp_path: Path) -> None:
    """Path-like values in a recipe are data: the only new file is the -o output."""
    (tmp_path / IN).write_bytes(SEED.read_bytes())
    (tmp_path / "r.toml").write_text(
        'name = "r"\n[[steps]]\nstep = "rename-layer"\nfrom = "conv1/7x7_s2"\n'
        'to = "../../evil.prototxt"\n[[steps]]\nstep = "freeze"\nupto = "pool2/3x3_s2"\n'
    )
    before = {p: p.read_bytes() for p in tmp_path.parent.rglob("*") if p.is_file()}
    res = run(["apply", "r.toml", IN, "-o", "out.prototxt"], tmp_path)
    assert res.returncode == 0, res.stderr
    after = {p: p.read_bytes() for p in tmp_path.parent.rglob("*") if p.is_file()}
    new = sorted(str(p.relative_to(tmp_path)) for p in set(after) - set(before))
    assert new == ["out.prototxt"], new
    assert all(after[p] == data for p, data in before.items())
    assert 'name: "../../evil.prototxt"' in (tmp_path / "out.prototxt").read_text()


# --- the 100 MB file ----------------------------------------------------------------------------


def test_100mb_file_checks_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """`rewriter check` on a 100 MB net (468,000 layers): succeeds within 240 s and 4 GB.

    Parse and bind only (``--no-setup``): the net has no data layer, so Caffe's set-up checks
    would refuse it at once (unknown bottom blob); this test bounds the reader.

    Measured on the 2-core dev machine: ~19 s and 2.7 GB peak RSS (the lossless tree keeps
    every offset: about 20 bytes of memory per byte of text, then the protobuf message).
    ``check`` wires the net as Net::Init does, so it is a real chain: an Input layer, then
    conv + in-place ReLU blocks each reading the previous one (20 MB of it took 17 s and
    0.3 GB on the loaded dev machine).
    """
    sys.path.insert(0, str(REPO))
    from bench.gen import chain

    text = chain(2000)
    head, _, _ = text.partition('layer {\n  name: "fc"')
    layers = head.split("layer {\n")
    block = "layer {\n" + layers[2] + "layer {\n" + layers[3]  # conv + ReLU
    reps = (100 * 2**20) // len(block) + 1
    big = tmp_path / "big.prototxt"
    with big.open("w") as fh:
        fh.write(layers[0] + "layer {\n" + layers[1])  # the header and the Input layer
        prev = "data"
        for i in range(reps):
            fh.write(block.replace('"data"', f'"{prev}"').replace('"conv0"', f'"c{i}"'))
            prev = f"c{i}"
    size = big.stat().st_size
    assert size >= 100 * 2**20
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            # VmHWM, not ru_maxrss: that one carries the RSS of the forking parent (pytest).
            "import sys, runpy; sys.argv = ['rewriter', 'check', '--no-setup', sys.argv[1]];"
            "\ntry:\n    runpy.run_module('rewriter.cli', run_name='__main__')"
            "\nfinally:\n    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]"
            "\n    print('maxrss_kb', hwm[0].split()[1], file=sys.stderr)",
            str(big),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok, net" in proc.stdout
    rss_kb = int(proc.stderr.rsplit("maxrss_kb", 1)[1].split()[0])
    assert elapsed < 240, elapsed
    assert rss_kb < 4 * 2**20, rss_kb


# --- filesystem rows that need more than a file -------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / IN
    p.write_text('name: "x"\n')
    p.chmod(0)
    try:
        res = run(["check", IN], tmp_path)
    finally:
        p.chmod(0o644)
    assert res.returncode == 2
    assert "cannot read: Permission denied" in res.stderr
    assert "Traceback" not in res.stderr


def test_read_only_output_directory(tmp_path: Path) -> None:
    """Writing into a directory we may not write to fails cleanly and leaves nothing behind."""
    (tmp_path / IN).write_bytes(SEED.read_bytes())
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    if os.geteuid() == 0:
        # root ignores directory modes: a read-only bind of the directory is not available
        # without privileges, so use a directory on a read-only file system instead.
        out_dir = Path("/proc/self")
    else:
        out_dir.chmod(0o555)
    try:
        res = run(
            [
                "apply",
                "freeze",
                "--set",
                "upto=pool2/3x3_s2",
                IN,
                "-o",
                str(out_dir / "o.prototxt"),
            ],
            tmp_path,
        )
    finally:
        if out_dir.is_relative_to(tmp_path):
            out_dir.chmod(0o755)
    assert res.returncode == 2, res.stderr
    assert "cannot write" in res.stderr
    assert "Traceback" not in res.stderr
    if out_dir.is_relative_to(tmp_path):
        assert list(out_dir.iterdir()) == []


def test_output_to_a_device_writes_into_it(tmp_path: Path) -> None:
    """``-o /dev/null`` must not rename a temporary file over the device node (as root that
    would turn /dev/null into a regular file); a copy of the node stands in for it here."""
    (tmp_path / IN).write_bytes(SEED.read_bytes())
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pytest.skip("cannot create a device node here")
    res = run(
        ["apply", "freeze", "--set", "upto=pool2/3x3_s2", "-q", IN, "-o", str(node)], tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert stat.S_ISCHR(node.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [IN, "null"]


def test_output_to_stdout_through_dev_stdout(tmp_path: Path) -> None:
    (tmp_path / IN).write_bytes(SEED.read_bytes())
    res = run(
        ["apply", "freeze", "--set", "upto=pool2/3x3_s2", "-q", IN, "-o", "/dev/stdout"], tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("lr_mult: 0") >= 6
    assert sorted(p.name for p in tmp_path.iterdir()) == [IN]


def test_in_place_through_a_symlink_edits_the_target_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real" / "net.prototxt"
    real.parent.mkdir()
    original = SEED.read_bytes().replace(b"\n", b"\r\n")
    real.write_bytes(original)
    real.chmod(0o640)
    link = tmp_path / "link.prototxt"
    link.symlink_to(real)
    res = run(
        ["apply", "freeze", "--set", "upto=pool2/3x3_s2", "--in-place", "link.prototxt"], tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    new = real.read_bytes()
    assert new != original
    assert b"lr_mult: 0" in new
    assert new.count(b"\n") == new.count(b"\r\n")  # CRLF kept
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # mode kept
    assert sorted(p.name for p in real.parent.iterdir()) == ["net.prototxt"]  # no temp file left


def test_full_disk_leaves_the_original_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in the middle of a write: a clean FileError, the old file intact, no temp file."""
    import rewriter.text.fileio as fileio
    from rewriter.errors import RewriterError

    target = tmp_path / "net.prototxt"
    target.write_text("old contents\n")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh: object) -> None:
            self.fh = fh

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()  # type: ignore[attr-defined]

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])  # type: ignore[attr-defined]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> object:
            return getattr(self.fh, name)

    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(RewriterError, match="No space left on device"):
        fileio.write_text_atomic(target, "new contents " * 1000)
    assert target.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["net.prototxt"]


def test_failed_check_writes_nothing(tmp_path: Path) -> None:
    """An apply whose input does not bind refuses before writing: the file stays as it was."""
    p = tmp_path / IN
    broken = SEED.read_bytes() + b"\nnmae: 'x'\n"
    p.write_bytes(broken)
    res = run(["apply", "freeze", "--set", "upto=pool2/3x3_s2", "--in-place", IN], tmp_path)
    assert res.returncode == 2
    assert "did you mean 'name'" in res.stderr
    assert p.read_bytes() == broken
    assert sorted(x.name for x in tmp_path.iterdir()) == [IN]


# --- deep nesting ----------------------------------------------------------------------------


def test_deep_nesting_upgrade_runs_in_linear_memory(tmp_path: Path) -> None:
    """`upgrade` on 20,000 nested blocks: a located schema error in well under 400 MB.

    Each tree walk kept a path per level (quadratic): 2.4 GB at this depth before the fix.
    """
    depth = 20_000
    (tmp_path / IN).write_text("a { " * depth + "}" * depth)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy; sys.argv = ['rewriter', 'upgrade', sys.argv[1]];"
            "\ntry:\n    runpy.run_module('rewriter.cli', run_name='__main__')"
            "\nfinally:\n    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]"
            "\n    print('maxrss_kb', hwm[0].split()[1], file=sys.stderr)",
            IN,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{IN}:1:1: error: unknown field 'a' in caffe.NetParameter" in proc.stderr
    rss_kb = int(proc.stderr.rsplit("maxrss_kb", 1)[1].split()[0])
    assert rss_kb < 400 * 2**10, rss_kb
