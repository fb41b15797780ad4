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
   Caffe's own ``Net::Init`` rules (:mod:`rewriter.netinit`): layers that start or stop needing
   backward, parameter blobs that become frozen or trainable (the solver's ``lr_mult``), inputs
   whose gradient becomes cut or is restored, loss outputs, analysis warnings, and pretrained
   weights that will no longer load (Caffe copies weights by layer name, so a renamed layer
   loses them; a changed parameter shape makes loading stop).

Speed: layers whose text is byte-identical are not converted or deepdiffed at all, and each
graph is built once per phase (once in all when no layer has include/exclude rules, since the
TEST net is then the TRAIN net). Renderers live in :mod:`rewriter.render`; the JSON schema is
documented in docs/diff.md (``schema_version`` 1).
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RewriterError

if TYPE_CHECKING:
    from .bind import Bound
    from .cst import Document, Field
    from .graph import Graph
    from .netinit import Backward
    from .schema import Schema

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
    "layer_state",
    "message_to_dict",
    "phase_facts",
    "textconv",
]

SCHEMA_VERSION = 1
PHASES = ("TRAIN", "TEST")

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


class GitError(RewriterError):
    """``git`` is missing, the path is outside a repository, or the revision is unknown."""


# --------------------------------------------------------------------------- result model


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: ``path`` like ``param[0].lr_mult``; absent side is None."""

    path: str
    change: str  # "changed" | "added" | "removed"
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "change": self.change, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class LayerChange:
    change: str  # "modified" | "added" | "removed" | "renamed"
    name: str  # the new name (the old one for removed layers)
    type: str
    old_name: str | None = None
    new_name: str | None = None
    fields: tuple[FieldChange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "name": self.name,
            "old_name": self.old_name,
            "new_name": self.new_name,
            "type": self.type,
            "fields": [f.to_json() for f in self.fields],
        }


@dataclass(frozen=True)
class BackwardChange:
    layer: str
    type: str
    old_needs_backward: bool
    new_needs_backward: bool
    old_state: str
    new_state: str

    @property
    def change(self) -> str:
        return "starts" if self.new_needs_backward else "stops"

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "type": self.type,
            "change": self.change,
            "old_needs_backward": self.old_needs_backward,
            "new_needs_backward": self.new_needs_backward,
            "old_state": self.old_state,
            "new_state": self.new_state,
        }


@dataclass(frozen=True)
class ParamChange:
    layer: str
    index: int
    role: str
    change: str  # "frozen" | "trainable"
    old_lr_mult: float | None
    new_lr_mult: float

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "index": self.index,
            "role": self.role,
            "change": self.change,
            "old_lr_mult": self.old_lr_mult,
            "new_lr_mult": self.new_lr_mult,
        }


@dataclass(frozen=True)
class GradientChange:
    """The gradient into ``layer``'s bottom ``bottom`` (blob ``blob`` from ``source``)."""

    layer: str
    bottom: int
    blob: str
    source: str | None
    change: str  # "cut" | "restored"

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "bottom": self.bottom,
            "blob": self.blob,
            "source": self.source,
            "change": self.change,
        }


@dataclass(frozen=True)
class EdgeChange:
    source: str | None
    target: str
    blob: str
    change: str  # "added" | "removed"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "blob": self.blob,
                "change": self.change}  # fmt: skip


@dataclass(frozen=True)
class LossChange:
    blob: str
    layer: str
    old_weight: float | None
    new_weight: float | None

    @property
    def change(self) -> str:
        if self.old_weight is None:
            return "added"
        return "removed" if self.new_weight is None else "changed"

    def to_json(self) -> dict[str, Any]:
        return {
            "blob": self.blob,
            "layer": self.layer,
            "change": self.change,
            "old_weight": self.old_weight,
            "new_weight": self.new_weight,
        }


@dataclass(frozen=True)
class WarningChange:
    change: str  # "added" | "removed"
    kind: str
    layer: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"change": self.change, "kind": self.kind, "layer": self.layer,
                "message": self.message}  # fmt: skip


@dataclass(frozen=True)
class WeightWarning:
    layer: str
    old_layer: str
    reason: str  # "renamed" | "shape"
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "old_layer": self.old_layer, "reason": self.reason,
                "message": self.message}  # fmt: skip


