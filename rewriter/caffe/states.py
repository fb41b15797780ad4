"""The one vocabulary for what training does to a layer and to each of its parameter blobs.

Caffe's log says which layers *run backward*; a user asks which weights *change*. The two
differ (a frozen layer still runs backward when its input needs a gradient; weight decay moves
a blob no gradient reaches), so every command words a layer's fate with the states below,
computed here once from ``Net::Init``'s verdicts and the parameters (docs/explain.md,
"States"). ``explain``, ``diff`` and ``graph`` and the Python API all call :func:`compute`.

A parameter blob is:

* ``trainable``: ``lr_mult != 0`` and a gradient reaches it (a layer using it runs backward
  with ``param_propagate_down``);
* ``decay-only``: ``lr_mult != 0`` and ``decay_mult != 0`` but no gradient reaches it: the
  solver's weight decay alone shrinks it every iteration;
* ``statistics-only``: a BatchNorm blob (Caffe sets their rates to 0 itself) whose running
  mean/variance the forward pass updates: TRAIN without ``use_global_stats: true``, or
  ``use_global_stats: false``;
* ``frozen``: nothing changes it: ``lr_mult: 0`` (under every solver, even with
  ``decay_mult > 0``: decay scales with the rate), or no gradient and ``decay_mult: 0``.

A layer with parameters takes the first of ``trainable``, ``decay-only``, ``statistics-only``,
``frozen`` that one of its blobs has. A layer without parameters is ``backward only`` (it runs
backward to pass gradients on) or ``no backward``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rewriter.util.record import FrozenRecord

if TYPE_CHECKING:
    from .graph import Graph, Layer, Param
    from .netinit import Backward, LayerVerdict

__all__ = [
    "BACKWARD_ONLY",
    "DECAY_ONLY",
    "FROZEN",
    "LAYER_STATES",
    "NO_BACKWARD",
    "PARAM_STATES",
    "STATISTICS_ONLY",
    "TRAINABLE",
    "bn_statistics_move",
    "Causes",
    "Input",
    "States",
    "causes",
    "compute",
    "of",
]

TRAINABLE = "trainable"
DECAY_ONLY = "decay-only"
STATISTICS_ONLY = "statistics-only"
FROZEN = "frozen"
BACKWARD_ONLY = "backward only"
NO_BACKWARD = "no backward"

#: a parameter blob's states, strongest first (a layer takes its strongest blob's)
PARAM_STATES = (TRAINABLE, DECAY_ONLY, STATISTICS_ONLY, FROZEN)
#: every layer state, in the order legends list them
LAYER_STATES = (*PARAM_STATES, BACKWARD_ONLY, NO_BACKWARD)
_RANK = {s: i for i, s in enumerate(PARAM_STATES)}


class States(FrozenRecord):
    """Per graph layer (inserted splits included): its state and its blobs' states (read-only).

    This module's records are Records, not dataclasses: ~1 ms less each at start-up."""

    __slots__ = ("layers", "params")

    def __init__(self, layers: list[str], params: list[tuple[str, ...]]) -> None:
        self.layers = layers
        self.params = params


def bn_statistics_move(layer: Layer, phase: str) -> bool:
    """BatchNorm's forward pass updates its running statistics (Caffe: ``use_global_stats_``
    defaults to ``phase == TEST``; an explicit value wins)."""
    if layer.type != "BatchNorm":
        return False
    if layer.use_global_stats is None:
        return phase == "TRAIN"
    return not layer.use_global_stats


def _param_state(p: Param, gradient: bool, statistics: bool) -> str:
    if p.lr_mult != 0:
        if gradient:
            return TRAINABLE
        if p.decay_mult != 0:
            return DECAY_ONLY
    return STATISTICS_ONLY if statistics else FROZEN


@runtime_checkable
class _Columns(Protocol):
    """:class:`rewriter.caffe.netinit.Verdicts`: the verdicts as flat columns (checked by shape, so
    the vocabulary needs nothing from the analysis that uses it)."""

    def final_flags(self) -> list[bool]: ...

    def param_flags(self, i: int) -> tuple[bool, ...]: ...


def compute(backward: Backward) -> States:
    """Every layer's and every parameter blob's state, in one linear pass over the net.

    A shared blob (``param { name }``) is one blob: it gets a gradient when any layer using it
    runs backward with it, and every user reports the same state for it."""
    return of(backward.graph, backward.layers)


