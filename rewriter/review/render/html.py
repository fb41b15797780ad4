"""Self-contained HTML pages: a semantic diff, or a whole net drawn with training states.

The page fetches nothing: styles are inline, and the graph is inline SVG made by Graphviz's
``dot`` when it is installed. Without ``dot`` the page carries the graph as Mermaid source in a
``<pre class="mermaid">`` block with a note saying so (no script is loaded to render it).
"""

from __future__ import annotations

from html import escape

from rewriter.review.semdiff import DiffResult, FileDiff, PhaseDiff, format_value

from . import View, diff_view
from .dot import FILL, dot_binary, svg_fragment, to_dot
from .mermaid import to_mermaid

__all__ = ["render_html", "graph_page", "graph_block"]

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 24px auto; max-width: 1200px; padding: 0 16px; background: #ffffff; }
h1 { font-size: 22px; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 18px; margin-top: 28px; }
h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #eff1f3;
       padding: 1px 4px; border-radius: 4px; }
.modified { color: #9a6700; } .added { color: #1a7f37; } .removed { color: #cf222e; }
.renamed { color: #8250df; } .warn { background: #fff8c5; border: 1px solid #d4a72c;
       padding: 6px 10px; border-radius: 6px; margin: 6px 0; }
.note { color: #57606a; font-style: italic; }
.graph { overflow: auto; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; }
.legend span { display: inline-block; padding: 2px 8px; margin: 2px; border-radius: 4px;
       border: 1px solid; font-size: 12px; }
pre.mermaid { background: #f6f8fa; padding: 10px; overflow: auto; }
"""


def _page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _c(text: str) -> str:
    return f"<code>{escape(text)}</code>"


def _field(path: str, change: str, old: object, new: object) -> str:
    if change == "added":
        return f"{_c(path)} added: {_c(format_value(new))}"
    if change == "removed":
        return f"{_c(path)} removed (was {_c(format_value(old))})"
    return f"{_c(path)}: {_c(format_value(old))} → {_c(format_value(new))}"


def _num(x: float | None) -> str:
    return "none" if x is None else format_value(float(x))


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], classes: list[str]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
    for row, cls in zip(rows, classes, strict=True):
        out.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _phase_rows(pd: PhaseDiff) -> tuple[list[tuple[str, ...]], list[str]]:
    rows: list[tuple[str, ...]] = []
    cls: list[str] = []
    if pd.old_error != pd.new_error:
        if pd.new_error:
            rows.append(("net no longer builds", "", escape(pd.new_error)))
            cls.append("removed")
        if pd.old_error:
            rows.append(("net builds now", "", "was: " + escape(pd.old_error)))
            cls.append("added")
    for b in pd.backward:
        what = "starts needing backward" if b.new_needs_backward else "stops needing backward"
        rows.append((what, _c(b.layer), f"{escape(b.old_state)} → {escape(b.new_state)}"))
        cls.append("modified")
    for p in pd.params:
        rows.append(
            (f"parameter {p.change}", _c(p.layer),
             f"param {p.index} ({escape(p.role)}): lr_mult {_num(p.old_lr_mult)} → "
             f"{_num(p.new_lr_mult)}")
        )  # fmt: skip
        cls.append("modified")
    for g in pd.gradient:
        src = f" from {_c(g.source)}" if g.source else ""
        rows.append(
            ("gradient cut" if g.change == "cut" else "gradient restored", _c(g.layer),
             f"bottom {g.bottom} {_c(g.blob)}{src}")
        )  # fmt: skip
        cls.append("removed" if g.change == "cut" else "added")
    for e in pd.edges:
        rows.append((f"edge {e.change}", f"{_c(e.source or '?')} → {_c(e.target)}", _c(e.blob)))
        cls.append(e.change)
    for lc in pd.losses:
        rows.append(
            (f"loss {lc.change}", _c(lc.layer),
             f"{_c(lc.blob)}: weight {_num(lc.old_weight)} → {_num(lc.new_weight)}")
        )  # fmt: skip
        cls.append("modified")
    for w in pd.warnings:
        rows.append(
            ("new warning" if w.change == "added" else "warning gone",
             _c(w.layer) if w.layer else "", escape(w.message))
        )  # fmt: skip
        cls.append("removed" if w.change == "added" else "added")
    return rows, cls


def _legend() -> str:
    spans = "".join(
        f'<span style="background:{fill};border-color:{border}">{escape(state)}</span>'
        for state, (fill, border) in FILL.items()
    )
    return (
        f'<p class="legend">{spans} <span style="border-color:#d62728;color:#d62728">'
        "- - gradient cut</span></p>"
    )


def graph_block(view: View) -> str:
    """The view as inline SVG (Graphviz), else as Mermaid source with a note."""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in view.notes)
    if dot_binary() is not None:
        return (
            f'{_legend()}{notes}<div class="graph">{svg_fragment(to_dot(view, legend=False))}</div>'
        )
    return (
        f'{notes}<p class="note">Graphviz (<code>dot</code>) is not installed, so the graph is '
        "given as Mermaid source below (this page loads no scripts); paste it into any Mermaid "
        "viewer, or install graphviz for an inline drawing.</p>"
        f'<pre class="mermaid">{escape(to_mermaid(view))}</pre>'
    )


def _file(fd: FileDiff) -> list[str]:
    out = [f"<h2>{_c(fd.path)}</h2>"]
    if fd.old_path and fd.new_path and fd.old_path != fd.new_path:
        out.append(f"<p>{_c(fd.old_path)} → {_c(fd.new_path)}</p>")
    if fd.status in ("added", "removed"):
        out.append(f'<p class="{fd.status}">{escape(fd.kind)} file {fd.status}.</p>')
        return out
    if not fd.has_changes:
        out.append("<p>No semantic changes.</p>")
        return out
    rows: list[tuple[str, ...]] = []
    cls: list[str] = []
    for f in fd.fields:
        rows.append(("modified", "(net)" if fd.kind == "net" else "(file)", "",
                     _field(f.path, f.change, f.old, f.new)))  # fmt: skip
        cls.append("modified")
    for lc in fd.layers:
        if lc.change == "renamed":
            name = f"{_c(lc.old_name or '')} → {_c(lc.name)}"
            details = "renamed" + "".join(
                "<br>" + _field(f.path, f.change, f.old, f.new)
                for f in lc.fields
                if f.path != "name"
            )
        else:
            name = _c(lc.name)
            details = (
                "<br>".join(_field(f.path, f.change, f.old, f.new) for f in lc.fields) or lc.change
            )
        rows.append((lc.change, name, escape(lc.type), details))
        cls.append(lc.change)
    if rows:
        out.append("<h3>Changes</h3>")
        out.append(_table(("change", "layer", "type", "details"), rows, cls))
    shown: list[PhaseDiff] = []
    for name, pd in fd.phases.items():
        prow, pcls = _phase_rows(pd)
        if not prow:
            continue
        same = next((s for s in shown if s.same_consequences(pd)), None)
        if same is not None:
            out.append(f"<p>{name}: same consequences as {same.phase}.</p>")
            continue
        shown.append(pd)
        out.append(f"<h3>Training consequences ({name})</h3>")
        out.append(_table(("consequence", "layer", "details"), prow, pcls))
    for w in fd.weights:
        out.append(f'<div class="warn">⚠ <b>weights:</b> {escape(w.message)}</div>')
    view = diff_view(fd)
    if view is not None and view.nodes:
        out.append(f"<h3>Affected part of the {view.phase} net</h3>")
        out.append(graph_block(view))
    return out


def render_html(result: DiffResult) -> str:
    body = ["<h1>Prototxt semantic diff</h1>"]
    if not result.has_changes:
        body.append("<p>No semantic changes.</p>")
    changed = [fd for fd in result.files if fd.has_changes]
    for fd in changed:
        body.extend(_file(fd))
    same = len(result.files) - len(changed)
    if same and changed:
        body.append(f"<p>{same} other file(s): no semantic changes.</p>")
    return _page("Prototxt semantic diff", body)


def graph_page(view: View, source: str) -> str:
    """``rewriter graph --format html``: the whole net with its training states."""
    body = [
        f"<h1>{escape(view.title)} — {escape(view.phase)}</h1>",
        f"<p>{_c(source)}: {len(view.nodes)} nodes (in-place layers drawn inside their "
        "producer, Caffe's split layers omitted).</p>",
        graph_block(view),
    ]
    return _page(f"{view.title} ({view.phase})", body)
