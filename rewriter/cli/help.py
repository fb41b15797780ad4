"""How ``--help`` reads: prose reflowed to the terminal, flags shown without a value type.

Docstrings are wrapped at 100 columns for the source; typer's rich help keeps those line breaks,
so a sentence broke mid-line on every terminal. And typer shows ``<bool>`` beside a flag, which
invites ``--in-place true`` (the ``true`` then becomes a file argument).
"""

from __future__ import annotations

import inspect
from typing import Any

import typer


def reflow(text: str) -> str:
    """Join the lines of each paragraph; paragraphs stay separated by a blank line."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _polish_group(group: typer.Typer) -> None:
    for cmd in group.registered_commands:
        text = cmd.help or (inspect.getdoc(cmd.callback) if cmd.callback else None)
        if text:
            cmd.help = reflow(text)
    for sub in group.registered_groups:
        if isinstance(sub.help, str):
            sub.help = reflow(sub.help)
        if sub.typer_instance is not None:
            _polish_group(sub.typer_instance)


def polish(app: typer.Typer) -> None:
    """Reflow every command's help and hide the value type of flags (once, before parsing)."""
    _polish_group(app)
    from typer.core import TyperOption

    if getattr(TyperOption, "_rewriter_flags", False):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    TyperOption._rewriter_flags = True  # type: ignore[attr-defined]
