"""The ``rewriter`` command line.

Exit codes (documented in the README): 0 ok; 1 a check or diff found something (``--check``,
``--exit-code``); 2 usage or input error. Every expected error is printed as ``path:line:col``
with a caret excerpt; a Python traceback from this CLI is a bug.

Heavy modules (protobuf, deepdiff, libcst, rich) are imported inside the commands that use them,
so ``rewriter --help`` and ``rewriter --version`` start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from rewriter import __version__
from rewriter.errors import RewriterError

app = typer.Typer(
    name="rewriter",
    help="Declarative, minimal and verified rewrites of Caffe prototxt files.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2


class _NotPlain(Exception):
    """A value the plain conversion leaves to typer's own (pydantic) conversion."""


def _plain_coercion() -> None:
    """Convert str, int, bool and Path parameters (single, optional or lists) without pydantic.

    typer 0.2x converts every parameter through a pydantic TypeAdapter, and importing pydantic
    for it cost ~0.1 s of every command's start-up (a third of ``rewriter explain`` of a small
    net). Our parameters need none of it. Anything else (other types, path checks, a value
    that is not plainly a number, ...) and any typer without this hook keep typer's own
    conversion, so the values and the error messages are typer's."""
    import os
    import re

    try:
        from typer import core
        from typer._coercion import RuntimeParam, build_runtime_param
        from typer._param_types import coerce_cli_path
        from typer._typing import get_args, get_origin
    except ImportError:  # another typer: its own conversion
        return
    param_cls: Any = getattr(core, "_TyperParameter", None)
    if param_cls is None or not hasattr(param_cls, "get_runtime_param"):
        return
    integer = re.compile(r"[+-]?[0-9]+")

    def leaf(annotation: Any, info: Any) -> Any:
        """A converter (value, param, ctx) -> value for one plain type, or None."""
        if getattr(info, "parser", None) is not None:
            return None
        if annotation is str or annotation is bool:
            # a str is a str; a flag is a bool already (a str for a bool goes to typer)

            def as_is(value: Any, param: Any, ctx: Any) -> Any:
                if isinstance(value, annotation):
                    return value
                raise _NotPlain

            return as_is
        if annotation is int:
            if getattr(info, "min", None) is not None or getattr(info, "max", None) is not None:
                return None

            def to_int(value: Any, param: Any, ctx: Any) -> int:
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
                if isinstance(value, str) and integer.fullmatch(value):
                    return int(value)
                raise _NotPlain

            return to_int
        if annotation is Path and getattr(info, "path_type", None) is None:

            def to_path(value: Any, param: Any, ctx: Any) -> Any:
                if not isinstance(value, (str, Path)):
                    raise _NotPlain
                # typer's own checks (exists, dir_okay, ...), given a Path: no pydantic
                path = Path(os.fspath(value))
                return coerce_cli_path(path, info, path_type=Path, param=param, ctx=ctx)

            return to_path
        return None

    def converter(annotation: Any, info: Any) -> Any:
        if get_origin(annotation) is list:
            (item,) = get_args(annotation) or (None,)
            one = leaf(item, info)
            if one is None:
                return None

            def to_list(value: Any, param: Any, ctx: Any) -> list[Any]:
                if not isinstance(value, (list, tuple)):
                    raise _NotPlain
                return [one(v, param, ctx) for v in value]

            return to_list
        return leaf(annotation, info)

    class Plain(RuntimeParam):
        # A plain subclass of typer's frozen dataclass, not a dataclass itself: @dataclass
        # would compile its methods at every start (~1-2 ms); typer reads only the base's
        # fields, and each parameter makes one Plain.
        convert: Any
        descriptor: Any

        def __init__(self, parameter_info: Any, annotation: Any, convert: Any, descriptor: Any):
            super().__init__(parameter_info=parameter_info, annotation=annotation)
            object.__setattr__(self, "convert", convert)
            object.__setattr__(self, "descriptor", descriptor)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                return self.convert(value, param, ctx)
            except _NotPlain:
                return build_runtime_param(self.descriptor)._coerce_value(value, param, ctx)

    typer_own = param_cls.get_runtime_param

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            desc = self.type_descriptor
            convert = None if desc.is_file else converter(desc.annotation, desc.parameter_info)
            if convert is None:
                return typer_own(self)
            self._runtime_param = Plain(
                parameter_info=desc.parameter_info,
                annotation=desc.annotation,
                convert=convert,
                descriptor=desc,
            )
        return self._runtime_param

    param_cls.get_runtime_param = get_runtime_param