@dataclass
class PhaseDiff:
    phase: str
    old_error: str | None = None
    new_error: str | None = None
    backward: list[BackwardChange] = field(default_factory=list)
    params: list[ParamChange] = field(default_factory=list)
    gradient: list[GradientChange] = field(default_factory=list)
    edges: list[EdgeChange] = field(default_factory=list)
    losses: list[LossChange] = field(default_factory=list)
    warnings: list[WarningChange] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return self.old_error != self.new_error or any(self._lists())

    def _lists(self) -> tuple[list[Any], ...]:
        return (self.backward, self.params, self.gradient, self.edges, self.losses,
                self.warnings)  # fmt: skip

    def same_consequences(self, other: PhaseDiff) -> bool:
        """Everything but the phase name is equal (renderers then print one of them)."""
        return (self.old_error, self.new_error) == (other.old_error, other.new_error) and all(
            a == b for a, b in zip(self._lists(), other._lists(), strict=True)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "old_error": self.old_error,
            "new_error": self.new_error,
            "backward": [c.to_json() for c in self.backward],
            "params": [c.to_json() for c in self.params],
            "gradient": [c.to_json() for c in self.gradient],
            "edges": [c.to_json() for c in self.edges],
            "losses": [c.to_json() for c in self.losses],
            "warnings": [c.to_json() for c in self.warnings],
        }


@dataclass
class FileDiff:
    old_path: str | None
    new_path: str | None
    kind: str  # "net" | "solver" | "other"
    status: str  # "modified" | "unchanged" | "added" | "removed"
    fields: list[FieldChange] = field(default_factory=list)
    layers: list[LayerChange] = field(default_factory=list)
    phases: dict[str, PhaseDiff] = field(default_factory=dict)
    weights: list[WeightWarning] = field(default_factory=list)
    #: facts per phase of the new (and old) version, for drawing; not part of the JSON
    new_facts: dict[str, PhaseFacts] = field(default_factory=dict, repr=False, compare=False)
    old_facts: dict[str, PhaseFacts] = field(default_factory=dict, repr=False, compare=False)

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or "?"

    @property
    def has_changes(self) -> bool:
        return (
            self.status in ("added", "removed")
            or bool(self.fields or self.layers or self.weights)
            or any(p.has_changes for p in self.phases.values())
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old_path,
            "new": self.new_path,
            "kind": self.kind,
            "status": self.status,
            "semantic_changes": self.has_changes,
            "fields": [f.to_json() for f in self.fields],
            "layers": [c.to_json() for c in self.layers],
            "phases": {name: p.to_json() for name, p in self.phases.items()},
            "weights": [w.to_json() for w in self.weights],
        }


@dataclass
class DiffResult:
    files: list[FileDiff]

    @property
    def has_changes(self) -> bool:
        return any(f.has_changes for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "semantic_changes": self.has_changes,
            "files": [f.to_json() for f in self.files],
        }


# --------------------------------------------------------------------------- values


