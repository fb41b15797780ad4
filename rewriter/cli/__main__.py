"""``python -m rewriter.cli``: the ``rewriter`` command."""

from rewriter.cli import main

main()
