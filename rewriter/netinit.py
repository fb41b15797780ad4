"""Caffe's backward analysis (``Net::Init``), reproduced exactly, with reasons.

Caffe decides which layers run ``Backward`` in three passes over the wired net
(:func:`rewriter.graph.build_graph` builds that net):

1. **Forward pass** (net order). A layer *needs backward* if any bottom blob needs backward or
   any of its parameter blobs has ``lr_mult != 0`` in the layer's own ``param`` block (a
   missing block means ``lr_mult`` 1). Each bottom's flag starts as its blob's flag, or as the
   layer's ``propagate_down`` entry when given. If the layer needs backward, all its tops do.
2. **Backward pass** (reverse order), by blob *name*. A layer *contributes to a loss* if a top
   has a loss weight or a top's name was put in ``blobs_under_loss`` by a later contributing
   layer. It *skips propagate down* if every top's name is in ``blobs_skip_backp``. A skipping
   layer loses its flag and all bottom flags; a non-contributing layer loses its flag. Caffe
   logs the verdict here. Then every bottom name of a contributing layer goes into
   ``blobs_under_loss``; bottom flags of non-contributing layers are cleared, and every bottom
   whose flag is false puts its name into ``blobs_skip_backp``.
3. **force_backward**: every layer needs backward, each bottom flag becomes
   ``flag or AllowForceBackward(bottom)`` and every parameter gets ``propagate_down``.

:func:`analyze` returns a :class:`Backward` with both verdicts (the logged one and the final
one), per-bottom and per-parameter flags, a short human chain of reasons per layer, and
warnings for the traps that surprise people (weight decay on parameters that never get a
gradient, BatchNorm statistics that keep moving although ``lr_mult`` is 0).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewriter.graph import (
    AUTOMATIC_TOP,
    Blob,
    CaffeError,
    Graph,
    GraphWarning,
    Layer,
    Param,
    build_graph,
    gc_paused,
    upgrade_net_message,
    v0_to_v1_message,
    v1_to_v2_message,
)

__all__ = [
    "AUTOMATIC_TOP",
    "Backward",
    "Blob",
    "CaffeError",
    "Graph",
    "GraphWarning",
    "Layer",
    "LayerVerdict",
    "Param",
    "analyze",
    "analyze_net",
    "build_graph",
    "upgrade_net_message",
    "v0_to_v1_message",
    "v1_to_v2_message",
]


def _num(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".6g")


@dataclass(frozen=True)
class LayerVerdict:
    """Caffe's backward decision for one layer."""

    index: int
    name: str
    type: str
    #: Caffe's log verdict ("X needs backward computation."), before force_backward
    needs_backward: bool
    #: ``Net::layer_need_backward()`` after Init (force_backward applied)
    needs_backward_final: bool
    #: per bottom, before force_backward
    bottom_need_backward_log: tuple[bool, ...]
    #: per bottom, final state (what ``Backward`` is called with)
    bottom_need_backward: tuple[bool, ...]
    #: per parameter blob, ``Layer::param_propagate_down`` final state
    param_propagate_down: tuple[bool, ...]
    #: per parameter blob, the solver updates it (effective lr_mult != 0, after sharing)
    param_updates: tuple[bool, ...]
    #: effective lr_mult per parameter blob (after sharing)
    param_lr_mult: tuple[float, ...]
    #: the layer contributes to a loss (Caffe's ``layer_contributes_loss``)
    contributes_loss: bool
    reasons: tuple[str, ...]

    @property
    def verdict_differs(self) -> bool:
        return self.needs_backward != self.needs_backward_final


