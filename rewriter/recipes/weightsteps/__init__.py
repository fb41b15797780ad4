"""Steps that carry the ``.caffemodel`` with the prototxt (issue 19, docs/recipes.md).

One module per step (``fold_bn``, ``fc_to_conv``; the renames live in
:mod:`rewriter.recipes.steps.rename` and only record a
:class:`~rewriter.recipes.weightsteps.store.WeightOp`), the streaming writer (:mod:`.store`) and
the round-trip checks of a written pair (:mod:`.pair`). numpy is imported
where weights are computed, never at import time.
"""

from __future__ import annotations
