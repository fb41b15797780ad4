"""One Caffe text file as the rest of the project sees it: tree, binding and graph together.

A :class:`NetFile` keeps the lossless tree (for edits and printing), binds it to the schema once
(for the protobuf message and diagnostics) and builds Caffe's graph per phase on request. The
Python API's front door, :func:`rewriter.api.load`, returns its subclass
:class:`~rewriter.api.CaffeFile`, which adds what sits above the Caffe semantics (running a
recipe, exporting to ONNX); the engine, shapes and the exporter take a NetFile.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rewriter.text.cst import Document, read, write
from rewriter.util.record import Record

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from rewriter.schema.bind import Bound
    from rewriter.schema.runtime import Schema

    from .graph import Graph

__all__ = ["NetFile", "load_file", "read", "write"]


class NetFile(Record):
    """A parsed net or solver plus what we learn from it, computed once.

    A Record, not a dataclass: ~1 ms less at every command's start."""

    __slots__ = ("document", "lenient", "root", "schema", "_bound")
    _no_repr = ("_bound",)

    def __init__(
        self,
        document: Document,
        lenient: bool = False,
        root: str | None = None,
        schema: Schema | None = None,
        _bound: Bound | None = None,
    ) -> None:
        self.document = document
        self.lenient = lenient
        self.root = root
        self.schema = schema
        self._bound = _bound

    @property
    def path(self) -> str:
        return self.document.path

    @property
    def code(self) -> str:
        return self.document.code

    @property
    def bound(self) -> Bound:
        if self._bound is None:
            from rewriter.schema.bind import bind

            self._bound = bind(self.document, self.schema, self.root, self.lenient)
        return self._bound

    @property
    def kind(self) -> str:
        """ "net" or "solver"."""
        return "solver" if self.bound.root.endswith("SolverParameter") else "net"

    @property
    def message(self) -> Any:
        """The protobuf message (raises SchemaErrors when the file does not bind)."""
        if self.root == "caffe.NetParameter":
            from rewriter.schema.bind import require_net

            require_net(self.document)
        self.bound.raise_for_errors()
        return self.bound.message

    def graph(
        self,
        phase: str = "TRAIN",
        stages: Sequence[str] = (),
        level: int = 0,
        param_counts: Mapping[str, int] | None = None,
    ) -> Graph:
        """Caffe's graph for ``phase``; a :class:`~rewriter.caffe.graph.CaffeError` comes
        located."""
        from .graph import CaffeError, build_graph

        try:
            return build_graph(
                self.message,
                phase=phase,
                stages=tuple(stages),
                level=level,
                param_counts=param_counts,
            )
        except CaffeError as e:
            from .diagnose import diagnostic

            e.diagnostic = e.diagnostic or diagnostic(e, self.document)
            raise

    def write(self, path: str | os.PathLike[str]) -> None:
        write(self.document, path)


def load_file(
    path: str | os.PathLike[str],
    *,
    lenient: bool = False,
    root: str | None = None,
    schema: Schema | None = None,
) -> NetFile:
    """:func:`rewriter.api.load` for the layers below the façade."""
    return NetFile(read(path), lenient=lenient, root=root, schema=schema)
