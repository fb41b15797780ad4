"""Benchmark: `rewriter upgrade` on a >= 300 MB V1 .caffemodel, and on a large V1 prototxt.

Target (issue 5): the binary upgrade streams, so its peak memory stays under 1.5x the file size
(ideally far less). Every measurement runs in a fresh child process and reads that child's own
``ru_maxrss`` after the imports (baseline) and after the work (peak):

* ``stream``: :func:`rewriter.upgrade.caffemodel.upgrade_caffemodel` (what ``rewriter upgrade``
  runs);
* ``stream_tracemalloc``: the same with tracemalloc on (peak Python-heap allocations);
* ``in_memory``: what Caffe's ``upgrade_net_proto_binary`` does - parse the whole file, upgrade
  the message, serialise it - for comparison; its output must be byte-identical to ours;
* ``text``: the comment-preserving text upgrade of a synthetic V1 net (``--text-layers``), in
  this process (time, lines kept) and, as ``text_child``, in a fresh child (``ru_maxrss``
  growth over the file size; bench/run.py's target for every operation is 20x).

    python bench/bench_upgrade.py [--mb 320] [--text-layers 2000] [--dir DIR] [--keep]

Prints one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_CHILD_PRELUDE = """
import json, resource, sys, time
import rewriter.upgrade.caffemodel, rewriter.upgrade.document, rewriter.caffe.graph
from rewriter.schema.runtime import default_schema
default_schema()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

_STREAM = (
    _CHILD_PRELUDE
    + """
t0 = time.perf_counter()
r = rewriter.upgrade.caffemodel.upgrade_caffemodel(sys.argv[1], sys.argv[2])
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "base_kb": base, "peak_kb": peak, "blobs": r.blobs,
                  "layers": r.layers_out, "bytes_out": r.bytes_out}))
"""
)

_TRACED = (
    _CHILD_PRELUDE
    + """
import tracemalloc
tracemalloc.start()
rewriter.upgrade.caffemodel.upgrade_caffemodel(sys.argv[1], sys.argv[2])
print(json.dumps({"traced_peak_bytes": tracemalloc.get_traced_memory()[1]}))
"""
)

_IN_MEMORY = (
    _CHILD_PRELUDE
    + """
from rewriter.caffe.graph import upgrade_net_message
t0 = time.perf_counter()
with open(sys.argv[1], "rb") as fh:
    data = fh.read()
net = default_schema().message_class("caffe.NetParameter").FromString(data)
del data
out = upgrade_net_message(net).SerializeToString(deterministic=True)
with open(sys.argv[2], "wb") as fh:
    fh.write(out)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "base_kb": base, "peak_kb": peak}))
"""
)

_TEXT = (
    _CHILD_PRELUDE
    + """
from bench.bench_upgrade import v1_text
from rewriter.upgrade.document import upgrade_text
def hwm_kb():
    # VmHWM, not ru_maxrss: after fork + exec ru_maxrss starts at the (large) parent's RSS
    try:
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
upgrade_text(v1_text(20), "warm.prototxt")  # the modules the upgrade imports lazily
with open(sys.argv[1], encoding="utf-8") as fh:
    text = fh.read()
base = hwm_kb()
t0 = time.perf_counter()
changed = upgrade_text(text, sys.argv[1]).changed
dt = time.perf_counter() - t0
peak = hwm_kb()
print(json.dumps({"seconds": dt, "base_kb": base, "peak_kb": peak, "changed": changed}))
"""
)

_GENERATE = """
import struct, sys
from rewriter.schema.runtime import default_schema
net_cls = default_schema().message_class("caffe.NetParameter")
path, layers, floats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def packed(values):
    raw = values
    n = len(raw)
    out = bytearray()
    key = (5 << 3) | 2
    out.append(key)
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            break
    return bytes(out) + raw

with open(path, "wb") as fh:
    head = net_cls()
    head.name = "big_v1"
    head.input.append("data")  # old Net::ToProto kept input names without dims
    fh.write(head.SerializeToString())
    bottom = "data"
    weights = struct.pack("<f", 0.5) * floats
    for i in range(layers):
        one = net_cls()
        layer = one.layers.add()
        layer.name = f"fc{i}"
        layer.type = 14  # INNER_PRODUCT
        layer.bottom.append(bottom)
        layer.top.append(f"fc{i}")
        layer.blobs_lr.extend([1.0, 2.0])
        layer.weight_decay.extend([1.0, 0.0])
        layer.inner_product_param.num_output = 4096
        w = layer.blobs.add()
        w.num, w.channels, w.height, w.width = 1, 1, 4096, floats // 4096
        w.MergeFromString(packed(weights))
        b = layer.blobs.add()
        b.num, b.channels, b.height, b.width = 1, 1, 1, 4096
        b.MergeFromString(packed(struct.pack("<f", 0.1) * 4096))
        fh.write(one.SerializeToString(deterministic=True))
        bottom = f"fc{i}"
"""


