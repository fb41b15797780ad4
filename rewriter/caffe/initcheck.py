"""What ``rewriter check`` asks of a net: would ``caffe::Net`` initialise it?

Caffe builds a net for one phase (and the stages asked for); a net file is used in TRAIN and
TEST and in the stages its rules name, so :func:`net_init_findings` wires every one of those
runs (``Net::Init``'s graph checks: unknown bottoms, duplicate tops, loss weights, param
sharing...; shape checks are not made here) and sorts what Caffe says:

* an error any run stops with is the file's error, except
* an unknown bottom that a layer the run's rules leave out would have produced: the net is
  phase-specific by design (a TEST-only reshape, a data layer per stage). That is reported as
  a warning, and only when no run of that phase initialises at all.

A layer type unknown to BVLC Caffe is a fork's layer, kept, unless it is a near miss of a
known type: then a warning says so. Locating is :mod:`rewriter.caffe.diagnose`'s job.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any, NamedTuple

from rewriter.errors import did_you_mean

from .graph import CaffeError, UnknownBottom, build_graph

__all__ = ["Findings", "net_init_findings", "net_init_runs"]

#: at most this many stage names get runs of their own (two each)
MAX_STAGES = 8


class Findings(NamedTuple):
    """``error``: what Caffe stops with (None if every intended run initialises)."""

    error: CaffeError | None
    warnings: list[CaffeError]


def net_init_runs(msg: Any) -> list[tuple[str, tuple[str, ...]]]:
    """(phase, stages) Caffe may build ``msg`` in: TRAIN, TEST, then each stage its rules name
    (the first :data:`MAX_STAGES`) with both phases."""
    return _runs(msg)[0]


def _runs(msg: Any) -> tuple[list[tuple[str, tuple[str, ...]]], bool]:
    """:func:`net_init_runs` and whether any layer has rules, in one pass over the layers
    (the rules' containers are read only for a layer that has some)."""
    stages: list[str] = []
    any_rules = False
    for layers in (msg.layer, msg.layers):
        for layer in layers:
            include, exclude = layer.include, layer.exclude
            if not include and not exclude:
                continue
            any_rules = True
            for rule in list(include) + list(exclude):
                for s in list(rule.stage) + list(rule.not_stage):
                    if s not in stages:
                        stages.append(s)
    runs: list[tuple[str, tuple[str, ...]]] = [("TRAIN", ()), ("TEST", ())]
    for s in stages[:MAX_STAGES]:
        runs += [("TRAIN", (s,)), ("TEST", (s,))]
    return runs, any_rules


def net_init_findings(
    msg: Any, known_types: Sequence[str] = (), keep: MutableMapping[str, Any] | None = None
) -> Findings:
    """Build every run of :func:`net_init_runs`; see the module docstring for the verdict.

    ``known_types``: layer types whose near misses are worth a warning. ``keep``: filled with
    each phase's graph (no stages, level 0, default param counts) when the net initialises,
    so that the set-up checks need not build it again.
    """
    from .upgrade_proto import Refusal, from_refusal

    ok_phases: set[str] = set()
    by_design: dict[str, CaffeError] = {}
    warnings: list[CaffeError] = []
    fork_fillers: list[CaffeError] = []
    typos_done = False
    runs, any_rules = _runs(msg)
    if not any_rules:
        runs = runs[:1]  # without rules every phase wires the same layers: one run will do
    for phase, stages in runs:
        try:
            graph = build_graph(msg, phase=phase, stages=stages)
        except UnknownBottom as e:
            if e.filtered_out_by is None:
                return Findings(e, warnings)
            by_design.setdefault(phase, e)
            continue
        except CaffeError as e:
            if e.location != "filler.hpp":
                return Findings(e, warnings)
            # a filler BVLC lacks is a fork's (intel's "gabor"), as an unknown layer type is
            if all(e.message != w.message for w in fork_fillers):
                e.hint = e.hint or "BVLC Caffe has no such filler: fine if your Caffe fork has"
                fork_fillers.append(e)
            continue
        except Refusal as r:  # the in-memory upgrade of a V0/V1 file stops: no run will do
            return Findings(from_refusal(r), warnings)
        ok_phases.add(phase)
        if keep is not None and not stages:
            keep[phase] = graph
        if not typos_done and known_types:
            typos_done = True
            warnings += _type_typos(graph, known_types)
    for phase, refused in by_design.items():
        if phase not in ok_phases:
            warnings.append(refused)
    return Findings(None, warnings + fork_fillers)


def _type_typos(graph: Any, known_types: Sequence[str]) -> list[CaffeError]:
    out: list[CaffeError] = []
    for w in graph.warnings:
        if w.kind != "unknown-layer-type" or w.index is None:
            continue
        layer = graph.layers[w.index]
        hint = did_you_mean(layer.type, known_types)
        if hint is None:
            continue
        typo = CaffeError(
            f"Unknown layer type: {layer.type} (a fork's layer, or a typo)",
            "layer_factory.hpp",
            layer=layer.name,
            layer_index=layer.source_index,
            field="type",
            hint=hint,
        )
        out.append(typo)
    return out
