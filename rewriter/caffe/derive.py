"""The graph of a net that differs from an already wired one only in parameter multipliers.

Why: ``apply``'s checks need the output's graph (promises, structure, set-up), and a recipe
such as ``freeze`` edits thousands of layers but only their ``param`` blocks (``lr_mult``,
``decay_mult``) and BatchNorm's ``use_global_stats``. Those fields cannot change which layers
``FilterNet`` keeps, how ``InsertSplits`` and the wiring loop connect them, their loss weights
or how many parameter blobs ``LayerSetUp`` makes; so the output's graph is the input's with
the changed layers' :class:`~rewriter.caffe.graph.Param` entries (``AppendParam``) and
``use_global_stats`` recomputed by the same rules as :func:`~rewriter.caffe.graph.build_graph`.
Rebuilding would cost as much as the first build (a quarter of a 10k-layer apply).

Whenever those rules need more than the changed layer itself, :func:`derive_graph` declines
(returns None) and the caller builds the graph from scratch: a named (shared) blob, a layer
type whose blob count is read from its own param blocks, more param blocks than blobs, or
a BatchNorm layer whose param blocks changed (Caffe's in-memory upgrade and its forced rates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from .graph import (
    Graph,
    Layer,
    Param,
    _own_params,
    _Spec,
    _spec_of,
    _use_global_stats,
)
from .layer_params import param_blob_count

__all__ = ["PARAM_ONLY_FIELDS", "derive_graph"]

#: the fields of a LayerParameter an edit may change for :func:`derive_graph` to apply
#: (``batch_norm_param`` on BatchNorm layers only: Caffe reads nothing else of it at set-up)
PARAM_ONLY_FIELDS = frozenset({"param", "batch_norm_param"})


def derive_graph(
    graph: Graph,
    layer_msgs: Any,
    changed: Iterable[tuple[int, frozenset[str] | set[str]]],
    where: Mapping[int, int],
    param_counts: Mapping[str, int] | None = None,
) -> Graph | None:
    """``graph`` with the layers of ``changed`` set up again from ``layer_msgs``.

    ``changed``: (index in ``layer_msgs``, the names of its fields that changed) per edited
    layer; ``graph`` was built from a net equal to the new one except in those fields.
    ``where``: index in ``layer_msgs`` -> index in ``graph`` of the layers in its phase's net.
    None when only a full build can tell (see the module doc).
    """
    counts = param_counts or {}
    specs: dict[_Spec, _Spec] = {}
    cache: dict[Any, tuple[Param, ...]] = {}
    layers = list(graph.layers)
    for k, names in changed:
        if not names <= PARAM_ONLY_FIELDS:
            return None
        li = where.get(k)
        if li is None:
            continue  # not in this phase's net (its rules, unchanged, still leave it out)
        old = layers[li]
        msg = layer_msgs[k]
        if "batch_norm_param" in names and old.type != "BatchNorm":
            return None
        new = (
            _with_params(old, msg, counts, specs, cache)
            if "param" in names
            else _with_stats(old, msg)
        )
        if new is None:
            return None
        layers[li] = new
    return dataclasses.replace(graph, layers=tuple(layers), _by_name={})


def _with_stats(old: Layer, msg: Any) -> Layer:
    ugs = _use_global_stats(old.type, msg)
    return old if ugs == old.use_global_stats else old.with_params(old.params, ugs)


def _with_params(
    old: Layer,
    msg: Any,
    counts: Mapping[str, int],
    specs: dict[_Spec, _Spec],
    cache: dict[Any, tuple[Param, ...]],
) -> Layer | None:
    """The layer with its Params as ``Net::AppendParam`` makes them from ``msg``'s blocks."""
    if old.type == "BatchNorm" or old.inserted_split:
        return None
    if any(p.name for p in old.params):
        return None
    if old.type in counts:
        n_blobs = counts[old.type]
    elif param_blob_count(old.type, msg, len(old.bottoms)) is None:
        return None  # counted from its own param blocks: the count may have changed
    else:
        n_blobs = len(old.params)
    net_specs = tuple(_spec_of(p, specs) for p in msg.param)
    if len(net_specs) > n_blobs or any(s.name for s in net_specs):
        return None
    roles = [p.role for p in old.params]
    params = _own_params(roles, net_specs, net_specs, cache) if n_blobs else ()
    ugs = _use_global_stats(old.type, msg)
    return old.with_params(params, ugs)
