"""The error Caffe would stop with, as an exception: :class:`CaffeError`.

Below every module that reproduces Caffe's behaviour (the legacy upgrade of messages, the graph,
shapes, set-up checks), so each can raise it without importing another; :mod:`rewriter.caffe.graph`
re-exports it.
"""

from __future__ import annotations

from rewriter.errors import Diagnostic, RewriterError
from rewriter.util.record import FrozenRecord

__all__ = ["CaffeError", "GraphWarning"]


class CaffeError(RewriterError):
    """Caffe would stop here: ``message`` is the text of its FATAL line (after ``] ``).

    The keyword-only attributes say what caused it, so :mod:`rewriter.caffe.diagnose` can point at
    the offending field of the file (see the contract there): ``layer`` (its name),
    ``layer_index`` (in the upgraded net's ``layer`` list: ``Layer.source_index``), ``field``
    (a dotted path inside the layer: ``bottom``, ``param.name``, ``convolution_param.group``),
    ``index`` (which occurrence of a repeated field) and ``hint`` (what to do next).
    """

    def __init__(
        self,
        message: str,
        location: str,
        *,
        layer: str | None = None,
        layer_index: int | None = None,
        field: str | None = None,
        index: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: source file of the FATAL line, e.g. ``net.cpp`` or ``insert_splits.cpp``
        self.location = location
        self.layer: str | None = layer
        self.layer_index = layer_index
        self.field = field
        self.index = index
        self.hint = hint
        #: the phase of the net being built (set by :func:`build_graph`)
        self.phase: str | None = None
        #: set by :func:`rewriter.caffe.diagnose.located` once the error is placed in its file
        self.diagnostic: Diagnostic | None = None

    def __str__(self) -> str:
        if self.diagnostic is not None:
            return self.diagnostic.render()
        return f"{self.location}: {self.message}"


class GraphWarning(FrozenRecord):
    """Something Caffe would accept (or refuse only in some builds) that deserves a look
    (read-only; a Record, not a dataclass: ~1 ms less at every command's start)."""

    __slots__ = ("kind", "message", "layer", "index")

    def __init__(
        self, kind: str, message: str, layer: str | None = None, index: int | None = None
    ) -> None:
        self.kind = kind
        self.message = message
        self.layer = layer
        self.index = index
