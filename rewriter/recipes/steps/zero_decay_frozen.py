"""``zero-decay-frozen``: decay_mult 0 wherever lr_mult is 0, so frozen weights stop shrinking."""

from __future__ import annotations

from ..select import NetView
from .base import (
    Failure,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    _is_bn,
    _selection,
    num,
)
from .params import _Params

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = "decay_mult: 0 on every parameter whose lr_mult is 0 (every layer unless selected)"
KEYS: dict[str, Key] = {}
SELECTION = "optional"
ANALYSIS_WARNINGS = True


def plan(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    phase = ctx.phase
    where = view.graph_layers_of(phase)
    graph = view.graph(phase)
    done: set[str] = set()
    for k in chosen:
        if _is_bn(view, k):
            continue
        msg = view.layer(k)
        gi = where.get(k)
        for j, p in enumerate(msg.param):
            if gi is not None and j < len(graph.layers[gi].params):
                frozen = graph.layers[gi].params[j].lr_mult == 0
            else:
                frozen = p.HasField("lr_mult") and p.lr_mult == 0
            if not frozen:
                continue
            if not p.name:
                params.set(k, j, "decay_mult", 0.0)
                continue
            if p.name in done:
                continue
            done.add(p.name)
            # A shared blob takes the first explicit decay_mult of its group (and Caffe stops
            # on two different explicit values): zero every explicit one, or the owner's.
            group = params.sharers(k, j)
            explicit = [(a, b) for a, b in group if view.layer(a).param[b].HasField("decay_mult")]
            for a, b in explicit or group[:1]:
                params.set(a, b, "decay_mult", 0.0)
    params.flush()

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        w = after.graph_layers_of(phase)
        g = after.graph(phase)
        for k in chosen:
            gi = w.get(k)
            if gi is None or _is_bn(after, k):
                continue
            for p in g.layers[gi].params:
                if p.lr_mult == 0 and p.decay_mult != 0:
                    out.append(
                        (after.names[k], f"param {p.index} has lr_mult 0 but decay_mult "
                         f"{num(p.decay_mult)}")
                    )  # fmt: skip
        return out

    plan.promise = promise
    return plan
