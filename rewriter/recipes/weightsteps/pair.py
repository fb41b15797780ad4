"""A net and its ``.caffemodel`` rewritten together: the weight ops, the checks, the writing.

After the prototxt checks of :func:`rewriter.recipes.engine.apply`, :func:`carry_weights` runs the
steps' :data:`~rewriter.recipes.weightsteps.store.WeightOp` s on the input weights, streams the new
``.caffemodel`` to a temporary file and checks the pair:

* ``weights``: ``Net::CopyTrainedLayersFrom`` of the new pair copies every blob (the same rules
  as ``rewriter weights``), and no layer that had weights before starts from its filler;
* ``numeric``: the new net with the new weights gives the old net's outputs with the old
  weights, on random inputs (uniform in [-1, 1], fixed seed), within ``tolerance`` relative to
  each output's scale (``max|new - old| / max|old|``), both run through the ONNX export and
  onnxruntime. Without the ``[onnx]`` extra, or for a net the export refuses (a train/val net's
  data layers), the check is *skipped*, with the reason, never passed.

:func:`write_pair` then writes both files, or neither.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError

from ..checks import CheckFailed, CheckResult

if TYPE_CHECKING:
    from rewriter.recipes.engine import Result

__all__ = ["Comparison", "WeightPair", "carry_weights", "compare", "numeric_check", "write_pair"]

TOLERANCE = 1e-4
#: the other blobs both nets have: float32 rounding of reordered sums and folded factors grows
#: with depth (the oracle's real architectures: 1e-3), a wrong fold is far above it
INNER_FACTOR = 10


@dataclass
class WeightPair:
    source: str
    #: the new weights, written; removed when the pair is dropped unwritten
    tmp: str
    checks: list[CheckResult] = field(default_factory=list)
    written: str | None = None


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def carry_weights(
    result: Result,
    weights: str | os.PathLike[str] | None,
    weights_out: str | os.PathLike[str] | None = None,
    tolerance: float = TOLERANCE,
) -> None:
    """Run the weight ops of ``result`` on ``weights``, write and check the new weights."""
    from .store import WeightError, WeightStore

    ops = getattr(result, "weight_ops", [])
    if weights is None:
        for step, _, needs in ops:
            if needs:
                raise step.error(
                    f"{result.path}: step '{step.kind}' rewrites the weights: give them with "
                    f"--weights IN.caffemodel --weights-out OUT.caffemodel"
                )
        return
    store = WeightStore.open(weights)
    for step, op, _ in ops:
        try:
            op(store)
        except WeightError as e:
            raise step.error(f"{result.path}: step '{step.kind}': {e}") from None
    folder = Path(weights_out).resolve().parent if weights_out is not None else None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rewriter-", suffix=".caffemodel", dir=folder)
    except OSError as e:
        where = weights_out if weights_out is not None else tempfile.gettempdir()
        raise WeightError(f"{where}: cannot write: {e.strerror or e}") from None
    os.close(fd)
    pair = WeightPair(str(weights), tmp)
    weakref.finalize(pair, _unlink, tmp)
    try:
        store.write(tmp)
        pair.checks.append(_weights_check(result, str(weights), tmp))
        pair.checks.append(numeric_check(result, str(weights), tmp, tolerance))
    except BaseException:
        _unlink(tmp)
        raise
    result.checks.extend(pair.checks)
    bad = [c for c in pair.checks if not c.ok]
    if bad:
        _unlink(tmp)
        raise CheckFailed(result.path, bad)
    result.weights = pair


def _weights_check(result: Result, old_path: str, new_path: str) -> CheckResult:
    from rewriter.caffe.weights import check_weights

    assert result.net is not None and result.net_before is not None
    try:
        new = check_weights(result.net.message, new_path, phase="TEST", net_label=result.path)
        old = check_weights(result.net_before.message, old_path, phase="TEST")
    except RewriterError as e:
        return CheckResult("weights", False, f"the new pair cannot be checked: {e}")
    if new.errors:
        bad = new.errors[0]
        return CheckResult("weights", False, f"Caffe refuses the new pair: {bad.message}", bad.name)
    before = {f.name for f in old.from_filler}
    lost = [f.name for f in new.from_filler if f.name not in before]
    if lost:
        return CheckResult(
            "weights", False, "these layers would start from their fillers: " + ", ".join(lost),
            lost[0],
        )  # fmt: skip
    return CheckResult(
        "weights",
        True,
        f"Caffe copies {len(new.copied)} layer(s) of the new weights without error",
    )


def numeric_check(result: Result, old_path: str, new_path: str, tolerance: float) -> CheckResult:
    """The old pair and the new pair on the same random inputs, through ONNX."""
    from rewriter.onnx import ExportError, MissingExtra, require_extra

    try:
        require_extra("numpy", "onnx", "onnxruntime")
    except MissingExtra as e:
        return CheckResult("numeric", True, str(e), skipped=True)
    assert result.net is not None and result.net_before is not None
    from rewriter.caffe.netfile import NetFile

    form = ""
    try:
        cmp = compare(NetFile(result.net_before.doc), old_path, NetFile(result.net.doc), new_path)
    except ExportError as e:
        # a train/val net (data, loss and accuracy layers): run the deploy form of both
        from ..deploy import DeployError, deploy_document

        try:
            old_net = deploy_document(result.net_before.doc).document
            new_net = deploy_document(result.net.doc).document
            cmp = compare(NetFile(old_net), old_path, NetFile(new_net), new_path)
        except (DeployError, ExportError):
            return CheckResult("numeric", True, f"the net cannot be run: {e}", skipped=True)
        form = " (the deploy form of both nets, as rewriter deploy makes it)"
    nonfinite = (
        f"; {len(cmp.not_finite)} blob(s) not finite in the old net, not compared "
        f"({', '.join(cmp.not_finite[:3])})"
        if cmp.not_finite
        else ""
    )
    if not cmp.errors:
        return CheckResult("numeric", True, f"no blob to compare{nonfinite}", skipped=True)
    outs = {n: e for n, e in cmp.errors.items() if n in cmp.outputs}
    inner = {n: e for n, e in cmp.errors.items() if n not in cmp.outputs}
    worst_out = max(outs.items(), key=lambda kv: kv[1]) if outs else None
    worst_in = max(inner.items(), key=lambda kv: kv[1]) if inner else None
    detail = "max|new - old|/max|old|: outputs " + (
        ", ".join(f"{n} {e:.2e}" for n, e in outs.items()) or "not finite"
    )
    if worst_in is not None:
        detail += f"; {len(inner)} other blob(s), worst '{worst_in[0]}' {worst_in[1]:.2e}"
    detail += nonfinite
    if worst_out is not None and worst_out[1] > tolerance:
        return CheckResult(
            "numeric", False, f"{detail} (outputs > {tolerance:g}){form}", worst_out[0]
        )
    if worst_in is not None and worst_in[1] > INNER_FACTOR * tolerance:
        return CheckResult(
            "numeric", False, f"{detail} (> {INNER_FACTOR * tolerance:g}){form}", worst_in[0]
        )
    return CheckResult("numeric", True, f"same values on random inputs{form}: {detail}")


@dataclass
class Comparison:
    #: blob -> max|new - old| / max|old| (inf: shapes differ, or not finite in the new net)
    errors: dict[str, float]
    #: the net's outputs
    outputs: list[str]
    #: blobs whose old values hold NaN or inf (random weights can overflow): not compared
    not_finite: list[str]


def _last_values(net: Any, model: Any, tops: dict[tuple[str, int], str]) -> dict[str, str]:
    """Blob -> the ONNX value holding its final value (what ``net.blobs[name]`` holds after
    Caffe's forward pass: the last layer writing it, in-place chains included)."""
    from rewriter.caffe.graph import build_graph, upgrade_net_message

    graph = build_graph(upgrade_net_message(net.message), "TEST")
    skip = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    last: dict[str, str] = {}
    for layer in graph.layers:
        if layer.inserted_split:
            continue
        for j, blob in enumerate(layer.tops):
            value = tops.get((layer.name, j))
            if value is not None and value not in skip:
                last[blob] = value
    return last


def compare(
    old_net: Any, old_weights: str, new_net: Any, new_weights: str, feeds: Any = None
) -> Comparison:
    """max|new - old| / max|old| of every blob both nets have (its final value), both pairs run
    by onnxruntime on ``feeds`` (random ones, of the net's input shapes, when None). A blob whose
    shape only gains unit axes (fc-to-conv: N x O -> N x O x 1 x 1) is compared on its values."""
    import numpy as np
    from onnx import TensorProto, helper

    from rewriter.onnx import ExportError
    from rewriter.onnx.check import _feeds, _session
    from rewriter.onnx.export import export

    old_tops: dict[tuple[str, int], str] = {}
    new_tops: dict[tuple[str, int], str] = {}
    old_model = export(old_net, old_weights, top_values=old_tops)
    new_model = export(new_net, new_weights, top_values=new_tops)
    if feeds is None:
        feeds = _feeds(old_model, None, 0)
    outputs = [o.name for o in old_model.graph.output]
    new_outputs = {o.name for o in new_model.graph.output}
    if set(outputs) != new_outputs:
        raise ExportError(f"the outputs changed: {sorted(outputs)} -> {sorted(new_outputs)}")
    old_last = _last_values(old_net, old_model, old_tops)
    new_last = _last_values(new_net, new_model, new_tops)
    blobs = [b for b in old_last if b in new_last and b not in new_outputs]
    runs = []
    for model, last in ((old_model, old_last), (new_model, new_last)):
        listed = {o.name for o in model.graph.output}
        for v in (last[b] for b in blobs):
            if v not in listed:
                listed.add(v)
                model.graph.output.append(helper.make_tensor_value_info(v, TensorProto.FLOAT, None))
        try:
            runs.append(_session(model).run(outputs + [last[b] for b in blobs], feeds))
        except Exception as e:  # onnxruntime's own exception types
            raise ExportError(f"onnxruntime failed: {e}") from None
    old_out, new_out = runs
    cmp = Comparison({}, outputs, [])
    for name, a, b in zip(outputs + blobs, old_out, new_out, strict=True):
        a64 = np.asarray(a, dtype=np.float64).ravel()
        b64 = np.asarray(b, dtype=np.float64).ravel()
        if not np.isfinite(a64).all():
            cmp.not_finite.append(name)
            continue
        if a.size != b.size or [d for d in a.shape if d != 1] != [d for d in b.shape if d != 1]:
            cmp.errors[name] = float("inf")
            continue
        if not np.isfinite(b64).all():
            cmp.errors[name] = float("inf")
            continue
        scale = float(np.abs(a64).max()) if a64.size else 0.0
        diff = float(np.abs(b64 - a64).max()) if a64.size else 0.0
        cmp.errors[name] = diff / (scale if scale > 0 else 1.0)
    return cmp


def _mode(target: Path) -> int:
    """The target's mode, or a new file's usual one (mkstemp makes 0600)."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_pair(
    result: Result, path: str | os.PathLike[str] | None, weights_out: str | os.PathLike[str]
) -> None:
    """Write the new prototxt and the new weights: both, or (on an error) neither."""
    from rewriter.text.fileio import FileError

    pair = result.weights
    if pair is None:
        raise RewriterError("Result.write: no new weights to write (apply had no weights=)")
    target = path if path is not None else result.path
    if target is None or str(target).startswith("<"):
        raise RewriterError("Result.write: no path to write to (pass one)")
    dst = Path(os.path.realpath(weights_out))
    text_dst = Path(os.path.realpath(target))
    try:
        fd, text_tmp = tempfile.mkstemp(
            prefix=f".{text_dst.name}.", suffix=".tmp", dir=text_dst.parent
        )
    except OSError as e:
        raise FileError(f"{target}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(result.code.encode("utf-8", "surrogateescape"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(text_tmp, _mode(text_dst))
        # the checked weights: moved from the temporary file the first time (when it is in
        # the target's folder), copied from where they were written after that
        src = pair.written or pair.tmp
        if src == str(dst):
            weights_tmp = None
        elif pair.written is None and Path(pair.tmp).resolve().parent == dst.parent:
            weights_tmp = pair.tmp
        else:
            import shutil

            fd2, weights_tmp = tempfile.mkstemp(
                prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent
            )
            os.close(fd2)
            shutil.copyfile(src, weights_tmp)
        if weights_tmp is not None:
            os.chmod(weights_tmp, _mode(dst))
            os.replace(weights_tmp, dst)
        os.replace(text_tmp, text_dst)
    except OSError as e:
        _unlink(text_tmp)
        raise FileError(f"{weights_out}: cannot write: {e.strerror or e}") from None
    pair.written = str(dst)
