"""``git diff`` textconv: a prototxt file as one ``field.path = value`` line per value.

Run as ``rewriter textconv FILE`` (see docs/diff.md); it shares the reading of a
version (:mod:`rewriter.review.version`) with the semantic diff, not the diff itself.
"""

from __future__ import annotations

from typing import Any

from rewriter.errors import RewriterError
from rewriter.review.facts import PHASES
from rewriter.review.values import format_value, message_to_dict
from rewriter.review.version import _Version


def _flatten(prefix: str, value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value and prefix:
            out.append(f"{prefix} = {{}}")
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out.append(f"{prefix} = {format_value(value)}")


def textconv(text: str, path: str = "<string>", *, lenient: bool = True) -> str:
    """A normalised rendering for ``git diff``: one ``field.path = value`` line per value.

    Layers are addressed by name (``layer[conv1].param[0].lr_mult = 0``), so inserting a layer
    does not shift every line; comments and layout are gone. A net ends with one line per layer
    and phase giving its training state (``TRAIN conv1: trainable``). Text that does not parse
    is returned unchanged, so ``git diff`` still shows something.
    """
    try:
        v = _Version(text, path, lenient=lenient, schema=None, root=None)
    except RewriterError:
        return text
    out: list[str] = []
    if v.kind != "net":
        _flatten("", message_to_dict(v.message), out)
        return "\n".join(out) + "\n"
    _flatten("", message_to_dict(v.message, ("layer", "layers")), out)
    seen: dict[str, int] = {}
    for i, name in enumerate(v.names):
        k = seen.get(name, 0)
        seen[name] = k + 1
        label = name if k == 0 else f"{name}@{k + 1}"
        label = label.replace("]", "\\]")
        d = message_to_dict(v.unit_msg(v.unit(i)), ("name",))
        _flatten(f"{v.unit_field}[{label}]", d, out)
    for phase in PHASES:
        facts = v.facts(phase)
        if isinstance(facts, str):
            out.append(f"{phase} error: {facts}")
            continue
        for li, layer in enumerate(facts.graph.layers):
            if not layer.inserted_split:
                out.append(f"{phase} {layer.name}: {facts.states[li]}")
        for e in facts.edges:
            if e.gradient == "cut":
                src = "?" if e.source is None else facts.graph.layers[e.source].name
                out.append(
                    f"{phase} {facts.graph.layers[e.target].name}: gradient from {src} "
                    f"('{e.blob}') cut"
                )
    return "\n".join(out) + "\n"
