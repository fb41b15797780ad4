"""`rewriter graph` and the DOT / Mermaid / HTML renderers, checked by the real tools:
Graphviz's ``dot`` renders the DOT, Mermaid's own parser (mermaid.min.js from the npm package,
run in headless Chromium) parses the Mermaid, and headless Chromium screenshots the HTML."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from rewriter.api import load
from rewriter.caffe.states import LAYER_STATES
from rewriter.review.render import build_view
from rewriter.review.render.dot import to_dot
from rewriter.review.render.mermaid import CLASS_DEFS, to_mermaid
from rewriter.review.semdiff import phase_facts

from .conftest import REPO, SHARED, need_shared
from .test_diff import CLI, SEED, frozen_seed, mermaid_block, run

DOT = shutil.which("dot")
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


def mermaid_js() -> Path | None:
    """mermaid.min.js from the npm package `mermaid` (MERMAID_JS, or a known install place)."""
    candidates = [
        os.environ.get("MERMAID_JS", ""),
        str(REPO / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"),
        str(Path.home() / ".cache" / "rewriter-node" / "node_modules" / "mermaid" / "dist"
            / "mermaid.min.js"),
    ]  # fmt: skip
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}", *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip


def mermaid_parse(code: str, tmp: Path) -> str:
    """Run Mermaid's parser and renderer on ``code``: 'OK <nodes> <edges>' or 'ERROR ...'."""
    js = mermaid_js()
    if js is None or CHROMIUM is None:
        pytest.skip(
            "real Mermaid parser unavailable: needs chromium and the npm package mermaid "
            "(npm install --prefix ~/.cache/rewriter-node mermaid, or set MERMAID_JS)"
        )
    page = tmp / "mermaid.html"
    page.write_text(
        "<!DOCTYPE html><html><body><div id='out'>PENDING</div>"
        f"<script src='{js.as_uri()}'></script><script>\n"
        f"const code = {json.dumps(code)};\n"
        """(async () => {
  const out = document.getElementById('out');
  try {
    mermaid.initialize({startOnLoad: false, securityLevel: 'strict'});
    await mermaid.parse(code);
    const r = await mermaid.render('g', code);
    const nodes = (r.svg.match(/class="node [^"]*"/g) || []).length;
    const edges = (r.svg.match(/class="[^"]*flowchart-link[^"]*"/g) || []).length;
    out.textContent = 'OK ' + nodes + ' ' + edges;
  } catch (e) { out.textContent = 'ERROR ' + e; }
})();
</script></body></html>"""
    )
    res = chromium("--virtual-time-budget=20000", "--dump-dom", page.as_uri(), tmp=tmp)
    m = re.search(r"<div id=\"out\">(.*?)</div>", res.stdout, re.S)
    assert m, res.stderr[-2000:]
    return m.group(1)


NASTY = [
    'a "quoted" name',
    "back\\slash",
    "<tag>&amp;",
    "end",
    "x-y.z/w v",
    "subgraph",
    "n0",
    "%%comment",
    "click",
    "é ü 漢",
    "#hash;",
    "a|b",
    "[x]{y}(z)",
    "style",
]


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nasty_net() -> str:
    """A chain whose layer and blob names are every character Mermaid or DOT could choke on;
    each conv has an in-place ReLU, and the last but one cuts its gradient."""
    parts = [
        'name: "nasty"\n',
        'layer { name: "data" type: "Input" top: "data" top: "label"\n'
        "  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }\n",
    ]
    prev = "data"
    for i, name in enumerate(NASTY):
        pd = "  propagate_down: false\n" if i == len(NASTY) - 2 else ""
        parts.append(
            f'layer {{ name: {_q(name)} type: "Convolution" bottom: {_q(prev)} top: {_q(name)}\n'
            f"{pd}  convolution_param {{ num_output: 4 kernel_size: 1 }} }}\n"
            f'layer {{ name: {_q(name + " relu")} type: "ReLU" bottom: {_q(name)} '
            f"top: {_q(name)} }}\n"
        )
        prev = name
    parts.append(
        f'layer {{ name: "fc" type: "InnerProduct" bottom: {_q(prev)} top: "fc"\n'
        "  inner_product_param { num_output: 2 } }\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
        'top: "loss" }\n'
    )
    return "".join(parts)


@pytest.fixture()
def nasty(tmp_path: Path) -> Path:
    p = tmp_path / "nasty.prototxt"
    p.write_text(nasty_net())
    return p


def _view(path: Path, phase: str = "TRAIN", fold: bool = True):  # type: ignore[no-untyped-def]
    g = load(path).graph(phase)
    return build_view(phase_facts(g, g.backward()), fold=fold)


# --------------------------------------------------------------------------- the view


