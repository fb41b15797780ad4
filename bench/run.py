"""The benchmark harness: what users run, as whole processes, against protobuf in the same run.

    python bench/run.py                  # full (~10 min): BN+Scale ResNet at 1k/10k/100k layers,
                                         # 3 real corpus nets, chain/densenet/V1 at 10k
    python bench/run.py --quick          # ~3 min: BN+Scale ResNet at 1k/10k, SE-ResNet-152
    python bench/run.py --before main    # also the code of git rev ``main``, in the same pairs
    python bench/run.py --write bench/RESULTS.md

Every measurement is a fresh process of the installed ``rewriter`` script running the command
a user types (``rewriter apply freeze --set upto=L NET -o OUT``, ``rewriter diff NET FROZEN``,
...). Its baseline is a fresh ``python -c`` process that imports protobuf, loads Caffe's
descriptor (``rewriter/data/caffe.desc``, compiled from proto/caffe.proto) and runs
``text_format.Parse`` on the same file(s): none of our code is inside it.

The two (three with ``--before``) are run alternately, in a rotating order, ``--repeat`` times;
each run of ours is divided by the baseline run next to it, and the table shows the medians of
those ratios (CPU time: user + system; and wall time), the median times and the median peak RSS
of the whole process (``/usr/bin/time``'s maximum resident set: interpreter, imports and all).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gen import SHAPES  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"
SEED = REPO / "examples" / "seed_net.prototxt"
DESC = REPO / "rewriter" / "data" / "caffe.desc"
GNU_TIME = shutil.which("time") or "/usr/bin/time"

#: The baseline: protobuf alone. argv: descriptor set, root message, file(s) to parse.
BASELINE = """\
import sys
from google.protobuf import descriptor_pb2, descriptor_pool, text_format
from google.protobuf.message_factory import GetMessageClass
fds = descriptor_pb2.FileDescriptorSet()
with open(sys.argv[1], "rb") as fh:
    fds.ParseFromString(fh.read())
pool = descriptor_pool.DescriptorPool()
for f in fds.file:
    pool.AddSerializedFile(f.SerializeToString())
