"""The table of recipe steps: each step's keys, selection mode and planner, in one place.

The planners live below this table (rewriter.recipes.steps, and one module per weight-carrying step
in
rewriter.recipes.weightsteps); the table sits above all of them so that a step module can use the
shared planning helpers of rewriter.recipes.steps without the helpers importing the step back.
Recipes validate and coerce their keys here, and the engine plans each step through
:func:`plan_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .select import SELECTOR_KEYS, NetView
from .steps.base import (
    Key,
    Plan,
    StepContext,
    StepSpec,
    check_from_to,
    check_mult_keys,
    plan_deploy,
    plan_freeze,
    plan_remove_layer,
    plan_remove_param_blocks,
    plan_rename_blob,
    plan_rename_layer,
    plan_set_decay,
    plan_set_field,
    plan_set_lr,
    plan_stop_gradient,
    plan_unfreeze,
    plan_upgrade,
    plan_zero_decay,
    plan_zero_decay_frozen,
    type_ok,
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
    "set-lr": check_mult_keys,
    "set-decay": check_mult_keys,
    "stop-gradient": check_from_to,
    "rename-layer": check_from_to,
    "rename-blob": check_from_to,
}


_SHARED = Key(
    "choice", default="unit", choices=("unit", "reject"),
    doc="shared parameters (same param name) are frozen together (unit) or refused (reject)",
)  # fmt: skip


_BN = Key("bool", default=True, doc="BatchNorm layers: use_global_stats follows (default true)")


_PARAMS = Key("intlist", doc="parameter indices (default: all)")


STEPS: dict[str, StepSpec] = {
    "freeze": StepSpec(
        "freeze",
        "lr_mult: 0 on every parameter blob of the selected layers (param blocks added where "
        "missing); BatchNorm layers get use_global_stats: true",
        {
            "shared": _SHARED,
            "zero_decay": Key("bool", default=False, doc="also set decay_mult: 0"),
            "batchnorm": _BN,
        },
        "required",
        plan_freeze,
        analysis_warnings=False,
    ),
    "unfreeze": StepSpec(
        "unfreeze",
        "lr_mult back to 'value' (default 1) where it is 0; BatchNorm loses use_global_stats",
        {
            "value": Key("number", default=1.0, doc="new lr_mult"),
            "bias_value": Key("number", doc="new lr_mult of bias blobs (default: value)"),
            "batchnorm": _BN,
        },
        "required",
        plan_unfreeze,
    ),
    "set-lr": StepSpec(
        "set-lr",
        "set (value) or multiply (scale) lr_mult of the selected layers' parameters",
        {
            "value": Key("number", doc="new lr_mult"),
            "scale": Key("number", doc="factor"),
            "params": _PARAMS,
        },
        "required",
        plan_set_lr,
    ),  # fmt: skip
    "set-decay": StepSpec(
        "set-decay",
        "set (value) or multiply (scale) decay_mult of the selected layers' parameters",
        {
            "value": Key("number", doc="new decay_mult"),
            "scale": Key("number", doc="factor"),
            "params": _PARAMS,
        },
        "required",
        plan_set_decay,
    ),  # fmt: skip
    "zero-decay": StepSpec(
        "zero-decay",
        "decay_mult: 0 on the selected layers' parameters",
        {"params": _PARAMS},
        "required",
        plan_zero_decay,
    ),
    "zero-decay-frozen": StepSpec(
        "zero-decay-frozen",
        "decay_mult: 0 on every parameter whose lr_mult is 0 (every layer unless selected)",
        {},
        "optional",
        plan_zero_decay_frozen,
    ),
    "stop-gradient": StepSpec(
        "stop-gradient",
        "propagate_down: false on the bottom(s) of 'to' fed by 'from'",
        {
            "from": Key("str", required=True, doc="the layer above the cut"),
            "to": Key("str", required=True, doc="the layer below the cut"),
        },
        "none",
        plan_stop_gradient,
        analysis_warnings=False,
    ),
    "rename-layer": StepSpec(
        "rename-layer",
        "rename a layer (pretrained weights are matched by layer name)",
        {
            "from": Key("str", required=True, doc="old name"),
            "to": Key("str", required=True, doc="new name"),
        },
        "none",
        plan_rename_layer,
        analysis_warnings=False,
    ),  # fmt: skip
    "rename-blob": StepSpec(
        "rename-blob",
        "rename a blob in every bottom and top (and legacy input) that uses it",
        {
            "from": Key("str", required=True, doc="old blob name"),
            "to": Key("str", required=True, doc="new blob name"),
        },
        "none",
        plan_rename_blob,
        analysis_warnings=False,
    ),  # fmt: skip
    "set-field": StepSpec(
        "set-field",
        "set a LayerParameter field by dotted path (convolution_param.num_output), typed by "
        "the schema; missing blocks are created",
        {
            "field": Key("str", required=True, doc="dotted field path"),
            "value": Key("scalar", required=True, doc="the value (a list for repeated fields)"),
        },
        "required",
        plan_set_field,
    ),  # fmt: skip
    "remove-param-blocks": StepSpec(
        "remove-param-blocks",
        "remove the param blocks of the selected layers (a block with a sharing name keeps it)",
        {},
        "required",
        plan_remove_param_blocks,
    ),
    "upgrade": StepSpec(
        "upgrade",
        "Caffe's legacy upgrade (V0/V1 layers, input fields, BatchNorm params) as a minimal "
        "diff; must be the recipe's first step",
        {},
        "none",
        plan_upgrade,
        analysis_warnings=False,
    ),
    "deploy": StepSpec(
        "deploy",
        "train/val -> deploy: data layers become an Input layer, the loss becomes its output "
        "(Softmax 'prob'), losses/accuracy/labels go, TEST-phase rules are dropped",
        {
            "batch": Key("int", doc="batch size of the Input layer (default 1)"),
            "channels": Key(
                "int", doc="input channels when the data layer does not say (0: derive)"
            ),
            "height": Key("int", doc="input height if crop_size/resize do not say (0: derive)"),
            "width": Key("int", doc="input width (0: derive)"),
            "output": Key("str", doc="name of the output layer and blob (default prob)"),
            "outputs": Key("strlist", doc="last (default), all, or output blob names"),
            "stage": Key("strlist", doc="stages whose layers are kept"),
            "strip_params": Key("bool", default=False, doc="remove param blocks"),
            "strip_fillers": Key("bool", default=False, doc="remove weight/bias fillers"),
            "strip_dropout": Key("bool", default=False, doc="remove Dropout layers"),
        },
        "none",
        plan_deploy,
        analysis_warnings=False,
    ),
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
    "remove-layer": StepSpec(
        "remove-layer",
        "remove one-bottom one-top layers; readers of the top read the bottom instead",
        {},
        "required",
        plan_remove_layer,
    ),
}


def describe_keys(kind: str) -> Iterable[tuple[str, Key]]:
    return sorted(_spec_keys(kind).items())
