"""Where the memory of one `explain` goes, stage by stage (RSS growth relative to the file size).

    python bench/mem_stages.py chain 20000
    python bench/mem_stages.py resnet 100000

Each line is the resident-set growth of one stage (tree, bound protobuf message, TRAIN graph,
backward pass) divided by the file size, and the high-water mark so far. RSS, not tracemalloc,
so protobuf's C allocations count. bench/run.py measures whole operations; this splits one.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gen  # noqa: E402


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> int:
    shape, n = argv[0], int(argv[1])
    text = getattr(gen, shape)(n)
    mb = len(text.encode()) / 2**20

    from rewriter import parse
    from rewriter.caffe.graph import build_graph
    from rewriter.schema.bind import NET, bind

    warm = bind(parse(gen.chain(10)), root=NET)  # imports, schema, caches
    build_graph(warm.message, phase="TRAIN").backward()
    del warm
    gc.collect()
    base = _status("VmRSS")
    print(f"{shape} {n}: file {mb:.1f} MB, base RSS {base:.0f} MB")
    last = base

    def report(stage: str) -> None:
        nonlocal last
        now = _status("VmRSS")
        hwm = _status("VmHWM")
        print(f"  {stage:9} +{(now - last) / mb:5.1f}x   peak so far {(hwm - base) / mb:5.1f}x")
        last = now

    doc = parse(text)
    report("tree")
    bound = bind(doc, root=NET)
    report("message")
    graph = build_graph(bound.message, phase="TRAIN")
    report("graph")
    graph.backward()
    report("backward")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
