"""``rename-layer`` and ``rename-blob``: twins that rename one name everywhere it is used
(a layer rename also renames its weights in the ``.caffemodel``).
"""

from __future__ import annotations

from rewriter.text.cst import encode_string

from ..select import NetView
from .base import (
    Failure,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    StructChange,
    _blob_fields,
    _last_index,
    check_from_to,
)

__all__ = [
    "ANALYSIS_WARNINGS",
    "RENAME_BLOB_DOC",
    "RENAME_BLOB_KEYS",
    "RENAME_LAYER_DOC",
    "RENAME_LAYER_KEYS",
    "SELECTION",
    "check",
    "plan_rename_blob",
    "plan_rename_layer",
]

SELECTION = "none"
ANALYSIS_WARNINGS = False
check = check_from_to

RENAME_LAYER_DOC = "rename a layer (pretrained weights are matched by layer name)"
RENAME_LAYER_KEYS: dict[str, Key] = {
    "from": Key("str", required=True, doc="old name"),
    "to": Key("str", required=True, doc="new name"),
}

RENAME_BLOB_DOC = "rename a blob in every bottom and top (and legacy input) that uses it"
RENAME_BLOB_KEYS: dict[str, Key] = {
    "from": Key("str", required=True, doc="old blob name"),
    "to": Key("str", required=True, doc="new blob name"),
}


def plan_rename_layer(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    view.require_current("step 'rename-layer'")
    old, new = str(step.get("from")), str(step.get("to"))
    hits = view.by_name.get(old, [])
    if not hits:
        if new in view.by_name:
            plan.note = f"no layer '{old}'; '{new}' exists already (renamed before)"
            return plan
        raise ctx.error(str(view.no_such_layer(old)).split(": ", 1)[-1], "from")
    if new in view.by_name:
        raise ctx.error(f"a layer named '{new}' exists already", "to")
    for k in hits:
        ni = _last_index(view.field(k), "name")
        assert ni is not None
        plan.editor.set_value(view.field_path(k) + (ni,), encode_string(new))
        plan.declare(k, ("name",))
    plan.structural.append(StructChange("rename-layer", old, new))
    plan.selected = list(hits)
    plan.weights = lambda store: store.rename(old, new)  # the .caffemodel's name follows

    def promise(after: NetView) -> list[Failure]:
        return [(old, "not renamed") for k in hits if after.names[k] != new]

    plan.promise = promise
    return plan


def plan_rename_blob(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    view.require_current("step 'rename-blob'")
    old, new = str(step.get("from")), str(step.get("to"))
    blobs: set[str] = set(view.message.input)
    for layer in view.message.layer:
        blobs.update(layer.bottom)
        blobs.update(layer.top)
    if old not in blobs:
        if new in blobs:
            plan.note = f"no blob '{old}'; '{new}' exists already (renamed before)"
            return plan
        raise ctx.error(f"no blob named '{old}'", "from")
    if new in blobs:
        raise ctx.error(f"a blob named '{new}' exists already", "to")
    for k in range(len(view)):
        for ci, name in _blob_fields(view, k, old):
            plan.editor.set_value(view.field_path(k) + (ci,), encode_string(new))
            plan.declare(k, (name,))
            if k not in plan.selected:
                plan.selected.append(k)
    from rewriter.text.cst import decode_string

    for i, f in enumerate(view.doc.fields):
        if f.name == "input" and f.kind == "s" and decode_string(f.value_text) == old:
            plan.editor.set_value((i,), encode_string(new))
            plan.net_effects.add(("input",))
    plan.structural.append(StructChange("rename-blob", old, new))

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for k, layer in enumerate(after.message.layer):
            if old in layer.bottom or old in layer.top:
                out.append((after.names[k], f"still uses blob '{old}'"))
        return out

    plan.promise = promise
    return plan
