"""A recipe step's error restated in the recipe's own terms: its options, as ``--set``.

The user of a built-in recipe never wrote its TOML: an error located in ``recipes/unfreeze.toml``
that asks for ``regex`` (a key of the step that the recipe does not expose) leaves them nowhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .recipe import RecipeError, builtin_dir
from .select import SELECTOR_KEYS

if TYPE_CHECKING:
    from .recipe import Option, Recipe, Step

_LAYER_OPTIONS = ("upto", "after", "from", "to", "layer", "between")
_EXAMPLES = {"glob": "'PATTERN'", "regex": "'REGEX'", "type": "TYPE", "layers": "A,B"}


def is_builtin(recipe: Recipe) -> bool:
    if recipe.path is None:
        return False
    return Path(recipe.path).resolve().parent == builtin_dir().resolve()


def set_example(opt: Option) -> str:
    """``--set NAME=VALUE`` with a value that shows the option's form."""
    if opt.name in _EXAMPLES:
        value = _EXAMPLES[opt.name]
    elif opt.name in _LAYER_OPTIONS:
        value = "LAYER"
    elif opt.type == "list":
        value = "A,B"
    elif opt.type in ("int", "float", "bool") and opt.default is not None:
        value = str(opt.default).lower() if opt.type == "bool" else str(opt.default)
    elif opt.type in ("int", "float", "bool"):
        value = {"int": "N", "float": "X", "bool": "true"}[opt.type]
    else:
        value = "VALUE"
    return f"--set {opt.name}={value}"


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _selection_options(recipe: Recipe, step: Step) -> list[str]:
    """The recipe options that feed the step's selector keys (``layers = "{layers}"``)."""
    template = next(
        (t for t in recipe.all_steps() if t.key == step.key and t.source is step.source), None
    )
    if template is None:
        return []
    names: list[str] = []
    for key in SELECTOR_KEYS:
        raw = template.params.get(key)
        for item in raw if isinstance(raw, list) else [raw]:
            if isinstance(item, str) and item.startswith("{") and item.endswith("}"):
                names.append(item[1:-1])
    return names


def in_recipe_terms(recipe: Recipe, step: Step, err: RecipeError, path: str) -> RecipeError:
    """``err`` (raised by ``step`` of ``recipe`` on the net at ``path``) for the user of it."""
    opts = recipe.all_options()
    if step.source is None or err.bare is None or not opts:
        return err
    name = recipe.name
    chosen = [opts[n] for n in _selection_options(recipe, step) if n in opts]
    if err.reason == "no-selection" and chosen:
        text = f"{path}: recipe '{name}' needs a selection: {_or([set_example(o) for o in chosen])}"
    elif err.reason == "empty-selection":
        text = f"{path}: recipe '{name}': no layer of this net matches the selection"
        if chosen:
            text += f"; change {_or([set_example(o) for o in chosen])}"
    elif is_builtin(recipe):
        text = f"recipe '{name}': {err.bare}"
    else:
        return err
    listed = ", ".join(set_example(o) for o in opts.values())
    out = RecipeError(f"{text}\n  = options of '{name}': {listed} (rewriter recipes {name})")
    out.bare, out.reason = err.bare, err.reason
    return out