def test_seed_view_folds_in_place_layers_and_hides_splits() -> None:
    view = _view(SEED)
    conv1 = view.nodes["conv1/7x7_s2"]
    assert [m.name for m in conv1.members] == ["conv1/7x7_s2", "conv1/relu_7x7"]
    assert view.layer_node["conv1/relu_7x7"] == "conv1/7x7_s2"
    assert not any("split" in k for k in view.nodes)
    g = load(SEED).graph("TRAIN")
    in_place = [
        x for x in g.layers
        if not x.inserted_split and len(x.tops) == 1 and x.tops == x.bottoms
    ]  # fmt: skip
    assert len(view.nodes) == sum(1 for x in g.layers if not x.inserted_split) - len(in_place)
    # the split after pool2 is drawn as two edges from pool2 itself
    assert {e.target for e in view.edges if e.source == "pool2/3x3_s2"} == {
        "test/5x5_reduce",
        "test/pool",
    }
    unfolded = _view(SEED, fold=False)
    assert len(unfolded.nodes) == sum(1 for x in g.layers if not x.inserted_split)


def test_seed_cut_edges_are_where_caffe_sends_no_gradient() -> None:
    """Caffe's log: test/pool does not need backward (its reader sets propagate_down: false),
    so the gradient is cut on both edges of that branch and nowhere else."""
    need_shared()
    log = (SHARED / "seed" / "seed_caffe_train_log.txt").read_text()
    assert "test/pool does not need backward computation." in log
    view = _view(SEED)
    cut = {(e.source, e.target) for e in view.edges if e.gradient == "cut"}
    assert cut == {("pool2/3x3_s2", "test/pool"), ("test/pool", "test/pool_proj")}
    states = {k: n.state for k, n in view.nodes.items()}
    assert states["test/pool"] == "no backward"
    assert states["conv1/7x7_s2"] == "trainable"
    assert states["data"] == "no backward"


# --------------------------------------------------------------------------- DOT


@pytest.mark.skipif(DOT is None, reason="Graphviz 'dot' not installed (apt-get install graphviz)")
def test_dot_output_renders_with_graphviz(tmp_path: Path, nasty: Path) -> None:
    for net in (SEED, nasty):
        res = run("graph", str(net), "--format", "dot")
        assert res.returncode == 0, res.stderr
        assert DOT is not None
        svg = subprocess.run(
            [DOT, "-Tsvg"], input=res.stdout, capture_output=True, text=True, timeout=120
        )
        assert svg.returncode == 0, svg.stderr
        assert "Warning" not in svg.stderr and "Error" not in svg.stderr, svg.stderr
        view = _view(net)
        # every layer node, plus the legend: one node per layer state of the vocabulary
        assert svg.stdout.count('class="node"') == len(view.nodes) + len(LAYER_STATES)
        assert svg.stdout.count('class="edge"') == len(view.edges)
    # every nasty name is drawn, escaped
    import html

    res = run("graph", str(nasty), "--format", "svg")
    assert res.returncode == 0, res.stderr
    text = html.unescape(res.stdout)
    for name in NASTY:
        assert name in text, name


@pytest.mark.skipif(DOT is None, reason="Graphviz 'dot' not installed (apt-get install graphviz)")
def test_png_output_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "seed.png"
    res = run("graph", str(SEED), "--format", "png", "-o", str(out))
    assert res.returncode == 0, res.stderr
    width, height, pixels = read_png(out.read_bytes())
    assert width > 200 and height > 500
    assert len(set(pixels)) > 10


