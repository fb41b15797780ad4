"""The result model of the semantic diff: what changed in a file, per layer and per phase.

:func:`rewriter.review.semdiff.diff_texts` fills these; the renderers of
:mod:`rewriter.review.render` read them, and ``to_json`` gives the JSON documented in
docs/diff.md (``schema_version`` :data:`SCHEMA_VERSION`).

The change records have slots: a freeze of a 100k-layer net reports about 200,000 of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewriter.review.facts import PhaseFacts

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: ``path`` like ``param[0].lr_mult``; absent side is None."""

    path: str
    change: str  # "changed" | "added" | "removed"
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "change": self.change, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class ParamChange:
    layer: str
    index: int
    role: str
    #: the blob's new state (rewriter.caffe.states: trainable, decay-only, statistics-only, frozen)
    change: str
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class EdgeChange:
    source: str | None
    target: str
    blob: str
    change: str  # "added" | "removed"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "blob": self.blob,
                "change": self.change}  # fmt: skip


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class WarningChange:
    change: str  # "added" | "removed"
    kind: str
    layer: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"change": self.change, "kind": self.kind, "layer": self.layer,
                "message": self.message}  # fmt: skip


@dataclass(frozen=True, slots=True)
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
    new_facts: Mapping[str, PhaseFacts] = field(default_factory=dict, repr=False, compare=False)
    old_facts: Mapping[str, PhaseFacts] = field(default_factory=dict, repr=False, compare=False)

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
