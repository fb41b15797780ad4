"""``rewriter graph``: draw a net with each layer's training state and the cut gradients."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rewriter.cli.app import LenientOpt, ProtoOpt, _schema, app
from rewriter.errors import UsageError

_FORMATS = ("dot", "mermaid", "svg", "png", "html")


@app.command()
def graph(
    net: Annotated[Path, typer.Argument(help="A net prototxt (V0, V1 or current format).")],
    phase: Annotated[str, typer.Option("--phase", help="TRAIN or TEST")] = "TRAIN",
    fmt: Annotated[
        str, typer.Option("--format", help="dot, mermaid, svg, png (need Graphviz) or html")
    ] = "dot",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="A stage (repeatable).")
    ] = None,
    level: Annotated[int, typer.Option("--level", help="The net state's level.")] = 0,
    no_fold: Annotated[
        bool, typer.Option("--no-fold", help="Draw in-place layers as nodes of their own.")
    ] = False,
    lenient: LenientOpt = False,
    proto: ProtoOpt = None,
) -> None:
    """Draw the net (Caffe's view after Net::Init) with each layer's state (trainable, frozen...).

    In-place layers (a ReLU with top == bottom) are drawn inside their producer's node, as
    Netron does; Caffe's inserted splits are not drawn; a dashed red edge is a cut gradient.
    """
    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise UsageError(f"--phase must be TRAIN or TEST, not {phase!r}")
    if fmt not in _FORMATS:
        raise UsageError(f"--format must be one of {', '.join(_FORMATS)}, not {fmt!r}")
    from rewriter.api import load
    from rewriter.review.render import build_view
    from rewriter.review.render.dot import dot_binary, run_dot, to_dot
    from rewriter.review.semdiff import phase_facts
    from rewriter.util.memory import gc_paused

    if fmt in ("svg", "png") and dot_binary() is None:
        run_dot("", fmt)  # raises DotMissing with the explanation (exit 2)
    f = load(net, lenient=lenient, schema=_schema(proto), root="caffe.NetParameter")
    from rewriter.caffe.diagnose import located

    with gc_paused(), located(net, phase):
        g = f.graph(phase, stage or (), level)
        facts = phase_facts(g, g.backward())
        view = build_view(facts, title=g.net_name or net.name, fold=not no_fold)
    data: bytes
    if fmt == "dot":
        data = to_dot(view).encode("utf-8")
    elif fmt == "mermaid":
        from rewriter.review.render.mermaid import to_mermaid

        data = to_mermaid(view).encode("utf-8")
    elif fmt == "html":
        from rewriter.review.render.html import graph_page

        data = graph_page(view, str(net)).encode("utf-8")
    else:
        data = run_dot(to_dot(view), fmt)
    if output is None:
        if fmt == "png" and sys.stdout.isatty():
            raise UsageError("refusing to write PNG to a terminal: use -o FILE.png")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    from rewriter.text.fileio import write_text_atomic

    # surrogateescape round-trips any bytes, so binary PNG data is written unchanged
    write_text_atomic(output, data.decode("utf-8", "surrogateescape"))
