"""Semantic diff of Caffe files: what a change does to the net and to training.

A line diff of two prototxt files says which lines moved; a reviewer wants to know what the
change does. :func:`diff_texts` compares two versions of a file at three levels:

1. **Fields**, per layer (a layer is one unit: the dict of its ``LayerParameter``, compared with
   deepdiff) and for the net's own top-level fields; a solver (or any non-net file) gets a plain
   field diff. Layers are matched by name (the k-th layer of a name with the k-th); layers left
   over are *renamed* when their content apart from the name is unchanged (blob names equal to
   the layer's own name may follow the rename), else *added* / *removed*.
2. **Wiring**, per phase: edges ``producer -> consumer`` (through Caffe's inserted splits, with
   in-place writers as producers) that appear or disappear.
3. **Training consequences**, per phase (TRAIN and TEST, each when the graph builds), from
   Caffe's own ``Net::Init`` rules (:mod:`rewriter.caffe.netinit`): layers that start or stop
   needing
   backward, parameter blobs that become frozen or trainable (the solver's ``lr_mult``), inputs
   whose gradient becomes cut or is restored, loss outputs, analysis warnings, and pretrained
   weights that will no longer load (Caffe copies weights by layer name, so a renamed layer
   loses them; a changed parameter shape makes loading stop).

Speed: layers whose text is byte-identical are not converted or deepdiffed at all, and each
graph is built once per phase (once in all when no layer has include/exclude rules, since the
TEST net is then the TRAIN net). Memory: one tree at a time (each is dropped once its side is
bound), one live message at a time (the other parked as its serialized bytes; the old layers
the comparison reads kept as their own bytes, not as copies), a graph built from a message of
its own (upgraded in place: no copy of the net beside it), one graph at a time (the old side's
facts are reduced to what the comparison reads before the new graph is built: one shared
record per layer and the edge set), facts packed (a phase's edges are flat arrays,
:class:`EdgeFact` objects are made only when read), TEST sharing TRAIN's equal change objects,
and no graphs kept in the result: the drawing renderers rebuild them on demand
(``FileDiff.new_facts`` / ``old_facts``).
Renderers live in :mod:`rewriter.review.render`; the JSON schema is documented in docs/diff.md
(``schema_version`` 1).

This module holds the algorithm; the result model is in :mod:`.changes`, values in
:mod:`.values`, one version of a file in :mod:`.version`, graph facts in :mod:`.facts`,
directory and git sources in :mod:`.sources` and textconv in :mod:`.textconv`. The names
callers import are re-exported here (``__all__``).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rewriter.caffe.states import FROZEN
from rewriter.errors import RewriterError
from rewriter.review.changes import (
    SCHEMA_VERSION,
    BackwardChange,
    DiffResult,
    EdgeChange,
    FieldChange,
    FileDiff,
    GradientChange,
    LayerChange,
    LossChange,
    ParamChange,
    PhaseDiff,
    WarningChange,
    WeightWarning,
)
from rewriter.review.facts import (
    _CUT,
    _FLOWS,
    _GRADIENTS,
    PHASES,
    EdgeFact,
    PhaseFacts,
    _EdgeList,
    phase_facts,
)
from rewriter.review.sources import GitError, _prototxt_files, git_show
from rewriter.review.textconv import textconv
from rewriter.review.values import EnumName, _deep_changes, format_value, message_to_dict
from rewriter.review.version import _LazyFacts, _standalone, _Unit, _Version

if TYPE_CHECKING:
    from rewriter.caffe.graph import Graph
    from rewriter.caffe.netinit import Backward
    from rewriter.schema.runtime import Schema

__all__ = [
    "SCHEMA_VERSION",
    "PHASES",
    "BackwardChange",
    "DiffResult",
    "EdgeChange",
    "EnumName",
    "EdgeFact",
    "FieldChange",
    "FileDiff",
    "GitError",
    "GradientChange",
    "LayerChange",
    "LossChange",
    "ParamChange",
    "PhaseDiff",
    "PhaseFacts",
    "WarningChange",
    "WeightWarning",
    "diff_dirs",
    "diff_files",
    "diff_git",
    "diff_texts",
    "format_value",
    "git_show",
    "message_to_dict",
    "phase_facts",
    "textconv",
]


# Parameter-shape fields: when one of them changes on a layer with parameters, Caffe's
# CopyTrainedLayersFrom stops with a shape mismatch ("Cannot copy param ... weights").
_SHAPE_FIELDS = {
    "convolution_param": ("num_output", "kernel_size", "kernel_h", "kernel_w", "group",
                          "bias_term", "axis"),
    "inner_product_param": ("num_output", "bias_term", "transpose", "axis"),
    "embed_param": ("num_output", "input_dim", "bias_term"),
    "prelu_param": ("channel_shared",),
    "scale_param": ("bias_term", "axis", "num_axes"),
    "bias_param": ("axis", "num_axes"),
    "recurrent_param": ("num_output", "expose_hidden"),
}  # fmt: skip


# --------------------------------------------------------------------------- diff


def _pair_units(
    old_v: _Version, new_v: _Version
) -> tuple[list[tuple[_Unit, _Unit]], list[_Unit], list[_Unit]]:
    """(same-name pairs whose text differs, removed, added): the k-th layer of a name is
    paired with the k-th; byte-identical pairs are left out (nothing to compare)."""
    by_key: dict[tuple[str, int], int] = {}
    count: dict[str, int] = {}
    for i, name in enumerate(old_v.names):
        k = count.get(name, 0)
        count[name] = k + 1
        by_key[(name, k)] = i
    pairs: list[tuple[_Unit, _Unit]] = []
    added: list[_Unit] = []
    count = {}
    for j, name in enumerate(new_v.names):
        k = count.get(name, 0)
        count[name] = k + 1
        i = by_key.pop((name, k), -1)
        if i < 0:
            added.append(new_v.unit(j))
        elif old_v.digest(i) != new_v.digest(j):
            pairs.append((old_v.unit(i), new_v.unit(j)))
    removed = [old_v.unit(i) for i in sorted(by_key.values())]
    return pairs, removed, added


def _last_pairs(
    old_v: _Version, new_v: _Version, names: set[str]
) -> dict[str, tuple[_Unit, _Unit]]:
    """For each name, the last pair :func:`_pair_units` makes of it, changed or not."""
    olds: dict[str, list[int]] = {n: [] for n in names}
    news: dict[str, list[int]] = {n: [] for n in names}
    for side, v in ((olds, old_v), (news, new_v)):
        for i, name in enumerate(v.names):
            got = side.get(name)
            if got is not None:
                got.append(i)
    out: dict[str, tuple[_Unit, _Unit]] = {}
    for name in names:
        m = min(len(olds[name]), len(news[name]))
        if m:
            out[name] = (old_v.unit(olds[name][m - 1]), new_v.unit(news[name][m - 1]))
    return out


def _match_renames(
    old_v: _Version, new_v: _Version, removed: list[_Unit], added: list[_Unit]
) -> tuple[list[tuple[_Unit, _Unit]], list[_Unit], list[_Unit]]:
    """(renamed pairs, removed, added) of the layers left over by :func:`_pair_units`."""
    renamed: list[tuple[_Unit, _Unit]] = []
    # Exact content first; then allowing blob names equal to the layer's name to follow it.
    for abstract in (False, True):
        if not (removed and added):
            break
        sigs: dict[bytes, list[_Unit]] = {}
        for u in removed:
            sigs.setdefault(_signature(u, old_v.unit_msg(u), abstract), []).append(u)
        still_added: list[_Unit] = []
        for u in added:
            cands = sigs.get(_signature(u, new_v.unit_msg(u), abstract))
            if cands:
                renamed.append((cands.pop(0), u))
            else:
                still_added.append(u)
        taken = {id(o) for o, _ in renamed}
        removed = [u for u in removed if id(u) not in taken]
        added = still_added
    renamed.sort(key=lambda p: p[1].index)
    return renamed, removed, added


def _signature(u: _Unit, unit_msg: Any, abstract: bool) -> bytes:
    """The layer's content without its name (and blob names equal to it, if ``abstract``)."""
    msg = type(unit_msg)()
    msg.CopyFrom(unit_msg)
    msg.ClearField("name")
    if abstract:
        for blobs in (msg.bottom, msg.top):
            for i, b in enumerate(blobs):
                if b == u.name:
                    blobs[i] = "\x00self"
    return bytes(msg.SerializeToString(deterministic=True))


