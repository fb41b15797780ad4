"""prototxt-rewriter: declarative, minimal and verified rewrites of Caffe prototxt files.

The public API is small and imported lazily, so ``import rewriter`` (and ``rewriter --help``)
does not pay for protobuf, libcst or deepdiff:

* :func:`parse` text into a lossless :class:`~rewriter.text.cst.Document` (``doc.code == text``);
* :func:`read` a file keeping its exact bytes, :func:`load` it as a Caffe net or solver;
* ``rewriter.load(path).graph(phase="TRAIN").backward()`` for Caffe's backward verdicts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "parse",
    "read",
    "load",
    "Document",
    "CaffeFile",
    "RewriterError",
    "Recipe",
    "Step",
    "Result",
    "CheckFailed",
    "UpgradeResult",
]

if TYPE_CHECKING:
    from rewriter.api import CaffeFile, load, read
    from rewriter.text.cst import Document, parse

    from .errors import RewriterError
    from .recipes.checks import CheckFailed
    from .recipes.engine import Result
    from .recipes.recipe import Recipe, Step
    from .upgrade.document import UpgradeResult

_LAZY = {
    "parse": ("text.cst", "parse"),
    "Document": ("text.cst", "Document"),
    "read": ("api", "read"),
    "load": ("api", "load"),
    "CaffeFile": ("api", "CaffeFile"),
    "RewriterError": ("errors", "RewriterError"),
    "Recipe": ("recipes.recipe", "Recipe"),
    "Step": ("recipes.recipe", "Step"),
    "Result": ("recipes.engine", "Result"),
    "CheckFailed": ("recipes.checks", "CheckFailed"),
    "UpgradeResult": ("upgrade.document", "UpgradeResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rewriter' has no attribute {name!r}")
