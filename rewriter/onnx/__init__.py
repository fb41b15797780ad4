"""Export the net Caffe would build as an ONNX model (``rewriter export onnx``, docs/onnx.md).

This package needs the optional extra ``pip install 'prototxt-rewriter[onnx]'`` (onnx,
onnxruntime, numpy); nothing outside it imports them, and this module imports nothing heavy so
the CLI can say which pip command to run when they are missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ExportError, MissingExtra

if TYPE_CHECKING:
    import os

    from rewriter.caffe.netfile import NetFile

__all__ = ["INSTALL_HINT", "ExportError", "MissingExtra", "require_extra", "to_onnx"]

INSTALL_HINT = "pip install 'prototxt-rewriter[onnx]'"


def require_extra(*modules: str) -> None:
    """Raise :class:`MissingExtra` naming the pip command when a module of the extra is missing."""
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        raise MissingExtra(
            f"rewriter export onnx needs {', '.join(missing)} (not installed); install the "
            f"extra with: {INSTALL_HINT}"
        )


def to_onnx(net: NetFile | str | os.PathLike[str], weights: Any = None, **options: Any) -> Any:
    """The ``onnx.ModelProto`` of ``net`` (a path or a :class:`~rewriter.api.CaffeFile`);
    ``options`` are those of :func:`rewriter.onnx.export.export` (phase, stages, level, opset,
    input_shapes)."""
    require_extra("numpy", "onnx")
    from .export import export

    return export(net, weights, **options)
