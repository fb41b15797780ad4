"""``remove-layer``: one-bottom one-top layers go; readers of the top read the bottom instead."""

from __future__ import annotations

from rewriter.text.cst import encode_string

from ..select import NetView
from .base import (
    Failure,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    StructChange,
    _blob_fields,
    _selection,
)

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = "remove one-bottom one-top layers; readers of the top read the bottom instead"
KEYS: dict[str, Key] = {}
SELECTION = "required"
ANALYSIS_WARNINGS = True


def plan(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    chosen = _selection(ctx, plan)
    msgs = view.message.layer
    removed_names = {view.names[k] for k in chosen}
    for k in chosen:
        m = msgs[k]
        name = view.names[k]
        if len(m.bottom) != 1 or len(m.top) != 1:
            raise ctx.error(
                f"{view.describe(k)} has {len(m.bottom)} bottom(s) and {len(m.top)} top(s); "
                "remove-layer only reconnects layers with one bottom and one top"
            )
        bottom, top = str(m.bottom[0]), str(m.top[0])
        if top != bottom:
            producers = [
                j for j, other in enumerate(msgs)
                if j != k and top in other.top and top not in other.bottom
                and view.names[j] not in removed_names
            ]  # fmt: skip
            if producers:
                raise ctx.error(
                    f"{view.describe(k)}: blob '{top}' is also produced by "
                    f"{', '.join(view.names[j] for j in producers)}; cannot reconnect"
                )
            later = range(k + 1, len(msgs))
            in_place = [j for j in later if top in msgs[j].top and top in msgs[j].bottom]
            readers_of_bottom = [j for j in later if bottom in msgs[j].bottom]
            if in_place and readers_of_bottom:
                raise ctx.error(
                    f"{view.describe(k)}: '{top}' is rewritten in place by "
                    f"{view.names[in_place[0]]} and '{bottom}' is read by "
                    f"{view.names[readers_of_bottom[0]]}; reconnecting would make them share "
                    "one blob"
                )
            for j in later:
                if view.names[j] in removed_names:
                    continue
                for ci, fname in _blob_fields(view, j, top):
                    plan.editor.set_value(view.field_path(j) + (ci,), encode_string(bottom))
                    plan.declare(j, (fname,))
        plan.editor.remove(view.field_path(k))
        plan.removed.append(k)
        plan.declare(k, ("*",))
        plan.structural.append(StructChange("remove-layer", name, "", bottom, top))
    names = sorted(removed_names)

    def promise(after: NetView) -> list[Failure]:
        return [(n, "still present") for n in names if n in after.by_name]

    plan.promise = promise
    return plan