def _short_float32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (as protobuf prints it)."""
    if not math.isfinite(v):
        return v
    packed = struct.pack("<f", v)
    for digits in range(1, 10):
        s = float(f"{v:.{digits}g}")
        try:
            if struct.pack("<f", s) == packed:
                return s
        except OverflowError:
            break
    return v


_T_FLOAT, _T_ENUM, _T_GROUP, _T_MESSAGE, _T_BYTES = 2, 14, 10, 11, 12


class EnumName(str):
    """An enum value by name: a string in JSON, printed bare (``TRAIN``) in text."""

    __slots__ = ()


def _repeated(fd: Any) -> bool:
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(fd.label == 3)


def _plain(fd: Any, value: Any) -> Any:
    t = fd.type
    if t in (_T_MESSAGE, _T_GROUP):
        return message_to_dict(value)
    if t == _T_ENUM:
        ev = fd.enum_type.values_by_number.get(value)
        return EnumName(ev.name) if ev is not None else int(value)
    if t == _T_FLOAT:
        return _short_float32(float(value))
    if t == _T_BYTES:
        return bytes(value).decode("utf-8", "backslashreplace")
    return value


def message_to_dict(msg: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """A message as plain data: set fields only, enums by name, float32 values shortest."""
    skipped = frozenset(skip)
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        name = f"[{fd.full_name}]" if fd.is_extension else fd.name
        if name in skipped:
            continue
        if _repeated(fd):
            out[name] = [_plain(fd, v) for v in value]
        else:
            out[name] = _plain(fd, value)
    return out


def format_value(value: Any) -> str:
    """A plain value in protobuf text style: ``0``, ``"x"``, ``TRAIN``, ``{ lr_mult: 0 }``."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, EnumName):
        return str(value)
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dict):
        inner = " ".join(f"{k}: {format_value(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _path_text(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(root)"


def _deep_changes(old: dict[str, Any], new: dict[str, Any]) -> list[FieldChange]:
    """Field changes between two plain dicts (deepdiff, imported here: it is slow to import)."""
    if old == new:
        return []
    from deepdiff import DeepDiff

    try:
        dd = DeepDiff(old, new, view="tree", threshold_to_diff_deeper=0)
    except TypeError:  # deepdiff < 8 has no threshold_to_diff_deeper
        dd = DeepDiff(old, new, view="tree")
    kinds = {
        "values_changed": "changed",
        "type_changes": "changed",
        "dictionary_item_added": "added",
        "iterable_item_added": "added",
        "dictionary_item_removed": "removed",
        "iterable_item_removed": "removed",
    }
    out: list[tuple[list[Any], FieldChange]] = []
    for report, levels in dd.items():
        change = kinds.get(report, "changed")
        for level in levels:
            parts = list(level.path(output_format="list"))
            o = None if change == "added" else level.t1
            n = None if change == "removed" else level.t2
            out.append((parts, FieldChange(_path_text(parts), change, o, n)))
    rank: dict[tuple[Any, ...], int] = {}
    _rank_paths((), old, rank)
    _rank_paths((), new, rank)
    out.sort(key=lambda item: rank.get(tuple(item[0]), len(rank)))
    return [fc for _, fc in out]


def _rank_paths(prefix: tuple[Any, ...], value: Any, rank: dict[tuple[Any, ...], int]) -> None:
    """Number every path of a plain value in file order (fields as protobuf lists them)."""
    rank.setdefault(prefix, len(rank))
    if isinstance(value, dict):
        for k, v in value.items():
            _rank_paths(prefix + (k,), v, rank)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _rank_paths(prefix + (i,), v, rank)


# --------------------------------------------------------------------------- one version


@dataclass
class _Unit:
    """One top-level ``layer`` (or V1 ``layers``) entry of a net."""

    index: int  # position among the document's units
    name: str
    type: str
    field: Field
    msg: Any


def _type_name(msg: Any) -> str:
    value = msg.type
    if isinstance(value, str):
        return value
    fd = msg.DESCRIPTOR.fields_by_name["type"]
    ev = fd.enum_type.values_by_number.get(int(value))
    return str(ev.name) if ev is not None else str(value)


class _Version:
    """One side of a diff: tree, binding, layer units and (lazily) the phase graphs."""

    def __init__(
        self,
        text: str,
        path: str,
        *,
        lenient: bool,
        schema: Schema | None,
        root: str | None,
    ) -> None:
        from .bind import bind
        from .cst import parse

        self.path = path
        self.doc: Document = parse(text, path)
        self.bound: Bound = bind(self.doc, schema, root, lenient)
        self.bound.raise_for_errors()
        self.message: Any = self.bound.message
        self.kind = "solver" if self.bound.root.endswith("SolverParameter") else "net"
        if not self.bound.root.endswith(("SolverParameter", "NetParameter")):
            self.kind = "other"
        self.units: list[_Unit] = []
        self.unit_field = ""
        if self.kind == "net":
            self._collect_units()
        self._facts: dict[str, PhaseFacts | str] = {}

    def _collect_units(self) -> None:
        msg = self.message
        # Caffe reads V1 ``layers`` when there are any (and then drops ``layer``).
        name = "layers" if len(msg.layers) else "layer"
        self.unit_field = name
        fields = self.doc.get_all(name)
        msgs = getattr(msg, name)
        if len(fields) != len(msgs):  # cannot happen for a bound document; be safe
            raise RewriterError(f"{self.path}: {name} entries do not match the message")
        for i, (f, m) in enumerate(zip(fields, msgs, strict=True)):
            self.units.append(_Unit(i, str(m.name), _type_name(m), f, m))

    def phase_independent(self) -> bool:
        """No layer has include/exclude rules: TRAIN and TEST nets are the same net."""
        msg = self.message
        return not any(len(x.include) or len(x.exclude) for x in msg.layer) and not any(
            len(x.include) or len(x.exclude) for x in msg.layers
        )

    def facts(self, phase: str) -> PhaseFacts | str:
        """The phase's graph facts, or the error text Caffe stops with."""
        got = self._facts.get(phase)
        if got is not None:
            return got
        from .graph import build_graph, gc_paused
        from .netinit import Backward

        other = "TEST" if phase == "TRAIN" else "TRAIN"
        prev = self._facts.get(other)
        result: PhaseFacts | str
        try:
            with gc_paused():
                if isinstance(prev, PhaseFacts) and self.phase_independent():
                    # Same layers, same verdicts; only the TRAIN-only warnings differ.
                    graph = replace(prev.graph, phase=phase)
                    bw = prev.backward
                    if phase == "TRAIN":
                        bw = graph.backward()
                    else:
                        bw = Backward(graph=graph, layers=bw.layers, warnings=graph.warnings)
                    result = replace(prev, graph=graph, backward=bw)
                else:
                    graph = build_graph(self.message, phase=phase)
                    result = phase_facts(graph, graph.backward())
        except RewriterError as e:
            result = str(e)
        self._facts[phase] = result
        return result


# --------------------------------------------------------------------------- graph facts


def layer_state(graph: Graph, backward: Backward, index: int) -> str:
    """``trainable`` (a parameter updates and gradients reach it), ``frozen`` (parameters,
    none updates), ``no gradient`` (parameters that update but no backward reaches them: only
    weight decay moves them), ``backward only`` (passes gradients, nothing to learn) or
    ``no backward``."""
    layer = graph.layers[index]
    v = backward.layers[index]
    if layer.params:
        if not any(v.param_updates):
            return "frozen"
        return "trainable" if v.needs_backward_final else "no gradient"
    return "backward only" if v.needs_backward_final else "no backward"


@dataclass(frozen=True)
class EdgeFact:
    """A bottom of a (non-split) layer and where its data comes from."""

    #: graph index of the layer that wrote the version read (inserted splits skipped)
    source: int | None
    target: int
    bottom: int
    #: the blob's name as written in the file (not Caffe's split names)
    blob: str
    #: "flows" (a gradient is passed), "cut" (upstream would learn from it but this bottom
    #: gets none: propagate_down, or a cut further down), "none" (nothing upstream learns)
    gradient: str


@dataclass
class PhaseFacts:
    graph: Graph
    backward: Backward
    states: list[str]
    edges: list[EdgeFact]
    #: per graph layer: the layer is a Split Caffe inserted
    keys: list[tuple[str, int] | None]
    by_key: dict[tuple[str, int], int]


def phase_facts(graph: Graph, backward: Backward) -> PhaseFacts:
    """States, data edges (splits resolved) and gradient state of every bottom."""
    layers = graph.layers
    blobs = graph.blob_list
    verdicts = backward.layers
    # writers of every blob id in net order (the producer first)
    writers: list[list[int]] = []
    for b in blobs:
        w = [] if b.producer is None else [b.producer]
        w.extend(b.writers)
        writers.append(w)
    # Caffe's forward pass (Net::Init): may a gradient arriving at this bottom be used?
    blob_flag = [False] * len(blobs)
    read_flag: list[tuple[bool, ...]] = []
    for layer in layers:
        flags = tuple(blob_flag[b] for b in layer.bottom_ids)
        read_flag.append(flags)
        if any(flags) or any(p.local_lr_mult != 0 for p in layer.params):
            for t in layer.top_ids:
                blob_flag[t] = True

    def source(li: int, j: int) -> tuple[int | None, str]:
        for _ in range(len(layers)):
            bid = layers[li].bottom_ids[j]
            w = writers[bid]
            at = bisect_left(w, li)
            src = w[at - 1] if at > 0 else None
            if src is None or not layers[src].inserted_split:
                return src, blobs[bid].name
            li, j = src, 0
        return None, blobs[layers[li].bottom_ids[j]].name

    states: list[str] = []
    edges: list[EdgeFact] = []
    keys: list[tuple[str, int] | None] = []
    by_key: dict[tuple[str, int], int] = {}
    seen: dict[str, int] = {}
    for li, layer in enumerate(layers):
        states.append(layer_state(graph, backward, li))
        if layer.inserted_split:
            keys.append(None)
            continue
        k = seen.get(layer.name, 0)
        seen[layer.name] = k + 1
        keys.append((layer.name, k))
        by_key[(layer.name, k)] = li
        v = verdicts[li]
        for j in range(len(layer.bottoms)):
            src, blob = source(li, j)
            if v.bottom_need_backward[j]:
                grad = "flows"
            elif read_flag[li][j] and v.contributes_loss:
                grad = "cut"
            else:
                grad = "none"
            edges.append(EdgeFact(src, li, j, blob, grad))
    return PhaseFacts(graph, backward, states, edges, keys, by_key)


# --------------------------------------------------------------------------- diff


def _match_units(
    old: list[_Unit], new: list[_Unit]
) -> tuple[list[tuple[_Unit, _Unit]], list[tuple[_Unit, _Unit]], list[_Unit], list[_Unit]]:
    """(same-name pairs, renamed pairs, removed, added)."""
    by_key: dict[tuple[str, int], _Unit] = {}
    count: dict[str, int] = {}
    for u in old:
        k = count.get(u.name, 0)
        count[u.name] = k + 1
        by_key[(u.name, k)] = u
    pairs: list[tuple[_Unit, _Unit]] = []
    added: list[_Unit] = []
    count = {}
    for u in new:
        k = count.get(u.name, 0)
        count[u.name] = k + 1
        o = by_key.pop((u.name, k), None)
        if o is None:
            added.append(u)
        else:
            pairs.append((o, u))
    removed = sorted(by_key.values(), key=lambda u: u.index)
    renamed: list[tuple[_Unit, _Unit]] = []
    # Exact content first; then allowing blob names equal to the layer's name to follow it.
    for abstract in (False, True):
        if not (removed and added):
            break
        sigs: dict[bytes, list[_Unit]] = {}
        for u in removed:
            sigs.setdefault(_signature(u, abstract), []).append(u)
        still_added: list[_Unit] = []
        for u in added:
            cands = sigs.get(_signature(u, abstract))
            if cands:
                renamed.append((cands.pop(0), u))
            else:
                still_added.append(u)
        taken = {id(o) for o, _ in renamed}
        removed = [u for u in removed if id(u) not in taken]
        added = still_added
    renamed.sort(key=lambda p: p[1].index)
    return pairs, renamed, removed, added


def _signature(u: _Unit, abstract: bool) -> bytes:
    """The layer's content without its name (and blob names equal to it, if ``abstract``)."""
    msg = type(u.msg)()
    msg.CopyFrom(u.msg)
    msg.ClearField("name")
    if abstract:
        for blobs in (msg.bottom, msg.top):
            for i, b in enumerate(blobs):
                if b == u.name:
                    blobs[i] = "\x00self"
    return bytes(msg.SerializeToString(deterministic=True))


def _unit_text(u: _Unit) -> str:
    return u.field.value_text


def _layer_changes(
    pairs: list[tuple[_Unit, _Unit]],
    renamed: list[tuple[_Unit, _Unit]],
    removed: list[_Unit],
    added: list[_Unit],
) -> list[LayerChange]:
    out: list[tuple[int, int, LayerChange]] = []
    for o, n in pairs:
        if _unit_text(o) == _unit_text(n):
            continue  # byte-identical: nothing to convert or compare
        changes = _deep_changes(message_to_dict(o.msg), message_to_dict(n.msg))
        if changes:
            out.append((n.index, 0, LayerChange("modified", n.name, n.type, o.name, n.name,
                                                tuple(changes))))  # fmt: skip
    for o, n in renamed:
        changes = _deep_changes(message_to_dict(o.msg), message_to_dict(n.msg))
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


def _param_count(v: _Version, u: _Unit) -> int:
    for phase in PHASES:
        facts = v._facts.get(phase)
        if isinstance(facts, PhaseFacts):
            for li, key in enumerate(facts.keys):
                if key is not None and key[0] == u.name:
                    return len(facts.graph.layers[li].params)
    from .layer_params import param_blob_count

    count = param_blob_count(u.type, u.msg, len(u.msg.bottom))
    return len(u.msg.param) if count is None else count


def _weight_warnings(
    old_v: _Version,
    new_v: _Version,
    renamed: list[tuple[_Unit, _Unit]],
    layers: list[LayerChange],
    pairs: list[tuple[_Unit, _Unit]],
) -> list[WeightWarning]:
    out: list[WeightWarning] = []
    for o, n in renamed:
        if _param_count(new_v, n):
            out.append(
                WeightWarning(
                    n.name,
                    o.name,
                    "renamed",
                    f"pretrained weights of '{o.name}' will not load into '{n.name}': Caffe "
                    "copies weights by layer name, so this layer starts from its fillers",
                )
            )
    by_new = {n.name: (o, n) for o, n in pairs}
    for lc in layers:
        if lc.change != "modified" or lc.name not in by_new:
            continue
        o, n = by_new[lc.name]
        why = [f.path for f in lc.fields if f.path == "type" or _shape_path(f.path)]
        if why and (_param_count(old_v, o) or _param_count(new_v, n)):
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


def _shape_path(path: str) -> bool:
    head, _, rest = path.partition(".")
    names = _SHAPE_FIELDS.get(head)
    if names is None:
        return False
    leaf = rest.split("[", 1)[0].split(".", 1)[0]
    return not rest or leaf in names


def _phase_diff(
    phase: str,
    old: PhaseFacts | str,
    new: PhaseFacts | str,
    rename: dict[str, str],
    blob_rename: dict[str, str],
) -> PhaseDiff:
    pd = PhaseDiff(phase)
    if isinstance(old, str) or isinstance(new, str):
        pd.old_error = old if isinstance(old, str) else None
        pd.new_error = new if isinstance(new, str) else None
        return pd
    og, ng = old.graph, new.graph

    # keys of the old graph in new names
    def okey(li: int) -> tuple[str, int] | None:
        k = old.keys[li]
        return None if k is None else (rename.get(k[0], k[0]), k[1])

    old_by_key: dict[tuple[str, int], int] = {}
    for li in range(len(og.layers)):
        k = okey(li)
        if k is not None:
            old_by_key.setdefault(k, li)
    for key, ni in new.by_key.items():
        oi = old_by_key.get(key)
        if oi is None:
            continue
        vo, vn = old.backward.layers[oi], new.backward.layers[ni]
        nl, ol = ng.layers[ni], og.layers[oi]
        if vo.needs_backward_final != vn.needs_backward_final:
            pd.backward.append(
                BackwardChange(nl.name, nl.type, vo.needs_backward_final,
                               vn.needs_backward_final, old.states[oi], new.states[ni])
            )  # fmt: skip
        for p in nl.params:
            if p.index < len(ol.params):
                was = vo.param_updates[p.index]
                old_lr: float | None = vo.param_lr_mult[p.index]
            else:
                was, old_lr = False, None
            now = vn.param_updates[p.index]
            if was != now or (old_lr is None and now):
                pd.params.append(
                    ParamChange(nl.name, p.index, p.role, "trainable" if now else "frozen",
                                old_lr, vn.param_lr_mult[p.index])
                )  # fmt: skip

    def name_of(facts: PhaseFacts, li: int | None, mapped: bool) -> str | None:
        if li is None:
            return None
        name = facts.graph.layers[li].name
        return rename.get(name, name) if mapped else name

    # gradient into each bottom: flows <-> cut
    old_grad: dict[tuple[tuple[str, int], int], str] = {}
    for e in old.edges:
        k = okey(e.target)
        if k is not None:
            old_grad[(k, e.bottom)] = e.gradient
    for e in new.edges:
        tkey = new.keys[e.target]
        assert tkey is not None
        was_g = old_grad.get((tkey, e.bottom))
        if was_g is None or {was_g, e.gradient} != {"flows", "cut"}:
            continue
        pd.gradient.append(
            GradientChange(ng.layers[e.target].name, e.bottom, e.blob,
                           name_of(new, e.source, False),
                           "cut" if e.gradient == "cut" else "restored")
        )  # fmt: skip

    # rewired edges (source layer, target layer, blob) in new names
    def edge_set(facts: PhaseFacts, mapped: bool) -> dict[tuple[str | None, str, str], None]:
        out: dict[tuple[str | None, str, str], None] = {}
        for e in facts.edges:
            tgt = name_of(facts, e.target, mapped)
            assert tgt is not None
            blob = blob_rename.get(e.blob, e.blob) if mapped else e.blob
            out[(name_of(facts, e.source, mapped), tgt, blob)] = None
        return out

    oe, ne = edge_set(old, True), edge_set(new, False)
    for s, t, b in ne:
        if (s, t, b) not in oe:
            pd.edges.append(EdgeChange(s, t, b, "added"))
    for s, t, b in oe:
        if (s, t, b) not in ne:
            pd.edges.append(EdgeChange(s, t, b, "removed"))

    # loss outputs
    def losses(facts: PhaseFacts, mapped: bool) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        g = facts.graph
        for layer in g.layers:
            for k, w in enumerate(layer.loss_weights):
                if not w:
                    continue
                if layer.inserted_split:
                    src, blob = _split_origin(facts, layer.index)
                else:
                    src, blob = layer.name, layer.tops[k]
                if mapped:
                    src, blob = rename.get(src, src), blob_rename.get(blob, blob)
                out[(src, blob)] = out.get((src, blob), 0.0) + w
        return out

    ol_, nl_ = losses(old, True), losses(new, False)
    for lkey in list(nl_) + [k for k in ol_ if k not in nl_]:
        w_old, w_new = ol_.get(lkey), nl_.get(lkey)
        if w_old != w_new:
            pd.losses.append(LossChange(lkey[1], lkey[0], w_old, w_new))

    # analysis warnings, by (kind, layer)
    def warns(bw: Backward, mapped: bool) -> dict[tuple[str, str | None], str]:
        out: dict[tuple[str, str | None], str] = {}
        for w in bw.warnings:
            layer = rename.get(w.layer, w.layer) if (mapped and w.layer) else w.layer
            out.setdefault((w.kind, layer), w.message)
        return out

    ow, nw = warns(old.backward, True), warns(new.backward, False)
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
    fd = FileDiff(old.path, new.path, new.kind, "modified")
    if old.kind != "net" or new.kind != "net":
        if old.kind != new.kind:
            fd.kind = f"{old.kind}->{new.kind}"
        fd.fields = _deep_changes(message_to_dict(old.message), message_to_dict(new.message))
        fd.status = "modified" if fd.has_changes else "unchanged"
        return fd
    skip = ("layer", "layers")
    fd.fields = _deep_changes(
        message_to_dict(old.message, skip), message_to_dict(new.message, skip)
    )
    if old.unit_field != new.unit_field:
        fd.fields.append(FieldChange("(format)", "changed", old.unit_field, new.unit_field))
    pairs, renamed, removed, added = _match_units(old.units, new.units)
    fd.layers = _layer_changes(pairs, renamed, removed, added)
    rename = {o.name: n.name for o, n in renamed}
    blob_rename: dict[str, str] = {}
    for o, n in renamed:
        for ot, nt in zip(o.msg.top, n.msg.top, strict=False):
            if ot != nt:
                blob_rename[ot] = nt
    if fd.fields or fd.layers:
        for phase in PHASES:
            of, nf = old.facts(phase), new.facts(phase)
            fd.phases[phase] = _phase_diff(phase, of, nf, rename, blob_rename)
            if isinstance(nf, PhaseFacts):
                fd.new_facts[phase] = nf
            if isinstance(of, PhaseFacts):
                fd.old_facts[phase] = of
    else:
        # Nothing semantic changed: the graphs are the same; skip building them.
        fd.phases = {phase: PhaseDiff(phase) for phase in PHASES}
    fd.weights = _weight_warnings(old, new, renamed, fd.layers, pairs)
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
    from .graph import gc_paused

    with gc_paused():
        new_v = (
            None
            if new_text is None
            else _Version(new_text, new_path, lenient=lenient, schema=schema, root=root)
        )
        old_v = (
            None
            if old_text is None
            else _Version(old_text, old_path, lenient=lenient, schema=schema, root=root)
        )
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
    from .fileio import read_text

    return diff_texts(
        read_text(old), read_text(new), str(old), str(new),
        lenient=lenient, schema=schema, root=root,
    )  # fmt: skip


def _prototxt_files(directory: Path) -> dict[str, Path]:
    return {
        q.relative_to(directory).as_posix(): q
        for q in sorted(directory.rglob("*.prototxt"))
        if q.is_file()
    }


def diff_dirs(
    old: str | os.PathLike[str],
    new: str | os.PathLike[str],
    *,
    lenient: bool = False,
    schema: Schema | None = None,
    root: str | None = None,
) -> DiffResult:
    """Pair ``*.prototxt`` files of two directories by relative path."""
    from .fileio import read_text

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


def git_show(path: str | os.PathLike[str], rev: str) -> str | None:
    """The text of ``path`` at git revision ``rev`` (None when it did not exist there)."""
    p = Path(path)
    cwd = p.parent if str(p.parent) else Path(".")
    if not cwd.is_dir():
        raise GitError(f"{path}: directory {cwd} does not exist")
    try:
        proc = subprocess.run(
            ["git", "show", f"{rev}:./{p.name}"],
            cwd=cwd,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (needed for --git)") from None
    if proc.returncode == 0:
        return proc.stdout.decode("utf-8", "surrogateescape")
    err = proc.stderr.decode("utf-8", "replace").strip()
    # The revision exists but the file did not: an added file.
    check = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    if check.returncode == 0 and ("does not exist" in err or "exists on disk" in err):
        return None
    raise GitError(f"{path}: git show {rev}:{p.name} failed: {err or 'unknown error'}")


def diff_git(
    path: str | os.PathLike[str],
    rev: str,
    *,
    lenient: bool = False,
    schema: Schema | None = None,
    root: str | None = None,
) -> FileDiff:
    """Compare the working copy of ``path`` with its version at ``rev``."""
    from .fileio import read_text

    old = git_show(path, rev)
    new = read_text(path) if Path(path).exists() else None
    return diff_texts(
        old, new, f"{rev}:{path}", str(path), lenient=lenient, schema=schema, root=root
    )


# --------------------------------------------------------------------------- textconv


def _flatten(prefix: str, value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value and prefix:
            out.append(f"{prefix} = {{}}")
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out.append(f"{prefix} = {format_value(value)}")


def textconv(text: str, path: str = "<string>", *, lenient: bool = True) -> str:
    """A normalised rendering for ``git diff``: one ``field.path = value`` line per value.

    Layers are addressed by name (``layer[conv1].param[0].lr_mult = 0``), so inserting a layer
    does not shift every line; comments and layout are gone. A net ends with one line per layer
    and phase giving its training state (``TRAIN conv1: trainable``). Text that does not parse
    is returned unchanged, so ``git diff`` still shows something.
    """
    try:
        v = _Version(text, path, lenient=lenient, schema=None, root=None)
    except RewriterError:
        return text
    out: list[str] = []
    if v.kind != "net":
        _flatten("", message_to_dict(v.message), out)
        return "\n".join(out) + "\n"
    _flatten("", message_to_dict(v.message, ("layer", "layers")), out)
    seen: dict[str, int] = {}
    for u in v.units:
        k = seen.get(u.name, 0)
        seen[u.name] = k + 1
        label = u.name if k == 0 else f"{u.name}@{k + 1}"
        label = label.replace("]", "\\]")
        d = message_to_dict(u.msg, ("name",))
        _flatten(f"{v.unit_field}[{label}]", d, out)
    for phase in PHASES:
        facts = v.facts(phase)
        if isinstance(facts, str):
            out.append(f"{phase} error: {facts}")
            continue
        for li, layer in enumerate(facts.graph.layers):
            if not layer.inserted_split:
                out.append(f"{phase} {layer.name}: {facts.states[li]}")
        for e in facts.edges:
            if e.gradient == "cut":
                src = "?" if e.source is None else facts.graph.layers[e.source].name
                out.append(
                    f"{phase} {facts.graph.layers[e.target].name}: gradient from {src} "
                    f"('{e.blob}') cut"
                )
    return "\n".join(out) + "\n"
