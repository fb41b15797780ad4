"""``rewriter apply``: run a recipe on nets; ``rewriter recipes``: the built-in catalogue.

Heavy modules (protobuf, deepdiff, rich) are imported inside the commands, so ``rewriter
--help`` stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rewriter.cli.app import EXIT_ERROR, EXIT_FOUND, EXIT_OK, LenientOpt, app
from rewriter.errors import UsageError

if TYPE_CHECKING:
    from rewriter.recipes.recipe import Recipe

_RED, _GREEN, _CYAN, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[36m", "\x1b[1m", "\x1b[0m"


def _color_diff(text: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith(("---", "+++")):
            out.append(_BOLD + line.rstrip("\n") + _RESET + "\n")
        elif line.startswith("@@"):
            out.append(_CYAN + line.rstrip("\n") + _RESET + "\n")
        elif line.startswith("-"):
            out.append(_RED + line.rstrip("\n") + _RESET + "\n")
        elif line.startswith("+"):
            out.append(_GREEN + line.rstrip("\n") + _RESET + "\n")
        else:
            out.append(line)
    return "".join(out)


def _use_color(mode: str) -> bool:
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _files(args: list[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(str(q) for q in p.rglob("*.prototxt") if q.is_file())
            if not found:
                raise UsageError(f"{p}: no *.prototxt files in this directory")
            out.extend(found)
        elif not p.exists():
            hint = ""
            if a.lower() in ("true", "false", "yes", "no", "1", "0"):
                hint = " (flags such as --in-place and --check take no value)"
            raise UsageError(f"{a}: no such file{hint}; nothing was written")
        else:
            out.append(a)
    return out


def _option_values(recipe: Recipe, sets: list[str]) -> dict[str, Any]:
    from rewriter.recipes.recipe import coerce_option

    opts = recipe.all_options()
    values: dict[str, Any] = {}
    for item in sets:
        name, eq, text = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--set takes key=value, not {item!r}")
        if name not in opts:
            from rewriter.recipes.common import _hint

            known = ", ".join(sorted(opts)) or "none"
            raise UsageError(
                f"--set {item}: recipe '{recipe.name}' has no option '{name}'"
                f"{_hint(name, opts)} (options: {known})"
            )
        values[name] = coerce_option(opts[name], text)
    return values


_APPLY_HELP = (
    "Apply a recipe: print a unified diff (default), or write with -o / --in-place.\n\n"
    "Every result is verified before anything is written: it re-parses and binds, it changes "
    "nothing but what the steps declared, the net's graph is intact, each step's promise holds "
    "under Caffe's analysis, and a second run changes nothing. A failed check exits 2. "
    "See docs/recipes.md.\n\n"
    "A FILE ending in .py is a pycaffe NetSpec script: it is EXECUTED (its Python code runs "
    "with your permissions, before and after the edit) and the script itself is rewritten."
)


@app.command("apply", help=_APPLY_HELP)
def apply_cmd(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[RECIPE] FILE...",
            help="A built-in recipe name or a recipe file, then nets (files or directories). "
            "With --step, every argument is a net.",
        ),
    ],
    step: Annotated[
        list[str] | None,
        typer.Option(
            "--step", help="A one-off step instead of a recipe: 'freeze upto=pool2' (repeatable)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Recipe option: key=value (repeatable).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the result here (one input).")
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Rewrite the files (atomically).")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if anything would change.")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="text (a diff) or json")] = "text",
    phase: Annotated[
        str, typer.Option("--phase", help="Default phase of the selectors: TRAIN or TEST.")
    ] = "TRAIN",
    lenient: LenientOpt = False,
    jobs: Annotated[int, typer.Option("-j", "--jobs", help="Parallel worker processes.")] = 1,
    color: Annotated[
        str, typer.Option("--color", help="auto (on a terminal), always or never")
    ] = "auto",
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary on stderr.")] = False,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="The net's .caffemodel: the weights follow the rewrite."),
    ] = None,
    weights_out: Annotated[
        Path | None,
        typer.Option("--weights-out", help="Write the new .caffemodel here (with -o/--in-place)."),
    ] = None,
) -> None:
    """Apply a recipe (see _APPLY_HELP)."""
    from rewriter.recipes.recipe import Recipe, parse_step_spec, recipe_from_steps

    if fmt not in ("text", "json"):
        raise UsageError(f"--format must be text or json, not {fmt!r}")
    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise UsageError(f"--phase must be TRAIN or TEST, not {phase!r}")
    if color not in ("auto", "always", "never"):
        raise UsageError(f"--color must be auto, always or never, not {color!r}")
    if jobs < 1:
        raise UsageError("-j must be at least 1")
    if step:
        recipe = recipe_from_steps([parse_step_spec(s) for s in step])
        inputs = list(args)
    else:
        if len(args) < 2:
            raise UsageError(
                "apply needs a RECIPE and at least one FILE (or --step 'kind key=value' and FILEs)"
            )
        recipe = Recipe.find(args[0])
        inputs = args[1:]
    if not inputs:
        raise UsageError("apply needs at least one FILE")
    files = _files(inputs)
    if output is not None and len(files) != 1:
        raise UsageError("-o/--output takes exactly one input file; use --in-place for many")
    if output is not None and in_place:
        raise UsageError("use either -o/--output or --in-place, not both")
    if check and (output is not None or in_place):
        raise UsageError("--check writes nothing; drop -o/--in-place")
    values = _option_values(recipe, set_ or [])
    recipe.option_values(values)  # required options are reported before any file is read

    if weights is not None or weights_out is not None:
        results = [
            _run_pair(
                files, recipe, values, phase, lenient, weights, weights_out, output, in_place, check
            )
        ]
    else:
        # the diff is printed only as text to stdout, and is part of the json
        with_diff = fmt == "json" or not (check or output is not None or in_place)
        results = _run_all(files, recipe, values, phase, lenient, jobs, with_diff, fmt == "json")

    errors = 0
    changed = 0
    for data in results:
        if not data["ok"]:
            errors += 1
            continue
        if data.get("written"):
            changed += 1
            continue
        if data["changed"]:
            changed += 1
            if in_place:
                _write(data["path"], data["code"])
        if output is not None:
            _write(str(output), data["code"] if data["changed"] else _read(data["path"]))
    if fmt == "json":
        for data in results:
            data.pop("code", None)
        doc = {"recipe": recipe.name, "files": results}
        typer.echo(json.dumps(doc, indent=2, default=str))
    else:
        use_color = _use_color(color)
        for data in results:
            if not data["ok"]:
                typer.echo(data["error"], err=True)
                continue
            for w in data["warnings"]:
                typer.echo(f"{data['path']}: warning: {w}", err=True)
            if check:
                if data["changed"]:
                    typer.echo(f"{data['path']}: would change ({_change_count(data)} change(s))")
                continue
            if output is None and not in_place and data.get("diff"):
                text = data["diff"]
                sys.stdout.write(_color_diff(text) if use_color else text)
            if not quiet:
                typer.echo(_summary(data, written=bool(output or in_place)), err=True)
        sys.stdout.flush()
    if errors:
        raise typer.Exit(EXIT_ERROR)
    if check and changed:
        raise typer.Exit(EXIT_FOUND)
    raise typer.Exit(EXIT_OK)


def _run_pair(
    files: list[str],
    recipe: Recipe,
    values: dict[str, Any],
    phase: str,
    lenient: bool,
    weights: Path | None,
    weights_out: Path | None,
    output: Path | None,
    in_place: bool,
    check: bool,
) -> dict[str, Any]:
    """One net and its weights: both written (with -o/--in-place and --weights-out) or neither."""
    from rewriter.recipes.engine import run_file

    if weights is None:
        raise UsageError("--weights-out needs --weights IN.caffemodel")
    if len(files) != 1:
        raise UsageError("--weights goes with one net (the pair); got " + str(len(files)))
    writes = output is not None or in_place
    if writes and weights_out is None:
        raise UsageError(
            "the weights follow the net: give --weights-out OUT.caffemodel with -o/--in-place"
        )
    if weights_out is not None and not writes and not check:
        raise UsageError("--weights-out writes with the net: add -o OUT.prototxt or --in-place")
    target = str(output) if output is not None else files[0] if in_place else None
    return run_file(
        files[0], recipe, values, phase, lenient, str(weights),
        str(weights_out) if weights_out is not None and writes else None, target,
    )  # fmt: skip


def _summary(data: dict[str, Any], written: bool) -> str:
    if data.get("skipped"):
        return f"{data['path']}: no change: {data['skipped']}"
    n_checks = len(data["checks"])
    skipped = [c["check"] for c in data["checks"] if c.get("skipped")]
    if skipped:
        n_checks -= len(skipped)
        verb_skip = f", {len(skipped)} skipped ({', '.join(skipped)})"
    else:
        verb_skip = ""
    if not data["changed"]:
        return f"{data['path']}: no change ({n_checks} checks passed)"
    if "changes" in data:
        n_layers = len({c["layer"] for c in data["changes"] if c["layer"] is not None})
    else:
        n_layers = data["changed_layers"]
    verb = "written" if written else "not written (use -o or --in-place)"
    return (
        f"{data['path']}: {_change_count(data)} change(s) in {n_layers} layer(s), "
        f"{n_checks} checks passed{verb_skip}, {verb}"
    )


def _change_count(data: dict[str, Any]) -> int:
    """Listed (json output, NetSpec scripts) or only counted (a net's text output)."""
    return len(data["changes"]) if "changes" in data else int(data["change_count"])


def _read(path: str) -> str:
    from rewriter.text.fileio import read_text

    return read_text(path)


def _write(path: str, text: str) -> None:
    from rewriter.text.fileio import write_text_atomic

    write_text_atomic(path, text)


def _run_all(
    files: list[str],
    recipe: Recipe,
    values: dict[str, Any],
    phase: str,
    lenient: bool,
    jobs: int,
    with_diff: bool = True,
    with_changes: bool = True,
) -> list[dict[str, Any]]:
    from rewriter.cli.runfile import run_file

    show = sys.stderr.isatty() and len(files) > 1
    results: list[dict[str, Any] | None] = [None] * len(files)
    progress: Any = None
    task: Any = None
    if show:
        from rich.console import Console
        from rich.progress import Progress

        progress = Progress(console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task(f"apply {recipe.name}", total=len(files))
    try:
        if jobs == 1 or len(files) == 1:
            for i, f in enumerate(files):
                results[i] = run_file(f, recipe, values, phase, lenient, with_diff, with_changes)
                if progress is not None:
                    progress.advance(task)
        else:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = {
                    pool.submit(
                        run_file, f, recipe, values, phase, lenient, with_diff, with_changes
                    ): i
                    for i, f in enumerate(files)
                }
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    if progress is not None:
                        progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
    return [r for r in results if r is not None]


@app.command("recipes")
def recipes_cmd(
    name: Annotated[str | None, typer.Argument(help="Show this recipe in full.")] = None,
    toml: Annotated[bool, typer.Option("--toml", help="Print the recipe file itself.")] = False,
) -> None:
    """List the built-in recipes, or show one (options, steps, source)."""
    from rewriter.recipes.recipe import Recipe, builtin_dir, builtin_names

    if name is None:
        names = builtin_names()
        if not names:
            typer.echo(f"no built-in recipes found in {builtin_dir()}", err=True)
            raise typer.Exit(EXIT_ERROR)
        width = max(len(n) for n in names)
        # Shortened only to fit a terminal; a pipe (grep, a file) gets every word.
        room = shutil.get_terminal_size().columns - width - 2 if sys.stdout.isatty() else 0
        for n in names:
            r = Recipe.builtin(n)
            first = " ".join(r.description.split())
            if room > 10 and len(first) > room:
                first = first[: room - 3].rstrip() + "..."
            typer.echo(f"{n.ljust(width)}  {first}")
        return
    recipe = Recipe.find(name)
    if toml:
        typer.echo(recipe.text if recipe.text is not None else recipe.to_toml(), nl=False)
        return
    typer.echo(f"{recipe.name}: {' '.join(recipe.description.split())}")
    if recipe.path is not None:
        typer.echo(f"file: {recipe.path}")
    if recipe.includes:
        typer.echo("includes: " + ", ".join(r.name for r in recipe.includes))
    opts = recipe.all_options()
    if opts:
        typer.echo("options:")
        for o in opts.values():
            default = "required" if o.required else f"default {json.dumps(o.default)}"
            typer.echo(f"  {o.name} ({o.type}, {default}): {o.description}")
    pre = [
        p for p, _ in recipe.all_preconditions() if p.has_layer or p.has_type or p.format != "any"
    ]
    for p in pre:
        bits = [f"has_layer {p.has_layer}"] if p.has_layer else []
        if p.has_type:
            bits.append(f"has_type {p.has_type}")
        if p.format != "any":
            bits.append(f"format {p.format}")
        typer.echo(f"precondition: {', '.join(bits)} (on fail: {p.on_fail})")
    typer.echo("steps:")
    for i, s in enumerate(recipe.all_steps(), 1):
        args = " ".join(f"{k}={json.dumps(v)}" for k, v in s.params.items())
        typer.echo(f"  {i}. {s.kind} {args}".rstrip())