def _layer_changes(
    old_v: _Version,
    new_v: _Version,
    pairs: list[tuple[_Unit, _Unit]],
    renamed: list[tuple[_Unit, _Unit]],
    removed: list[_Unit],
    added: list[_Unit],
) -> list[LayerChange]:
    out: list[tuple[int, int, LayerChange]] = []
    for o, n in pairs:
        changes = _deep_changes(
            message_to_dict(old_v.unit_msg(o)), message_to_dict(new_v.unit_msg(n))
        )
        if changes:
            out.append((n.index, 0, LayerChange("modified", n.name, n.type, o.name, n.name,
                                                tuple(changes))))  # fmt: skip
    for o, n in renamed:
        changes = _deep_changes(
            message_to_dict(old_v.unit_msg(o)), message_to_dict(new_v.unit_msg(n))
        )
        out.append(
            (n.index, 0, LayerChange("renamed", n.name, n.type, o.name, n.name, tuple(changes)))
        )
    for n in added:
        out.append((n.index, 0, LayerChange("added", n.name, n.type, None, n.name)))
    for o in removed:
        # removed layers sort after the new layer at the same position
        out.append((o.index, 1, LayerChange("removed", o.name, o.type, o.name, None)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [c for _, _, c in out]


@dataclass
class _ParamCounts:
    """What counting a layer's parameter blobs needs of one side once its graphs are gone."""

    #: unit index -> a standalone copy of the layer's message (the fallback without a graph)
    msgs: dict[int, Any] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    #: per phase whose graph built (in PHASES order): name -> params of its first graph layer
    by_phase: list[dict[str, int]] = field(default_factory=list)

    def want(self, v: _Version, u: _Unit) -> None:
        if u.index not in self.msgs:
            self.msgs[u.index] = _standalone(v.unit_msg(u))
            self.names.add(u.name)

    def add_phase(self, facts: PhaseFacts) -> None:
        found: dict[str, int] = {}
        if self.names:
            layers = facts.graph.layers
            for li, k in enumerate(facts.occurrence):
                if k >= 0:
                    name = layers[li].name
                    if name in self.names and name not in found:
                        found[name] = len(layers[li].params)
        self.by_phase.append(found)

    def count(self, u: _Unit) -> int:
        for found in self.by_phase:
            if u.name in found:
                return found[u.name]
        from rewriter.caffe.layer_params import param_blob_count

        msg = self.msgs[u.index]
        count = param_blob_count(u.type, msg, len(msg.bottom))
        return len(msg.param) if count is None else count


def _weight_warnings(
    old_counts: _ParamCounts,
    new_counts: _ParamCounts,
    renamed: list[tuple[_Unit, _Unit]],
    layers: list[LayerChange],
    by_new: dict[str, tuple[_Unit, _Unit]],
) -> list[WeightWarning]:
    out: list[WeightWarning] = []
    for o, n in renamed:
        if new_counts.count(n):
            out.append(
                WeightWarning(
                    n.name,
                    o.name,
                    "renamed",
                    f"pretrained weights of '{o.name}' will not load into '{n.name}': Caffe "
                    "copies weights by layer name, so this layer starts from its fillers",
                )
            )
    for lc in layers:
        if lc.change != "modified" or lc.name not in by_new:
            continue
        o, n = by_new[lc.name]
        why = _shape_changes(lc)
        if why and (old_counts.count(o) or new_counts.count(n)):
            out.append(
                WeightWarning(
                    n.name,
                    o.name,
                    "shape",
                    f"pretrained weights of '{o.name}' no longer fit ({', '.join(why)} changed):"
                    " Caffe stops with a shape mismatch when it copies them",
                )
            )
    return out


def _shape_changes(lc: LayerChange) -> list[str]:
    """The changed fields of a layer that make its pretrained weights stop loading."""
    return [f.path for f in lc.fields if f.path == "type" or _shape_path(f.path)]


def _shape_path(path: str) -> bool:
    head, _, rest = path.partition(".")
    names = _SHAPE_FIELDS.get(head)
    if names is None:
        return False
    leaf = rest.split("[", 1)[0].split(".", 1)[0]
    return not rest or leaf in names


_EdgeKey = tuple[str | None, str, str]
#: a layer's key: its name for the first layer of that name, else (name, k) for the k-th
_Key = str | tuple[str, int]
#: (needs backward, state, params, param states, param lr_mult, per bottom "flows", "cut"
#: or None: no gradient)
_Record = tuple[bool, str, int, tuple[str, ...], tuple[float, ...], tuple[str | None, ...]]
_GRADIENT_OF = (None, "flows", "cut")


def _key(name: str, k: int) -> _Key:
    return name if k == 0 else (name, k)


@dataclass
class _OldPhase:
    """One phase of the old net in new names, reduced to what :func:`_phase_diff` compares, so
    the old graph is freed before the new one is built."""

    #: layer key -> its record (equal records are one object)
    verdicts: dict[_Key, _Record]
    #: data edges in old order -> the mark of the last phase that found it in the new net
    edges: dict[_EdgeKey, int]
    losses: dict[tuple[str, str], float]
    warnings: dict[tuple[str, str | None], str]


def _losses(
    facts: PhaseFacts, rename: dict[str, str], blob_rename: dict[str, str]
) -> dict[tuple[str, str], float]:
    """Loss outputs (producing layer, blob) -> summed weight, names mapped."""
    out: dict[tuple[str, str], float] = {}
    for layer in facts.graph.layers:
        for k, w in enumerate(layer.loss_weights):
            if not w:
                continue
            if layer.inserted_split:
                src, blob = _split_origin(facts, layer.index)
            else:
                src, blob = layer.name, layer.tops[k]
            src, blob = rename.get(src, src), blob_rename.get(blob, blob)
            out[(src, blob)] = out.get((src, blob), 0.0) + w
    return out


def _warnings(bw: Backward, rename: dict[str, str]) -> dict[tuple[str, str | None], str]:
    """Analysis warnings by (kind, layer), layer names mapped."""
    out: dict[tuple[str, str | None], str] = {}
    for w in bw.warnings:
        layer = rename.get(w.layer, w.layer) if w.layer else w.layer
        out.setdefault((w.kind, layer), w.message)
    return out


def _edge_arrays(facts: PhaseFacts) -> _EdgeList:
    edges = facts.edges
    if not isinstance(edges, _EdgeList):  # facts built by hand: pack them
        packed = _EdgeList()
        for e in edges:
            packed.source.append(-1 if e.source is None else e.source)
            packed.target.append(e.target)
            packed.bottom.append(e.bottom)
            packed.blob.append(e.blob)
            packed.grad.append(_GRADIENTS.index(e.gradient))
        edges = packed
    return edges


def _phase_states(graph: Graph) -> bool:
    """Some state depends on the phase: a BatchNorm that does not set use_global_stats updates
    its statistics in TRAIN only."""
    return any(
        layer.type == "BatchNorm" and layer.use_global_stats is None for layer in graph.layers
    )


def _old_phase(
    old: PhaseFacts,
    rename: dict[str, str],
    blob_rename: dict[str, str],
    same_net: _OldPhase | None = None,
) -> _OldPhase:
    """Reduce the old side's facts; ``same_net``: the other phase's reduction when this phase
    was derived from it (same layers, verdicts and edges; only the warnings differ)."""
    warnings = _warnings(old.backward, rename)
    if same_net is not None and not _phase_states(old.graph):
        return replace(same_net, warnings=warnings)
    layers, bws, states = old.graph.layers, old.backward.layers, old.states
    param_states = old.backward.states.params
    names = [layer.name for layer in layers]
    if rename:
        names = [rename.get(n, n) for n in names]
    edges = _edge_arrays(old)
    e_src, e_tgt, e_blob, e_grad = edges.source, edges.target, edges.blob, edges.grad
    n_edges = len(e_blob)
    verdicts: dict[_Key, _Record] = {}
    out_edges: dict[_EdgeKey, int] = {}
    # equal gradient tuples are one object, records of equal parts one object (by identity
    # of the parts: 1 == 1.0 == True, but the report prints them differently)
    grad_tuples: dict[tuple[str | None, ...], tuple[str | None, ...]] = {}
    records: dict[tuple[Any, ...], _Record] = {}
    at = 0
    for li, k in enumerate(old.occurrence):
        if k < 0:
            continue
        name = names[li]
        start = at
        while at < n_edges and e_tgt[at] == li:
            s = e_src[at]
            blob = e_blob[at]
            if blob_rename:
                blob = blob_rename.get(blob, blob)
            out_edges.setdefault((None if s < 0 else names[s], name, blob), 0)
            at += 1
        grads = tuple([_GRADIENT_OF[e_grad[x]] for x in range(start, at)])
        key = _key(name, k)
        got = verdicts.get(key)
        if got is None:
            v = bws[li]
            grads = grad_tuples.setdefault(grads, grads)
            nbf, state, n_params = v.needs_backward_final, states[li], len(layers[li].params)
            pstates, lr = param_states[li], v.param_lr_mult
            parts = (nbf, state, n_params, id(pstates), id(lr), id(grads))
            rec = records.get(parts)
            if rec is None:
                rec = records[parts] = (nbf, state, n_params, pstates, lr, grads)
            verdicts[key] = rec
        else:
            # (layers of one key, possible after renames: the first one's verdicts, the
            # later one's bottoms)
            merged = list(got[5])
            merged[: len(grads)] = grads
            verdicts[key] = got[:5] + (tuple(merged),)
    return _OldPhase(verdicts, out_edges, _losses(old, rename, blob_rename), warnings)


_T = TypeVar("_T")


def _reuse(out: list[_T], prev: list[_T], item: _T) -> None:
    """Append ``item``, or the equal one at the same place of the previous phase's list: TRAIN
    and TEST usually report the same changes (tens of thousands for a freeze), kept once."""
    i = len(out)
    if i < len(prev) and prev[i] == item:
        item = prev[i]
    out.append(item)


def _phase_diff(
    phase: str,
    old: _OldPhase | str,
    new: PhaseFacts | str,
    mark: int = 1,
    prev: PhaseDiff | None = None,
) -> PhaseDiff:
    """``mark``: a number no other call on the same ``old`` uses (edges found are marked);
    ``prev``: the previous phase's diff, whose equal change objects are shared."""
    pd = PhaseDiff(phase)
    if prev is None:
        prev = pd
    if isinstance(old, str) or isinstance(new, str):
        pd.old_error = old if isinstance(old, str) else None
        pd.new_error = new if isinstance(new, str) else None
        return pd
    ng = new.graph
    layers = ng.layers
    verdicts = old.verdicts
    occ = new.occurrence
    new_pstates = new.backward.states.params
    for ni, k in enumerate(occ):
        if k < 0:
            continue
        nl = layers[ni]
        got = verdicts.get(_key(nl.name, k))
        if got is None:
            continue
        o_nbf, o_state, o_params, o_pstates, o_lr, _ = got
        vn = new.backward.layers[ni]
        if o_nbf != vn.needs_backward_final:
            _reuse(pd.backward, prev.backward,
                   BackwardChange(nl.name, nl.type, o_nbf, vn.needs_backward_final, o_state,
                                  new.states[ni]))  # fmt: skip
        for p in nl.params:
            if p.index < o_params:
                was: str | None = o_pstates[p.index]
                old_lr: float | None = o_lr[p.index]
            else:
                was, old_lr = None, None
            now = new_pstates[ni][p.index]
            if was != now and (was is not None or now != FROZEN):
                _reuse(pd.params, prev.params,
                       ParamChange(nl.name, p.index, p.role, now, old_lr,
                                   vn.param_lr_mult[p.index]))  # fmt: skip

    # each bottom: gradient flows <-> cut; rewired edges (source layer, target layer, blob)
    edges = _edge_arrays(new)
    e_src, e_tgt, e_bot, e_blob, e_grad = (
        edges.source, edges.target, edges.bottom, edges.blob, edges.grad
    )  # fmt: skip
    oe = old.edges
    added: dict[_EdgeKey, None] = {}
    no_grads: tuple[str | None, ...] = ()
    last_t = -1
    tname = ""
    old_g = no_grads
    for i in range(len(e_blob)):
        t = e_tgt[i]
        if t != last_t:
            last_t = t
            tname = layers[t].name
            rec = verdicts.get(_key(tname, occ[t]))
            old_g = no_grads if rec is None else rec[5]
        s = e_src[i]
        sname = None if s < 0 else layers[s].name
        blob = e_blob[i]
        ekey = (sname, tname, blob)
        seen = oe.get(ekey)
        if seen is None:
            added[ekey] = None
        elif seen != mark:
            oe[ekey] = mark
        j = e_bot[i]
        was_g = old_g[j] if j < len(old_g) else None
        if was_g is None:
            continue
        g = e_grad[i]
        if (was_g == "flows" and g == _CUT) or (was_g == "cut" and g == _FLOWS):
            pd.gradient.append(
                GradientChange(tname, j, blob, sname, "cut" if g == _CUT else "restored")
            )
    for s_, t_, b_ in added:
        pd.edges.append(EdgeChange(s_, t_, b_, "added"))
    for (s_, t_, b_), seen in oe.items():
        if seen != mark:
            pd.edges.append(EdgeChange(s_, t_, b_, "removed"))

    # loss outputs
    ol_, nl_ = old.losses, _losses(new, {}, {})
    for lkey in list(nl_) + [k for k in ol_ if k not in nl_]:
        w_old, w_new = ol_.get(lkey), nl_.get(lkey)
        if w_old != w_new:
            pd.losses.append(LossChange(lkey[1], lkey[0], w_old, w_new))

    # analysis warnings, by (kind, layer)
    ow, nw = old.warnings, _warnings(new.backward, {})
    for wkey, msg in nw.items():
        if wkey not in ow:
            pd.warnings.append(WarningChange("added", wkey[0], wkey[1], msg))
    for wkey, msg in ow.items():
        if wkey not in nw:
            pd.warnings.append(WarningChange("removed", wkey[0], wkey[1], msg))
    return pd


def _split_origin(facts: PhaseFacts, li: int) -> tuple[str, str]:
    """(producer layer, blob) a Split layer copies, inserted splits skipped."""
    g = facts.graph
    layer = g.layers[li]
    blob = g.blob_list[layer.bottom_ids[0]]
    w = [] if blob.producer is None else [blob.producer]
    w.extend(blob.writers)
    at = bisect_left(w, li)
    src = w[at - 1] if at > 0 else None
    if src is None:
        return "?", blob.name
    if g.layers[src].inserted_split:
        return _split_origin(facts, src)
    return g.layers[src].name, blob.name


def _diff_versions(old: _Version, new: _Version) -> FileDiff:
    """Compare two sides; at most one side's message or graph is alive at a time once the
    per-layer comparison is done."""
    fd = FileDiff(old.path, new.path, new.kind, "modified")
    if old.kind != "net" or new.kind != "net":
        if old.kind != new.kind:
            fd.kind = f"{old.kind}->{new.kind}"
        fd.fields = _deep_changes(message_to_dict(old.message), message_to_dict(new.message))
        fd.status = "modified" if fd.has_changes else "unchanged"
        return fd
    fd.fields = _deep_changes(old.top, new.top)
    if old.unit_field != new.unit_field:
        fd.fields.append(FieldChange("(format)", "changed", old.unit_field, new.unit_field))
    pairs, removed, added = _pair_units(old, new)
    # Copy the old layers the comparison reads, so that only the new side's message is alive.
    old.pin([o for o, _ in pairs] + (removed if added else []))
    old.park()
    renamed, removed, added = _match_renames(old, new, removed, added)
    fd.layers = _layer_changes(old, new, pairs, renamed, removed, added)
    rename = {o.name: n.name for o, n in renamed}
    blob_rename: dict[str, str] = {}
    for o, n in renamed:
        for ot, nt in zip(old.unit_msg(o).top, new.unit_msg(n).top, strict=False):
            if ot != nt:
                blob_rename[ot] = nt
    # the layers whose parameter blobs the weight warnings may count: renamed ones, and
    # modified ones whose type or a parameter shape changed (a freeze's lr_mult edits of
    # thousands of layers need no count, nor copies of those layers)
    old_counts, new_counts = _ParamCounts(), _ParamCounts()
    shaped = {lc.name for lc in fd.layers if lc.change == "modified" and _shape_changes(lc)}
    by_new = _last_pairs(old, new, shaped)
    for _, n in renamed:
        new_counts.want(new, n)
    for lc in fd.layers:
        if lc.change == "modified" and lc.name in by_new:
            o, n = by_new[lc.name]
            old_counts.want(old, o)
            new_counts.want(new, n)
    if fd.fields or fd.layers:
        new.park()
        olds: dict[str, _OldPhase | str] = {}
        old_built: list[str] = []
        for phase, of, derived in old.iter_facts():
            if isinstance(of, PhaseFacts):
                prev = olds.get("TRAIN") if derived else None
                olds[phase] = _old_phase(
                    of, rename, blob_rename, prev if isinstance(prev, _OldPhase) else None
                )
                old_counts.add_phase(of)
                old_built.append(phase)
            else:
                olds[phase] = of
            del of
        new_built: list[str] = []
        prev_pd: PhaseDiff | None = None
        for phase, nf, _ in new.iter_facts():
            mark = PHASES.index(phase) + 1
            fd.phases[phase] = prev_pd = _phase_diff(phase, olds.pop(phase), nf, mark, prev_pd)
            if isinstance(nf, PhaseFacts):
                new_counts.add_phase(nf)
                new_built.append(phase)
            del nf
        fd.new_facts = _LazyFacts(new._message, new.independent, tuple(new_built))
        fd.old_facts = _LazyFacts(old._message, old.independent, tuple(old_built))
    else:
        # Nothing semantic changed: the graphs are the same; skip building them.
        fd.phases = {phase: PhaseDiff(phase) for phase in PHASES}
    fd.weights = _weight_warnings(old_counts, new_counts, renamed, fd.layers, by_new)
    fd.status = "modified" if fd.has_changes else "unchanged"
    return fd


def diff_texts(
    old_text: str | None,
    new_text: str | None,
    old_path: str = "a",
    new_path: str = "b",
    *,
    lenient: bool = False,
    schema: Schema | None = None,
    root: str | None = None,
) -> FileDiff:
    """Compare two versions of a file (None: the file does not exist on that side).

    Raises ParseError / SchemaErrors (exit 2 in the CLI) when a side is not a valid file.
    """
    from rewriter.util.memory import gc_paused

    with gc_paused():
        new_v = (
            None
            if new_text is None
            else _Version(new_text, new_path, lenient=lenient, schema=schema, root=root)
        )
        # Only one tree at a time: the new side's is gone, its message parked, and its text
        # (when the caller passed the only reference) released.
        new_text = None
        if new_v is not None and new_v.kind == "net":
            new_v.park()
        old_v = (
            None
            if old_text is None
            else _Version(old_text, old_path, lenient=lenient, schema=schema, root=root)
        )
        old_text = None
        if old_v is None and new_v is None:
            raise RewriterError(f"{new_path}: missing on both sides")
        if old_v is None or new_v is None:
            side = new_v or old_v
            assert side is not None
            status = "added" if old_v is None else "removed"
            return FileDiff(
                None if old_v is None else old_path,
                None if new_v is None else new_path,
                side.kind,
                status,
            )
        return _diff_versions(old_v, new_v)


def diff_files(
    old: str | os.PathLike[str],
    new: str | os.PathLike[str],
    *,
    lenient: bool = False,
    schema: Schema | None = None,
    root: str | None = None,
) -> FileDiff:
    from rewriter.text.fileio import read_text

    return diff_texts(
        read_text(old), read_text(new), str(old), str(new),
        lenient=lenient, schema=schema, root=root,
    )  # fmt: skip


def diff_dirs(
    old: str | os.PathLike[str],
    new: str | os.PathLike[str],
    *,
    lenient: bool = False,
    schema: Schema | None = None,
    root: str | None = None,
) -> DiffResult:
    """Pair ``*.prototxt`` files of two directories by relative path."""
    from rewriter.text.fileio import read_text

    a, b = _prototxt_files(Path(old)), _prototxt_files(Path(new))
    files: list[FileDiff] = []
    for rel in sorted(set(a) | set(b)):
        pa, pb = a.get(rel), b.get(rel)
        files.append(
            diff_texts(
                None if pa is None else read_text(pa),
                None if pb is None else read_text(pb),
                str(pa if pa is not None else Path(old) / rel),
                str(pb if pb is not None else Path(new) / rel),
                lenient=lenient,
                schema=schema,
                root=root,
            )  # fmt: skip
        )
    return DiffResult(files)


def diff_git(
    path: str | os.PathLike[str],
    rev: str,
    *,
    lenient: bool = False,
    schema: Schema | None = None,
    root: str | None = None,
) -> FileDiff:
    """Compare the working copy of ``path`` with its version at ``rev``."""
    from rewriter.text.fileio import read_text

    # (texts passed straight through: diff_texts lets each go once its side is parsed)
    return diff_texts(
        git_show(path, rev),
        read_text(path) if Path(path).exists() else None,
        f"{rev}:{path}",
        str(path),
        lenient=lenient,
        schema=schema,
        root=root,
    )
