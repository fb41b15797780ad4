"""``unfreeze``: lr_mult back where it is 0; BatchNorm loses use_global_stats."""

from __future__ import annotations

from .base import (
    Key,
    LayerEditor,
    Plan,
    StepContext,
    _children,
    _is_bn,
    _last_index,
    _msg_value,
    _selection,
)
from .params import BN_KEY, _mult_promise, _Params

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = "lr_mult back to 'value' (default 1) where it is 0; BatchNorm loses use_global_stats"
KEYS: dict[str, Key] = {
    "value": Key("number", default=1.0, doc="new lr_mult"),
    "bias_value": Key("number", doc="new lr_mult of bias blobs (default: value)"),
    "batchnorm": BN_KEY,
}
SELECTION = "required"
ANALYSIS_WARNINGS = True


def plan(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    value = float(step.get("value", 1.0))
    bias_value = step.get("bias_value")
    bn = bool(step.get("batchnorm", True))
    expected: dict[tuple[int, int], float] = {}
    for k in chosen:
        if _is_bn(view, k):
            if bn:
                _bn_remove_global_stats(ctx, plan, k)
            continue
        _, roles = params.info(k)
        msg = view.layer(k)
        for j, p in enumerate(msg.param):
            if p.HasField("lr_mult") and p.lr_mult == 0:
                role = roles[j] if j < len(roles) else ""
                new = float(bias_value) if bias_value is not None and role == "bias" else value
                for kk, jj in params.sharers(k, j):
                    params.set(kk, jj, "lr_mult", new)
                    expected[(kk, jj)] = new
    params.flush()
    plan.promise = _mult_promise(expected, "lr_mult")
    return plan


def _bn_remove_global_stats(ctx: StepContext, plan: Plan, k: int) -> None:
    view = ctx.view
    plan.declare(k, ("batch_norm_param", "use_global_stats"))
    f = view.field(k)
    bi = _last_index(f, "batch_norm_param")
    if bi is None:
        return
    block = _children(f)[bi]
    ui = _last_index(block, "use_global_stats")
    if ui is None:
        return
    set_, value = _msg_value(view.layer(k), ("batch_norm_param", "use_global_stats"))
    if not (set_ and value):
        return
    if len(_children(block)) == 1:
        plan.editor.remove(view.field_path(k) + (bi,))
    else:
        plan.editor.remove(view.field_path(k) + (bi, ui))