@dataclass(frozen=True)
class Backward:
    graph: Graph
    layers: tuple[LayerVerdict, ...]
    warnings: tuple[GraphWarning, ...]

    def layer(self, name: str) -> LayerVerdict:
        """The verdict of the first layer with that name."""
        return self.layers[self.graph.layer(name).index]

    def log_lines(self) -> list[str]:
        """Caffe's verdict lines, in Caffe's order (last layer first)."""
        return [
            f"{v.name} needs backward computation."
            if v.needs_backward
            else f"{v.name} does not need backward computation."
            for v in reversed(self.layers)
        ]

    def to_json(self) -> dict[str, Any]:
        """The verdict as plain JSON data (schema in docs/explain.md)."""
        with gc_paused():
            return self._to_json()

    def _to_json(self) -> dict[str, Any]:
        g = self.graph
        layers: list[dict[str, Any]] = []
        for layer, v in zip(g.layers, self.layers, strict=True):
            layers.append(
                {
                    "index": layer.index,
                    "name": layer.name,
                    "type": layer.type,
                    "inserted_split": layer.inserted_split,
                    "source_index": layer.source_index,
                    "needs_backward": v.needs_backward,
                    "needs_backward_final": v.needs_backward_final,
                    "contributes_loss": v.contributes_loss,
                    "bottoms": [
                        {
                            "blob": blob,
                            "need_backward": v.bottom_need_backward[j],
                            "need_backward_log": v.bottom_need_backward_log[j],
                            "propagate_down": (
                                layer.propagate_down[j] if layer.propagate_down else None
                            ),
                            "allow_force_backward": layer.allow_force_backward[j],
                        }
                        for j, blob in enumerate(layer.bottoms)
                    ],
                    "tops": [
                        {"blob": blob, "loss_weight": layer.loss_weights[k]}
                        for k, blob in enumerate(layer.tops)
                    ],
                    "params": [
                        {
                            "index": p.index,
                            "role": p.role,
                            "name": p.name,
                            "lr_mult": p.lr_mult,
                            "decay_mult": p.decay_mult,
                            "local_lr_mult": p.local_lr_mult,
                            "explicit": p.explicit,
                            "shared_from": (
                                None
                                if p.shared_from is None
                                else {
                                    "layer": p.shared_from_name,
                                    "layer_index": p.shared_from[0],
                                    "param_index": p.shared_from[1],
                                }
                            ),
                            "propagate_down": v.param_propagate_down[p.index],
                            "updates": p.updates,
                        }
                        for p in layer.params
                    ],
                    "reasons": list(v.reasons),
                }
            )
        return {
            "net": g.net_name,
            "phase": g.phase,
            "stages": list(g.stages),
            "level": g.level,
            "force_backward": g.force_backward,
            "layers": layers,
            "inputs": list(g.inputs),
            "outputs": list(g.outputs),
            "warnings": [
                {"kind": w.kind, "layer": w.layer, "index": w.index, "message": w.message}
                for w in self.warnings
            ],
            "log": self.log_lines(),
        }


def _lr_source(p: Param) -> str:
    if not p.explicit:
        return "no param block -> default"
    if not p.explicit_lr_mult:
        return "param block without lr_mult -> default"
    return "param block"


def _param_text(p: Param) -> str:
    text = f"param {p.index} ({p.role}) has lr_mult {_num(p.local_lr_mult)} ({_lr_source(p)})"
    if p.shared_from is not None:
        text += f", shared as '{p.name}' with {p.shared_from_name} param {p.shared_from[1]}"
    return text


# Why a bottom name went into blobs_skip_backp (see analyze)
_CUT_PD, _CUT_NO_LOSS, _CUT_SKIP, _CUT_NO_GRAD = range(4)


def analyze(graph: Graph) -> Backward:
    """Run Caffe's backward decision on a wired graph (see the module docstring)."""
    with gc_paused():
        return _analyze(graph)


