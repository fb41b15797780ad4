"""The benchmark harness: every operation on generated nets and on the corpus, against protobuf.

    python bench/run.py            # full run: 1k, 10k and 100k layers + the corpus (~9 min)
    python bench/run.py --quick    # 1k and 10k layers, no corpus memory runs (~3 min)
    python bench/run.py --write bench/RESULTS.md

For every input and operation it prints our time (best of ``--repeat`` runs, in this process),
the time ``google.protobuf.text_format.Parse`` needs for the same file(s) in the same run, their
ratio, the time per layer, and the peak memory of the operation (peak RSS growth of a fresh
process that runs it once: it counts protobuf's C allocations, which tracemalloc cannot see),
also relative to the file size, next to the peak of protobuf's parse of the same file. Then
the scaling (time per layer at 1k / 10k / 100k layers and the 100k/10k time ratio, target
<= 12), and the start-up times of whole processes (median of 7).

Operations, each the whole job its command does:

* ``parse+print``: ``cst.parse`` and printing every top-level field back;
* ``check``: read, parse and bind (``rewriter check``);
* ``explain``: read, parse, bind, Caffe's TRAIN graph, backward analysis, the text table;
* ``apply``: ``rewriter apply --step 'freeze upto=<middle layer>'``: read, parse, bind, graph,
  edit, every round-trip check, the unified diff;
* ``diff``: ``rewriter diff`` of the file and a copy with one layer frozen (reads two files:
  protobuf's reference parses both);
* ``upgrade``: ``rewriter upgrade`` of the V1 form of the chain net (``bench.gen.v1chain``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gen import chain, densenet, resnet, v1chain  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"
SEED = REPO / "examples" / "seed_net.prototxt"
SHAPES: dict[str, Callable[[int], str]] = {"chain": chain, "resnet": resnet, "densenet": densenet}
MIDDLE = {
    "chain": lambda n: f"conv{n // 4}",
    "resnet": lambda n: f"res{n // 8}_a",
    "densenet": lambda n: f"d{n // 6}_conv",
}


# --- measuring ---------------------------------------------------------------------------------


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``repeat`` runs; the result is dropped after the clock stops."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        del result
    return best


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kb() -> int:
    """This process's peak RSS. (Not ``ru_maxrss``: on Linux it carries the RSS the parent had
    when it forked us across the exec, so a child of a big process would report that.)"""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover


def peak_memory_mb(op: str, *args: str) -> float | None:
    """Peak RSS growth (MB) of one run of ``op`` on ``args``, in a fresh process.

    A fresh interpreter, because a fork of this process would reuse the heap earlier, larger
    runs left behind and report too little. The child first runs the operation on the small
    seed net (imports, schema, caches), then measures from its size at that point; RSS counts
    protobuf's C allocations, which tracemalloc cannot see."""
    if not Path("/proc/self/statm").exists():
        return None
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--peak-of", op, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _peak_child(op: str, args: list[str]) -> None:
    paths = [Path(a) for a in args]
    if op.endswith("@"):  # a list of files, one per line, in the file given
        op = op[:-1]
        paths = [Path(line) for line in paths[0].read_text().splitlines()]
        fns = [lambda p=p: _run_op(op, [p]) for p in paths]
    else:
        fns = [lambda: _run_op(op, paths)]
    warm = [SEED]
    if op == "diff":
        # a diff that finds a change, so that the warm-up imports what the measured one does
        # (deepdiff is imported only when two layers differ)
        changed = Path(tempfile.mkdtemp()) / "seed_changed.prototxt"
        changed.write_text(_one_layer_frozen(SEED.read_text(), "conv1/7x7_s2"))
        warm = [SEED, changed]
    with contextlib.suppress(Exception):
        _run_op(op, warm, warmup=True)
    gc.collect()
    base = _rss_kb()
    for fn in fns:
        with contextlib.suppress(Exception):
            fn()
    print(max(0, _hwm_kb() - base) / 1024)


def _run_op(op: str, paths: list[Path], warmup: bool = False) -> Any:
    if op == "protobuf":
        return tf_parse(paths[0].read_text(errors="surrogateescape"), unknown_ok=True)
    if op == "parse+print":
        return op_parse_print(paths[0])
    if op == "check":
        return op_check(paths[0], lenient=True)
    if op == "explain":
        return op_explain(paths[0], lenient=True)
    if op == "apply":
        upto = "conv1/7x7_s2" if warmup else str(paths[1])
        return op_apply(paths[0], upto)
    if op == "diff":
        return op_diff(paths[0], paths[1])
    if op == "upgrade":
        return op_upgrade(paths[0])
    raise ValueError(op)