_plain_coercion()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rewriter {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Declarative, minimal and verified rewrites of Caffe prototxt files."""


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_ERROR)


def _expand(paths: list[Path]) -> list[Path]:
    """Directories stand for every ``*.prototxt`` below them (sorted, for stable output)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.prototxt") if q.is_file())
            if not found:
                _fail(f"{p}: no *.prototxt files in this directory")
            out.extend(found)
        else:
            out.append(p)
    return out


def _schema(proto: Path | None) -> Any:
    if proto is None:
        return None
    from rewriter.schema.runtime import schema_from_proto

    return schema_from_proto(proto)


_ROOTS = {"net": "caffe.NetParameter", "solver": "caffe.SolverParameter"}

ProtoOpt = Annotated[
    Path | None,
    typer.Option(
        "--proto", help="A fork's caffe.proto to use instead of BVLC's (needs grpcio-tools)."
    ),
]
LenientOpt = Annotated[
    bool,
    typer.Option(
        "--lenient", help="Keep unknown (fork) fields verbatim and report them as warnings."
    ),
]
KindOpt = Annotated[
    str | None,
    typer.Option("--kind", help="net or solver (detected from the top-level fields by default)."),
]


def _root_for(kind: str | None) -> str | None:
    if kind is None:
        return None
    if kind not in _ROOTS:
        _fail(f"--kind must be 'net' or 'solver', not {kind!r}")
    return _ROOTS[kind]


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="Files or directories (*.prototxt).")],
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    lenient: LenientOpt = False,
    kind: KindOpt = None,
    proto: ProtoOpt = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Shapes for Caffe's set-up checks: batch, channels, height, width, "
            "shape.BLOB=D,D,... (repeatable).",
        ),
    ] = None,
    setup: Annotated[
        bool,
        typer.Option(
            "--setup/--no-setup",
            help="Also run Caffe's Net::Init set-up checks on nets (TRAIN and TEST).",
        ),
    ] = True,
    schema_only: Annotated[
        bool,
        typer.Option(
            "--schema-only", help="Skip Net::Init's wiring checks (for net fragments, templates)."
        ),
    ] = False,
) -> None:
    """Parse and validate files against the Caffe schema and, for nets, Caffe's Net::Init:
    its wiring in TRAIN, TEST and the stages the rules name, then its set-up checks (shapes,
    parameter sharing) in TRAIN and TEST (exit 0 valid, 2 invalid)."""
    from rewriter.errors import Diagnostic
    from rewriter.recipes.settings import parse_settings
    from rewriter.schema.bind import diagnose
    from rewriter.schema.forkhint import FORK_CODES, fork_hint
    from rewriter.text.fileio import read_text

    schema = _schema(proto)
    root = _root_for(kind)
    shape_opts = parse_settings(
        settings or [], ("batch", "channels", "height", "width", "input_shapes")
    )
    results: list[dict[str, Any]] = []
    bad = False
    refused: list[Diagnostic] = []  # errors of files that failed, for the fork hint
    refused_paths: list[str] = []
    for path in _expand(files):
        diags: list[Diagnostic]
        detected = None
        try:
            bound, diags = diagnose(read_text(path), str(path), schema, root, lenient)
            if bound is not None:
                detected = "solver" if bound.root.endswith("SolverParameter") else "net"
            if bound is not None and detected == "net" and bound.ok and not schema_only:
                from rewriter.caffe.diagnose import net_init_diagnostics

                message = bound.message
                bound = None  # its lossless tree is re-read only to locate a finding
                graphs: dict[str, Any] = {}  # built once per phase, for the set-up checks
                diags = diags + net_init_diagnostics(path, message, graphs if setup else None)
                if setup and not any(d.severity == "error" for d in diags):
                    diags = diags + _setup_diagnostics(path, message, shape_opts, graphs)
                del graphs
        except RewriterError as e:
            diags = [Diagnostic("error", str(e), None, None, "input")]
        errors = [d for d in diags if d.severity == "error"]
        bad = bad or bool(errors)
        if any(d.code in FORK_CODES for d in errors):
            refused += errors
            refused_paths.append(str(path))
        results.append(
            {
                "path": str(path),
                "kind": detected,
                "ok": not errors,
                "diagnostics": [d.as_dict() for d in diags],
            }
        )
        if fmt == "text":
            for d in diags:
                typer.echo(d.render(), err=d.severity == "error")
            if not errors:
                extra = f" ({len(diags)} warning(s))" if diags else ""
                typer.echo(f"{path}: ok, {detected}{extra}")
    if fmt == "json":
        typer.echo(json.dumps({"files": results}, indent=2))
    elif fmt != "text":
        _fail(f"--format must be text or json, not {fmt!r}")
    elif not lenient and proto is None:
        hint = fork_hint(refused, "check", refused_paths)
        if hint is not None:
            typer.echo(hint, err=True)
    if fmt == "text" and (len(results) > 1 or any(p.is_dir() for p in files)):
        n_bad = sum(1 for r in results if not r["ok"])
        typer.echo(f"{len(results)} file(s) checked: {len(results) - n_bad} ok, {n_bad} invalid")
    raise typer.Exit(EXIT_ERROR if bad else EXIT_OK)


