"""``freeze``: lr_mult 0 on the selected layers' parameters; promises no update is left."""

from __future__ import annotations

from ..select import NetView
from .base import (
    Failure,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    _ensure_scalar,
    _is_bn,
    _msg_value,
    _selection,
)
from .params import BN_KEY, _Params

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = (
    "lr_mult: 0 on every parameter blob of the selected layers (param blocks added where "
    "missing); BatchNorm layers get use_global_stats: true"
)
KEYS: dict[str, Key] = {
    "shared": Key(
        "choice",
        default="unit",
        choices=("unit", "reject"),
        doc="shared parameters (same param name) are frozen together (unit) or refused (reject)",
    ),
    "zero_decay": Key("bool", default=False, doc="also set decay_mult: 0"),
    "batchnorm": BN_KEY,
}
SELECTION = "required"
ANALYSIS_WARNINGS = False


def _bn_global_stats(ctx: StepContext, plan: Plan, k: int) -> None:
    set_, value = _msg_value(ctx.view.layer(k), ("batch_norm_param", "use_global_stats"))
    _ensure_scalar(
        ctx, plan, k, ("batch_norm_param", "use_global_stats"), "true", bool(set_ and value)
    )


def plan(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    zero_decay = bool(step.get("zero_decay", False))
    bn = bool(step.get("batchnorm", True))
    mode = step.get("shared", "unit")
    chosen_set = set(chosen)
    for k in chosen:
        if _is_bn(view, k):
            # Caffe never lets the solver update BatchNorm's blobs (lr_mult is forced to 0);
            # what moves are the running statistics, frozen by use_global_stats.
            if bn:
                _bn_global_stats(ctx, plan, k)
            continue
        count, _ = params.info(k)
        for j in range(count):
            targets = params.sharers(k, j)
            if mode == "reject":
                others = sorted({view.names[kk] for kk, _ in targets if kk not in chosen_set})
                if others:
                    name = view.layer(k).param[j].name
                    raise ctx.error(
                        f"{view.describe(k)} shares param '{name}' with "
                        f"{', '.join(others)}, which {'is' if len(others) == 1 else 'are'} not "
                        'selected; select them too or use shared = "unit"',
                        "shared",
                    )
            for kk, jj in targets:
                params.set(kk, jj, "lr_mult", 0.0)
                if zero_decay:
                    params.set(kk, jj, "decay_mult", 0.0)
    params.flush()
    names = [view.names[k] for k in chosen]
    phase = ctx.phase

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        where = after.graph_layers_of(phase)
        graph = after.graph(phase)
        for k, name in zip(chosen, names, strict=True):
            if after.names[k] != name:
                out.append((name, "layer moved or renamed during the step"))
                continue
            gi = where.get(k)
            if gi is not None:
                # the analysis' param_updates: effective lr_mult != 0 after Net::Init's
                # sharing (Param.updates), read straight from the wired net
                moving = [p.index for p in graph.layers[gi].params if p.updates]
                if moving:
                    out.append((name, f"param(s) {moving} still updated (lr_mult != 0)"))
            if bn and _is_bn(after, k):
                set_, value = _msg_value(after.layer(k), ("batch_norm_param", "use_global_stats"))
                if not (set_ and value):
                    out.append((name, "BatchNorm without use_global_stats: true"))
        return out

    plan.promise = promise
    return plan
