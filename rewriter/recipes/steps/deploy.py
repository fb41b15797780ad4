"""``deploy``: train/val -> deploy, the rewrite itself in :mod:`rewriter.recipes.deploy`."""

from __future__ import annotations

from rewriter.text.edit import Editor

from ..select import NetView
from .base import (
    Failure,
    Key,
    Plan,
    StepContext,
    StructChange,
)

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = (
    "train/val -> deploy: data layers become an Input layer, the loss becomes its output "
    "(Softmax 'prob'), losses/accuracy/labels go, TEST-phase rules are dropped"
)
KEYS: dict[str, Key] = {
    "batch": Key("int", doc="batch size of the Input layer (default 1)"),
    "channels": Key("int", doc="input channels when the data layer does not say (0: derive)"),
    "height": Key("int", doc="input height if crop_size/resize do not say (0: derive)"),
    "width": Key("int", doc="input width (0: derive)"),
    "output": Key("str", doc="name of the output layer and blob (default prob)"),
    "outputs": Key("strlist", doc="last (default), all, or output blob names"),
    "stage": Key("strlist", doc="stages whose layers are kept"),
    "strip_params": Key("bool", default=False, doc="remove param blocks"),
    "strip_fillers": Key("bool", default=False, doc="remove weight/bias fillers"),
    "strip_dropout": Key("bool", default=False, doc="remove Dropout layers"),
}
SELECTION = "none"
ANALYSIS_WARNINGS = False


def plan(ctx: StepContext) -> Plan:
    """train/val -> deploy (rewriter.recipes.deploy): a whole-net rewrite verified by its own
    promise.

    The per-field and per-edge checks cannot describe it (layers are removed, converted and
    added), so the step declares every layer as its effect and promises what a deploy net must
    satisfy: it binds strictly, Caffe's Net::Init builds it and shape inference succeeds.
    """
    from ..deploy import DeployError, deploy_document, verify_deploy

    step, view = ctx.step, ctx.view
    ed = Editor(view.doc)
    keys = {
        k: step.get(k)
        for k in ("batch", "channels", "height", "width", "output", "outputs", "stage")
        if step.get(k) is not None
    }
    for k in ("channels", "height", "width"):
        if keys.get(k) == 0:  # 0: derive it from the net (a recipe option needs a default)
            del keys[k]
    for k in ("strip_params", "strip_fillers", "strip_dropout"):
        keys[k] = bool(step.get(k))
    outputs = keys.get("outputs")
    if isinstance(outputs, list) and len(outputs) == 1 and outputs[0] in ("last", "all"):
        keys["outputs"] = outputs[0]  # the two policies, not blob names
    try:
        result = deploy_document(view.doc, editor=ed, **keys)
    except DeployError as e:
        raise ctx.error(str(e)) from None
    plan = Plan(step, ed)
    if ed.empty:
        plan.note = "already a deploy net"
        return plan
    top_to_layer = {view.field_path(k)[0]: k for k in range(len(view))}
    removed_top = set(ed.removed_children(()))
    plan.removed = [top_to_layer[i] for i in sorted(removed_top) if i in top_to_layer]
    # Output layer index of each inserted layer: kept layers before it plus earlier insertions.
    kept_tops = sorted(i for i in top_to_layer if i not in removed_top)
    n_inserted = 0
    for before, name in ed.inserted_children(()):
        if name == "layer":
            kept_before = sum(1 for i in kept_tops if i < before)
            plan.inserted.append(kept_before + n_inserted)
            n_inserted += 1
    for li in range(len(view)):
        plan.declare(li, ("*",))
    plan.net_effects.add(("*",))
    plan.structural.append(StructChange("rewrite", "deploy", "Net::Init and shapes checked"))

    def promise(after: NetView) -> list[Failure]:
        try:
            verify_deploy(after.doc, result)
        except DeployError as e:
            return [(None, f"the deploy net fails its own check: {e}")]
        return []

    plan.promise = promise
    return plan
