"""Plain-text renderings of a backward analysis: a table to read at a glance, one layer in full.

Kept apart from the analysis so the analysis stays data and the CLI stays thin.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rewriter.caffe import states as st
from rewriter.caffe.netinit import Backward

if TYPE_CHECKING:
    from rewriter.caffe.graph import Param

_COLORS = {
    st.TRAINABLE: "\x1b[32m",
    st.DECAY_ONLY: "\x1b[33m",
    st.STATISTICS_ONLY: "\x1b[35m",
    st.FROZEN: "\x1b[36m",
    st.BACKWARD_ONLY: "\x1b[37m",
    st.NO_BACKWARD: "\x1b[90m",
}


def render_table(result: Backward, color: bool = False) -> str:
    g = result.graph
    rows: list[tuple[str, str, str, str, str]] = []
    states = result.states.layers
    # the graph shares one params tuple between layers set up alike: one cell per tuple
    lr_cells: dict[int, str] = {}
    for layer in g.layers:
        state = states[layer.index]
        params = layer.params
        lrs = lr_cells.get(id(params))
        if lrs is None:
            lrs = lr_cells[id(params)] = ",".join([_num(p.lr_mult) for p in params]) or "-"
        cut = ""
        if layer.propagate_down:
            cuts = [
                layer.bottoms[j]
                for j, pd in enumerate(layer.propagate_down)
                if not pd and j < len(layer.bottoms)
            ]
            cut = ", ".join(cuts)
        rows.append((layer.name, layer.type, state, lrs, cut))
    w_name = max([len("layer")] + [len(r[0]) for r in rows])
    w_type = max([len("type")] + [len(r[1]) for r in rows])
    w_state = max(len(s) for s in st.LAYER_STATES)
    lines = [f"{g.phase} net {g.net_name or '(unnamed)'}: {len(g.layers)} layers"]
    lines.append(f"{'layer':<{w_name}}  {'type':<{w_type}}  {'state':<{w_state}}  lr_mult  cut")
    for name, typ, state, lrs, cut in rows:
        cell = f"{state:<{w_state}}"
        if color:
            cell = f"{_COLORS[state]}{cell}\x1b[0m"
        lines.append(f"{name:<{w_name}}  {typ:<{w_type}}  {cell}  {lrs:<7}  {cut}".rstrip())
    if g.force_backward:
        lines.append("force_backward: true (applied after Caffe logs its verdicts)")
    if g.outputs:
        lines.append("outputs: " + ", ".join(g.outputs))
    for w in result.warnings:
        lines.append(f"warning: {w.message}")
    return "\n".join(lines)


def render_layer(result: Backward, name: str, net: str | None = None) -> str:
    """Every reason for one layer, its state and, when it learns, the command that freezes it
    (``net``: the path to put in that command). Raises KeyError when there is no such layer."""
    g = result.graph
    matches = [layer for layer in g.layers if layer.name == name]
    if not matches:
        raise KeyError(name)
    states = result.states
    out: list[str] = []
    for layer in matches:
        li = layer.index
        v = result.layers[li]
        state = states.layers[li]
        out.append(f"{layer.name} ({layer.type}), layer {li} of the {g.phase} net: {state}")
        causes = st.causes(result, li) if v.needs_backward else None
        if causes is not None:
            out.extend(_needs_backward(result, li, causes, states))
        else:
            out.extend(f"  {r}" for r in v.reasons)
        for p in layer.params:
            ps = states.params[li][p.index]
            out.append(
                f"  param {p.index} ({p.role}): lr_mult {_num(p.lr_mult)}, "
                f"decay_mult {_num(p.decay_mult)} -> {ps}{_param_why(p, ps)}"
            )
        if causes is not None and (
            state == st.FROZEN or (state == st.BACKWARD_ONLY and all(i.cut for i in causes.inputs))
        ):
            out.append(f"  {_still_logged(layer.name, causes, frozen=state == st.FROZEN)}")
        for w in result.warnings:
            if w.layer == layer.name:
                out.append(f"  warning: {w.message}")
        if net is not None and state in (st.TRAINABLE, st.DECAY_ONLY, st.STATISTICS_ONLY):
            out.extend(_freeze_advice(result, li, net, state, causes))
    return "\n".join(out)


def _needs_backward(result: Backward, li: int, causes: st.Causes, states: st.States) -> list[str]:
    """Caffe's log line and its causes as alternatives (Net::Init ORs them)."""
    layer = result.graph.layers[li]
    items = []
    for p in causes.params:
        text = f"param {p.index} ({p.role}) has lr_mult {_num(p.local_lr_mult)}"
        if not p.explicit_lr_mult:
            text += " (the default: no lr_mult given)"
        if p.lr_mult != p.local_lr_mult:
            text += f"; Net::Init tests this, the solver uses {_num(p.lr_mult)}"
        items.append(text)
    for i in causes.inputs:
        text = f"its input '{i.blob}'"
        if i.producer and i.producer != i.blob:
            text += f" (from {i.producer})"
        text += " is marked as needing backward by Caffe's forward pass"
        if i.learner:
            text += f" because {i.learner} upstream learns"
        if i.cut:
            below = i.producer or "the layer below"
            text += (
                "; propagate_down: false does not clear that mark, it only stops the gradient"
                f" here, so {below} gets none ({_state_of(result, states, below)})"
            )
        else:
            text += "; the gradient passes down through it"
        items.append(text)
    head = f'  Caffe logs "{layer.name} needs backward computation." because'
    out = [head + (" any of:" if len(items) > 1 else ":")]
    out.extend(f"    - {x}" for x in items)
    # the loss line and the force_backward line of the reasons, as they are
    tail = ("and it contributes", f"{layer.name} runs backward")
    out.extend(f"  {r.lstrip()}" for r in result.layers[li].reasons if r.lstrip().startswith(tail))
    return out


