"""The hint that ends a report of fields or enum values BVLC's schema does not know.

Such errors almost always mean a fork's file (SSD, DeepLab, CRF-RNN, R-FCN ...), not a typo, and
the fix is a flag the user may not know about: say which one, as command-line syntax.
"""

from __future__ import annotations

from collections.abc import Iterable

from rewriter.errors import Diagnostic

__all__ = ["FORK_CODES", "fork_hint"]

#: diagnostic codes of names the schema lacks
FORK_CODES = frozenset({"unknown-field", "unknown-enum", "not-repeated"})


def fork_hint(
    diags: Iterable[Diagnostic], command: str, paths: Iterable[str] = (), proto: bool = True
) -> str | None:
    """``hint: ...`` for ``command`` when some errors are unknown names, else None; ``proto``:
    the command also takes ``--proto``. When every unknown name is close to a known one
    (``layerr``), the errors are typos, which their did-you-means answer: no fork hint."""
    unknown = [d for d in diags if d.severity == "error" and d.code in FORK_CODES]
    n = len(unknown)
    if not n or all(d.suggestion for d in unknown):
        return None
    names = list(dict.fromkeys(paths))
    files = " ".join(names) if 0 < len(names) <= 3 else "FILE..."  # a command line stays short
    what = "error is a field or enum value" if n == 1 else "errors are fields or enum values"
    hint = (
        f"hint: {n} {what} BVLC Caffe's caffe.proto does not know; if this is a fork's file "
        f"(SSD, DeepLab, CRF-RNN, R-FCN ...), keep them verbatim with\n"
        f"  rewriter {command} --lenient {files}"
    )
    if proto:
        hint += (
            "\nor use the fork's own schema with\n"
            f"  rewriter {command} --proto FORK/src/caffe/proto/caffe.proto {files}"
        )
    return hint
