"""``rewriter deploy``: make the deploy net of a train/val net (see docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewriter.cli.app import EXIT_ERROR, app


@app.command()
def deploy(
    file: Annotated[Path, typer.Argument(help="A train/val net (V1 or current format).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the deploy net here.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Rewrite FILE itself (atomically).")
    ] = False,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE (repeatable): batch, channels, height, width, output, outputs "
            "(last|all|NAME,...), stage, strip_params, strip_fillers, strip_dropout, "
            "shape.BLOB=D,D,...",
        ),
    ] = None,
    lenient: Annotated[
        bool, typer.Option("--lenient", help="Keep fields unknown to BVLC's schema.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
) -> None:
    """Turn a train/val net into a deploy net (Input layer, Softmax output, no loss/data)."""
    from rewriter.api import read
    from rewriter.recipes.deploy import DEPLOY_KEYS, deploy_document, parse_settings
    from rewriter.text.fileio import write_text_atomic

    if out is not None and output is not None:
        typer.echo("--out is the old spelling of -o/--output: give one of them", err=True)
        raise typer.Exit(EXIT_ERROR)
    out = output if output is not None else out  # --out: the old spelling, kept working
    if out is not None and in_place:
        typer.echo("give either -o/--output or --in-place, not both", err=True)
        raise typer.Exit(EXIT_ERROR)
    options = parse_settings(settings or [], DEPLOY_KEYS)
    result = deploy_document(read(file), lenient=lenient, **options)
    target = file if in_place else out
    if target is None:
        typer.echo(result.code, nl=False)
    else:
        write_text_atomic(target, result.code)
    if not quiet:
        for line in result.summary():
            typer.echo(line, err=target is None)
        if target is not None:
            typer.echo(f"wrote {target}")
