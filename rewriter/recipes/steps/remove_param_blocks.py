"""``remove-param-blocks``: the selected layers' param blocks go (a sharing name stays)."""

from __future__ import annotations

from ..select import NetView
from .base import (
    Failure,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    _child,
    _children,
    _selection,
)
from .params import _Params

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = "remove the param blocks of the selected layers (a block with a sharing name keeps it)"
KEYS: dict[str, Key] = {}
SELECTION = "required"
ANALYSIS_WARNINGS = True


def plan(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    params = _Params(ctx, plan)
    for k in chosen:
        plan.declare(k, ("param",))
        layer = view.field(k)
        for bi in params.blocks(k):
            block = _child(layer, bi)
            kids = _children(block)
            path = view.field_path(k) + (bi,)
            if any(c.name == "name" for c in kids):
                # keep the sharing name: drop everything else
                for ci, c in enumerate(kids):
                    if c.name != "name":
                        plan.editor.remove(path + (ci,))
            else:
                plan.editor.remove(path)

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for k in chosen:
            for j, p in enumerate(after.layer(k).param):
                if any(fd.name != "name" for fd, _ in p.ListFields()):
                    out.append((after.names[k], f"param block {j} still sets more than a name"))
        return out

    plan.promise = promise
    return plan