def _state_of(result: Backward, states: st.States, name: str) -> str:
    try:
        return states.layers[result.graph.layer(name).index]
    except KeyError:
        return "?"


def _param_why(p: Param, state: str) -> str:
    if state == st.DECAY_ONLY:
        return " (no gradient reaches it; weight decay alone still shrinks it)"
    if state == st.STATISTICS_ONLY:
        return " (not learned; its forward pass updates it unless use_global_stats: true)"
    if state == st.FROZEN and p.lr_mult != 0:
        return " (no gradient reaches it and decay_mult is 0)"
    return ""


def _still_logged(name: str, causes: st.Causes, frozen: bool, after: bool = False) -> str:
    """Why Caffe logs "needs backward" for a layer whose parameters do not change (``after``:
    once the freeze command has run)."""
    logs = (
        f'Caffe {"will still log" if after else "still logs"} "{name} needs backward computation."'
    )
    unchanged = "its parameters no longer change" if after else "its parameters do not change"
    if not causes.inputs:  # BatchNorm: Net::Init tests rates the solver does not use
        return (
            f"{logs} because of the lr_mult Net::Init tests, but the solver's rates are 0:"
            f" {unchanged}."
        )
    blobs = ", ".join(f"'{i.blob}'" for i in causes.inputs)
    text = f"{logs} because of its input {blobs}"
    text += f", but {unchanged}" if frozen else ", but it learns nothing itself"
    cut = [i for i in causes.inputs if i.cut]
    flowing = [i for i in causes.inputs if not i.cut]
    if cut and not flowing:
        below = ", ".join(i.producer or i.blob for i in cut)
        return text + f" and, with propagate_down: false, no gradient passes down to {below}."
    if flowing:
        return (
            text
            + "; it runs backward to pass the gradient down to "
            + ", ".join(f"'{i.blob}'" for i in flowing)
            + "."
        )
    return text + "."


def _freeze_advice(
    result: Backward, li: int, net: str, state: str, causes: st.Causes | None
) -> list[str]:
    """The command that freezes the layer, and what Caffe will log afterwards."""
    import shlex
    from pathlib import PurePath

    layer = result.graph.layers[li]
    path = PurePath(net)
    out_path = path.with_name(f"{path.stem}.frozen{path.suffix or '.prototxt'}")
    cmd = ["rewriter", "apply", "freeze", net, "--set", f"layers={layer.name}"]
    if result.graph.phase != "TRAIN":
        cmd += ["--phase", result.graph.phase]
    cmd += ["-o", str(out_path)]
    what = "its statistics" if state == st.STATISTICS_ONLY else "it"
    if "," in layer.name or layer.name != layer.name.strip():
        # --set layers=... is a comma-separated list: this name cannot be given there
        fix = "use_global_stats: true" if state == st.STATISTICS_ONLY else "lr_mult: 0"
        out = [f"  to freeze {what}: set {fix} on it (its name cannot be passed to --set)"]
    else:
        out = [f"  to freeze {what}: {shlex.join(cmd)}"]
    if causes is not None and causes.inputs and state != st.STATISTICS_ONLY:
        out.append("  after that, " + _still_logged(layer.name, causes, frozen=True, after=True))
    elif state != st.STATISTICS_ONLY:
        out.append(f'  after that, Caffe logs "{layer.name} does not need backward computation."')
    return out


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) else f"{x:g}"
