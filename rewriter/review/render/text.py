"""Plain-text rendering of a semantic diff (ANSI colours only when asked, i.e. on a terminal)."""

from __future__ import annotations

from rewriter.review.semdiff import DiffResult, FileDiff, PhaseDiff, format_value

__all__ = ["render_text", "phase_lines", "field_line"]

_COLORS = {"+": "\x1b[32m", "-": "\x1b[31m", "~": "\x1b[33m", ">": "\x1b[35m", "!": "\x1b[1;31m"}
_RESET = "\x1b[0m"
_SIGN = {"modified": "~", "added": "+", "removed": "-", "renamed": ">"}


def field_line(path: str, change: str, old: object, new: object) -> str:
    if change == "added":
        return f"{path}: added {format_value(new)}"
    if change == "removed":
        return f"{path}: removed (was {format_value(old)})"
    return f"{path}: {format_value(old)} -> {format_value(new)}"


def _num(x: float | None) -> str:
    return "(none)" if x is None else format_value(float(x))


def phase_lines(pd: PhaseDiff) -> list[tuple[str, str]]:
    """(sign, text) lines of one phase's consequences."""
    out: list[tuple[str, str]] = []
    if pd.old_error != pd.new_error:
        if pd.new_error:
            out.append(("!", f"the net no longer builds: {pd.new_error}"))
        if pd.old_error:
            out.append(("+", f"the net builds now (it failed with: {pd.old_error})"))
    for b in pd.backward:
        what = "starts needing backward" if b.new_needs_backward else "stops needing backward"
        out.append(("~", f"{b.layer} ({b.type}) {what} ({b.old_state} -> {b.new_state})"))
    for p in pd.params:
        out.append(
            ("~", f"{p.layer} param {p.index} ({p.role}) becomes {p.change} "
                  f"(lr_mult {_num(p.old_lr_mult)} -> {_num(p.new_lr_mult)})")
        )  # fmt: skip
    for g in pd.gradient:
        src = f" from {g.source}" if g.source else ""
        verb = "is cut" if g.change == "cut" else "is restored"
        out.append(
            ("!" if g.change == "cut" else "+",
             f"gradient into {g.layer} bottom {g.bottom} ('{g.blob}'{src}) {verb}")
        )  # fmt: skip
    for e in pd.edges:
        sign = "+" if e.change == "added" else "-"
        out.append((sign, f"edge {e.source or '?'} -> {e.target} ('{e.blob}') {e.change}"))
    for lc in pd.losses:
        out.append(
            ("~", f"loss output '{lc.blob}' of {lc.layer}: weight {_num(lc.old_weight)} -> "
                  f"{_num(lc.new_weight)}")
        )  # fmt: skip
    for w in pd.warnings:
        sign = "!" if w.change == "added" else "-"
        word = "new warning" if w.change == "added" else "warning gone"
        out.append((sign, f"{word}: {w.message}"))
    return out


def _file_lines(fd: FileDiff, color: bool) -> list[str]:
    def c(sign: str, text: str) -> str:
        return f"{_COLORS[sign]}{text}{_RESET}" if color and sign in _COLORS else text

    head = f"--- {fd.old_path or '/dev/null'}\n+++ {fd.new_path or '/dev/null'}"
    lines = [c("~", head) if color else head]
    if fd.status in ("added", "removed"):
        lines.append(c("+" if fd.status == "added" else "-", f"{fd.kind} file {fd.status}"))
        return lines
    if not fd.has_changes:
        lines.append("no semantic changes")
        return lines
    if fd.fields:
        lines.append("fields:" if fd.kind != "net" else "net fields:")
        for f in fd.fields:
            lines.append("  " + c("~", field_line(f.path, f.change, f.old, f.new)))
    if fd.layers:
        lines.append("layers:")
        for lc in fd.layers:
            sign = _SIGN[lc.change]
            if lc.change == "renamed":
                title = f"{sign} {lc.old_name} -> {lc.name} ({lc.type}) renamed"
            else:
                title = f"{sign} {lc.name} ({lc.type}){'' if sign == '~' else ' ' + lc.change}"
            lines.append("  " + c(sign, title))
            for f in lc.fields:
                if lc.change == "renamed" and f.path == "name":
                    continue
                lines.append("      " + field_line(f.path, f.change, f.old, f.new))
    shown: list[PhaseDiff] = []
    for name, pd in fd.phases.items():
        body = phase_lines(pd)
        if not body:
            continue
        same = next((s for s in shown if s.same_consequences(pd)), None)
        if same is not None:
            lines.append(f"{name}: same consequences as {same.phase}")
            continue
        shown.append(pd)
        lines.append(f"{name} consequences:")
        lines.extend("  " + c(sign, f"{sign} {text}") for sign, text in body)
    if fd.weights:
        lines.append("pretrained weights:")
        for w in fd.weights:
            lines.append("  " + c("!", f"! {w.message}"))
    return lines


def render_text(result: DiffResult, color: bool = False) -> str:
    if not result.has_changes:
        if len(result.files) == 1:
            return "no semantic changes\n"
        return f"no semantic changes ({len(result.files)} files compared)\n"
    blocks = ["\n".join(_file_lines(fd, color)) for fd in result.files if fd.has_changes]
    same = len(result.files) - len(blocks)
    tail = f"\n{same} other file(s): no semantic changes\n" if same else "\n"
    return "\n\n".join(blocks) + tail
