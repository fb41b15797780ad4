"""Benchmark: ``rewriter export onnx`` on the largest oracle case (BVLC GoogLeNet, 29.7 MB).

Times, in the same run:

* the whole ``rewriter export onnx NET --weights MODEL -o OUT`` process (a subprocess: start-up,
  imports of onnx, parse, bind, Caffe's graph and shapes, streaming the weights, building and
  checking the model, the atomic write);
* the same export in this process (``rewriter.onnx.export.export`` + serialising), imports
  warmed up;
* protobuf's ``text_format.Parse`` of the same net, and protobuf's ``ParseFromString`` of the
  whole ``.caffemodel`` (what merely reading the inputs with protobuf costs);

and prints the ratios of the in-process export to those. No target: the export is dominated by
copying the weights into initializers and by ``onnx.checker``.

    python bench/bench_onnx.py                   # ../shared/oracle/forward/bvlc_googlenet
    python bench/bench_onnx.py --case resnet50_quarter --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FORWARD = REPO.parent / "shared" / "oracle" / "forward"


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="bvlc_googlenet", help="an oracle/forward case")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args(argv)

    case = FORWARD / args.case
    if not case.is_dir():
        print(f"{case}: not found (the benchmark reads ../shared/oracle/forward)")
        return 2
    net, weights = case / "net.prototxt", case / "weights.caffemodel"
    text = net.read_text()

    from google.protobuf import text_format

    from rewriter.onnx.export import export
    from rewriter.schema.runtime import default_schema

    cls = default_schema().message_class("caffe.NetParameter")
    blob = weights.read_bytes()

    def tf_parse() -> Any:
        msg = cls()
        text_format.Parse(text, msg)
        return msg

    def pb_weights() -> Any:
        return cls.FromString(blob)

    def in_process() -> Any:
        return export(net, weights).SerializeToString()

    in_process()  # warm up imports and caches
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.onnx")
        cmd = [sys.executable, "-m", "rewriter.cli", "export", "onnx", str(net)]
        cmd += ["--weights", str(weights), "-o", out]

        def process() -> None:
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)

        t_proc = best_of(process, args.repeat)
        size = os.path.getsize(out)
    t_tf = best_of(tf_parse, args.repeat)
    t_pb = best_of(pb_weights, args.repeat)
    t_exp = best_of(in_process, args.repeat)

    print(f"case: {args.case}: net {len(text) / 1e3:.0f} kB, weights {len(blob) / 1e6:.1f} MB")
    print(f"model written           : {size / 1e6:.1f} MB")
    print(f"export onnx (process)   : {t_proc:.3f} s (best of {args.repeat})")
    print(f"export (in process)     : {t_exp:.3f} s (best of {args.repeat})")
    print(f"text_format.Parse (net) : {t_tf:.4f} s")
    print(f"protobuf weights parse  : {t_pb:.3f} s (NetParameter.FromString of the caffemodel)")
    print(f"ratio export / (net + weights parse): {t_exp / (t_tf + t_pb):.1f}x")
    print(f"ratio export / text_format.Parse   : {t_exp / t_tf:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