# --- the operations ----------------------------------------------------------------------------


def tf_parse(text: str, unknown_ok: bool = False) -> Any:
    from google.protobuf import text_format

    from rewriter.bind import detect_kind
    from rewriter.cst import parse
    from rewriter.schema import default_schema

    schema = default_schema()
    root = "caffe.NetParameter"
    if unknown_ok:  # corpus: nets or solvers, fork fields allowed (the lenient binder's view)
        with contextlib.suppress(Exception):
            root = detect_kind(parse(text), schema)
    msg = schema.message_class(root)()
    # (a file protobuf refuses still cost what it cost)
    with contextlib.suppress(text_format.ParseError):
        text_format.Parse(text, msg, allow_unknown_field=unknown_ok)
    return msg


def op_parse_print(path: Path) -> Any:
    from rewriter.cst import parse
    from rewriter.fileio import read_text

    text = read_text(path)
    doc = parse(text, str(path))
    out = "".join(f.code for f in doc.fields) + doc.src[doc.tail_start :]
    assert out == text
    return doc


def op_check(path: Path, lenient: bool = False) -> Any:
    from rewriter.bind import diagnose
    from rewriter.fileio import read_text

    return diagnose(read_text(path), str(path), lenient=lenient)


def op_explain(path: Path, lenient: bool = False) -> Any:
    from rewriter.explain_text import render_table
    from rewriter.graph import build_graph
    from rewriter.model import load

    message = load(path, lenient=lenient, root="caffe.NetParameter").message  # as the CLI does
    result = build_graph(message, phase="TRAIN").backward()
    return render_table(result, color=False)


def op_apply(path: Path, upto: str) -> Any:
    from rewriter.apply import apply
    from rewriter.recipe import Step

    result = apply(path, Step("freeze", upto=upto))
    assert result.changed
    return result.diff


def op_diff(old: Path, new: Path) -> Any:
    from rewriter.render.text import render_text
    from rewriter.semdiff import DiffResult, diff_files

    fd = diff_files(old, new)
    return render_text(DiffResult([fd]))


def op_upgrade(path: Path) -> Any:
    from rewriter.fileio import read_text
    from rewriter.upgrade import upgrade_text

    result = upgrade_text(read_text(path), str(path))
    return result.document.code


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"rewriter.{module}") is not None


def _one_layer_frozen(text: str, layer: str) -> str:
    at = text.index(f'name: "{layer}"')
    pos = text.index("lr_mult: 1", at)
    return text[:pos] + "lr_mult: 0" + text[pos + len("lr_mult: 1") :]


# --- the runs ----------------------------------------------------------------------------------


@dataclass
class Row:
    input: str
    layers: int
    mb: float
    op: str
    ours: float
    theirs: float | None
    peak_mb: float | None
    theirs_peak_mb: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.theirs if self.theirs else None

    @property
    def us_per_layer(self) -> float:
        return self.ours / max(self.layers, 1) * 1e6


