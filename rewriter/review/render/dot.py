"""Graphviz DOT for a :class:`~rewriter.review.render.View`, and running the ``dot`` binary.

Node ids are generated (``n0``, ``n1``...), so no layer name can break the syntax; names appear
in HTML-like labels (``<...>``), where ``&``, ``<``, ``>`` and ``"`` are entity-escaped, and in
quoted tooltips, where ``"`` and ``\\`` are escaped.
"""

from __future__ import annotations

import html
import shutil
import subprocess

from rewriter.errors import RewriterError

from . import View

__all__ = ["DotMissing", "dot_binary", "run_dot", "to_dot", "svg_fragment", "FILL", "EDGE"]

#: fill and border colour per layer state
FILL = {
    "trainable": ("#d5f5d5", "#2e8b2e"),
    "decay-only": ("#ffe4cc", "#c96a1b"),
    "statistics-only": ("#f3e0f7", "#9b4fb5"),
    "frozen": ("#d6e6ff", "#3b6fc9"),
    "backward only": ("#fff5cc", "#b39b2e"),
    "no backward": ("#eeeeee", "#888888"),
}
#: edge colour and style per gradient state
EDGE = {
    "flows": ("#444444", "solid"),
    "cut": ("#d62728", "dashed"),
    "none": ("#aaaaaa", "solid"),
}
_MARK_PEN = {
    "changed": "#ff8c00",
    "added": "#1a9e1a",
    "renamed": "#8e44ad",
    "removed": "#d62728",
    "affected": "#ff8c00",
}


class DotMissing(RewriterError):
    """The Graphviz ``dot`` program is needed but not installed."""


def dot_binary() -> str | None:
    return shutil.which("dot")


def _html(text: str) -> str:
    clean = "".join(c if c.isprintable() else " " for c in text)
    return html.escape(clean, quote=True)


def _quoted(text: str) -> str:
    clean = "".join(c if c.isprintable() else " " for c in text)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(view: View, legend: bool = True) -> str:
    ids = {key: f"n{i}" for i, key in enumerate(view.nodes)}
    lines = [
        "digraph net {",
        f"  label={_quoted(f'{view.title} ({view.phase})')};",
        '  labelloc="t"; rankdir=TB; fontname="Helvetica";',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];',
    ]
    for key, node in view.nodes.items():
        fill, border = FILL.get(node.state, FILL["no backward"])
        rows = [f"<B>{_html(node.members[0].name)}</B>"]
        rows.append(f'<FONT POINT-SIZE="9">{_html(node.members[0].type)} · {node.state}</FONT>')
        for m in node.members[1:]:
            rows.append(f'<FONT POINT-SIZE="9">+ {_html(m.name)} ({_html(m.type)})</FONT>')
        label = "<BR/>".join(rows)
        attrs = [f"label=<{label}>", f'fillcolor="{fill}"', f'color="{border}"']
        tooltip = "\n".join(f"{m.name} ({m.type}): {m.state}" for m in node.members)
        attrs.append(f"tooltip={_quoted(tooltip)}")
        mark = next((m for m in ("removed", "added", "renamed", "changed", "affected")
                     if m in node.marks), None)  # fmt: skip
        if mark is not None:
            width = 2 if mark == "affected" else 3
            attrs.append(f'penwidth={width}, color="{_MARK_PEN[mark]}"')
            if mark == "removed":
                attrs.append('style="rounded,filled,dashed"')
        lines.append(f"  {ids[key]} [{', '.join(attrs)}];")
    for e in view.edges:
        color, style = EDGE.get(e.gradient, EDGE["flows"])
        label = e.blob
        if e.gradient == "cut":
            label += " (gradient cut)"
        attrs = [f"label={_quoted(label)}", f'color="{color}"', f"style={style}"]
        if "removed" in e.marks:
            attrs = [f"label={_quoted(e.blob + ' (removed)')}", 'color="#d62728"', "style=dotted"]
        elif "newly-cut" in e.marks or "restored" in e.marks or "added" in e.marks:
            attrs.append("penwidth=2.5")
        lines.append(f"  {ids[e.source]} -> {ids[e.target]} [{', '.join(attrs)}];")
    if legend:
        lines.append("  subgraph cluster_legend {")
        lines.append('    label="legend"; fontsize=9; color="#cccccc";')
        for i, (state, (fill, border)) in enumerate(FILL.items()):
            lines.append(
                f'    legend{i} [label="{state}", fillcolor="{fill}", color="{border}", '
                "fontsize=9];"
            )
        lines.append("  }")
    for note in view.notes:
        lines.append(f"  // {note}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def run_dot(source: str, fmt: str) -> bytes:
    """Run ``dot -T<fmt>`` on ``source``; raises DotMissing when Graphviz is not installed."""
    exe = dot_binary()
    if exe is None:
        raise DotMissing(
            f"--format {fmt} needs Graphviz's 'dot' program, which is not on PATH "
            "(install graphviz, e.g. 'apt-get install graphviz'), or use --format dot or mermaid"
        )
    try:
        proc = subprocess.run(
            [exe, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True, check=False
        )
    except OSError as e:
        raise DotMissing(f"cannot run {exe}: {e}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise RewriterError(f"dot -T{fmt} failed: {err}")
    return proc.stdout


def svg_fragment(source: str) -> str:
    """Inline SVG (no XML prolog or DOCTYPE) for embedding in an HTML page."""
    svg = run_dot(source, "svg").decode("utf-8", "replace")
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg
