"""A solver given where a net is expected: say so, name its net, and find that net's file.

Caffe's solver names its training net with ``net`` / ``train_net`` (a path) or holds it inline
(``net_param`` / ``train_net_param``), in the order Solver::InitTrainNet checks them. The path
is relative to the directory Caffe runs in (the Caffe root, for BVLC's examples), so it is
looked for there, beside the solver and in the solver's parent directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError
from rewriter.schema.bind import SolverNet, not_a_net, resolve, solver_net

if TYPE_CHECKING:
    from rewriter.schema.runtime import Schema


class SolverNetError(RewriterError):
    """The net a solver names cannot be read."""


def load_net_message(
    path: str | Path, lenient: bool = False, schema: Schema | None = None
) -> tuple[Any, SolverNet | None]:
    """The net message of ``path``; for a solver, the message of the net it trains (and the
    reference, whose train_state the caller applies)."""
    from rewriter.schema.bind import SOLVER, detect_kind
    from rewriter.schema.runtime import default_schema
    from rewriter.text.cst import read

    from .netfile import NetFile, load_file

    doc = read(path)
    if not doc.fields or detect_kind(doc, schema or default_schema()) != SOLVER:
        return NetFile(doc, lenient, "caffe.NetParameter", schema).message, None
    ref = solver_net(doc)
    if ref is None:
        raise SolverNetError(not_a_net(doc).render())
    if ref.path is None:
        return getattr(NetFile(doc, lenient, SOLVER, schema).message, ref.field), ref
    found = ref.found = resolve(doc.path, ref.path)
    if found is None:
        raise SolverNetError(
            f'{ref.location}: error: the solver\'s {ref.field} "{ref.path}" is not found from '
            "here, beside the solver or in its parent directories; give the net file itself\n"
            f"{ref.location.excerpt()}"
        )
    return load_file(found, lenient=lenient, schema=schema, root="caffe.NetParameter").message, ref
