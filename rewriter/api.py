"""The front door of the Python API: ``load(path)`` and :class:`CaffeFile`.

A :class:`CaffeFile` is a :class:`~rewriter.caffe.netfile.NetFile` (tree, binding and graphs,
computed
once) plus what sits above Caffe's semantics: running a recipe on it (the engine) and exporting
it to ONNX. Those live here, above the engine and the exporter, so neither imports the façade.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rewriter.caffe.netfile import NetFile
from rewriter.text.cst import read, write

if TYPE_CHECKING:
    from rewriter.caffe.setup_checks import SetupReport
    from rewriter.schema.runtime import Schema

__all__ = ["CaffeFile", "load", "read", "write"]


class CaffeFile(NetFile):
    """A parsed net or solver plus what we learn from it, computed once."""

    def setup(self, phase: str = "TRAIN", **options: Any) -> SetupReport:
        """Caffe's set-up checks for ``phase`` (:func:`rewriter.caffe.setup_checks.check_setup`:
        ``stages``, ``level``, ``input_shapes``, ``param_counts``, ``batch``...); the report's
        ``diagnostics(file.document)`` places a failure in this file."""
        from rewriter.caffe.setup_checks import check_setup

        return check_setup(self.message, phase, **options)

    def to_onnx(self, weights: str | os.PathLike[str] | None = None, **options: Any) -> Any:
        """The net Caffe would build as an ``onnx.ModelProto`` (docs/onnx.md); needs
        ``pip install 'prototxt-rewriter[onnx]'``. ``options``: ``phase`` ("TEST"), ``stages``,
        ``level``, ``opset``, ``input_shapes`` ({blob: dims}). Without ``weights`` the
        parameter blobs are graph inputs."""
        from .onnx import to_onnx

        return to_onnx(self, weights, **options)

    def apply(self, recipe: Any, **options: Any) -> Any:
        """Run a recipe on this file (docs/recipes.md); returns a
        ``rewriter.recipes.engine.Result``."""
        from rewriter.recipes.engine import apply

        return apply(self, recipe, **options)


def load(
    path: str | os.PathLike[str],
    *,
    lenient: bool = False,
    root: str | None = None,
    schema: Schema | None = None,
) -> CaffeFile:
    """Read and parse ``path``; binding and graphs are computed when first asked for."""
    return CaffeFile(read(path), lenient=lenient, root=root, schema=schema)
