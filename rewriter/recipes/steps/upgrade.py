"""``upgrade``: Caffe's legacy upgrade; the engine runs it before the net is read."""

from __future__ import annotations

from rewriter.text.edit import Editor

from .base import (
    Key,
    Plan,
    StepContext,
)

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = (
    "Caffe's legacy upgrade (V0/V1 layers, input fields, BatchNorm params) as a minimal "
    "diff; must be the recipe's first step"
)
KEYS: dict[str, Key] = {}
SELECTION = "none"
ANALYSIS_WARNINGS = False


def plan(ctx: StepContext) -> Plan:
    """Caffe's legacy upgrade. It runs before the net is read (rewriter.recipes.engine), because the
    other steps need the current format; here, on a current-format net, it has nothing to do."""
    plan = Plan(ctx.step, Editor(ctx.view.doc))
    plan.note = "the net is in the current format"
    return plan
