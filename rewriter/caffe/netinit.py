"""Caffe's backward analysis (``Net::Init``), reproduced exactly, with reasons.

Caffe decides which layers run ``Backward`` in three passes over the wired net
(:func:`rewriter.caffe.graph.build_graph` builds that net):

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
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from rewriter.caffe.errors import GraphWarning
from rewriter.util.lazyseq import LazySequence
from rewriter.util.memory import gc_paused

if TYPE_CHECKING:
    from rewriter.caffe.graph import Graph, Layer, Param
    from rewriter.caffe.states import States

__all__ = ["Backward", "LayerVerdict", "Verdicts", "analyze"]


def _num(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".6g")


@dataclass(frozen=True, slots=True)
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
    #: the reasons (a tuple of lines), or what they are written from (see ``reasons``)
    _why: Any = field(default=(), repr=False, compare=False)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The human chain of reasons. Written on first use: the table and the checks never
        read them, and they would take about as much memory as the rest of the analysis."""
        why = self._why
        if isinstance(why, tuple):
            return why
        text: tuple[str, ...] = why.reasons(self)
        object.__setattr__(self, "_why", text)
        return text

    @property
    def verdict_differs(self) -> bool:
        return self.needs_backward != self.needs_backward_final


class Verdicts(LazySequence[LayerVerdict]):
    """The layers' verdicts, each built when read from per-layer columns that hold shared
    values (a verdict object per layer of a 100k-layer net took ~0.6x its file)."""

    __slots__ = ("_layers", "_need", "_forced", "_bottom", "_final", "_params", "_loss", "_why")
    _what = "layer"

    def __init__(
        self,
        layers: Sequence[Layer],
        need: list[bool],
        forced: bool,
        bottom: list[tuple[bool, ...]],
        final: list[tuple[bool, ...]],
        params: list[tuple[Any, ...]],
        loss: list[bool],
        why: Any,
    ) -> None:
        self._layers = layers
        self._need = need
        self._forced = forced
        self._bottom = bottom
        self._final = final
        self._params = params
        self._loss = loss
        self._why = why

    def __len__(self) -> int:
        return len(self._need)

    def final_flags(self) -> list[bool]:
        """Every layer's ``needs_backward_final``, without building verdict objects."""
        return [True] * len(self._need) if self._forced else self._need

    def param_flags(self, i: int) -> tuple[bool, ...]:
        """Layer ``i``'s ``param_propagate_down``, without building its verdict."""
        flags: tuple[bool, ...] = self._params[i][1]
        return flags

    def _item(self, i: int) -> LayerVerdict:
        layer = self._layers[i]
        log = self._need[i]
        got = self._params[i]
        return LayerVerdict(
            layer.index,
            layer.name,
            layer.type,
            log,
            True if self._forced else log,
            self._bottom[i],
            self._final[i],
            got[1],
            got[2],
            got[3],
            self._loss[i],
            self._why,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Verdicts({len(self)} layers)"


@dataclass(frozen=True)
class Backward:
    graph: Graph
    layers: Sequence[LayerVerdict]
    warnings: tuple[GraphWarning, ...]

    def layer(self, name: str) -> LayerVerdict:
        """The verdict of the first layer with that name."""
        return self.layers[self.graph.layer(name).index]

    @cached_property
    def states(self) -> States:
        """What training does to each layer and parameter blob, in the words every command
        uses (``rewriter.caffe.states``: trainable, decay-only, statistics-only, frozen...)."""
        from rewriter.caffe.states import compute

        return compute(self)

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
        states = self.states
        for layer, v in zip(g.layers, self.layers, strict=True):
            pstates = states.params[layer.index]
            layers.append(
                {
                    "index": layer.index,
                    "name": layer.name,
                    "type": layer.type,
                    "inserted_split": layer.inserted_split,
                    "source_index": layer.source_index,
                    "needs_backward": v.needs_backward,
                    "needs_backward_final": v.needs_backward_final,
                    "state": states.layers[layer.index],
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
                            "state": pstates[p.index],
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


class _Why:
    """What the backward passes found out about each layer, as small ints (-1: none), from
    which ``LayerVerdict.reasons`` writes its lines when asked."""

    __slots__ = ("graph", "killed", "fwd_bottom", "fwd_param", "loss_top", "loss_reader", "cut_by")

    def __init__(self, graph: Graph, n: int) -> None:
        self.graph = graph
        none = array("i", [-1]) * n
        #: index into _KILLED
        self.killed = array("b", [0]) * n
        #: first bottom whose blob needed backward in the forward pass
        self.fwd_bottom = none
        #: first param with local lr_mult != 0
        self.fwd_param = array("i", none)
        #: the top through which the layer contributes to a loss, and the layer reading it
        #: (-1: the top has a loss weight)
        self.loss_top = array("i", none)
        self.loss_reader = array("i", none)
        #: skipping layers only: (top name, reader, bottom, cause) per cut top
        self.cut_by: dict[int, tuple[tuple[str, int, int, int], ...]] = {}

    def reasons(self, v: LayerVerdict) -> tuple[str, ...]:
        li = v.index
        graph = self.graph
        layer = graph.layers[li]
        p = self.fwd_param[li]
        j = self.fwd_bottom[li]
        k = self.loss_top[li]
        reader = self.loss_reader[li]
        reasons = _reasons(
            graph,
            li,
            v.needs_backward,
            v.contributes_loss,
            _KILLED[self.killed[li]],
            None if j < 0 else j,
            () if p < 0 else (layer.params[p],),
            None if k < 0 else (k, None if reader < 0 else reader),
            self.cut_by.get(li, ()),
        )
        if v.needs_backward_final != v.needs_backward:
            reasons.append(f"{v.name} runs backward anyway: the net sets force_backward: true")
        return tuple(reasons)


_KILLED = ("", "skip", "no-loss", "no-grad")
_SKIP, _NO_LOSS, _NO_GRAD = 1, 2, 3


def _analyze(graph: Graph) -> Backward:
    layers = graph.layers
    n = len(layers)
    why = _Why(graph, n)
    fwd_bottom, fwd_param = why.fwd_bottom, why.fwd_param
    # per-layer flag tuples are shared between layers with the same flags
    flags_of: dict[tuple[bool, ...], tuple[bool, ...]] = {}
    blob_need = [False] * len(graph.blob_list)
    need: list[bool] = []
    bottom_need: list[tuple[bool, ...]] = []
    for li, layer in enumerate(layers):
        nb = False
        ids = layer.bottom_ids
        for j, blob_id in enumerate(ids):
            if blob_need[blob_id]:
                nb = True
                fwd_bottom[li] = j
                break
        flags = layer.propagate_down or tuple([blob_need[b] for b in ids])
        bottom_need.append(flags_of.setdefault(flags, flags))
        for p, param in enumerate(layer.params):
            if param.local_lr_mult != 0:
                nb = True
                fwd_param[li] = p
                break
        need.append(nb)
        if nb:
            for blob_id in layer.top_ids:
                blob_need[blob_id] = True
    del blob_need

    killed, loss_top, loss_reader, cut_by = why.killed, why.loss_top, why.loss_reader, why.cut_by
    under_loss: dict[str, int] = {}  # name -> layer that put it there
    skip: dict[str, tuple[int, int, int]] = {}  # name -> (layer, bottom, cause)
    contributes = [False] * n
    no_flags: dict[int, tuple[bool, ...]] = {}
    for li in range(n - 1, -1, -1):
        layer = layers[li]
        at = layer.index  # the graph's int object for li
        contrib = False
        skipping = True
        loss_weights = layer.loss_weights
        # blob names: a top's name is its blob's (automatic tops included)
        for k, name in enumerate(layer.tops):
            if not contrib:
                if loss_weights[k]:
                    contrib = True
                    loss_top[li] = k
                elif name in under_loss:
                    contrib = True
                    loss_top[li] = k
                    loss_reader[li] = under_loss[name]
            if name not in skip:
                skipping = False
            if contrib and not skipping:
                break
        if skipping:
            cut_by[li] = tuple([(t, *skip[t]) for t in layer.tops if t in skip])
        flags = bottom_need[li]
        needed = need[li]
        if not needed:
            killed[li] = _NO_GRAD
        if needed and skipping:
            needed = False
            killed[li] = _SKIP
            flags = no_flags.get(len(flags)) or no_flags.setdefault(
                len(flags), (False,) * len(flags)
            )
        if not contrib:
            if needed:
                killed[li] = _NO_LOSS
            needed = False
            flags = no_flags.get(len(flags)) or no_flags.setdefault(
                len(flags), (False,) * len(flags)
            )
        need[li] = needed
        bottom_need[li] = flags
        contributes[li] = contrib
        pd = layer.propagate_down
        for j, name in enumerate(layer.bottoms):
            if contrib:
                under_loss.setdefault(name, at)
            if not flags[j] and name not in skip:
                if pd and not pd[j]:
                    cause = _CUT_PD
                elif not contrib:
                    cause = _CUT_NO_LOSS
                elif skipping and layer.top_ids:
                    cause = _CUT_SKIP
                else:
                    cause = _CUT_NO_GRAD
                skip[name] = (at, j, cause)
    del under_loss, skip

    forced = graph.force_backward
    final_bottom = bottom_need
    if forced:
        final_bottom = []
        for layer, flags in zip(layers, bottom_need, strict=True):
            allow = layer.allow_force_backward
            f = tuple([flag or allow[j] for j, flag in enumerate(flags)])
            final_bottom.append(flags_of.setdefault(f, f))

    per_params: dict[int, tuple[Any, ...]] = {}  # by id of the graph's shared params tuples
    param_info: list[tuple[Any, ...]] = []
    for layer in layers:
        params = layer.params
        got = per_params.get(id(params))
        if got is None:
            pd_flags = tuple([forced or p.local_lr_mult != 0 for p in params])
            updates = tuple([p.updates for p in params])
            got = (
                params,  # keeps the id valid
                flags_of.setdefault(pd_flags, pd_flags),
                flags_of.setdefault(updates, updates),
                tuple([p.lr_mult for p in params]),
            )
            per_params[id(params)] = got
        param_info.append(got)
    verdicts = Verdicts(
        layers, need, forced, bottom_need, final_bottom, param_info, contributes, why
    )
    traps, states = _traps(graph, verdicts)
    result = Backward(graph=graph, layers=verdicts, warnings=(*graph.warnings, *traps))
    if states is not None:  # the traps computed them already: Backward.states is the same
        vars(result)["states"] = states
    return result


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
            text = (
                f"its input '{blob}' (from {_who(graph, producer)}) is marked as needing"
                " backward by Caffe's forward pass"
            )
            if layer.propagate_down and not layer.propagate_down[fwd_bottom]:
                text += (
                    " (propagate_down: false does not clear the mark, it only stops the gradient"
                    " here)"
                )
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


def _traps(graph: Graph, verdicts: Verdicts) -> tuple[list[GraphWarning], States | None]:
    """Training traps. Only a training net (TRAIN phase with some loss) updates weights.
    (Reads the verdicts' columns; a verdict object is built only for a layer it warns about.)
    Also returns the states it computed on the way (None if it did not need them)."""
    out: list[GraphWarning] = []
    if graph.phase != "TRAIN" or not any(any(layer.loss_weights) for layer in graph.layers):
        return out, None
    from rewriter.caffe.states import DECAY_ONLY, of

    final = verdicts._final
    states = of(graph, verdicts)
    param_states = states.params
    for li, layer in enumerate(graph.layers):
        decaying = [
            p
            for p in layer.params
            if p.shared_from is None and param_states[li][p.index] == DECAY_ONLY
        ]
        if decaying:
            roles = ", ".join(
                f"param {p.index} ({p.role}, lr_mult {_num(p.lr_mult)}, "
                f"decay_mult {_num(p.decay_mult)})"
                for p in decaying
            )
            v = verdicts[li]
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
            and not any(final[li])
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
    return out, states


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
