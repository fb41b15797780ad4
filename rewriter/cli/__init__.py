"""The ``rewriter`` command: the entry point (:func:`main`, here), the typer app with ``check`` and
``explain`` (``app``), its help (``help``), the batch worker (``runfile``) and one module per
other command (``commands``). Nothing here is imported by the library.
"""

from __future__ import annotations


def main() -> None:
    """The ``rewriter`` console entry point: every command module loaded, then the app run
    (:func:`rewriter.cli.app.run`). It sits here, above the app and the commands (which import
    the app), so that neither imports the other back."""
    from rewriter.cli.app import run
    from rewriter.cli.commands import load_all

    load_all()
    run()