def _analyze(graph: Graph) -> Backward:
    layers = graph.layers
    n = len(layers)
    blob_need = [False] * len(graph.blob_list)
    need: list[bool] = []
    bottom_need: list[list[bool]] = []
    fwd_bottom: list[int | None] = []  # first bottom whose blob needed backward
    fwd_params: list[list[Param]] = []  # params with local lr_mult != 0
    for layer in layers:
        nb = False
        flags: list[bool] = []
        first: int | None = None
        for j, blob_id in enumerate(layer.bottom_ids):
            if blob_need[blob_id]:
                nb = True
                if first is None:
                    first = j
            flags.append(layer.propagate_down[j] if layer.propagate_down else blob_need[blob_id])
        learned = [p for p in layer.params if p.local_lr_mult != 0]
        nb = nb or bool(learned)
        need.append(nb)
        bottom_need.append(flags)
        fwd_bottom.append(first)
        fwd_params.append(learned)
        if nb:
            for blob_id in layer.top_ids:
                blob_need[blob_id] = True

    blob_names = [b.name for b in graph.blob_list]
    under_loss: dict[str, int] = {}  # name -> layer that put it there
    skip: dict[str, tuple[int, int, int]] = {}  # name -> (layer, bottom, cause)
    contributes = [False] * n
    loss_via: list[tuple[int, int | None] | None] = [None] * n  # (top, reader layer)
    cut_by: list[list[tuple[str, int, int, int]]] = [[] for _ in range(n)]
    killed: list[str] = [""] * n  # "", "skip", "no-loss", "no-grad"
    for li in range(n - 1, -1, -1):
        layer = layers[li]
        contrib = False
        skipping = True
        for k, blob_id in enumerate(layer.top_ids):
            name = blob_names[blob_id]
            if not contrib:
                if layer.loss_weights[k]:
                    contrib = True
                    loss_via[li] = (k, None)
                elif name in under_loss:
                    contrib = True
                    loss_via[li] = (k, under_loss[name])
            if name not in skip:
                skipping = False
            if contrib and not skipping:
                break
        if skipping:
            cut_by[li] = [
                (blob_names[t], *skip[blob_names[t]])
                for t in layer.top_ids
                if blob_names[t] in skip
            ]
        if not need[li]:
            killed[li] = "no-grad"
        if need[li] and skipping:
            need[li] = False
            killed[li] = "skip"
            bottom_need[li] = [False] * len(bottom_need[li])
        if not contrib:
            if need[li]:
                killed[li] = "no-loss"
            need[li] = False
        contributes[li] = contrib
        for j, blob_id in enumerate(layer.bottom_ids):
            name = blob_names[blob_id]
            if contrib:
                under_loss.setdefault(name, li)
            else:
                bottom_need[li][j] = False
            if not bottom_need[li][j] and name not in skip:
                if layer.propagate_down and not layer.propagate_down[j]:
                    cause = _CUT_PD
                elif not contrib:
                    cause = _CUT_NO_LOSS
                elif skipping and layer.top_ids:
                    cause = _CUT_SKIP
                else:
                    cause = _CUT_NO_GRAD
                skip[name] = (li, j, cause)

    log_need = list(need)
    log_bottom = [tuple(f) for f in bottom_need]
    final_need = list(need)
    final_bottom = [list(f) for f in bottom_need]
    if graph.force_backward:
        for li, layer in enumerate(layers):
            final_need[li] = True
            for j in range(len(layer.bottoms)):
                final_bottom[li][j] = final_bottom[li][j] or layer.allow_force_backward[j]

    verdicts: list[LayerVerdict] = []
    for li, layer in enumerate(layers):
        reasons = _reasons(
            graph,
            li,
            log_need[li],
            contributes[li],
            killed[li],
            fwd_bottom[li],
            fwd_params[li],
            loss_via[li],
            cut_by[li],
        )
        if final_need[li] != log_need[li]:
            reasons.append(f"{layer.name} runs backward anyway: the net sets force_backward: true")
        verdicts.append(
            LayerVerdict(
                index=li,
                name=layer.name,
                type=layer.type,
                needs_backward=log_need[li],
                needs_backward_final=final_need[li],
                bottom_need_backward_log=log_bottom[li],
                bottom_need_backward=tuple(final_bottom[li]),
                param_propagate_down=tuple(
                    graph.force_backward or p.local_lr_mult != 0 for p in layer.params
                ),
                param_updates=tuple(p.updates for p in layer.params),
                param_lr_mult=tuple(p.lr_mult for p in layer.params),
                contributes_loss=contributes[li],
                reasons=tuple(reasons),
            )
        )
    warnings = list(graph.warnings) + _traps(graph, verdicts)
    return Backward(graph=graph, layers=tuple(verdicts), warnings=tuple(warnings))


