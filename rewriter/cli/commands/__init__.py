"""CLI commands beyond ``check`` and ``explain``: one module per command, found at start-up.

Each module does ``from rewriter.cli.app import app`` and decorates its command with
``@app.command()``; it must import nothing heavy at module level (``rewriter --help`` stays fast).
"""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