def bench_generated(
    shape: str, n: int, repeat: int, memory: bool, work: Path, log: Callable[[str], None]
) -> list[Row]:
    text = SHAPES[shape](n)
    path = work / f"{shape}{n}.prototxt"
    path.write_text(text)
    mb = len(text.encode()) / 2**20
    tf = best_of(lambda: tf_parse(text), repeat)
    rows: list[Row] = []

    tf_peak = peak_memory_mb("protobuf", str(path)) if memory else None

    def add(op: str, fn: Callable[[], Any], args: list[str], files: int = 1) -> None:
        ours = best_of(fn, repeat)
        peak = peak_memory_mb(op, *args) if memory else None
        rows.append(Row(f"{shape}", n, mb, op, ours, tf * files, peak, tf_peak))
        log(f"  {shape:9} {n:>7} {op:12} {ours:8.3f}s  x{ours / (tf * files):5.2f}")

    add("parse+print", lambda: op_parse_print(path), [str(path)])
    add("check", lambda: op_check(path), [str(path)])
    add("explain", lambda: op_explain(path), [str(path)])
    if _have("apply"):
        # (the child takes the layer name from the second path's name)
        add("apply", lambda: op_apply(path, MIDDLE[shape](n)), [str(path), MIDDLE[shape](n)])
    if _have("semdiff"):
        new = work / f"{shape}{n}.new.prototxt"
        new.write_text(_one_layer_frozen(text, MIDDLE[shape](n)))
        add("diff", lambda: op_diff(path, new), [str(path), str(new)], files=2)
    if shape == "chain" and _have("upgrade"):
        v1 = v1chain(n)
        v1_path = work / f"v1chain{n}.prototxt"
        v1_path.write_text(v1)
        tf_v1 = best_of(lambda: tf_parse(v1), repeat)
        ours = best_of(lambda: op_upgrade(v1_path), repeat)
        peak = peak_memory_mb("upgrade", str(v1_path)) if memory else None
        tf_v1_peak = peak_memory_mb("protobuf", str(v1_path)) if memory else None
        v1_mb = len(v1.encode()) / 2**20
        rows.append(Row("v1chain", n, v1_mb, "upgrade", ours, tf_v1, peak, tf_v1_peak))
        log(f"  {'v1chain':9} {n:>7} {'upgrade':12} {ours:8.3f}s  x{ours / tf_v1:5.2f}")
    return rows


def bench_corpus(repeat: int, memory: bool, log: Callable[[str], None]) -> list[Row]:
    import csv

    from rewriter.errors import RewriterError

    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        log(f"  (no corpus at {CORPUS}: skipped)")
        return []
    with manifest.open(newline="") as fh:
        entries = [(CORPUS / r["path"], r["kind"]) for r in csv.DictReader(fh, delimiter="\t")]
    texts = {p: p.read_bytes().decode("utf-8", "surrogateescape") for p, _ in entries}
    mb = sum(len(t.encode("utf-8", "surrogateescape")) for t in texts.values()) / 2**20
    tf_each = {
        p: best_of(lambda t=t: tf_parse(t, unknown_ok=True), repeat) for p, t in texts.items()
    }

    def each(fn: Callable[[Path], Any], paths: list[Path]) -> Callable[[], None]:
        def run() -> None:
            for p in paths:
                with contextlib.suppress(RewriterError):  # refusals cost what they cost
                    fn(p)

        return run

    nets = [p for p, kind in entries if kind == "net"]
    everything = [p for p, _ in entries]
    ops: list[tuple[str, Callable[[Path], Any], list[Path]]] = [
        ("parse+print", op_parse_print, everything),
        ("check", lambda p: op_check(p, lenient=True), everything),
        ("explain", lambda p: op_explain(p, lenient=True), nets),
    ]
    if _have("upgrade"):
        ops.append(("upgrade", op_upgrade, everything))
    rows = []
    listing = Path(tempfile.mkstemp(suffix=".txt")[1])
    for name, fn, paths in ops:
        run = each(fn, paths)
        ours = best_of(run, repeat)
        theirs = sum(tf_each[p] for p in paths)
        listing.write_text("\n".join(str(p) for p in paths))
        peak = peak_memory_mb(name + "@", str(listing)) if memory else None
        tf_peak = peak_memory_mb("protobuf@", str(listing)) if memory else None
        size = sum(len(texts[p].encode("utf-8", "surrogateescape")) for p in paths) / 2**20
        label = f"corpus ({len(paths)} files)"
        rows.append(Row(label, 0, size, name, ours, theirs, peak, tf_peak))
        log(f"  corpus {name:12} {ours:8.3f}s  x{ours / theirs:5.2f}")
    listing.unlink()
    del mb
    return rows


def startup(runs: int = 7) -> list[tuple[str, float, float]]:
    """Median and minimum wall time of whole processes (the installed script when present)."""
    script = Path(sys.executable).with_name("rewriter")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "rewriter.cli"]
    cases = [("--version", ["--version"]), ("--help", ["--help"])]
    if _have("apply"):
        cases.append(
            (
                "apply freeze --set upto=pool2/3x3_s2 examples/seed_net.prototxt",
                ["apply", "freeze", "--set", "upto=pool2/3x3_s2", str(SEED)],
            )
        )
    cases.append(("explain examples/seed_net.prototxt", ["explain", str(SEED)]))
    out = []
    for label, args in cases:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(cmd + args, capture_output=True, cwd=REPO, check=False)
            times.append(time.perf_counter() - start)
        out.append((label, statistics.median(times), min(times)))
    return out


