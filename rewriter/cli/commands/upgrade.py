"""``rewriter upgrade``: Caffe's legacy-format upgrade as a minimal diff (nets, solvers, models)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rewriter.cli.app import LenientOpt, app

_STEP_NAMES = (
    ("V0LayerParameter", "V0 layers"),
    ("transformation parameters", "data transformation fields"),
    ("V1LayerParameter", "V1 layers"),
    ("input fields", "input fields"),
    ("batch norm", "BatchNorm params"),
    ("'solver_type'", "solver_type"),
)


def _steps(messages: list[str]) -> str:
    names = [
        short
        for msg in messages
        if msg.startswith("Attempting to upgrade")
        for key, short in _STEP_NAMES
        if key in msg
    ]
    return ", ".join(dict.fromkeys(names))


def _emit(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    data = text.encode("utf-8", "surrogateescape")
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(data)
        buffer.flush()
    else:  # pragma: no cover - only odd embedding environments
        stream.write(data.decode("utf-8", "replace"))


def _diff(old: str, new: str, path: str) -> str:
    import difflib

    out: list[str] = []
    for line in difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), path, path
    ):
        out.append(line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)


def _is_binary(path: Path, kind: str | None) -> bool:
    if kind is not None:
        return kind == "caffemodel"
    if path.suffix.lower() == ".caffemodel":
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b"\x00" in head


def _expand(paths: list[Path]) -> list[Path]:
    from rewriter.errors import UsageError

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.prototxt") if q.is_file())
            if not found:
                raise UsageError(f"{p}: no *.prototxt files in this directory")
            out.extend(found)
        else:
            out.append(p)
    return out


@app.command()
def upgrade(
    files: Annotated[
        list[Path],
        typer.Argument(help="Nets, solvers or .caffemodel files; a directory: its *.prototxt."),
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the upgraded file here (one input file only)."),
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Rewrite each file in place (atomically).")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if a file needs upgrading.")
    ] = False,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="net, solver or caffemodel (detected by default)."),
    ] = None,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="With the default diff: exit 1 if there is one.")
    ] = False,
    lenient: LenientOpt = False,
    v1_type: Annotated[
        list[str] | None,
        typer.Option(
            "--v1-type",
            help="TOKEN=Type: the V2 type of a fork's V1 layer type (with --lenient; repeatable).",
        ),
    ] = None,
) -> None:
    """Upgrade legacy nets, solvers and .caffemodels like Caffe, keeping every comment.

    Prints a unified diff by default and writes nothing (see docs/upgrade.md).
    """
    from rewriter.errors import RewriterError, UsageError
    from rewriter.text.fileio import read_text, write_text_atomic

    if sum((output is not None, in_place, check)) > 1:
        raise UsageError("use only one of -o/--output, --in-place and --check")
    if kind is not None and kind not in ("net", "solver", "caffemodel"):
        raise UsageError(f"--kind must be net, solver or caffemodel, not {kind!r}")
    v1_types: dict[str, str] = {}
    for item in v1_type or []:
        token, _, name = item.partition("=")
        if not token or not name:
            raise UsageError(f"--v1-type takes TOKEN=Type (e.g. CROP=Crop), not {item!r}")
        v1_types[token] = name
    if v1_types and not lenient:
        raise UsageError("--v1-type needs --lenient (a fork's V1 type is not in BVLC's schema)")
    paths = _expand(files)
    if output is not None and len(paths) != 1:
        raise UsageError("-o/--output takes exactly one input file")
    failed = found = False
    for path in paths:
        try:
            if _is_binary(path, kind):
                changed = _binary(path, output, in_place, check)
            else:
                from rewriter.upgrade.document import parse_for_upgrade, upgrade_document

                text = read_text(path)
                # No name for the tree: upgrade_document frees it once the text is rewritten.
                result = upgrade_document(
                    parse_for_upgrade(text, str(path), kind=kind, lenient=lenient),
                    kind=kind,
                    lenient=lenient,
                    v1_types=v1_types,
                )
                changed = result.changed
                new = result.document.code
                for note in result.deliberate_differences:
                    _emit(f"{path}: note: {note}\n", err=True)
                for warning in result.warnings:
                    _emit(f"{path}: warning: {warning}\n", err=True)
                if not changed:
                    _emit(f"{path}: already in the current format\n", err=True)
                    if output is not None:
                        write_text_atomic(output, text)
                elif check:
                    _emit(f"{path}: needs upgrading ({_steps(result.messages)})\n")
                elif output is not None or in_place:
                    target = output if output is not None else path
                    write_text_atomic(target, new)
                    _emit(f"{path}: upgraded ({_steps(result.messages)}) -> {target}\n", err=True)
                else:
                    _emit(_diff(text, new, str(path)))
            found = found or changed
        except RewriterError as e:
            failed = True
            message = str(e)
            if not message.startswith(str(path)):
                message = f"{path}: {message}"
            _emit(message.rstrip("\n") + "\n", err=True)
            if not lenient:
                from rewriter.errors import SchemaErrors
                from rewriter.schema.forkhint import fork_hint

                diags = e.diagnostics if isinstance(e, SchemaErrors) else []
                hint = fork_hint(diags, "upgrade", [str(path)], proto=False)
                if hint is not None:
                    _emit(hint + "\n", err=True)
    if failed:
        raise typer.Exit(2)
    if found and (check or exit_code):
        raise typer.Exit(1)


def _binary(path: Path, output: Path | None, in_place: bool, check: bool) -> bool:
    from rewriter.upgrade.caffemodel import upgrade_caffemodel

    target = output if output is not None else path if in_place else None
    result = upgrade_caffemodel(path, target)
    steps = _steps(result.messages)
    if not result.changed:
        _emit(f"{path}: already in the current format\n", err=True)
    elif check:
        _emit(f"{path}: needs upgrading ({steps})\n")
    elif target is not None:
        _emit(
            f"{path}: upgraded ({steps}; {result.layers_in} -> {result.layers_out} layers, "
            f"{result.blobs} weight blobs copied) -> {target}\n",
            err=True,
        )
    else:
        _emit(
            f"{path}: would upgrade ({steps}; {result.layers_in} -> {result.layers_out} layers); "
            "binary files have no diff: use -o OUT or --in-place to write\n"
        )
    return result.changed
