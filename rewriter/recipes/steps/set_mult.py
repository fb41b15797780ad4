"""``set-lr``, ``set-decay``, ``zero-decay``: twins that set one multiplier of the selected
layers' parameters (one planner, :func:`plan_set_mult`; ``check`` serves set-lr and set-decay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    Key,
    LayerEditor,
    Plan,
    StepContext,
    _is_bn,
    _selection,
    num,
)
from .params import _mult_promise, _Params

if TYPE_CHECKING:
    from ..recipe import Step

__all__ = [
    "ANALYSIS_WARNINGS",
    "SELECTION",
    "SET_DECAY_DOC",
    "SET_DECAY_KEYS",
    "SET_LR_DOC",
    "SET_LR_KEYS",
    "ZERO_DECAY_DOC",
    "ZERO_DECAY_KEYS",
    "check",
    "plan_set_decay",
    "plan_set_lr",
    "plan_set_mult",
    "plan_zero_decay",
]

_PARAMS = Key("intlist", doc="parameter indices (default: all)")

SELECTION = "required"
ANALYSIS_WARNINGS = True

SET_LR_DOC = "set (value) or multiply (scale) lr_mult of the selected layers' parameters"
SET_LR_KEYS: dict[str, Key] = {
    "value": Key("number", doc="new lr_mult"),
    "scale": Key("number", doc="factor"),
    "params": _PARAMS,
}

SET_DECAY_DOC = "set (value) or multiply (scale) decay_mult of the selected layers' parameters"
SET_DECAY_KEYS: dict[str, Key] = {
    "value": Key("number", doc="new decay_mult"),
    "scale": Key("number", doc="factor"),
    "params": _PARAMS,
}

ZERO_DECAY_DOC = "decay_mult: 0 on the selected layers' parameters"
ZERO_DECAY_KEYS: dict[str, Key] = {"params": _PARAMS}


def plan_set_mult(ctx: StepContext, name: str, fixed: float | None = None) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    value = step.get("value") if fixed is None else fixed
    scale = step.get("scale")
    indices = step.get("params")
    expected: dict[tuple[int, int], float] = {}
    for k in chosen:
        if _is_bn(view, k):
            continue  # Caffe refuses lr_mult != 0 on BatchNorm; its blobs are statistics
        count, _ = params.info(k)
        for j in indices if indices is not None else range(count):
            if j >= count:
                continue
            new = float(value) if value is not None else params.current(k, j, name) * float(scale)
            new = float(num(new)) if new != int(new) else new
            for kk, jj in params.sharers(k, j):
                params.set(kk, jj, name, new)
                expected[(kk, jj)] = new
    params.flush()
    plan.promise = _mult_promise(expected, name)
    return plan


def plan_set_lr(ctx: StepContext) -> Plan:
    return plan_set_mult(ctx, "lr_mult")


def plan_set_decay(ctx: StepContext) -> Plan:
    return plan_set_mult(ctx, "decay_mult")


def plan_zero_decay(ctx: StepContext) -> Plan:
    return plan_set_mult(ctx, "decay_mult", fixed=0.0)


def check(step: Step) -> None:
    has_value = step.get("value") is not None
    has_scale = step.get("scale") is not None
    if has_value == has_scale:
        raise step.error("give exactly one of 'value' (set) or 'scale' (multiply)")