# --- reporting ---------------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| input | layers | MB | operation | ours (s) | protobuf (s) | ratio | µs/layer "
        "| peak MB | peak/size | protobuf peak MB |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = _f(r.us_per_layer, ".1f") if r.layers else "-"
        rel = r.peak_mb / r.mb if r.peak_mb is not None and r.mb else None
        lines.append(
            f"| {r.input} | {r.layers or '-'} | {r.mb:.2f} | {r.op} | {r.ours:.3f} "
            f"| {_f(r.theirs, '.3f')} | {_f(r.ratio, '.2f')} | {per} | {_f(r.peak_mb, '.0f')} "
            f"| {_f(rel, '.1f')} | {_f(r.theirs_peak_mb, '.0f')} |"
        )
    return lines


def scaling(rows: list[Row]) -> list[str]:
    sizes = sorted({r.layers for r in rows if r.layers})
    head = " | ".join(f"µs/layer @{n // 1000}k" for n in sizes)
    lines = [
        f"| input | operation | {head} | 100k/10k time |",
        "|---|---|" + "---:|" * (len(sizes) + 1),
    ]
    keys = sorted({(r.input, r.op) for r in rows if r.layers}, key=lambda k: (k[0], k[1]))
    for inp, op in keys:
        by = {r.layers: r for r in rows if r.input == inp and r.op == op}
        cells = " | ".join(_f(by[n].us_per_layer if n in by else None, ".1f") for n in sizes)
        ratio = by[100_000].ours / by[10_000].ours if 100_000 in by and 10_000 in by else None
        flag = "" if ratio is None or ratio <= 12 else " (over 12)"
        lines.append(f"| {inp} | {op} | {cells} | {_f(ratio, '.1f')}{flag} |")
    return lines


def machine() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import google.protobuf

    try:
        from google.protobuf.internal import api_implementation

        impl = api_implementation.Type()
    except Exception:  # pragma: no cover
        impl = "?"
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- `uname -a`: `{' '.join(platform.uname())}`",
        f"- CPU: {cpu} ({os.cpu_count()} cores)",
        f"- Python {platform.python_version()}, protobuf {google.protobuf.__version__} ({impl})",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1k and 10k layers; no corpus memory")
    ap.add_argument("--sizes", default=None, help="layer counts, e.g. 1000,10000,100000")
    ap.add_argument("--shapes", default="chain,resnet,densenet")
    ap.add_argument("--repeat", type=int, default=None, help="best of N (default 3; 1 at 100k)")
    ap.add_argument("--no-memory", action="store_true", help="skip the forked memory runs")
    ap.add_argument("--no-corpus", action="store_true")
    ap.add_argument("--write", type=Path, default=None, help="also write the report (markdown)")
    ap.add_argument("--peak-of", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peak_of:
        _peak_child(args.peak_of[0], args.peak_of[1:])
        return 0

    sizes = [
        int(s)
        for s in (args.sizes or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")
    ]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rewriter-bench-") as tmp:
        work = Path(tmp)
        for shape in args.shapes.split(","):
            for n in sizes:
                repeat = args.repeat or (1 if n >= 100_000 else 3)
                rows += bench_generated(shape, n, repeat, not args.no_memory, work, log)
    if not args.no_corpus:
        rows += bench_corpus(
            args.repeat or (1 if args.quick else 2), not (args.quick or args.no_memory), log
        )
    starts = startup()

    report = [
        "# Benchmark results",
        "",
        "Output of `python bench/run.py` (what each column means: docs/benchmarks.md).",
        "",
        "## Machine",
        "",
        *machine(),
        "",
        f"Command: `python bench/run.py {' '.join(argv or sys.argv[1:])}`".rstrip(),
        "",
    ]
    report += ["## Operations", "", *table(rows), ""]
    report += ["## Scaling", "", *scaling(rows), ""]
    report += [
        "## Start-up (whole processes)",
        "",
        "| command | median (s) | min (s) |",
        "|---|---:|---:|",
    ]
    report += [f"| `rewriter {label}` | {med:.3f} | {low:.3f} |" for label, med, low in starts]
    text = "\n".join(report) + "\n"
    print(text)
    if args.write is not None:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
