"""Mermaid flowcharts of a :class:`~rewriter.review.render.View`.

Node ids are generated (``n0``, ``n1``...): layer names may contain ``/``, ``-``, ``.``,
spaces, quotes or even the keyword ``end``, none of which is allowed in a Mermaid id. Names go
into double-quoted labels, where Mermaid's entity codes replace the characters it would
otherwise interpret (``"`` -> ``#quot;``, ``#`` -> ``#35;``, ``<`` / ``>`` -> ``#lt;`` /
``#gt;``...). Layer states and diff marks are ``classDef`` classes; gradient-cut edges are
dotted and coloured with ``linkStyle``.
"""

from __future__ import annotations

from . import STATES, View

__all__ = ["to_mermaid", "label", "CLASS_DEFS"]

CLASS_DEFS = {
    "trainable": "fill:#d5f5d5,stroke:#2e8b2e,color:#111",
    "decay": "fill:#ffe4cc,stroke:#c96a1b,color:#111",
    "stats": "fill:#f3e0f7,stroke:#9b4fb5,color:#111",
    "frozen": "fill:#d6e6ff,stroke:#3b6fc9,color:#111",
    "bwonly": "fill:#fff5cc,stroke:#b39b2e,color:#111",
    "nobw": "fill:#eeeeee,stroke:#888888,color:#444",
    "changed": "stroke:#ff8c00,stroke-width:4px",
    "affected": "stroke:#ff8c00,stroke-width:2px,stroke-dasharray:5",
    "added": "stroke:#1a9e1a,stroke-width:4px",
    "renamed": "stroke:#8e44ad,stroke-width:4px",
    "removed": "stroke:#d62728,stroke-width:3px,stroke-dasharray:4",
}

_ENTITIES = {
    "#": "#35;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
    "|": "#124;",
    "[": "#91;",
    "]": "#93;",
    "{": "#123;",
    "}": "#125;",
    "%": "#37;",
    ";": "#59;",
}


def label(text: str) -> str:
    """``text`` escaped for a double-quoted Mermaid label (no raw quote, bracket or '#')."""
    out = []
    for c in text:
        if c in _ENTITIES:
            out.append(_ENTITIES[c])
        elif not c.isprintable():
            out.append(" ")
        else:
            out.append(c)
    return "".join(out)


def to_mermaid(view: View, direction: str = "TD") -> str:
    ids = {key: f"n{i}" for i, key in enumerate(view.nodes)}
    lines = [f"flowchart {direction}"]
    for note in view.notes:
        lines.append(f"  %% {note.replace('%%', '%')}")
    for key, node in view.nodes.items():
        head = node.members[0]
        parts = [f"<b>{label(head.name)}</b>", f"{label(head.type)} · {head.state}"]
        parts += [f"+ {label(m.name)} ({label(m.type)})" for m in node.members[1:]]
        if "removed" in node.marks:
            parts.append("(removed)")
        lines.append(f'  {ids[key]}["{"<br/>".join(parts)}"]')
    cut_links: list[int] = []
    changed_links: list[int] = []
    for i, e in enumerate(view.edges):
        text = label(e.blob)
        if "removed" in e.marks:
            text += " (removed)"
        if e.gradient == "cut":
            text += " (gradient cut)"
            cut_links.append(i)
            arrow = "-.->"
        else:
            arrow = "-->"
        if e.marks & {"newly-cut", "restored", "added", "removed"}:
            changed_links.append(i)
        lines.append(f'  {ids[e.source]} {arrow}|"{text}"| {ids[e.target]}')
    used: dict[str, list[str]] = {}
    for key, node in view.nodes.items():
        used.setdefault(STATES.get(node.state, "nobw"), []).append(ids[key])
        for mark in sorted(node.marks):
            if mark in CLASS_DEFS:
                used.setdefault(mark, []).append(ids[key])
    for cls in CLASS_DEFS:
        if cls in used:
            lines.append(f"  classDef {cls} {CLASS_DEFS[cls]}")
    for cls in CLASS_DEFS:
        if cls in used:
            lines.append(f"  class {','.join(used[cls])} {cls}")
    if cut_links:
        lines.append(f"  linkStyle {','.join(map(str, cut_links))} stroke:#d62728,stroke-width:2px")
    changed_only = [i for i in changed_links if i not in cut_links]
    if changed_only:
        lines.append(
            f"  linkStyle {','.join(map(str, changed_only))} stroke:#ff8c00,stroke-width:3px"
        )
    return "\n".join(lines) + "\n"
