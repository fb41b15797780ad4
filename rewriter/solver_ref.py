"""A solver given where a net is expected: say so, name its net, and find that net's file.

Caffe's solver names its training net with ``net`` / ``train_net`` (a path) or holds it inline
(``net_param`` / ``train_net_param``), in the order Solver::InitTrainNet checks them. The path
is relative to the directory Caffe runs in (the Caffe root, for BVLC's examples), so it is
looked for there, beside the solver and in the solver's parent directories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic, Location, RewriterError

if TYPE_CHECKING:
    from .cst import Document, Field
    from .schema import Schema

#: Solver::InitTrainNet's order: train_net_param, train_net, net_param, net
_TRAIN_NET_FIELDS = ("train_net_param", "train_net", "net_param", "net")


@dataclass
class SolverNet:
    """The training net a solver names."""

    field: str
    #: the path as written (None for an inline net)
    path: str | None
    location: Location
    #: the solver's train_state (stage names, level)
    stages: tuple[str, ...] = ()
    level: int = 0
    #: the net file found for ``path``
    found: Path | None = None

    def describe(self) -> str:
        where = f"{self.field}: {self.found or self.path}" if self.path else f"{self.field} {{...}}"
        state = f", train_state stage {', '.join(self.stages)}" if self.stages else ""
        return f"the net it trains ({where}{state}{f', level {self.level}' if self.level else ''})"


def _first(doc: Document, name: str) -> Field | None:
    return next((f for f in doc.fields if f.name == name), None)


def solver_net(doc: Document) -> SolverNet | None:
    """The net a solver document trains, or None when it names none."""
    from .bind import bind

    message: Any = bind(doc, root="caffe.SolverParameter", lenient=True).message
    state = message.train_state
    stages, level = tuple(str(s) for s in state.stage), int(state.level)
    for name in _TRAIN_NET_FIELDS:
        f = _first(doc, name)
        if f is None:
            continue
        path = str(getattr(message, name)) if name in ("train_net", "net") else None
        return SolverNet(name, path, doc.location(f.name_start), stages, level)
    return None


def resolve(solver_path: str, net_path: str) -> Path | None:
    """Where the net file is: as given (the working directory), beside the solver, or in one
    of the solver's parent directories (Caffe's examples run from the Caffe root)."""
    given = Path(net_path)
    if given.is_absolute():
        return given if given.is_file() else None
    if given.is_file():
        return given
    for base in Path(solver_path).resolve().parents:
        if (base / given).is_file():
            return base / given
    return None


def not_a_net(doc: Document) -> Diagnostic:
    """One error for a solver bound as a net (instead of one per solver field)."""
    ref = solver_net(doc)
    if ref is None:
        return Diagnostic(
            "error",
            "this is a solver (caffe.SolverParameter), not a net, and it names no net "
            "(net, train_net, net_param or train_net_param)",
            doc.location(doc.fields[0].name_start) if doc.fields else None,
            code="solver-not-net",
        )
    if ref.path is None:
        what = f"its net is inline ({ref.field} {{ ... }})"
    else:
        found = resolve(doc.path, ref.path)
        where = f": {found}" if found is not None else " (not found from here)"
        what = f'it trains the net in {ref.field}: "{ref.path}"{where}'
    return Diagnostic(
        "error",
        f"this is a solver (caffe.SolverParameter), not a net; {what}. Give that net file, "
        "or run 'rewriter explain SOLVER' to explain it with the solver's train_state",
        ref.location,
        code="solver-not-net",
    )


class SolverNetError(RewriterError):
    """The net a solver names cannot be read."""


def load_net_message(
    path: str | Path, lenient: bool = False, schema: Schema | None = None
) -> tuple[Any, SolverNet | None]:
    """The net message of ``path``; for a solver, the message of the net it trains (and the
    reference, whose train_state the caller applies)."""
    from .bind import SOLVER, detect_kind
    from .model import CaffeFile, load, read
    from .schema import default_schema

    doc = read(path)
    if not doc.fields or detect_kind(doc, schema or default_schema()) != SOLVER:
        return CaffeFile(doc, lenient, "caffe.NetParameter", schema).message, None
    ref = solver_net(doc)
    if ref is None:
        raise SolverNetError(not_a_net(doc).render())
    if ref.path is None:
        return getattr(CaffeFile(doc, lenient, SOLVER, schema).message, ref.field), ref
    found = ref.found = resolve(doc.path, ref.path)
    if found is None:
        raise SolverNetError(
            f'{ref.location}: error: the solver\'s {ref.field} "{ref.path}" is not found from '
            "here, beside the solver or in its parent directories; give the net file itself\n"
            f"{ref.location.excerpt()}"
        )
    return load(found, lenient=lenient, schema=schema, root="caffe.NetParameter").message, ref
