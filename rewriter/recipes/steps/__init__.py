"""The recipe steps: the shared planning machinery (:mod:`.base`) and one module per step.

This package re-exports the shared names of :mod:`.base` (what the engine, the checks, the
weight steps and the tests import as ``rewriter.recipes.steps.X``). It never imports the step
modules: they import :mod:`.base`, and :mod:`rewriter.recipes.step_table` imports them.
"""

from __future__ import annotations

from .base import (
    STRUCTURAL_KINDS,
    Failure,
    FieldPath,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    StepSpec,
    Struct,
    StructChange,
    StructDigest,
    _blob_fields,
    _child,
    _children,
    _ensure_scalar,
    _insert_pos,
    _is_bn,
    _last_index,
    _msg_value,
    _selection,
    bottom_writers,
    check_from_to,
    f32,
    fast_doc,
    fed_by,
    is_idempotent,
    num,
    structure,
    transform,
    type_ok,
)

__all__ = [
    "STRUCTURAL_KINDS",
    "Failure",
    "FieldPath",
    "Key",
    "LayerEditor",
    "Plan",
    "StepContext",
    "StepSpec",
    "Struct",
    "StructChange",
    "StructDigest",
    "_blob_fields",
    "_child",
    "_children",
    "_ensure_scalar",
    "_insert_pos",
    "_is_bn",
    "_last_index",
    "_msg_value",
    "_selection",
    "bottom_writers",
    "check_from_to",
    "f32",
    "fast_doc",
    "fed_by",
    "is_idempotent",
    "num",
    "structure",
    "transform",
    "type_ok",
]
