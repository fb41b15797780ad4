"""Benchmark: semantic diff of two ~10,000-layer nets that differ in one layer.

Target (issue 6): ``rewriter diff`` of the two files (read, parse, bind, both phases' graphs and
backward analysis, compare, render the text report) takes at most twice the time protobuf's
``text_format.Parse`` needs to parse both files. Both are measured in the same run, best of
``--repeat`` runs each, and the ratio is printed.

    python bench/bench_diff.py [--layers 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gen import chain  # noqa: E402


def _one_layer_changed(text: str, layer: str) -> str:
    """Freeze one conv layer's weights (lr_mult 1 -> 0) and nothing else."""
    at = text.index(f'name: "{layer}"')
    pos = text.index("lr_mult: 1", at)
    return text[:pos] + "lr_mult: 0" + text[pos + len("lr_mult: 1") :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=float, default=2.0, help="maximum allowed ratio")
    args = ap.parse_args(argv)

    from google.protobuf import text_format

    from rewriter.review import semdiff
    from rewriter.review.render.text import render_text
    from rewriter.schema.runtime import default_schema

    old_text = chain(args.layers)
    new_text = _one_layer_changed(old_text, f"conv{args.layers // 4}")
    with tempfile.TemporaryDirectory() as tmp:
        old_path, new_path = Path(tmp, "old.prototxt"), Path(tmp, "new.prototxt")
        old_path.write_text(old_text)
        new_path.write_text(new_text)
        net_class = default_schema().message_class("caffe.NetParameter")
        n_layers = old_text.count("\nlayer {") + old_text.startswith("layer {")

        def parse_both() -> None:
            for p in (old_path, new_path):
                text_format.Parse(p.read_text(), net_class())

        report = ""

        def diff_both() -> None:
            nonlocal report
            result = semdiff.DiffResult([semdiff.diff_files(old_path, new_path)])
            report = render_text(result)

        def timed(fn: Callable[[], None]) -> float:
            gc.collect()
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        # the first diff also pays for importing deepdiff and loading the schema
        cold = timed(diff_both)
        # interleave the two measurements so machine load affects both alike
        t_parse = t_diff = float("inf")
        for _ in range(args.repeat):
            t_parse = min(t_parse, timed(parse_both))
            t_diff = min(t_diff, timed(diff_both))

    ratio = t_diff / t_parse
    print(f"net: chain({args.layers}), {n_layers} layer blocks, {len(old_text)} bytes per file")
    print(f"text_format.Parse of both files: {t_parse:.3f} s")
    print(
        f"rewriter diff of both files:     {t_diff:.3f} s (first run, imports included: "
        f"{cold:.3f} s)"
    )
    print(f"ratio: {ratio:.2f} (limit {args.limit:.1f})")
    print("report:")
    print("  " + report.rstrip("\n").replace("\n", "\n  "))
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
