"""``rewriter shapes`` and ``rewriter weights``: blob/parameter shapes and pretrained weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rewriter.cli.app import EXIT_ERROR, EXIT_FOUND, EXIT_OK, app

_SHAPE_KEYS = ("batch", "channels", "height", "width", "input_shapes")
_SET_HELP = "KEY=VALUE (repeatable): batch, channels, height, width, shape.BLOB=D,D,..."


def _phase(phase: str) -> str:
    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        typer.echo(f"--phase must be TRAIN or TEST, not {phase!r}", err=True)
        raise typer.Exit(EXIT_ERROR)
    return phase


def _fmt(fmt: str) -> str:
    if fmt not in ("text", "json"):
        typer.echo(f"--format must be text or json, not {fmt!r}", err=True)
        raise typer.Exit(EXIT_ERROR)
    return fmt


def _options(settings: list[str] | None) -> dict[str, Any]:
    from rewriter.recipes.settings import parse_settings

    return parse_settings(settings or [], _SHAPE_KEYS)


@app.command()
def shapes(
    net: Annotated[Path, typer.Argument(help="A net prototxt (V0, V1 or current format).")],
    phase: Annotated[str, typer.Option("--phase", help="TRAIN or TEST")] = "TRAIN",
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="A stage (repeatable).")
    ] = None,
    level: Annotated[int, typer.Option("--level", help="The net state's level.")] = 0,
    settings: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    splits: Annotated[
        bool, typer.Option("--splits", help="Also list the Split layers Caffe inserts.")
    ] = False,
    lenient: Annotated[
        bool, typer.Option("--lenient", help="Read fork files (unknown fields ignored).")
    ] = False,
) -> None:
    """Every blob's shape and every layer's parameter shapes and counts, as Caffe sizes them."""
    from rewriter.api import load
    from rewriter.caffe.setup_checks import check_setup, refuse_or_warn
    from rewriter.caffe.shapes import render_text

    phase = _phase(phase)
    fmt = _fmt(fmt)
    options = _options(settings)
    f = load(net, lenient=lenient, root="caffe.NetParameter")
    # the shapes come from Net::Init's set-up: a check Caffe makes there that fails exits 2
    report = check_setup(f.message, phase, stages=tuple(stage or ()), level=level, **options)
    warnings = refuse_or_warn(report, net)
    result = report.shapes
    assert result is not None  # set whenever there is no error
    if fmt == "json":
        data = result.to_json()
        data["setup"] = report.to_json()
        typer.echo(json.dumps(data, indent=2))
    else:
        for line in render_text(result, show_splits=splits):
            typer.echo(line)
        for line in warnings:
            typer.echo(line, err=True)
    raise typer.Exit(EXIT_OK)


@app.command()
def weights(
    net: Annotated[Path, typer.Argument(help="The net prototxt the weights are loaded into.")],
    model: Annotated[Path, typer.Argument(help="A .caffemodel (binary NetParameter).")],
    phase: Annotated[str, typer.Option("--phase", help="TRAIN or TEST")] = "TRAIN",
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="A stage (repeatable).")
    ] = None,
    level: Annotated[int, typer.Option("--level", help="The net state's level.")] = 0,
    settings: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    lenient: Annotated[
        bool, typer.Option("--lenient", help="Read fork files (unknown fields ignored).")
    ] = False,
) -> None:
    """Which layers get pretrained weights, which start from fillers, which file layers go
    unused, and the error Caffe stops with (exit 1) when a blob count or shape differs."""
    from rewriter.api import load
    from rewriter.caffe.setup_checks import check_setup, refuse_or_warn
    from rewriter.caffe.weights import check_weights

    phase = _phase(phase)
    fmt = _fmt(fmt)
    options = _options(settings)
    from rewriter.caffe.diagnose import located

    f = load(net, lenient=lenient, root="caffe.NetParameter")
    # Net::Init sets the net up before CopyTrainedLayersFrom: its checks come first (exit 2)
    setup = check_setup(f.message, phase, stages=tuple(stage or ()), level=level, **options)
    warnings = refuse_or_warn(setup, net)
    with located(net, phase):
        report = check_weights(
            f, model, phase=phase, stages=tuple(stage or ()), level=level, **options
        )
    if fmt == "json":
        data = report.to_json()
        data["setup"] = setup.to_json()
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(setup.summary())
        for line in report.render():
            typer.echo(line)
        for line in warnings:
            typer.echo(line, err=True)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FOUND)
