"""``rewriter diff``: semantic diff of nets and solvers; ``rewriter textconv`` for ``git diff``.

Heavy imports (protobuf, deepdiff) happen inside the commands, so ``rewriter --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rewriter.cli.app import (
    EXIT_FOUND,
    EXIT_OK,
    KindOpt,
    LenientOpt,
    ProtoOpt,
    _root_for,
    _schema,
    app,
)
from rewriter.errors import UsageError

if TYPE_CHECKING:
    from rewriter.review.semdiff import DiffResult

_FORMATS = ("text", "json", "markdown", "html")
_NULL = {"/dev/null", "nul", "NUL"}


def _use_color(mode: str, output: Path | None) -> bool:
    if mode == "always":
        return True
    if mode == "never" or output is not None or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _render(result: DiffResult, fmt: str, color: bool) -> str:
    if fmt == "json":
        from rewriter.review.render.json_ import render_json

        return render_json(result) + "\n"
    if fmt == "markdown":
        from rewriter.review.render.markdown import render_markdown

        return render_markdown(result)
    if fmt == "html":
        from rewriter.review.render.html import render_html

        return render_html(result)
    from rewriter.review.render.text import render_text

    return render_text(result, color=color)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from rewriter.text.fileio import write_text_atomic

    write_text_atomic(output, text)


@app.command()
def diff(
    paths: Annotated[
        list[Path],
        typer.Argument(help="OLD NEW (two files or two directories), or FILE... with --git."),
    ],
    git: Annotated[
        str | None,
        typer.Option("--git", metavar="REV", help="Compare each FILE with its version at REV."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, json, markdown or html")] = "text",
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 1 when there are semantic changes.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    color: Annotated[
        str, typer.Option("--color", help="auto (on a terminal), always or never")
    ] = "auto",
    lenient: LenientOpt = False,
    kind: KindOpt = None,
    proto: ProtoOpt = None,
) -> None:
    """What a change does to a net and to training: layers, wiring, backward, frozen params."""
    from rewriter.review import semdiff

    if fmt not in _FORMATS:
        raise UsageError(f"--format must be one of {', '.join(_FORMATS)}, not {fmt!r}")
    if color not in ("auto", "always", "never"):
        raise UsageError(f"--color must be auto, always or never, not {color!r}")
    schema = _schema(proto)
    root = _root_for(kind)
    files: list[semdiff.FileDiff] = []
    if git is not None:
        if not paths:
            raise UsageError("--git REV needs at least one FILE")
        for p in paths:
            if p.is_dir():
                raise UsageError(f"{p}: --git compares files, not directories")
            files.append(semdiff.diff_git(p, git, lenient=lenient, schema=schema, root=root))
        result = semdiff.DiffResult(files)
    else:
        if len(paths) != 2:
            raise UsageError(
                f"diff takes OLD and NEW (two files or two directories), got {len(paths)} path(s)"
                "; use --git REV FILE to compare with a git revision"
            )
        old, new = paths
        if old.is_dir() and new.is_dir():
            result = semdiff.diff_dirs(old, new, lenient=lenient, schema=schema, root=root)
        elif old.is_dir() or new.is_dir():
            raise UsageError(f"{old} and {new}: compare two files or two directories")
        else:
            from rewriter.text.fileio import read_text

            # Both read (old first), then handed over without a local reference: diff_texts
            # drops each text once its side is parsed.
            texts = [None if str(p) in _NULL else read_text(p) for p in (old, new)]
            fd = semdiff.diff_texts(
                texts.pop(0), texts.pop(0), str(old), str(new),
                lenient=lenient, schema=schema, root=root,
            )  # fmt: skip
            result = semdiff.DiffResult([fd])
    _emit(_render(result, fmt, _use_color(color, output)), output)
    raise typer.Exit(EXIT_FOUND if exit_code and result.has_changes else EXIT_OK)


@app.command()
def textconv(
    file: Annotated[Path, typer.Argument(help="A net or solver prototxt.")],
) -> None:
    """Print a normalised, one-value-per-line view of a file for git's textconv.

    Layers are addressed by name (``layer[conv1].param[0].lr_mult = 0``) and each layer's
    training state per phase is appended, so ``git diff`` shows what changed, not which lines
    moved. Text that does not parse is printed unchanged.
    """
    from rewriter.review.semdiff import textconv as convert
    from rewriter.text.fileio import read_text

    sys.stdout.write(convert(read_text(file, binary_ok=True), str(file)))
    sys.stdout.flush()
