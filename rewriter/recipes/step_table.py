"""The table of recipe steps: each step's keys, selection mode and planner, in one place.

The planners live below this table, one module per step (rewriter.recipes.steps: freeze,
set_mult...; rewriter.recipes.weightsteps: fold_bn, fc_to_conv), each holding its doc, keys and
plan; the table sits above all of them so that a step module can use the shared planning
helpers of rewriter.recipes.steps.base without the helpers importing the step back.
Recipes validate and coerce their keys here, and the engine plans each step through
:func:`plan_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .select import SELECTOR_KEYS, NetView
from .steps import (
    Key,
    Plan,
    StepContext,
    StepSpec,
    deploy,
    freeze,
    remove_layer,
    remove_param_blocks,
    rename,
    set_field,
    set_mult,
    stop_gradient,
    type_ok,
    unfreeze,
    upgrade,
    zero_decay_frozen,
)
from .weightsteps import fc_to_conv, fold_bn

if TYPE_CHECKING:
    from .recipe import Step

__all__ = ["STEPS", "STEP_CHECKS", "coerce_key", "describe_keys", "plan_step", "validate_step"]

_SELECTOR_SPECS: dict[str, Key] = {
    "layers": Key("strlist", doc="layer names"),
    "glob": Key("strlist", doc="shell patterns on layer names"),
    "regex": Key("strlist", doc="regular expressions searched in layer names"),
    "type": Key("strlist", doc="layer types"),
    "upto": Key("strlist", doc="this layer and all its ancestors"),
    "after": Key("strlist", doc="every descendant of this layer"),
    "between": Key("pair", doc="[from, to]: layers on a path between the two"),
}


_COMMON: dict[str, Key] = {
    "phase": Key("choice", choices=("TRAIN", "TEST"), doc="graph used by selectors (TRAIN)"),
    "allow_empty": Key("bool", default=False, doc="an empty selection is not an error"),
}


def _spec_keys(kind: str) -> dict[str, Key]:
    spec = STEPS[kind]
    keys = dict(spec.keys)
    keys.update(_COMMON)
    if spec.selection != "none":
        keys.update(_SELECTOR_SPECS)
    return keys


def validate_step(step: Step, resolved_values: bool) -> None:
    """Known kind, known keys, typed values. Before options are substituted
    (``resolved_values=False``) values holding a ``{placeholder}`` are not type-checked."""
    from rewriter.recipes.common import _hint, placeholders

    if step.kind not in STEPS:
        raise step.error(
            f"unknown step{_hint(step.kind, STEPS)}",
            None,
            "one of " + ", ".join(sorted(STEPS)),
        )
    keys = _spec_keys(step.kind)
    for k, v in list(step.params.items()):
        spec = keys.get(k)
        if spec is None:
            extra = ""
            if k in SELECTOR_KEYS:
                extra = f" (step '{step.kind}' takes no selector)"
            raise step.error(
                f"unknown key '{k}'{_hint(k, keys)}{extra}",
                k,
                "one of " + ", ".join(sorted(keys)),
            )
        if not resolved_values and any(True for _ in placeholders(v)):
            continue
        try:
            step.params[k] = type_ok(spec, v)
        except ValueError as e:
            raise step.error(f"'{k}' takes {e}, not {v!r}", k) from None
    missing = [k for k, spec in keys.items() if spec.required and k not in step.params]
    if missing:
        raise step.error(f"missing required key '{missing[0]}' ({keys[missing[0]].doc})")
    if resolved_values or not any(True for v in step.params.values() for _ in placeholders(v)):
        STEP_CHECKS.get(step.kind, _no_check)(step)


def _no_check(step: Step) -> None:
    return None


def coerce_key(kind: str, key: str, text: str, spec: str) -> Any:
    """A ``--step`` value typed by the step's key type."""
    keys = _spec_keys(kind)
    k = keys.get(key)
    if k is None:
        from rewriter.recipes.common import RecipeError, _hint

        raise RecipeError(
            f"--step {spec!r}: step '{kind}' has no key '{key}'{_hint(key, keys)} "
            f"(keys: {', '.join(sorted(keys))})"
        )
    t = k.type
    try:
        if t in ("str", "choice"):
            return text
        if t == "int":
            return int(text, 0)
        if t == "number":
            return float(text)
        if t == "bool":
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if t in ("strlist", "pair"):
            return [p.strip() for p in text.split(",") if p.strip()]
        if t == "intlist":
            return [int(p, 0) for p in text.split(",") if p.strip()]
        # scalar: a number, a bool, or else the text itself
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        for conv in (int, float):
            try:
                return conv(text)
            except ValueError:
                pass
        if "," in text:
            return [p.strip() for p in text.split(",")]
        return text
    except ValueError:
        from rewriter.recipes.common import RecipeError

        raise RecipeError(f"--step {spec!r}: '{key}' takes a {t}, not {text!r}") from None


