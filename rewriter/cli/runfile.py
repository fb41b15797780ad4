"""Apply a recipe to one file of any kind, as plain data: the CLI's batch worker.

A net (``*.prototxt``...) goes to the engine (:func:`rewriter.recipes.engine.run_file`), a pycaffe
NetSpec script (``*.py``) to the libcst codemod (:func:`rewriter.netspec.codemod.run_file`),
which itself runs the engine on the nets the script writes. Dispatching here, above both, keeps
the engine from importing the codemod that imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rewriter.recipes.recipe import Recipe

__all__ = ["run_file"]


def run_file(
    path: str,
    recipe: Recipe,
    values: Mapping[str, Any],
    phase: str = "TRAIN",
    lenient: bool = False,
    with_diff: bool = True,
    with_changes: bool = True,
) -> dict[str, Any]:
    """Apply to one file and return plain data (for the CLI and its worker processes).

    Never raises for an expected error: ``{"ok": False, "error": message}`` instead.
    A NetSpec script (``*.py``) is rewritten by the libcst codemod, with the same checks.
    ``with_diff=False``: a net's result leaves out the unified diff nobody will print;
    ``with_changes=False``: it counts its changes instead of listing them (text output).
    """
    if str(path).endswith(".py"):
        from rewriter.netspec.codemod import run_file as run_script_file

        return run_script_file(path, recipe, values, phase, lenient)
    from rewriter.recipes.engine import run_file as run_net_file

    return run_net_file(
        path, recipe, values, phase, lenient, with_diff=with_diff, with_changes=with_changes
    )
