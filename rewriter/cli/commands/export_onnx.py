"""``rewriter export onnx NET``: the net Caffe would build, as an ONNX model (docs/onnx.md).

Registered on the ``export`` group of :mod:`rewriter.cli.commands.netspec`, beside ``export
netspec``. onnx, onnxruntime and numpy are an optional extra, imported only when the command
runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewriter.cli.app import EXIT_FOUND, EXIT_OK
from rewriter.cli.commands.netspec import export_app


@export_app.command("onnx")
def export_onnx(
    net: Annotated[Path, typer.Argument(help="A net prototxt (V0, V1 or current format).")],
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", help="A .caffemodel: its blobs become initializers (else graph inputs)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the model here (default: ./NET-stem.onnx)."),
    ] = None,
    phase: Annotated[str, typer.Option("--phase", help="TRAIN or TEST")] = "TEST",
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="A stage (repeatable).")
    ] = None,
    level: Annotated[int, typer.Option("--level", help="The net state's level.")] = 0,
    opset: Annotated[
        int | None, typer.Option("--opset", help="ONNX opset to write (default 17).")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="shape.BLOB=D,D,... (repeatable): an input's shape."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Run the model in onnxruntime (writes only with -o); see --expect."
        ),
    ] = False,
    inputs: Annotated[
        Path | None,
        typer.Option("--inputs", help="With --check: a folder of BLOB.npy, one per net input."),
    ] = None,
    expect: Annotated[
        Path | None,
        typer.Option(
            "--expect",
            help="With --check: a folder of BLOB.npy reference outputs (exit 1, no file, if off).",
        ),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option("--tolerance", help="With --expect: max |diff| / max |ref| per output."),
    ] = 1e-4,
) -> None:
    """Write the net Caffe would build (phase TEST by default) as an ONNX model."""
    from rewriter.errors import UsageError
    from rewriter.onnx import require_extra
    from rewriter.recipes.settings import parse_settings

    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise UsageError(f"--phase must be TRAIN or TEST, not {phase!r}")
    if (inputs is not None or expect is not None) and not check:
        raise UsageError("--inputs and --expect go with --check: add --check")
    for folder, flag in ((inputs, "--inputs"), (expect, "--expect")):
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{flag} {folder}: not a folder (expected one BLOB.npy per blob)")
    input_shapes = parse_settings(settings or [], ("input_shapes",)).get("input_shapes")
    require_extra("numpy", "onnx", *(["onnxruntime"] if check else []))
    from rewriter.onnx.export import export
    from rewriter.text.fileio import write_bytes_atomic

    model = export(
        net,
        weights,
        phase=phase,
        stages=tuple(stage or ()),
        level=level,
        opset=opset,
        input_shapes=input_shapes,
    )
    target = output if output is not None or check else Path(net.stem + ".onnx")
    ok = True
    if check:
        from rewriter.onnx.check import run_check

        for line_check in run_check(model, inputs, expect, tolerance):
            typer.echo(line_check.render(tolerance))
            ok = ok and line_check.ok
    if not ok:
        if target is not None:
            typer.echo(f"{target}: not written: an output is out of tolerance", err=True)
        raise typer.Exit(EXIT_FOUND)
    if target is not None:
        data = model.SerializeToString()
        write_bytes_atomic(target, data)
        n_nodes = len(model.graph.node)
        typer.echo(f"wrote {target} ({n_nodes} nodes, {len(data)} bytes)", err=True)
    raise typer.Exit(EXIT_OK)
