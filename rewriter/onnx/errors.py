"""The exporter's errors, below the package's modules that raise them (re-exported by
:mod:`rewriter.onnx`)."""

from __future__ import annotations

from rewriter.errors import RewriterError

__all__ = ["ExportError", "MissingExtra"]


class ExportError(RewriterError):
    """The net cannot be exported (a layer type or setting ONNX cannot express, bad weights)."""


class MissingExtra(RewriterError):
    """onnx / onnxruntime / numpy are not installed."""
