"""Step 5, ``UpgradeNetBatchNorm`` as text edits: BatchNorm layers with exactly three ``param``
blocks get ``lr_mult: 0`` and ``decay_mult: 0`` in each (names and other fields kept), through
the tree editor (:class:`rewriter.text.edit.Editor`).
"""

from __future__ import annotations

from typing import Any

from rewriter.caffe.upgrade_proto import bn_upgrade_needed
from rewriter.text.cst import Document, MessageBody
from rewriter.upgrade.result import UpgradeError
from rewriter.upgrade.splice import _Ctx


def _step_bn(
    ctx: _Ctx, doc: Document, body: MessageBody, msg: Any, base: tuple[int, ...], indent: str
) -> str | None:
    if not any(bn_upgrade_needed(layer) for layer in msg.layer):
        return None
    from rewriter.text.edit import Editor

    ed = Editor(doc)
    layers = [(j, g) for j, g in enumerate(body.fields) if g.name == "layer"]
    for k, (j, g) in enumerate(layers):
        if not bn_upgrade_needed(msg.layer[k]):
            continue
        assert isinstance(g.body, MessageBody)
        for m, h in enumerate(g.body.fields):
            if h.name != "param":
                continue
            if not isinstance(h.body, MessageBody):
                raise UpgradeError(
                    "cannot upgrade a BatchNorm 'param' written as a list; write one "
                    "'param { ... }' block per blob",
                    doc.location(h.name_start),
                )
            spec = msg.layer[k].param[sum(1 for x in g.body.fields[:m] if x.name == "param")]
            for key in ("lr_mult", "decay_mult"):
                hits = [q for q, x in enumerate(h.body.fields) if x.name == key]
                for q in hits:
                    if getattr(spec, key) != 0:
                        ed.set_value((*base, j, m, q), "0")
                if not hits:
                    ed.insert((*base, j, m), len(h.body.fields), key, "0")
    return ed.apply().code