def _child(script: str, *args: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def _removed(old: str, new: str) -> int:
    """Lines of ``old`` not kept verbatim, diffing layer by layer (difflib misaligns long
    repetitive files as a whole, and an exact whole-file alignment is quadratic)."""
    import difflib

    a = re.split(r"(?m)^(?=layers? \{)", old)
    b = re.split(r"(?m)^(?=layers? \{)", new)
    extra = len(b) - len(a)  # the Input layer made from the legacy input fields
    pairs = [(a[0], "".join(b[: 1 + extra]))] + list(zip(a[1:], b[1 + extra :], strict=True))
    removed = 0
    for x, y in pairs:
        diff = difflib.unified_diff(x.splitlines(), y.splitlines(), lineterm="", n=0)
        removed += sum(1 for ln in diff if ln.startswith("-") and not ln.startswith("---"))
    return removed


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


_LEGACY = re.compile(r"^(layers \{|  type: [A-Z]|  blobs_lr|  weight_decay|input)")


def v1_text(n_layers: int) -> str:
    """bench.gen's resnet net written the V1 way (legacy inputs, enum types, blobs_lr)."""
    from bench.gen import resnet, to_v1

    return to_v1(resnet(n_layers))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=320, help="size of the generated model (MB)")
    ap.add_argument("--text-layers", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--no-compare", action="store_true", help="skip the in-memory comparison")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench_upgrade_", dir=args.dir))
    figures: dict[str, object] = {}
    try:
        model = scratch / "big_v1.caffemodel"
        floats = 4096 * 2048  # 32 MiB of weights per layer
        layers = max(1, -(-args.mb * 2**20 // (4 * floats)))
        t0 = time.perf_counter()
        _child(_GENERATE + "\nprint('{}')", str(model), str(layers), str(floats))
        size = model.stat().st_size
        figures["model"] = {
            "bytes": size,
            "mb": round(size / 2**20, 1),
            "layers": layers,
            "generate_seconds": round(time.perf_counter() - t0, 2),
        }

        out = scratch / "stream.caffemodel"
        s = _child(_STREAM, str(model), str(out))
        grown = (s["peak_kb"] - s["base_kb"]) * 1024
        figures["stream"] = {
            "seconds": round(s["seconds"], 2),
            "mb_per_second": round(size / 2**20 / s["seconds"], 1),
            "peak_rss_mb": round(s["peak_kb"] / 1024, 1),
            "baseline_rss_mb": round(s["base_kb"] / 1024, 1),
            "peak_over_baseline_mb": round(grown / 2**20, 2),
            "peak_rss_over_file_size": round(s["peak_kb"] * 1024 / size, 3),
            "blobs_copied": s["blobs"],
        }
        t = _child(_TRACED, str(model), str(scratch / "traced.caffemodel"))
        figures["stream_tracemalloc_peak_kb"] = round(t["traced_peak_bytes"] / 1024, 1)
        if not args.no_compare:
            mem_out = scratch / "in_memory.caffemodel"
            m = _child(_IN_MEMORY, str(model), str(mem_out))
            figures["in_memory_like_caffe"] = {
                "seconds": round(m["seconds"], 2),
                "peak_rss_mb": round(m["peak_kb"] / 1024, 1),
                "peak_rss_over_file_size": round(m["peak_kb"] * 1024 / size, 3),
                "output_identical_to_stream": _sha(mem_out) == _sha(out),
            }
            mem_out.unlink()

        from rewriter.upgrade.document import upgrade_text

        text = v1_text(args.text_layers)
        t0 = time.perf_counter()
        result = upgrade_text(text, "synthetic_v1.prototxt")
        dt = time.perf_counter() - t0
        figures["text"] = {
            "layers": args.text_layers,
            "bytes": len(text),
            "seconds": round(dt, 3),
            "lines": text.count("\n"),
            "lines_removed_or_rewritten": _removed(text, result.document.code),
            "lines_with_a_legacy_construct": sum(
                1 for ln in text.splitlines() if _LEGACY.search(ln)
            ),
            "comments_kept": result.document.code.count("# lr") == text.count("# lr"),
        }
        del result
        text_path = scratch / "synthetic_v1.prototxt"
        text_path.write_text(text, encoding="utf-8")
        c = _child(_TEXT, str(text_path))
        grown_kb = c["peak_kb"] - c["base_kb"]
        figures["text_child"] = {
            "seconds": round(c["seconds"], 3),
            "peak_rss_growth_mb": round(grown_kb / 1024, 1),
            "peak_rss_growth_over_file_size": round(grown_kb * 1024 / len(text.encode()), 1),
        }
    finally:
        if args.keep:
            figures["kept_in"] = str(scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