def plan_step(view: NetView, step: Step, default_phase: str = "TRAIN", rerun: bool = False) -> Plan:
    phase = step.get("phase") or default_phase
    spec = STEPS[step.kind]
    return spec.plan(StepContext(view, step, phase, spec, rerun))


def _keys_of(keys: Mapping[str, tuple[str, Any, str]]) -> dict[str, Key]:
    """A weight step's keys (its module holds them as (type, default, doc))."""
    choices = {"unfoldable": fold_bn.UNFOLDABLE_CHOICES}
    return {
        k: Key(t, default=d, doc=doc, choices=choices.get(k, ())) for k, (t, d, doc) in keys.items()
    }


def _plan_fold_bn(ctx: StepContext) -> Plan:
    return fold_bn.plan(ctx)


def _plan_fc_to_conv(ctx: StepContext) -> Plan:
    return fc_to_conv.plan(ctx)


STEP_CHECKS: dict[str, Callable[[Step], None]] = {
    "set-lr": set_mult.check,
    "set-decay": set_mult.check,
    "stop-gradient": stop_gradient.check,
    "rename-layer": rename.check,
    "rename-blob": rename.check,
}


def _step(kind: str, module: ModuleType) -> StepSpec:
    """The spec of a step whose module holds DOC, KEYS, SELECTION, ANALYSIS_WARNINGS and plan."""
    return StepSpec(
        kind,
        module.DOC,
        module.KEYS,
        module.SELECTION,
        module.plan,
        analysis_warnings=module.ANALYSIS_WARNINGS,
    )


STEPS: dict[str, StepSpec] = {
    "freeze": _step("freeze", freeze),
    "unfreeze": _step("unfreeze", unfreeze),
    "set-lr": StepSpec(
        "set-lr",
        set_mult.SET_LR_DOC,
        set_mult.SET_LR_KEYS,
        set_mult.SELECTION,
        set_mult.plan_set_lr,
        analysis_warnings=set_mult.ANALYSIS_WARNINGS,
    ),
    "set-decay": StepSpec(
        "set-decay",
        set_mult.SET_DECAY_DOC,
        set_mult.SET_DECAY_KEYS,
        set_mult.SELECTION,
        set_mult.plan_set_decay,
        analysis_warnings=set_mult.ANALYSIS_WARNINGS,
    ),
    "zero-decay": StepSpec(
        "zero-decay",
        set_mult.ZERO_DECAY_DOC,
        set_mult.ZERO_DECAY_KEYS,
        set_mult.SELECTION,
        set_mult.plan_zero_decay,
        analysis_warnings=set_mult.ANALYSIS_WARNINGS,
    ),
    "zero-decay-frozen": _step("zero-decay-frozen", zero_decay_frozen),
    "stop-gradient": _step("stop-gradient", stop_gradient),
    "rename-layer": StepSpec(
        "rename-layer",
        rename.RENAME_LAYER_DOC,
        rename.RENAME_LAYER_KEYS,
        rename.SELECTION,
        rename.plan_rename_layer,
        analysis_warnings=rename.ANALYSIS_WARNINGS,
    ),
    "rename-blob": StepSpec(
        "rename-blob",
        rename.RENAME_BLOB_DOC,
        rename.RENAME_BLOB_KEYS,
        rename.SELECTION,
        rename.plan_rename_blob,
        analysis_warnings=rename.ANALYSIS_WARNINGS,
    ),
    "set-field": _step("set-field", set_field),
    "remove-param-blocks": _step("remove-param-blocks", remove_param_blocks),
    "upgrade": _step("upgrade", upgrade),
    "deploy": _step("deploy", deploy),
    "fold-bn": StepSpec(
        "fold-bn",
        fold_bn.DOC,
        _keys_of(fold_bn.KEYS),
        "optional",
        _plan_fold_bn,
        analysis_warnings=False,
    ),  # fmt: skip
    "fc-to-conv": StepSpec(
        "fc-to-conv",
        fc_to_conv.DOC,
        _keys_of(fc_to_conv.KEYS),
        "required",
        _plan_fc_to_conv,
        analysis_warnings=False,
    ),  # fmt: skip
    "remove-layer": _step("remove-layer", remove_layer),
}


def describe_keys(kind: str) -> Iterable[tuple[str, Key]]:
    return sorted(_spec_keys(kind).items())