cls = GetMessageClass(pool.FindMessageTypeByName(sys.argv[2]))
for path in sys.argv[3:]:
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        text_format.Parse(fh.read(), cls(), allow_unknown_field=True)
"""

#: Real nets from ../shared/corpus (path, a layer in the middle to freeze up to).
REAL_NETS = {
    "SE-ResNet-152": "hujie-frank-SENet/models/SE-ResNet-152.prototxt",
    "ResNet-50 (deploy)": "KaimingHe-deep-residual-networks/prototxt/ResNet-50-deploy.prototxt",
    "GoogLeNet (train_val)": "BVLC-caffe/models/bvlc_googlenet/train_val.prototxt",
}


# --- running one process -----------------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    cpu: float
    peak_mb: float | None
    rc: int


def run_process(cmd: list[str], env: dict[str, str] | None = None) -> Sample:
    """One whole process: wall time, CPU (user + system, children included) and peak RSS.

    The command runs under ``/usr/bin/time``: its maximum resident set is the command's own
    (a child forked straight from this bigger process would inherit this process's high-water
    mark across the exec on Linux)."""
    fd, out = tempfile.mkstemp(prefix="rewriter-bench-time-")
    os.close(fd)
    full = [GNU_TIME, "-f", "%M", "-o", out, *cmd] if Path(GNU_TIME).exists() else cmd
    start = time.perf_counter()
    proc = subprocess.Popen(
        full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=env
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = None
    try:
        text = Path(out).read_text().strip().splitlines()
        peak = int(text[-1]) / 1024 if text and text[-1].isdigit() else None
    finally:
        os.unlink(out)
    if proc.returncode not in (0, 1):  # diff/apply may exit 1 by design with some flags
        # a refusal is reported in the table (it still cost what it cost), not a crash
        print(f"  ({' '.join(cmd[-3:])}: exit {proc.returncode}: {err.decode()[-300:]})",
              file=sys.stderr)  # fmt: skip
    return Sample(wall, usage.ru_utime + usage.ru_stime, peak, proc.returncode)


@dataclass
class Variant:
    """A program under test: ours (this tree), ours before (another tree), or protobuf."""

    label: str
    env: dict[str, str] | None = None

    def command(self, argv: list[str]) -> list[str]:
        script = Path(sys.executable).with_name("rewriter")
        if script.exists():
            return [str(script), *argv]
        return [sys.executable, "-c", "from rewriter.cli import main; main()", *argv]


def baseline(root: str, files: list[Path]) -> list[str]:
    return [sys.executable, "-c", BASELINE, str(DESC), root, *map(str, files)]


# --- one row -----------------------------------------------------------------------------------


@dataclass
class Row:
    input: str
    layers: int
    mb: float
    op: str
    compares: str
    base: list[Sample] = field(default_factory=list)
    ours: dict[str, list[Sample]] = field(default_factory=dict)

    def med(self, label: str, attr: str) -> float | None:
        vals = [getattr(s, attr) for s in self.ours.get(label, [])]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def ratio(self, label: str, attr: str) -> float | None:
        """Median over the runs of ours / the baseline run paired with it."""
        pairs = [
            getattr(o, attr) / getattr(b, attr)
            for o, b in zip(self.ours.get(label, []), self.base, strict=False)
            if getattr(b, attr)
        ]
        return statistics.median(pairs) if pairs else None

    def base_med(self, attr: str) -> float | None:
        vals = [getattr(s, attr) for s in self.base if getattr(s, attr) is not None]
        return statistics.median(vals) if vals else None


def measure(
    row: Row,
    variants: list[Variant],
    argv: list[str] | None,
    base_cmd: list[str] | None,
    repeat: int,
    log: Callable[[str], None],
) -> Row:
    """Alternate the baseline and each variant ``repeat`` times, rotating who goes first."""
    jobs: list[tuple[str, list[str], dict[str, str] | None]] = []
    if base_cmd is not None:
        jobs.append(("protobuf", base_cmd, None))
    if argv is not None:
        jobs += [(v.label, v.command(argv), v.env) for v in variants]
    for i in range(repeat):
        k = i % len(jobs)
        for label, cmd, env in jobs[k:] + jobs[:k]:
            s = run_process(cmd, env)
            if label == "protobuf":
                row.base.append(s)
            else:
                row.ours.setdefault(label, []).append(s)
    parts = [f"{row.input:22} {row.layers:>7} {row.op:14}"]
    for v in variants:
        r = row.ratio(v.label, "cpu")
        c = row.med(v.label, "cpu")
        if c is not None:
            parts.append(f"{v.label}: {c:7.3f}s cpu" + (f" x{r:.2f}" if r else ""))
    log("  ".join(parts))
    return row


# --- inputs ------------------------------------------------------------------------------------


_NAME = re.compile(r'^\s*name:\s*"([^"]+)"', re.M)
_TYPE = re.compile(r'^\s*type:\s*"([^"]+)"', re.M)


def middle_layer(text: str) -> str:
    """The name of the Convolution layer nearest the middle of the file (freeze's ``upto``)."""
    names: list[str] = []
    for block in re.split(r"\nlayers? \{", text)[1:]:
        n, t = _NAME.search(block), _TYPE.search(block)
        if n and t and t.group(1) == "Convolution":
            names.append(n.group(1))
    return names[len(names) // 2]


def one_line_edit(text: str, layer: str) -> str:
    """The file with one ``lr_mult`` of ``layer`` changed (the small edit of a reviewer's diff)."""
    at = text.index(f'name: "{layer}"')
    m = re.compile(r"lr_mult: (\S+)").search(text, at)
    if m is None:  # a deploy net: add a decay_mult-free param block instead
        end = text.index("\n", at)
        return text[: end + 1] + "  param { lr_mult: 0 }\n" + text[end + 1 :]
    new = "0" if m.group(1) != "0" else "1"
    return text[: m.start(1)] + new + text[m.end(1) :]


def bench_net(
    label: str,
    layers: int,
    path: Path,
    variants: list[Variant],
    repeat: int,
    work: Path,
    log: Callable[[str], None],
) -> list[Row]:
    """check, explain, apply freeze, diff of a one-line edit, diff of the freeze output."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    mb = len(text.encode("utf-8", "surrogateescape")) / 2**20
    upto = middle_layer(text)
    stem = re.sub(r"\W+", "_", label)
    edited = work / f"{stem}.edit.prototxt"
    edited.write_text(one_line_edit(text, upto))
    frozen = work / f"{stem}.frozen.prototxt"
    subprocess.run(
        variants[0].command(["apply", "freeze", "--set", f"upto={upto}", str(path)])
        + ["-o", str(frozen), "-q"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    net = "caffe.NetParameter"
    one = baseline(net, [path])
    two_edit = baseline(net, [path, edited])
    two_frozen = baseline(net, [path, frozen])
    out = work / f"{stem}.out.prototxt"
    cases = [
        ("check", ["check", str(path)], one, "parse of the file"),
        ("explain", ["explain", str(path)], one, "parse of the file"),
        (
            "apply freeze",
            ["apply", "freeze", "--set", f"upto={upto}", str(path), "-o", str(out), "-q"],
            one,
            "parse of the input",
        ),
        ("diff 1-line edit", ["diff", str(path), str(edited)], two_edit, "parse of both files"),
        ("diff frozen", ["diff", str(path), str(frozen)], two_frozen, "parse of both files"),
    ]
    rows = []
    for op, argv, base, compares in cases:
        row = Row(label, layers, mb, op, compares)
        rows.append(measure(row, variants, argv, base, repeat, log))
    return rows


def bench_upgrade(
    n: int, variants: list[Variant], repeat: int, work: Path, log: Callable[[str], None]
) -> Row:
    path = work / f"v1chain{n}.prototxt"
    path.write_text(SHAPES["v1chain"](n))
    mb = path.stat().st_size / 2**20
    row = Row("v1chain", n, mb, "upgrade -o", "parse of the V1 file")
    argv = ["upgrade", str(path), "-o", str(work / f"v1chain{n}.up.prototxt")]
    return measure(row, variants, argv, baseline("caffe.NetParameter", [path]), repeat, log)


def startup(variants: list[Variant], repeat: int, log: Callable[[str], None]) -> list[Row]:
    """Small commands on the seed net: what a user waits for at the prompt."""
    seed = str(SEED.relative_to(REPO))
    cases: list[tuple[str, list[str] | None, list[str] | None]] = [
        ("python -c pass (floor)", None, [sys.executable, "-c", "pass"]),
        ("protobuf parse of the seed", None, baseline("caffe.NetParameter", [SEED])),
        ("rewriter --version", ["--version"], None),
        ("rewriter --help", ["--help"], None),
        (f"rewriter check {seed}", ["check", seed], None),
        (f"rewriter explain {seed}", ["explain", seed], None),
        (f"rewriter apply seed-freeze {seed}", ["apply", "seed-freeze", seed], None),
    ]
    rows = []
    for op, argv, base in cases:
        row = Row("seed", 0, SEED.stat().st_size / 2**20, op, "")
        rows.append(measure(row, variants, argv, base, repeat, log))
    return rows


# --- reporting ---------------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(rows: list[Row], variants: list[Variant]) -> list[str]:
    labels = [v.label for v in variants]
    head = "| input | layers | MB | operation | protobuf CPU s |"
    rule = "|---|---:|---:|---|---:|"
    for lab in labels:
        head += f" {lab} CPU s | {lab} ratio CPU | {lab} ratio wall | {lab} peak/size |"
        rule += "---:|---:|---:|---:|"
    lines = [head + " protobuf peak/size | compared with |", rule + "---:|---|"]
    for r in rows:
        line = (
            f"| {r.input} | {r.layers or '-'} | {r.mb:.2f} | {r.op} | "
            f"{_f(r.base_med('cpu'), '.3f')} |"
        )
        for lab in labels:
            peak = r.med(lab, "peak_mb")
            line += (
                f" {_f(r.med(lab, 'cpu'), '.3f')} | {_f(r.ratio(lab, 'cpu'), '.2f')} "
                f"| {_f(r.ratio(lab, 'wall'), '.2f')} "
                f"| {_f(peak / r.mb if peak else None, '.1f')} |"
            )
        bpeak = r.base_med("peak_mb")
        refused = any(s.rc > 1 for runs in r.ours.values() for s in runs)
        note = " (exit 2: refused)" if refused else ""
        line += f" {_f(bpeak / r.mb if bpeak else None, '.1f')} | {r.compares}{note} |"
        lines.append(line)
    return lines


def startup_table(rows: list[Row], variants: list[Variant]) -> list[str]:
    labels = [v.label for v in variants]
    head = "| command |" + "".join(
        f" {lab} wall s | {lab} CPU s | {lab} peak MB |" for lab in labels
    )
    lines = [head, "|---|" + "---:|---:|---:|" * len(labels)]
    for r in rows:
        cells = ""
        for lab in labels:
            if r.ours.get(lab):
                cells += (
                    f" {_f(r.med(lab, 'wall'), '.3f')} | {_f(r.med(lab, 'cpu'), '.3f')} "
                    f"| {_f(r.med(lab, 'peak_mb'), '.0f')} |"
                )
            elif r.base:  # a reference process: the same in every column
                cells += (
                    f" {_f(r.base_med('wall'), '.3f')} | {_f(r.base_med('cpu'), '.3f')} "
                    f"| {_f(r.base_med('peak_mb'), '.0f')} |"
                )
        lines.append(f"| `{r.op}` |{cells}")
    return lines


def machine(load_before: str, load_after: str) -> list[str]:
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
        f"- load average (1, 5, 15 min) at the start: {load_before}; at the end: {load_after}",
    ]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def compile_tree(package: Path) -> None:
    """Write the package's bytecode first, as pip does on install: without it (e.g. under
    PYTHONDONTWRITEBYTECODE=1) every process compiles every module again, ~0.1 s."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def export_tree(rev: str, dest: Path) -> Path:
    """The package (and its recipes) as of git ``rev``, for ``--before``: run by putting it
    first on PYTHONPATH, ahead of the editable install."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "rewriter", "recipes", "proto"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1k and 10k layers, one real net")
    ap.add_argument("--repeat", type=int, default=None, help="pairs per row (default 5/3/1)")
    ap.add_argument("--before", metavar="REV", default=None, help="also run git REV's code")
    ap.add_argument("--sizes", default=None, help="BN+Scale ResNet sizes, e.g. 1000,10000")
    ap.add_argument("--no-startup", action="store_true")
    ap.add_argument("--startup-only", action="store_true", help="only the start-up table")
    ap.add_argument("--write", type=Path, default=None, help="also write the report (markdown)")
    ap.add_argument("--json", type=Path, default=None, help="also write every sample (JSON)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load_before = _load()
    started = time.perf_counter()
    sizes = [
        int(s)
        for s in (args.sizes or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")
    ]

    def reps(n: int) -> int:
        return args.repeat or (5 if n <= 2000 else 3 if n <= 20_000 else 1)

    rows: list[Row] = []
    starts: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rewriter-bench-") as tmp:
        work = Path(tmp)
        variants = [Variant("ours")]
        compile_tree(REPO / "rewriter")
        if args.before:
            tree = export_tree(args.before, work / "before")
            compile_tree(tree / "rewriter")
            env = dict(os.environ, PYTHONPATH=str(tree))
            rev = subprocess.run(
                ["git", "rev-parse", "--short", args.before],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            variants.append(Variant(f"before ({args.before} {rev})", env))
        for n in [] if args.startup_only else sizes:
            path = work / f"resnet_bn{n}.prototxt"
            path.write_text(SHAPES["resnet_bn"](n))
            layers = len(re.findall(r"^layer \{", path.read_text(), re.M))
            rows += bench_net("resnet_bn", layers, path, variants, reps(n), work, log)
        reals = list(REAL_NETS.items())[: 0 if args.startup_only else 1 if args.quick else None]
        for label, rel in reals:
            path = CORPUS / rel
            if path.is_file():
                layers = len(re.findall(r"^layers? \{", path.read_text(), re.M))
                rows += bench_net(label, layers, path, variants, reps(layers), work, log)
            else:
                log(f"  (no {path}: skipped)")
        if not (args.quick or args.startup_only):
            # the old harness's shapes (no BatchNorm/Scale), for comparison: 2 pairs each
            # (not the old "resnet": its first Eltwise adds 3 channels to 64, and check now
            # refuses it as Caffe does)
            for shape in ("chain", "densenet"):
                path = work / f"{shape}10000.prototxt"
                path.write_text(SHAPES[shape](10_000))
                rows += bench_net(shape, 10_000, path, variants, args.repeat or 2, work, log)
            rows.append(bench_upgrade(10_000, variants, args.repeat or 2, work, log))
        if not args.no_startup:
            starts = startup(variants, args.repeat or 9, log)
    took = time.perf_counter() - started

    cmd = f"python bench/run.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    report = [
        "# Benchmark results",
        "",
        "Output of `bench/run.py` (what each column compares: docs/benchmarks.md). Whole",
        "processes; each run of ours is paired with a run of the protobuf-only baseline process",
        "next to it, and a ratio is the median of the per-pair ratios.",
        "",
        "## Machine",
        "",
        *machine(load_before, _load()),
        f"- took {took / 60:.1f} min",
        "",
        f"Command: `{cmd.rstrip()}`",
        "",
        "## Operations",
        "",
        *table(rows, variants),
        "",
    ]
    if starts:
        report += ["## Start-up (whole processes, medians)", "", *startup_table(starts, variants)]
    text = "\n".join(report) + "\n"
    print(text)
    if args.write is not None:
        args.write.write_text(text)
    if args.json is not None:
        dump = [
            {
                "input": r.input,
                "layers": r.layers,
                "mb": r.mb,
                "op": r.op,
                "protobuf": [s.__dict__ for s in r.base],
                "ours": {k: [s.__dict__ for s in v] for k, v in r.ours.items()},
            }
            for r in rows + starts
        ]
        args.json.write_text(json.dumps(dump, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
