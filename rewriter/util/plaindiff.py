"""Differences between two plain values (the dicts, lists and scalars of ``to_py``), as deepdiff
reports them.

Why not deepdiff itself on every call: importing it (numpy and pydantic come with it) costs about
0.2 s, more than a whole ``rewriter apply`` of a small net, and each call builds a tree of level
objects, which dominated ``rewriter diff`` of a heavily edited net. This walks the values the
way deepdiff 9's default tree view does -- a type change before a value change, dict keys added
and removed, a whole dict reported as changed when its keys overlap too little
(``threshold_to_diff_deeper``), lists of messages paired by index -- and hands anything it does
not model (lists of scalars that differ, which deepdiff aligns with difflib; other types) to
deepdiff, so the reports are deepdiff's own either way (tests/test_plaindiff.py compares them).
"""

from __future__ import annotations

from typing import Any

#: (path of keys and indices, deepdiff's report type, old value, new value); a value that is
#: not there (an added or removed item) is None.
Report = tuple[tuple[str | int, ...], str, Any, Any]

_SCALARS = (str, bytes, bool, int, float)
_BASIC = (str, bytes, bool, int, float, type(None))

#: deepdiff's default ``threshold_to_diff_deeper``
DEFAULT_THRESHOLD = 0.33


class _Unmodelled(Exception):
    """A case deepdiff decides with an algorithm this module does not copy."""


def plain_diff(old: Any, new: Any, threshold: float = DEFAULT_THRESHOLD) -> list[Report]:
    """The reports of ``DeepDiff(old, new, view="tree", threshold_to_diff_deeper=threshold)``,
    in no particular order (callers sort them)."""
    out: list[Report] = []
    try:
        _walk((), old, new, threshold, out)
    except _Unmodelled:
        return _deepdiff(old, new, threshold)
    return out


def _walk(path: tuple[str | int, ...], a: Any, b: Any, threshold: float, out: list[Report]) -> None:
    if a is b:
        return
    if type(a) is not type(b):
        out.append((path, "type_changes", a, b))
        return
    if isinstance(a, dict):
        common = [k for k in a if k in b]
        union = len(a) + len(b) - len(common)
        if threshold and union > 1 and len(common) / union < threshold:
            out.append((path, "values_changed", a, b))
            return
        for k in b:
            if k not in a:
                out.append(((*path, k), "dictionary_item_added", None, b[k]))
        for k in a:
            if k not in b:
                out.append(((*path, k), "dictionary_item_removed", a[k], None))
        for k in common:
            _walk((*path, k), a[k], b[k], threshold, out)
    elif isinstance(a, list):
        if all(isinstance(x, _BASIC) for x in a) and all(isinstance(x, _BASIC) for x in b):
            if len(a) == len(b) and all(
                x is y or (type(x) is type(y) and x == y) for x, y in zip(a, b, strict=True)
            ):
                return  # (True == 1.0, but deepdiff reports a type change)
            raise _Unmodelled  # deepdiff aligns lists of scalars with difflib
        for i in range(max(len(a), len(b))):
            if i >= len(b):
                out.append(((*path, i), "iterable_item_removed", a[i], None))
            elif i >= len(a):
                out.append(((*path, i), "iterable_item_added", None, b[i]))
            else:
                _walk((*path, i), a[i], b[i], threshold, out)
    elif isinstance(a, _SCALARS):
        if a != b:
            out.append((path, "values_changed", a, b))
    elif a is not None:
        raise _Unmodelled


def _deepdiff(old: Any, new: Any, threshold: float) -> list[Report]:
    from deepdiff import DeepDiff
    from deepdiff.helper import NotPresent

    try:
        tree = DeepDiff(old, new, view="tree", threshold_to_diff_deeper=threshold)
    except TypeError:  # deepdiff < 8 has no threshold_to_diff_deeper
        tree = DeepDiff(old, new, view="tree")
    out: list[Report] = []
    for report, items in tree.items():
        for item in items:
            path = tuple(item.path(output_format="list"))
            t1 = None if isinstance(item.t1, NotPresent) else item.t1
            t2 = None if isinstance(item.t2, NotPresent) else item.t2
            out.append((path, report, t1, t2))
    return out
