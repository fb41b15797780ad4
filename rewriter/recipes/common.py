"""What recipes and the step catalogue share, below both: the error, did-you-mean, placeholders.

:mod:`rewriter.recipes.recipe` (loading, including, resolving) validates steps against the catalogue
(:mod:`rewriter.recipes.steps`), and the steps raise recipe errors and read ``{option}``
placeholders;
these live here so neither module imports the other back. :mod:`rewriter.recipes.recipe` re-exports
them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from rewriter.errors import RewriterError, did_you_mean

__all__ = ["RecipeError", "placeholders"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RecipeError(RewriterError):
    """A recipe could not be loaded, validated or resolved; the message says where."""

    #: a step's error: its message without the recipe location, so a built-in recipe's error
    #: can be restated in the recipe's own options (rewriter/recipes/hints.py)
    bare: str | None = None
    #: what went wrong, for the restatement: "no-selection", "empty-selection" or None
    reason: str | None = None


def _hint(name: str, choices: Iterable[str]) -> str:
    hint = did_you_mean(name, choices)
    return f"; {hint}" if hint else ""


def placeholders(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from placeholders(item)
    elif isinstance(value, str):
        for m in _PLACEHOLDER.finditer(value):
            if m.group(1):
                yield m.group(1)