def _setup_diagnostics(
    path: Path, message: Any, shape_opts: dict[str, Any], graphs: dict[str, Any]
) -> list[Any]:
    """Caffe's set-up checks on a bound net, per phase, as findings located in ``path`` (read
    again only when there is something to place). ``graphs``: the phases' graphs already
    built (with the same options), each taken out once used."""
    from rewriter.caffe.setup_checks import check_setup, phases_of, skipped_warnings
    from rewriter.errors import Diagnostic
    from rewriter.text.cst import parse
    from rewriter.text.fileio import read_text

    out: list[Any] = []
    doc: Any = None
    skipped = []
    for phase in phases_of(message):
        try:
            report = check_setup(message, phase, graph=graphs.pop(phase, None), **shape_opts)
        except RewriterError as e:
            out.append(
                Diagnostic("warning", f"set-up checks not run in {phase}: {e}", code="setup")
            )
            continue
        if report.graph_error is not None:
            continue  # the graph's verdict (net_init_diagnostics) covers this phase
        if report.error is not None:
            doc = doc or parse(read_text(path), str(path))
            out.extend(report.diagnostics(doc))
        elif report.skipped:
            skipped.append(report)
    if skipped:
        doc = doc or parse(read_text(path), str(path))
        out.extend(skipped_warnings(skipped, doc))
    return out


