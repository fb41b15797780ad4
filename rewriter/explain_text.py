"""Plain-text renderings of a backward analysis: a table to read at a glance, one layer in full.

Kept apart from the analysis so the analysis stays data and the CLI stays thin.
"""

from __future__ import annotations

import math

from .netinit import Backward

_STATES = {
    "trainable": "\x1b[32m",
    "frozen": "\x1b[36m",
    "backward only": "\x1b[33m",
    "no backward": "\x1b[90m",
}


def layer_state(result: Backward, index: int) -> str:
    """trainable (some parameter updates), frozen (has parameters, none update), backward only
    (passes gradients, nothing to learn) or no backward."""
    v = result.layers[index]
    layer = result.graph.layers[index]
    if not v.needs_backward_final:
        return "no backward"
    if layer.params:
        return "trainable" if any(v.param_updates) else "frozen"
    return "backward only"


def render_table(result: Backward, color: bool = False) -> str:
    g = result.graph
    rows: list[tuple[str, str, str, str, str]] = []
    for layer in g.layers:
        state = layer_state(result, layer.index)
        lrs = ",".join(_num(p.lr_mult) for p in layer.params) or "-"
        cuts = [
            layer.bottoms[j]
            for j, pd in enumerate(layer.propagate_down)
            if not pd and j < len(layer.bottoms)
        ]
        rows.append((layer.name, layer.type, state, lrs, ", ".join(cuts)))
    w_name = max([len("layer")] + [len(r[0]) for r in rows])
    w_type = max([len("type")] + [len(r[1]) for r in rows])
    w_state = max(len("state"), 13)
    lines = [f"{g.phase} net {g.net_name or '(unnamed)'}: {len(g.layers)} layers"]
    lines.append(f"{'layer':<{w_name}}  {'type':<{w_type}}  {'state':<{w_state}}  lr_mult  cut")
    for name, typ, state, lrs, cut in rows:
        st = f"{state:<{w_state}}"
        if color:
            st = f"{_STATES[state]}{st}\x1b[0m"
        lines.append(f"{name:<{w_name}}  {typ:<{w_type}}  {st}  {lrs:<7}  {cut}".rstrip())
    if g.force_backward:
        lines.append("force_backward: true (applied after Caffe logs its verdicts)")
    if g.outputs:
        lines.append("outputs: " + ", ".join(g.outputs))
    for w in result.warnings:
        lines.append(f"warning: {w.message}")
    return "\n".join(lines)


def render_layer(result: Backward, name: str) -> str:
    """Every reason for one layer; raises KeyError when there is no such layer."""
    g = result.graph
    matches = [layer for layer in g.layers if layer.name == name]
    if not matches:
        raise KeyError(name)
    out: list[str] = []
    for layer in matches:
        v = result.layers[layer.index]
        out.append(f"{layer.name} ({layer.type}), layer {layer.index} of the {g.phase} net")
        out.extend(f"  {r}" for r in v.reasons)
        for p in layer.params:
            upd = "updates" if v.param_updates[p.index] else "frozen"
            out.append(
                f"  param {p.index} ({p.role}): lr_mult {_num(p.lr_mult)}, "
                f"decay_mult {_num(p.decay_mult)} -> {upd}"
            )
        for w in result.warnings:
            if w.layer == layer.name:
                out.append(f"  warning: {w.message}")
    return "\n".join(out)


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) else f"{x:g}"