def _who(graph: Graph, li: int | None) -> str:
    return "?" if li is None else graph.layers[li].name


def _reasons(
    graph: Graph,
    li: int,
    verdict: bool,
    contributes: bool,
    killed: str,
    fwd_bottom: int | None,
    fwd_params: Sequence[Param],
    loss_via: tuple[int, int | None] | None,
    cut_by: Sequence[tuple[str, int, int, int]],
) -> list[str]:
    layer = graph.layers[li]
    name = layer.name
    if verdict:
        why: list[str] = []
        if fwd_params:
            why.append(_param_text(fwd_params[0]))
        if fwd_bottom is not None:
            blob = layer.bottoms[fwd_bottom]
            producer = graph.blob_list[layer.bottom_ids[fwd_bottom]].producer
            text = f"its input '{blob}' needs backward (from {_who(graph, producer)})"
            if layer.propagate_down and not layer.propagate_down[fwd_bottom]:
                text += " (propagate_down: false only stops the gradient going further back)"
            why.append(text)
        out = [f"{name} needs backward: {why[0]}"]
        out.extend(f"  and {w}" for w in why[1:])
        out.append(f"  and it {_loss_text(graph, layer, loss_via)}")
        return out
    if killed == "skip":
        return [f"{name} does not need backward: {_cut_text(graph, layer, cut_by)}"]
    if killed == "no-loss":
        return [f"{name} does not need backward: it does not contribute to a loss"]
    # nothing to learn: no bottom needs backward and every param has lr_mult 0
    frozen = list(layer.params)
    if not layer.bottoms and not frozen:
        detail = "it has no bottoms and no parameters"
    else:
        parts = []
        if layer.bottoms:
            parts.append("no input needs backward")
        if frozen:
            parts.append(
                "; ".join(
                    f"param {p.index} ({p.role}) has lr_mult {_num(p.local_lr_mult)}"
                    f" ({_lr_source(p)})"
                    for p in frozen
                )
            )
        else:
            parts.append("it has no parameters")
        detail = ", and ".join(parts)
    out = [f"{name} does not need backward: nothing to learn: {detail}"]
    if not contributes:
        out.append("  (it does not contribute to a loss either)")
    return out


def _loss_text(graph: Graph, layer: Layer, loss_via: tuple[int, int | None] | None) -> str:
    if loss_via is None:
        return "contributes to a loss"
    k, reader = loss_via
    top = layer.tops[k]
    if reader is None:
        return f"contributes to a loss: top '{top}' has loss weight {_num(layer.loss_weights[k])}"
    return f"contributes to a loss: its top '{top}' reaches a loss through {_who(graph, reader)}"


def _cut_text(graph: Graph, layer: Layer, cut_by: Sequence[tuple[str, int, int, int]]) -> str:
    texts: list[str] = []
    for blob, reader, bottom, cause in cut_by:
        who = graph.layers[reader].name
        if cause == _CUT_PD:
            what = f"{who} sets propagate_down: false"
            if len(graph.layers[reader].bottoms) > 1:
                what += f" on bottom {bottom}"
        elif cause == _CUT_NO_LOSS:
            what = f"{who} does not contribute to a loss"
        elif cause == _CUT_SKIP:
            what = f"{who} is itself cut off from the gradient"
        else:
            what = f"{who} needs no gradient for it"
        if len(cut_by) == 1 and len(layer.tops) == 1 and _readers(graph, layer, 0) <= 1:
            texts.append(f"its only consumer {what}")
        else:
            texts.append(f"top '{blob}': consumer {what}")
    if not texts:
        return "it has no tops"
    return "; ".join(texts)


