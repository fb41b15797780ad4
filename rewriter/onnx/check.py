"""Run an exported model in onnxruntime and compare its outputs with reference ``.npy`` files.

The comparison is relative to each output's scale: ``max|got - ref| / max|ref| <= tolerance``
(``max|ref|`` taken as 1 when the reference is all zeros), so one number fits probabilities,
logits and indices alike. No Caffe is needed: the references are files (for example the
``outputs/`` folder of an oracle case, written by real Caffe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError

#: what ``--check`` accepts by default: float32 sums reordered (see docs/onnx.md)
DEFAULT_TOLERANCE = 1e-4


def file_name(blob: str) -> str:
    """A blob's file name in an oracle case: characters outside ``[A-Za-z0-9._-]`` -> ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", blob) + ".npy"


@dataclass(frozen=True)
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    #: max |got - ref| / max |ref|; None without a reference
    error: float | None
    ok: bool
    note: str = ""

    def render(self, tolerance: float) -> str:
        dims = "x".join(map(str, self.shape)) or "scalar"
        if self.error is None:
            note = f"; {self.note}" if self.note else ""
            return f"{self.name}: {dims}, ran (no reference to compare{note})"
        verdict = "ok" if self.ok else "MISMATCH"
        extra = f" ({self.note})" if self.note else ""
        return (
            f"{self.name}: {dims}, max|diff|/max|ref| = {self.error:.2e} "
            f"{'<=' if self.ok else '>'} {tolerance:g} {verdict}{extra}"
        )


def _session(model: Any) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime's own exception types
        raise ExportError(f"onnxruntime cannot load the exported model: {e}") from None


def _feeds(model: Any, inputs_dir: Path | None, seed: int) -> dict[str, Any]:
    from onnx import numpy_helper  # noqa: F401  (the extra is present)

    init = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds: dict[str, Any] = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        if inputs_dir is None:
            feeds[vi.name] = rng.uniform(-1, 1, shape).astype(np.float32)
            continue
        path = inputs_dir / file_name(vi.name)
        if not path.is_file():
            raise ExportError(
                f"{inputs_dir}: no {path.name} for net input '{vi.name}' (one .npy per input; "
                "leave out --inputs to run on random values)"
            )
        arr = np.load(path)
        if tuple(arr.shape) != shape:
            raise ExportError(
                f"{path}: shape {arr.shape} but the net's input '{vi.name}' is {shape}; "
                f"set it with --set shape.{vi.name}={','.join(map(str, arr.shape))}"
            )
        feeds[vi.name] = arr.astype(np.float32)
    return feeds


def run_check(
    model: Any,
    inputs_dir: Path | None = None,
    expect_dir: Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> list[OutputCheck]:
    """Run ``model`` on the inputs in ``inputs_dir`` (random of the net's shapes without it)
    and compare each output with ``expect_dir/<output>.npy`` when given."""
    session = _session(model)
    feeds = _feeds(model, inputs_dir, seed)
    names = [o.name for o in model.graph.output]
    if expect_dir is not None:
        missing = [n for n in names if not (expect_dir / file_name(n)).is_file()]
        if missing:
            raise ExportError(
                f"{expect_dir}: no reference for output(s) {', '.join(missing)} "
                f"(expected {', '.join(file_name(n) for n in missing)})"
            )
    try:
        results = session.run(names, feeds)
    except Exception as e:
        raise ExportError(f"onnxruntime failed to run the exported model: {e}") from None
    report = []
    for name, got in zip(names, results, strict=True):
        shape = tuple(int(d) for d in got.shape)
        if expect_dir is None:
            finite = bool(np.isfinite(got).all())
            note = "" if finite else "NaN or inf among the values"
            report.append(OutputCheck(name, shape, None, True, note))
            continue
        ref = np.load(expect_dir / file_name(name))
        if tuple(ref.shape) != shape:
            report.append(
                OutputCheck(name, shape, float("inf"), False, f"reference shape {ref.shape}")
            )
            continue
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        diff = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
        err = diff / (scale if scale > 0 else 1.0)
        report.append(OutputCheck(name, shape, err, err <= tolerance))
    return report
