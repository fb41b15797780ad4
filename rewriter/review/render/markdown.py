"""Markdown rendering of a semantic diff, for pull request comments.

Per file: a summary table of changed layers and fields, a table of training consequences per
phase (one table when TRAIN and TEST agree), pretrained-weight warnings, then a ```` ```mermaid ````
block drawing the neighbourhood of the change (changed layers plus one hop) with states and
marks as ``classDef`` classes. Names are written as code spans and every table cell is escaped,
so no layer name can break the table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rewriter.review.semdiff import DiffResult, FileDiff, PhaseDiff, format_value

from . import diff_view
from .mermaid import to_mermaid

__all__ = ["render_markdown", "code", "cell", "summary_rows", "consequence_rows"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def code(text: str) -> str:
    """``text`` as an inline code span that survives inside a table cell."""
    text = " ".join(text.splitlines()).replace("|", "\\|")
    runs = [len(m) for m in re.findall(r"`+", text)]
    fence = "`" * (max(runs) + 1 if runs else 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """Plain text escaped for a table cell."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def _value(v: object) -> str:
    return code(format_value(v))


def _field(path: str, change: str, old: object, new: object) -> str:
    if change == "added":
        return f"{code(path)} added: {_value(new)}"
    if change == "removed":
        return f"{code(path)} removed (was {_value(old)})"
    return f"{code(path)}: {_value(old)} → {_value(new)}"


def summary_rows(fd: FileDiff) -> list[tuple[str, str, str, str]]:
    """(change, layer, type, details) rows of a file's field-level changes."""
    rows: list[tuple[str, str, str, str]] = []
    for f in fd.fields:
        rows.append(("modified", "(net)" if fd.kind == "net" else "(file)", "",
                     _field(f.path, f.change, f.old, f.new)))  # fmt: skip
    for lc in fd.layers:
        if lc.change == "renamed":
            assert lc.old_name is not None
            name = f"{code(lc.old_name)} → {code(lc.name)}"
            rest = [f for f in lc.fields if f.path != "name"]
            details = "renamed" + "".join(
                "<br>" + _field(f.path, f.change, f.old, f.new) for f in rest
            )
        else:
            name = code(lc.name)
            details = (
                "<br>".join(_field(f.path, f.change, f.old, f.new) for f in lc.fields) or lc.change
            )
        rows.append((lc.change, name, cell(lc.type), details))
    return rows


def _num(x: float | None) -> str:
    return "none" if x is None else format_value(float(x))


def consequence_rows(pd: PhaseDiff) -> list[tuple[str, str, str]]:
    """(consequence, layer, details) rows of one phase."""
    rows: list[tuple[str, str, str]] = []
    if pd.old_error != pd.new_error:
        if pd.new_error:
            rows.append(("net no longer builds", "", cell(pd.new_error)))
        if pd.old_error:
            rows.append(("net builds now", "", "was: " + cell(pd.old_error)))
    for b in pd.backward:
        what = "starts needing backward" if b.new_needs_backward else "stops needing backward"
        rows.append((what, code(b.layer), f"{cell(b.old_state)} → {cell(b.new_state)}"))
    for p in pd.params:
        rows.append(
            (f"parameter {p.change}", code(p.layer),
             f"param {p.index} ({cell(p.role)}): lr_mult {_num(p.old_lr_mult)} → "
             f"{_num(p.new_lr_mult)}")
        )  # fmt: skip
    for g in pd.gradient:
        src = f" from {code(g.source)}" if g.source else ""
        rows.append(
            ("gradient cut" if g.change == "cut" else "gradient restored", code(g.layer),
             f"bottom {g.bottom} {code(g.blob)}{src}")
        )  # fmt: skip
    for e in pd.edges:
        rows.append(
            (f"edge {e.change}", f"{code(e.source or '?')} → {code(e.target)}", code(e.blob))
        )
    for lc in pd.losses:
        rows.append(
            (f"loss {lc.change}", code(lc.layer),
             f"{code(lc.blob)}: weight {_num(lc.old_weight)} → {_num(lc.new_weight)}")
        )  # fmt: skip
    for w in pd.warnings:
        rows.append(
            ("new warning" if w.change == "added" else "warning gone",
             code(w.layer) if w.layer else "", cell(w.message))
        )  # fmt: skip
    return rows


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _file(fd: FileDiff) -> list[str]:
    out = [f"### {code(fd.path)}", ""]
    if fd.old_path and fd.new_path and fd.old_path != fd.new_path:
        out += [f"{code(fd.old_path)} → {code(fd.new_path)}", ""]
    if fd.status in ("added", "removed"):
        out += [f"{cell(fd.kind)} file {fd.status}.", ""]
        return out
    if not fd.has_changes:
        out += ["No semantic changes.", ""]
        return out
    rows = summary_rows(fd)
    if rows:
        n = len(fd.layers)
        out += [f"**{n} layer(s) changed**" if n else "**Fields changed**", ""]
        out += _table(("change", "layer", "type", "details"), rows)
        out.append("")
    shown: list[PhaseDiff] = []
    for name, pd in fd.phases.items():
        prow = consequence_rows(pd)
        if not prow:
            continue
        same = next((s for s in shown if s.same_consequences(pd)), None)
        if same is not None:
            out += [f"{name}: same consequences as {same.phase}.", ""]
            continue
        shown.append(pd)
        out += [f"**Training consequences ({name})**", ""]
        out += _table(("consequence", "layer", "details"), prow)
        out.append("")
    if fd.weights:
        for w in fd.weights:
            out.append(f"> ⚠️ **weights:** {cell(w.message)}")
        out.append("")
    view = diff_view(fd)
    if view is not None and view.nodes:
        out += [
            f"<details open><summary>Affected part of the {view.phase} net</summary>",
            "",
            "```mermaid",
            to_mermaid(view).rstrip("\n"),
            "```",
            "",
            "</details>",
            "",
        ]
    return out


def render_markdown(result: DiffResult) -> str:
    out = ["## Prototxt semantic diff", ""]
    if not result.has_changes:
        out += ["No semantic changes.", ""]
        return "\n".join(out)
    changed = [fd for fd in result.files if fd.has_changes]
    for fd in changed:
        out += _file(fd)
    same = len(result.files) - len(changed)
    if same:
        out += [f"{same} other file(s): no semantic changes.", ""]
    return "\n".join(out)