def _readers(graph: Graph, layer: Layer, top: int) -> int:
    """How many layers read the version of a top this layer wrote (up to the next in-place
    writer of the same blob, which reads it too)."""
    blob = graph.blob_list[layer.top_ids[top]]
    later_writers = [w for w in blob.writers if w > layer.index]
    end = later_writers[0] if later_writers else len(graph.layers)
    return sum(1 for c in blob.consumers if layer.index < c <= end)


def _traps(graph: Graph, verdicts: Sequence[LayerVerdict]) -> list[GraphWarning]:
    """Training traps. Only a training net (TRAIN phase with some loss) updates weights."""
    out: list[GraphWarning] = []
    if graph.phase != "TRAIN" or not any(any(layer.loss_weights) for layer in graph.layers):
        return out
    # Does any layer using a learnable blob (owner or sharer) run backward with it?
    gets_gradient: set[tuple[int, int]] = set()
    for layer, v in zip(graph.layers, verdicts, strict=True):
        if not v.needs_backward_final:
            continue
        for p in layer.params:
            if v.param_propagate_down[p.index]:
                gets_gradient.add(p.shared_from or (layer.index, p.index))
    for layer, v in zip(graph.layers, verdicts, strict=True):
        decaying = [
            p
            for p in layer.params
            if p.shared_from is None
            and p.lr_mult != 0
            and p.decay_mult != 0
            and (layer.index, p.index) not in gets_gradient
        ]
        if decaying:
            roles = ", ".join(
                f"param {p.index} ({p.role}, lr_mult {_num(p.lr_mult)}, "
                f"decay_mult {_num(p.decay_mult)})"
                for p in decaying
            )
            why = v.reasons[0].split(": ", 1)[-1] if v.reasons else "no gradient reaches it"
            out.append(
                GraphWarning(
                    "decay-without-gradient",
                    f"{layer.name} gets no gradient ({why}), but {roles} still change every "
                    "iteration through weight decay; set decay_mult: 0 (or lr_mult: 0) to "
                    "really freeze them",
                    layer.name,
                    layer.index,
                )
            )
        if (
            layer.type == "BatchNorm"
            and layer.use_global_stats is not True
            and layer.bottoms
            and not any(v.bottom_need_backward)
        ):
            frozen = _frozen_upstream(graph, layer)
            if frozen is not None:
                out.append(
                    GraphWarning(
                        "batchnorm-statistics-move",
                        f"{layer.name}: the layers before it are frozen ({frozen} has lr_mult "
                        "0) and this BatchNorm gets no gradient, yet in TRAIN its mean and "
                        "variance are still updated in every forward pass; set "
                        "batch_norm_param { use_global_stats: true } to freeze them",
                        layer.name,
                        layer.index,
                    )
                )
    return out


def _frozen_upstream(graph: Graph, layer: Layer, max_steps: int = 64) -> str | None:
    """The nearest upstream layer with parameters, if the user froze it (all lr_mult 0)."""
    current = layer
    for _ in range(max_steps):
        if not current.bottoms:
            return None
        blob = graph.blob_list[current.bottom_ids[0]]
        # the version `current` reads: the last in-place writer before it, else the producer
        writer = blob.producer
        at = bisect_left(blob.writers, current.index)
        if at > 0:
            writer = blob.writers[at - 1]
        if writer is None:
            return None
        current = graph.layers[writer]
        if current.params:
            learned = any(p.local_lr_mult != 0 for p in current.params)
            return None if learned or current.type == "BatchNorm" else current.name
    return None


def analyze_net(
    net: Any,
    phase: str = "TRAIN",
    stages: Sequence[str] = (),
    level: int = 0,
    param_counts: Mapping[str, int] | None = None,
    registered_types: Iterable[str] | None = None,
) -> Backward:
    """``build_graph`` then ``analyze``."""
    return analyze(build_graph(net, phase, stages, level, param_counts, registered_types))
