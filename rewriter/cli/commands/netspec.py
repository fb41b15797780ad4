"""``rewriter netspec run SCRIPT`` and ``rewriter export netspec NET``.

``netspec run`` executes a pycaffe NetSpec script (arbitrary Python: only ever on this explicit
command) with rewriter's Caffe-free ``caffe`` module and prints or saves the nets it writes.
``export netspec`` writes a NetSpec script that rebuilds a prototxt net exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewriter.cli.app import LenientOpt, app

netspec_app = typer.Typer(
    name="netspec",
    help="pycaffe NetSpec scripts: run one without Caffe (run), rewrite one by a recipe (apply).",
    no_args_is_help=True,
)
export_app = typer.Typer(
    name="export",
    help="Write a net in another form: netspec (a pycaffe NetSpec script) or onnx (an ONNX model).",
    no_args_is_help=True,
)
app.add_typer(netspec_app, name="netspec")
app.add_typer(export_app, name="export")


def _output_path(base: Path, name: str) -> Path:
    rel = Path(name)
    if rel.is_absolute():
        rel = Path(rel.name)
    parts = [p for p in rel.parts if p not in ("..", ".")]
    if parts and parts[0] == "_abs":
        parts = parts[1:]
    return base.joinpath(*parts) if parts else base / "net.prototxt"


@netspec_app.command("run")
def run(
    script: Annotated[Path, typer.Argument(help="The NetSpec script (its code is executed).")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write the net here (a directory when the script writes several files).",
        ),
    ] = None,
    function: Annotated[
        str | None,
        typer.Option("--function", help="Call this function of the script; it returns the net."),
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="An argument for the script's sys.argv.")
    ] = None,
) -> None:
    """Run a NetSpec script with a Caffe-free `caffe` module and print the nets it writes.

    This EXECUTES the script's Python code (with your permissions). It runs in a temporary
    working directory; the files it opens for writing are collected instead of written.
    """
    from rewriter.errors import UsageError
    from rewriter.netspec.evaluator import run_script
    from rewriter.text.fileio import write_text_atomic

    if not script.is_file():
        raise UsageError(f"{script}: no such script")
    result = run_script(script, function=function, argv=arg or ())
    if result.stdout:
        typer.echo(result.stdout, err=True, nl=False)
    outputs = result.outputs
    if not outputs:
        raise UsageError(
            f"{script}: the script wrote no files; if a function builds the net, "
            "name it with --function NAME"
        )
    for out in outputs:
        if out.kind == "other" and out.error:
            typer.echo(f"{script}: warning: {out.name} is not Caffe text format", err=True)
    if output is None:
        if len(outputs) == 1:
            typer.echo(outputs[0].text, nl=False)
        else:
            for out in outputs:
                typer.echo(f"# ==> {out.name} <==")
                typer.echo(out.text, nl=not out.text.endswith("\n") and bool(out.text))
        return
    if len(outputs) == 1 and not output.is_dir():
        write_text_atomic(output, outputs[0].text)
        typer.echo(f"wrote {output} ({outputs[0].name})", err=True)
        return
    output.mkdir(parents=True, exist_ok=True)
    for out in outputs:
        target = _output_path(output, out.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, out.text)
        typer.echo(f"wrote {target}", err=True)


@export_app.command("netspec")
def export_netspec(
    net: Annotated[Path, typer.Argument(help="A current-format (V2) net prototxt.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the script here.")
    ] = None,
    writes: Annotated[
        str | None,
        typer.Option("--writes", help="File the script writes when run (default: NET's name)."),
    ] = None,
    lenient: LenientOpt = False,
) -> None:
    """Write a pycaffe NetSpec script that rebuilds NET exactly (equal protobuf message)."""
    from rewriter.netspec.export import export_file
    from rewriter.text.fileio import write_text_atomic

    text = export_file(net, output=writes, lenient=lenient)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(output, text)
        typer.echo(f"wrote {output}", err=True)


@netspec_app.command("apply")
def apply_script(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[RECIPE] SCRIPT",
            help="A built-in recipe name or a recipe file, then a NetSpec script (its code is "
            "executed). With --step, the only argument is the script.",
        ),
    ],
    step: Annotated[
        list[str] | None,
        typer.Option("--step", help="A one-off step instead of a recipe (repeatable)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Recipe option: key=value (repeatable).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the rewritten script here.")
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Rewrite the script (atomically).")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the script would change.")
    ] = False,
    phase: Annotated[
        str, typer.Option("--phase", help="Default phase of the selectors: TRAIN or TEST.")
    ] = "TRAIN",
    function: Annotated[
        str | None,
        typer.Option("--function", help="The script's function that returns the net."),
    ] = None,
) -> None:
    """Apply a recipe to a NetSpec script: edit the calls that create the affected layers.

    Prints a unified diff of the script (default), or writes it with -o / --in-place. The
    script is run before and after the edit (this EXECUTES its code); the rewritten script
    must produce exactly the nets the recipe makes of the original's, else nothing is written
    and the exit code is 2. Layers created by a helper or a loop for which the recipe wants
    different things are reported with file:line, never guessed.
    """
    import sys

    from rewriter.errors import UsageError
    from rewriter.netspec.codemod import apply_file, script_diff
    from rewriter.recipes.recipe import Recipe, coerce_option, parse_step_spec, recipe_from_steps
    from rewriter.text.fileio import write_text_atomic

    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise UsageError(f"--phase must be TRAIN or TEST, not {phase!r}")
    if step:
        if len(args) != 1:
            raise UsageError("with --step, give exactly one SCRIPT")
        recipe = recipe_from_steps([parse_step_spec(s) for s in step])
        script = args[0]
    else:
        if len(args) != 2:
            raise UsageError("netspec apply needs a RECIPE and a SCRIPT")
        recipe = Recipe.find(args[0])
        script = args[1]
    if output is not None and in_place:
        raise UsageError("use either -o/--output or --in-place, not both")
    if check and (output is not None or in_place):
        raise UsageError("--check writes nothing; drop -o/--in-place")
    opts = recipe.all_options()
    values = {}
    for item in set_ or []:
        name, eq, text = item.partition("=")
        if not eq or name not in opts:
            raise UsageError(f"--set {item}: recipe '{recipe.name}' has no option {name!r}")
        values[name] = coerce_option(opts[name], text)
    if not Path(script).is_file():
        raise UsageError(f"{script}: no such script")
    result = apply_file(script, recipe, function=function, phase=phase, options=values)
    for w in result.warnings:
        typer.echo(f"{script}: warning: {w}", err=True)
    if result.problems:
        typer.echo(f"{script}: NetSpec script not rewritten, nothing written:", err=True)
        for p in result.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(2)
    for c in result.changes:
        typer.echo(str(c), err=True)
    if check:
        if result.changed:
            typer.echo(f"{script}: would change ({len(result.changes)} edit(s))")
            raise typer.Exit(1)
        return
    if output is not None or in_place:
        target = output if output is not None else Path(script)
        write_text_atomic(target, result.code)
        typer.echo(
            f"{script}: {len(result.changes)} edit(s), verified, written to {target}", err=True
        )
        return
    sys.stdout.write(script_diff(result, script))
    state = "verified" if result.verified else "nothing to change"
    typer.echo(f"{script}: {len(result.changes)} edit(s), {state}", err=True)