def of(graph: Graph, verdicts: Sequence[LayerVerdict]) -> States:
    """:func:`compute` from the parts, for the analysis itself (its warnings are written
    before the :class:`~rewriter.caffe.netinit.Backward` exists)."""
    layers = graph.layers
    # the analysis' own columns when it has them: no verdict object per layer
    if isinstance(verdicts, _Columns):
        final = verdicts.final_flags()
        param_flags = verdicts.param_flags
    else:
        final = [v.needs_backward_final for v in verdicts]
        param_flags = lambda i: verdicts[i].param_propagate_down  # noqa: E731
    # Shared blobs (param { name }): the owner's key gets a gradient from any user. Blobs
    # no one shares need no set: their gradient is their own layer's.
    has_shared: dict[int, bool] = {}  # by id of the graph's (shared) params tuples
    owners: set[tuple[int, int]] = set()
    gradient: set[tuple[int, int]] = set()
    for li, layer in enumerate(layers):
        params = layer.params
        if not params:
            continue
        sh = has_shared.get(id(params))
        if sh is None:
            sh = has_shared[id(params)] = any(p.shared_from is not None for p in params)
        if sh:
            ppd = param_flags(li)
            for p in params:
                if p.shared_from is not None:
                    owners.add(p.shared_from)
                    if final[li] and ppd[p.index]:
                        gradient.add(p.shared_from)
    for li, pi in owners:  # the owner's own gradient counts for every sharer
        if final[li] and param_flags(li)[pi]:
            gradient.add((li, pi))
    phase = graph.phase
    cache: dict[tuple[int, bool, int, bool], tuple[str, ...]] = {}
    layer_states: list[str] = []
    param_states: list[tuple[str, ...]] = []
    for li, layer in enumerate(layers):
        params = layer.params
        if not params:
            layer_states.append(BACKWARD_ONLY if final[li] else NO_BACKWARD)
            param_states.append(())
            continue
        stats = bn_statistics_move(layer, phase)
        ppd = param_flags(li)
        plain = not has_shared[id(params)] and not (
            owners and any((li, p.index) in owners for p in params)
        )
        key = (id(params), final[li], id(ppd), stats)
        ps = cache.get(key) if plain else None
        if ps is None:
            own = final[li]
            ps = tuple(
                [_param_state(p, (own and ppd[p.index]) or
                              (p.shared_from or (li, p.index)) in gradient, stats)
                 for p in params]
            )  # fmt: skip
            if plain:
                cache[key] = ps
        param_states.append(ps)
        layer_states.append(min(ps, key=_RANK.__getitem__))
    return States(layer_states, param_states)


# --------------------------------------------------------------------------- causes


class Input(FrozenRecord):
    """A bottom whose blob Caffe's forward pass marked as needing backward (read-only)."""

    __slots__ = ("bottom", "blob", "producer", "learner", "cut")

    def __init__(
        self, bottom: int, blob: str, producer: str | None, learner: str | None, cut: bool
    ) -> None:
        self.bottom = bottom
        self.blob = blob
        #: the layer that wrote the version read (inserted splits looked through)
        self.producer = producer
        #: the nearest layer upstream that learns (a parameter with local lr_mult != 0)
        self.learner = learner
        #: the bottom has ``propagate_down: false``
        self.cut = cut


class Causes(FrozenRecord):
    """Every reason ``Net::Init``'s forward pass gives a layer to need backward: any one is
    enough (Caffe ORs them). Its logged verdict also needs the layer to contribute to a loss
    and some top not to be cut. Read-only."""

    __slots__ = ("params", "inputs")

    def __init__(self, params: tuple[Param, ...], inputs: tuple[Input, ...]) -> None:
        #: parameters with a non-zero local lr_mult (what Net::Init tests)
        self.params = params
        self.inputs = inputs


def causes(backward: Backward, index: int) -> Causes:
    """The alternatives behind one layer's forward-pass flag (see :class:`Causes`)."""
    graph = backward.graph
    layers = graph.layers
    # Caffe's forward pass, keeping which layer first flagged each blob (-1: not flagged)
    flagged_by = [-1] * len(graph.blob_list)
    learns = [False] * len(layers)
    for li, layer in enumerate(layers[:index]):
        learns[li] = any(p.local_lr_mult != 0 for p in layer.params)
        if learns[li] or any(flagged_by[b] >= 0 for b in layer.bottom_ids):
            for t in layer.top_ids:
                if flagged_by[t] < 0:
                    flagged_by[t] = li
    layer = layers[index]
    inputs = [
        Input(j, layer.bottoms[j], _producer(graph, index, j),
              _learner(layers, flagged_by, learns, b),
              bool(layer.propagate_down) and not layer.propagate_down[j])
        for j, b in enumerate(layer.bottom_ids)
        if flagged_by[b] >= 0
    ]  # fmt: skip
    params = tuple(p for p in layer.params if p.local_lr_mult != 0)
    return Causes(params, tuple(inputs))


def _producer(graph: Graph, index: int, bottom: int) -> str | None:
    """The layer that wrote what bottom ``bottom`` of layer ``index`` reads, splits skipped."""
    layers = graph.layers
    li: int | None = index
    j = bottom
    while li is not None:
        blob = graph.blob_list[layers[li].bottom_ids[j]]
        writers = [w for w in blob.writers if w < li]
        li = writers[-1] if writers else blob.producer
        if li is None or not layers[li].inserted_split:
            break
        j = 0
    return None if li is None else layers[li].name


def _learner(
    layers: Sequence[Layer], flagged_by: list[int], learns: list[bool], blob: int
) -> str | None:
    li = flagged_by[blob]
    seen = 0
    while li >= 0 and seen <= len(layers):
        if learns[li]:
            return layers[li].name
        nxt = [f for f in map(flagged_by.__getitem__, layers[li].bottom_ids) if 0 <= f < li]
        li = nxt[0] if nxt else -1
        seen += 1
    return None
