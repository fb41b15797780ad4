"""Benchmark: ``rewriter apply --step 'freeze upto=<middle layer>'`` on a big synthetic net.

Times the whole job in one process -- read, parse, bind, Caffe's graph, the edit, the new
text, the unified diff, every round-trip check -- against ``google.protobuf.text_format.Parse``
of the same text (the cost of merely reading the file with protobuf), and reports the ratio and
the peak memory of the job (tracemalloc). Target: ratio <= 1.5.

    python bench/bench_apply.py            # chain(15000): 15,000 layer blocks, ~3.5 MB
    python bench/bench_apply.py --layers 10000 --repeat 5
    python bench/bench_apply.py --shape resnet --layers 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gen import chain, densenet, resnet  # noqa: E402

SHAPES = {"chain": chain, "resnet": resnet, "densenet": densenet}
#: the layer frozen up to: the middle of the net, as bench/run.py does
MIDDLE = {
    "chain": lambda n: f"conv{n // 4}",
    "resnet": lambda n: f"res{n // 8}_a",
    "densenet": lambda n: f"d{n // 6}_conv",
}


def _job(path: str, upto: str, out: io.StringIO) -> Any:
    """The whole ``rewriter apply --step 'freeze upto=...' FILE`` job; returns the Result (the
    caller frees it after stopping the clock, as it does with text_format's message)."""
    from rewriter.recipes.engine import apply
    from rewriter.recipes.recipe import Step

    result = apply(path, Step("freeze", upto=upto))
    out.write(result.diff)  # what the CLI prints
    assert result.changed and all(c.ok for c in result.checks)
    return result


def _tf_parse(text: str) -> Any:
    from google.protobuf import text_format

    from rewriter.schema.runtime import default_schema

    msg = default_schema().message_class("caffe.NetParameter")()
    text_format.Parse(text, msg)
    return msg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="chain", help="bench.gen net")
    ap.add_argument("--layers", type=int, default=15000, help="layers of the generated net")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    ap.add_argument("--target", type=float, default=1.5, help="fail above this ratio")
    args = ap.parse_args(argv)

    text = SHAPES[args.shape](args.layers)
    upto = MIDDLE[args.shape](args.layers)  # the middle layer: half the net is frozen
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "chain.prototxt")
        Path(path).write_text(text)
        # warm up imports, schema and caches outside the timings
        small = chain(40)
        _tf_parse(small)
        warm = os.path.join(tmp, "warm.prototxt")
        Path(warm).write_text(small)
        _job(warm, "conv5", io.StringIO())

        tf_times, job_times, cpu_ratios = [], [], []
        n_changes = 0
        for _ in range(args.repeat):
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            msg = _tf_parse(text)
            tf_times.append(time.perf_counter() - t0)
            tf_cpu = time.process_time() - c0
            del msg
            gc.collect()
            out = io.StringIO()
            t0, c0 = time.perf_counter(), time.process_time()
            result = _job(path, upto, out)
            job_times.append(time.perf_counter() - t0)
            cpu_ratios.append((time.process_time() - c0) / tf_cpu)
            n_changes = len(result.changes)
            del result
        gc.collect()
        tracemalloc.start()
        result = _job(path, upto, io.StringIO())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del result

    tf, job = min(tf_times), min(job_times)
    ratio = job / tf
    lines = text.count("\n")
    print(f"net: {args.shape}({args.layers}), {len(text) / 1e6:.2f} MB, {lines} lines")
    print(f"freeze upto={upto}: {n_changes} changes, diff {len(out.getvalue()) / 1e3:.0f} kB")
    print(f"text_format.Parse : {tf:.3f} s (best of {args.repeat})")
    print(f"apply (end to end): {job:.3f} s (best of {args.repeat})")
    print(f"ratio             : {ratio:.2f}x (target <= {args.target}x)")
    print(f"ratio (CPU time)  : {min(cpu_ratios):.2f}x (best run)")
    print(f"peak memory (job) : {peak / 1e6:.0f} MB (tracemalloc)")
    return 0 if ratio <= args.target else 1


if __name__ == "__main__":
    raise SystemExit(main())
