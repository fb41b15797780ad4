"""Errors of the weight steps, located at the layer (or field) at fault with a caret."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rewriter.errors import Diagnostic, Location, RewriterError, locate

if TYPE_CHECKING:
    from ..select import NetView

__all__ = ["layer_error"]


def layer_location(view: NetView, k: int, path: Sequence[str] = ()) -> Location:
    """Where layer ``k`` (or its field ``path``, as far as it is written) is in the file."""
    from rewriter.text.cst import MessageBody

    f = view.field(k)
    for name in path:
        body = f.body
        if not isinstance(body, MessageBody):
            break
        hits = body.positions(name)
        if not hits:
            break
        f = body.child(hits[-1])
    if f.src is view.doc.src:
        return view.doc.location(f.name_start)
    return locate(f.src, f.name_start, view.path)


def layer_error(
    view: NetView, k: int, step: str, message: str, path: Sequence[str] = (), then: str = ""
) -> RewriterError:
    """``path:line:col: error: STEP: layer 'x': message`` + the line and a caret, then what to
    do next."""
    text = Diagnostic(
        "error", f"{step}: {view.describe(k)}: {message}", layer_location(view, k, path)
    ).render()
    return RewriterError(text + (f"\n{then}" if then else ""))
