"""prototxt-rewriter: declarative, minimal and verified rewrites of Caffe prototxt files.

The public API is small and imported lazily, so ``import rewriter`` (and ``rewriter --help``)
does not pay for protobuf, libcst or deepdiff:

* :func:`parse` text into a lossless :class:`~rewriter.cst.Document` (``doc.code == text``);
* :func:`read` a file keeping its exact bytes, :func:`load` it as a Caffe net or solver;
* ``rewriter.load(path).graph(phase="TRAIN").backward()`` for Caffe's backward verdicts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "parse", "read", "load", "Document", "CaffeFile"]

if TYPE_CHECKING:
    from .cst import Document, parse
    from .model import CaffeFile, load, read

_LAZY = {
    "parse": ("cst", "parse"),
    "Document": ("cst", "Document"),
    "read": ("model", "read"),
    "load": ("model", "load"),
    "CaffeFile": ("model", "CaffeFile"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rewriter' has no attribute {name!r}")