@app.command()
def explain(
    net: Annotated[Path, typer.Argument(help="A net prototxt (V0, V1 or current format).")],
    phase: Annotated[str, typer.Option("--phase", help="TRAIN or TEST")] = "TRAIN",
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="A stage (repeatable).")
    ] = None,
    level: Annotated[int, typer.Option("--level", help="The net state's level.")] = 0,
    layer: Annotated[
        str | None, typer.Option("--layer", help="Show the full reason chain for one layer.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, json or log")] = "text",
    param_count: Annotated[
        list[str] | None,
        typer.Option("--param-count", help="TYPE=N: parameter blobs of an unknown layer type."),
    ] = None,
    shapes: Annotated[
        bool, typer.Option("--shapes", help="Also print blob and parameter shapes.")
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="A .caffemodel to check (exit 1 if Caffe would refuse it)."),
    ] = None,
    lenient: LenientOpt = False,
    proto: ProtoOpt = None,
) -> None:
    """Which layers Caffe runs backward for, and why (Caffe's own Net::Init rules)."""

    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        _fail(f"--phase must be TRAIN or TEST, not {phase!r}")
    if fmt not in ("text", "json", "log"):
        _fail(f"--format must be text, json or log, not {fmt!r}")
    counts: dict[str, int] = {}
    for item in param_count or []:
        name, _, num = item.partition("=")
        if not name or not num.isdigit():
            _fail(f"--param-count takes TYPE=N, not {item!r}")
        counts[name] = int(num)
    from rewriter.caffe.diagnose import located
    from rewriter.caffe.setup_checks import check_setup, refuse_or_warn

    # Past binding only the message is needed: the lossless tree goes before the graph is
    # built, so the two never take memory at the same time (an error re-reads the file).
    from rewriter.caffe.solver_ref import load_net_message

    message, solver = load_net_message(net, lenient=lenient, schema=_schema(proto))
    source: Path = net
    if solver is not None:  # a solver: its training net, in the solver's train_state
        stage = stage or list(solver.stages)
        level = level or solver.level
        source = solver.found or net
        typer.echo(f"{net}: a solver; explaining {solver.describe()}", err=True)
    # Net::Init with every set-up check: a net Caffe refuses exits 2 with its located message
    report = check_setup(
        message, phase, stages=tuple(stage or ()), level=level, param_counts=counts or None
    )
    for line in refuse_or_warn(report, source):
        typer.echo(line, err=True)
    graph = report.graph
    assert graph is not None  # set whenever there is no error
    shape_res: Any = report.shapes if shapes else None
    weight_rep: Any = None
    with located(source, phase):
        result = graph.backward()
        if weights is not None:
            from rewriter.caffe.weights import check_weights

            weight_rep = check_weights(
                graph, weights, message=message, net_label=str(net), param_counts=counts or None
            )
    if fmt == "json":
        data = result.to_json()
        if layer is not None:
            data["layers"] = [d for d in data["layers"] if d["name"] == layer]
            if not data["layers"]:
                _fail(_no_layer(net, layer, phase, [v.name for v in result.layers]))
        if shape_res is not None:
            data["shapes"] = shape_res.to_json()
        if weight_rep is not None:
            data["weights"] = weight_rep.to_json()
        typer.echo(json.dumps(data, indent=2))
    else:
        if fmt == "log":
            for line in result.log_lines():
                typer.echo(line)
            if graph.force_backward:
                typer.echo("# force_backward: true is applied after these lines; final verdicts:")
                for v in reversed(result.layers):
                    if v.verdict_differs:
                        typer.echo(f"# {v.name} needs backward computation (forced).")
            for out in graph.outputs:
                typer.echo(f"This network produces output {out}")
        else:
            from rewriter.review.explain_text import render_layer, render_table

            if layer is not None:
                try:
                    typer.echo(render_layer(result, layer, str(net)))
                except KeyError:
                    _fail(_no_layer(net, layer, phase, [v.name for v in result.layers]))
            else:
                typer.echo(render_table(result, color=sys.stdout.isatty()))
        if shape_res is not None:
            from rewriter.caffe.shapes import render_text

            for line in render_text(shape_res):
                typer.echo(line)
        if weight_rep is not None:
            for line in weight_rep.render():
                typer.echo(line)
    if weight_rep is not None and not weight_rep.ok:
        raise typer.Exit(EXIT_FOUND)


def _no_layer(net: Path, layer: str, phase: str, names: list[str]) -> str:
    from rewriter.errors import did_you_mean

    hint = did_you_mean(layer, names)
    return f"{net}: no layer named {layer!r} in phase {phase}" + (f"; {hint}" if hint else "")


def _fork_hint(error: RewriterError) -> str | None:
    """The fork hint (``--lenient``, ``--proto``) for a file the schema refused, whichever
    command read it; only the flags that command takes, and none when it was given them."""
    from rewriter.errors import SchemaErrors

    argv = sys.argv[1:]
    if not isinstance(error, SchemaErrors) or "--lenient" in argv:
        return None
    if any(a == "--proto" or a.startswith("--proto=") for a in argv):
        return None
    from rewriter.schema.forkhint import fork_hint

    # typer's click command tree (typer may carry its own click: read it by its attributes)
    command: Any = typer.main.get_command(app)
    words: list[str] = []
    while argv and argv[0] in getattr(command, "commands", {}):
        words.append(argv.pop(0))
        command = command.commands[words[-1]]
    flags = {opt for param in command.params for opt in getattr(param, "opts", ())}
    if not words or "--lenient" not in flags:
        return None
    paths = [d.location.path for d in error.diagnostics if d.location is not None]
    return fork_hint(error.diagnostics, " ".join(words), paths, proto="--proto" in flags)


def run() -> None:
    """Run the app with the commands loaded so far: map our errors to exit code 2 with a clear
    message. Kept apart from :func:`main`, which loads the command modules (they import this
    module), so that the entry point can sit above both in issue 17's layout."""
    from rewriter.cli.help import polish

    polish(app)
    try:
        # Without standalone mode click returns the code of a raised Exit instead of exiting.
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else EXIT_OK)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except RewriterError as e:
        typer.echo(str(e), err=True)
        hint = _fork_hint(e)
        if hint is not None:
            typer.echo(hint, err=True)
        sys.exit(getattr(e, "exit_code", EXIT_ERROR))
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        show = getattr(e, "show", None)
        if callable(show) and hasattr(e, "exit_code"):
            show()
            sys.exit(EXIT_ERROR)
        raise