def test_svg_without_graphviz_says_so_and_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    for fmt in ("svg", "png"):
        res = subprocess.run(
            [*CLI, "graph", str(SEED), "--format", fmt],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert res.returncode == 2
        assert "Graphviz" in res.stderr and "'dot'" in res.stderr
        assert "Traceback" not in res.stderr
    # html falls back to Mermaid source with a note, fetching nothing
    page = tmp_path / "g.html"
    res = subprocess.run(
        [*CLI, "graph", str(SEED), "--format", "html", "-o", str(page)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    text = page.read_text()
    assert '<pre class="mermaid">' in text and "not installed" in text
    assert "<script" not in text and "<svg" not in text


# --------------------------------------------------------------------------- Mermaid


def check_mermaid_structure(code: str) -> tuple[int, int]:
    """Every node referenced is defined, ids are safe, classes have a classDef, labels hold no
    raw quote; returns (nodes, edges)."""
    lines = code.strip("\n").splitlines()
    assert lines[0].startswith("flowchart ")
    defined: set[str] = set()
    used: set[str] = set()
    classes_used: set[str] = set()
    class_defs: set[str] = set()
    edges = 0
    link_styles: list[int] = []
    for line in lines[1:]:
        s = line.strip()
        if s.startswith("%%"):
            continue
        if m := re.fullmatch(r'(\w+)\["(.*)"\]', s):
            assert '"' not in m.group(2), s
            defined.add(m.group(1))
        elif m := re.fullmatch(r'(\w+) (-->|-\.->)\|"([^"]*)"\| (\w+)', s):
            used.update((m.group(1), m.group(4)))
            edges += 1
        elif m := re.fullmatch(r"classDef (\w+) (\S+)", s):
            class_defs.add(m.group(1))
        elif m := re.fullmatch(r"class ([\w,]+) (\w+)", s):
            used.update(m.group(1).split(","))
            classes_used.add(m.group(2))
        elif m := re.fullmatch(r"linkStyle ([\d,]+) (\S+)", s):
            link_styles += [int(x) for x in m.group(1).split(",")]
        else:
            raise AssertionError(f"unexpected Mermaid line: {s!r}")
    assert all(re.fullmatch(r"n\d+", i) for i in defined | used)
    assert used <= defined
    assert classes_used == class_defs and class_defs <= set(CLASS_DEFS)
    assert all(0 <= i < edges for i in link_styles)
    return len(defined), edges


def test_mermaid_structure_on_seed_and_nasty_names(nasty: Path) -> None:
    for net in (SEED, nasty):
        res = run("graph", str(net), "--format", "mermaid")
        assert res.returncode == 0, res.stderr
        view = _view(net)
        assert check_mermaid_structure(res.stdout) == (len(view.nodes), len(view.edges))


def test_mermaid_is_accepted_by_mermaids_own_parser(tmp_path: Path, nasty: Path) -> None:
    for net in (SEED, nasty):
        view = _view(net)
        result = mermaid_parse(to_mermaid(view), tmp_path)
        assert result == f"OK {len(view.nodes)} {len(view.edges)}", result


def test_markdown_mermaid_block_parses(tmp_path: Path) -> None:
    frozen = frozen_seed(tmp_path)
    res = run("diff", str(SEED), str(frozen), "--format", "markdown")
    block = mermaid_block(res.stdout)
    nodes, edges = check_mermaid_structure(block)
    assert "classDef changed" in block and "classDef frozen" in block
    assert mermaid_parse(block, tmp_path) == f"OK {nodes} {edges}"


def test_markdown_of_a_change_on_nasty_names_parses(tmp_path: Path, nasty: Path) -> None:
    new = tmp_path / "new.prototxt"
    text = nasty.read_text().replace("propagate_down: false\n", "")
    new.write_text(text.replace("num_output: 4 kernel_size: 1", "num_output: 8 kernel_size: 1", 1))
    res = run("diff", str(nasty), str(new), "--format", "markdown")
    assert res.returncode == 0, res.stderr
    block = mermaid_block(res.stdout)
    nodes, edges = check_mermaid_structure(block)
    assert "gradient restored" in res.stdout
    assert mermaid_parse(block, tmp_path) == f"OK {nodes} {edges}"


# --------------------------------------------------------------------------- HTML in a browser


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium and Graphviz write)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = depth = ctype = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        pixels.extend(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return width, height, pixels


def screenshot(page: Path, tmp: Path) -> list[tuple[int, ...]]:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium): no browser test")
    png = tmp / "shot.png"
    res = chromium(f"--screenshot={png}", "--window-size=1200,900", page.as_uri(), tmp=tmp)
    assert png.is_file(), res.stderr[-2000:]
    width, height, pixels = read_png(png.read_bytes())
    assert (width, height) == (1200, 900)
    return pixels


def _hex(color: str) -> tuple[int, int, int]:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


@pytest.mark.skipif(DOT is None, reason="Graphviz 'dot' not installed (apt-get install graphviz)")
def test_graph_html_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "seed.html"
    res = run("graph", str(SEED), "--format", "html", "-o", str(page))
    assert res.returncode == 0, res.stderr
    text = page.read_text()
    assert "<svg" in text and "<script" not in text
    pixels = set(screenshot(page, tmp_path))
    assert len(pixels) > 1, "blank page"
    # the inline SVG is drawn: trainable (green) and no-backward (grey) node fills are on screen
    from rewriter.review.render.dot import FILL

    assert _hex(FILL["trainable"][0]) in pixels
    assert _hex(FILL["no backward"][0]) in pixels


@pytest.mark.skipif(DOT is None, reason="Graphviz 'dot' not installed (apt-get install graphviz)")
def test_diff_html_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    frozen = frozen_seed(tmp_path)
    page = tmp_path / "diff.html"
    res = run("diff", str(SEED), str(frozen), "--format", "html", "-o", str(page))
    assert res.returncode == 0, res.stderr
    pixels = screenshot(page, tmp_path)
    assert len(set(pixels)) > 1, "blank page"


def test_dot_of_a_diff_view_marks_the_change(tmp_path: Path) -> None:
    from rewriter.review import semdiff
    from rewriter.review.render import diff_view

    frozen = frozen_seed(tmp_path)
    fd = semdiff.diff_files(SEED, frozen)
    view = diff_view(fd)
    assert view is not None
    marked = {k for k, n in view.nodes.items() if "changed" in n.marks}
    assert marked == {"conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"}
    dot = to_dot(view)
    assert dot.count('penwidth=3, color="#ff8c00"') == 3
