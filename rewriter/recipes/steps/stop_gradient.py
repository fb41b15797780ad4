"""``stop-gradient``: propagate_down false on the bottoms of 'to' fed by 'from'."""

from __future__ import annotations

from collections.abc import Sequence

from rewriter.text.cst import ListBody

from ..select import NetView
from .base import (
    Failure,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    _children,
    _insert_pos,
    bottom_writers,
    check_from_to,
    fed_by,
)

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "check", "plan"]

DOC = "propagate_down: false on the bottom(s) of 'to' fed by 'from'"
KEYS: dict[str, Key] = {
    "from": Key("str", required=True, doc="the layer above the cut"),
    "to": Key("str", required=True, doc="the layer below the cut"),
}
SELECTION = "none"
ANALYSIS_WARNINGS = False
check = check_from_to


def plan(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    view.require_current("step 'stop-gradient'")
    src, dst = str(step.get("from")), str(step.get("to"))
    phase = ctx.phase
    graph = view.graph(phase)
    writers = bottom_writers(graph)
    targets = [layer for layer in graph.layers if layer.name == dst]
    if ctx.rerun and (not targets or not any(layer.name == src for layer in graph.layers)):
        plan.note = "its layers were renamed or removed by a later step"
        return plan
    if not targets:
        raise ctx.error(str(view.no_such_layer(dst, phase)).split(": ", 1)[-1], "to")
    if not any(layer.name == src for layer in graph.layers):
        raise ctx.error(str(view.no_such_layer(src, phase)).split(": ", 1)[-1], "from")
    cuts: list[tuple[int, int, list[int]]] = []  # (doc index, graph index, fed bottoms)
    for layer in targets:
        fed = [j for j in range(len(layer.bottoms)) if fed_by(graph, writers, layer.index, j, src)]
        k = view.doc_index(layer.source_index)
        if not fed or k is None:
            continue
        cuts.append((k, layer.index, fed))
    if not cuts:
        feeders = []
        for layer in targets:
            for j in range(len(layer.bottoms)):
                w = writers[layer.index][j]
                while w is not None and graph.layers[w].inserted_split:
                    w = writers[w][0]
                if w is not None:
                    feeders.append(graph.layers[w].name)
        raise ctx.error(
            f"'{src}' does not feed '{dst}' in the {phase} net (its bottoms come from "
            f"{', '.join(dict.fromkeys(feeders)) or 'nothing'})",
            "from",
        )
    for k, gi, fed in cuts:
        _set_propagate_down(ctx, plan, k, len(graph.layers[gi].bottoms), fed)
    plan.selected = [k for k, _, _ in cuts]

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        verdicts = after.backward(phase)
        g = after.graph(phase)
        where = after.graph_layers_of(phase)
        for k, _, fed in cuts:
            gi = where.get(k)
            if gi is None:
                out.append((dst, f"layer is no longer in the {phase} net"))
                continue
            v = verdicts.layers[gi]
            for j in fed:
                if v.bottom_need_backward[j]:
                    why = " (the net sets force_backward: true)" if g.force_backward else ""
                    out.append((dst, f"bottom {j} still gets a gradient{why}"))
        plan.warnings.extend(_above_cut_warnings(after, phase, src, dst))
        return out

    plan.promise = promise
    return plan


def _set_propagate_down(
    ctx: StepContext, plan: Plan, k: int, n_bottoms: int, fed: list[int]
) -> None:
    view = ctx.view
    plan.declare(k, ("propagate_down",))
    msg = view.layer(k)
    current = [bool(x) for x in msg.propagate_down]
    if current and len(current) != n_bottoms:
        raise ctx.error(
            f"{view.describe(k)} has {len(current)} propagate_down entries for {n_bottoms} "
            "bottoms (Caffe needs one per bottom); fix it first"
        )
    wanted = [False if j in fed else (current[j] if current else True) for j in range(n_bottoms)]
    if wanted == current:
        return
    layer = view.field(k)
    kids = _children(layer)
    pd = [i for i, c in enumerate(kids) if c.name == "propagate_down"]
    lists = [i for i in pd if isinstance(kids[i].body, ListBody)]
    path = view.field_path(k)
    text = ["true" if w else "false" for w in wanted]
    if lists:
        for i in pd[1:]:
            plan.editor.remove(path + (i,))
        plan.editor.replace(
            path + (pd[0],), f"propagate_down: [{', '.join(text)}]" + kids[pd[0]].suffix
        )
        return
    if pd:
        for j, i in enumerate(pd):
            if current[j] != wanted[j]:
                plan.editor.set_value(path + (i,), text[j])
        return
    at = _insert_pos(layer, ("name", "type", "bottom", "top"))
    for t in text:
        plan.editor.insert(path, at, "propagate_down", t)


def _above_cut_warnings(view: NetView, phase: str, src: str, dst: str) -> list[str]:
    """Layers above the cut whose weights still change: the trap users fall into."""
    from ..select import graph_edges

    graph = view.graph(phase)
    verdicts = view.backward(phase)
    preds, _ = graph_edges(graph)
    start = [layer.index for layer in graph.layers if layer.name == src]
    seen = set(start)
    stack = list(start)
    while stack:
        for p in preds[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    training: list[str] = []
    decaying: list[str] = []
    states = verdicts.states.layers  # rewriter.caffe.states: the words every command uses
    for li in sorted(seen):
        if states[li] == "trainable":
            training.append(graph.layers[li].name)
        elif states[li] == "decay-only":
            decaying.append(graph.layers[li].name)
    out: list[str] = []
    if training:
        out.append(
            f"stop-gradient {src} -> {dst}: {_names(training)} above the cut still "
            "train (they get a gradient through another path and have lr_mult != 0); freeze "
            "them too if they should not change"
        )
    if decaying:
        out.append(
            f"stop-gradient {src} -> {dst}: {_names(decaying)} above the cut get no "
            "gradient any more but still change through weight decay (lr_mult != 0, "
            "decay_mult != 0); freeze them (lr_mult: 0) or set decay_mult: 0"
        )
    return out


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")
