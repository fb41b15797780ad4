"""Step 4, ``UpgradeNetInput`` as text edits: the legacy net-level ``input`` / ``input_dim`` /
``input_shape`` fields become an ``Input`` layer named "input" in front of the net (names
without a shape are dropped, as Caffe does, their comments kept).
"""

from __future__ import annotations

from typing import Any

from rewriter.caffe.upgrade_proto import input_upgrade_needed
from rewriter.text.cst import Document, Field, MessageBody
from rewriter.upgrade.splice import (
    _Action,
    _child_indent,
    _Ctx,
    _edit_siblings,
    _field_text,
    _insert_before,
    _Line,
    _line_indent,
    _reindent,
    _render_one,
    _Splices,
    _split_prefix,
    _starts_line,
    _trailing,
    _value_texts,
)


def _step_input(
    ctx: _Ctx, doc: Document, body: MessageBody, msg: Any, base: tuple[int, ...], indent: str
) -> str | None:
    if not input_upgrade_needed(msg):
        return None
    sp = _Splices(doc.src)
    fields = body.fields
    legacy = [
        (j, g) for j, g in enumerate(fields) if g.name in ("input", "input_dim", "input_shape")
    ]
    has_shape = len(msg.input_shape) > 0
    if not has_shape and len(msg.input_dim) == 0:
        # Only names: Caffe drops them (a legacy caffemodel's inputs); their comments stay.
        _edit_siblings(sp, fields, {j: "keep" for j, _ in legacy})
        return sp.apply()
    n = len(msg.input)
    unit = ctx.unit
    contributes: set[int] = set()
    tops: list[_Line] = []
    dims: list[_Line] = []
    shape_fields: list[tuple[_Line, Field]] = []
    heads: list[tuple[int, _Line]] = []  # (field index, the line carrying its attached comments)
    for j, g in legacy:
        values = [""] if g.name == "input_shape" else _value_texts(g)
        pre = _split_prefix(g)[1]
        tr = _trailing(g)
        for m, v in enumerate(values):
            line = _Line(
                comments=pre if m == 0 else [], trailing=tr if m == len(values) - 1 else ""
            )
            if m == 0:
                heads.append((j, line))
            if g.name == "input":
                line.name, line.value = "top", v
                tops.append(line)
                contributes.add(j)
            elif g.name == "input_dim" and not has_shape:
                line.name, line.value = "dim", v
                if len(dims) < 4 * n:
                    contributes.add(j)
                dims.append(line)
            elif g.name == "input_shape":
                line.name = "shape"
                if len(shape_fields) < n:
                    contributes.add(j)
                shape_fields.append((line, g))
    anchor_j = min(contributes)
    first_layer = next((j for j, g in enumerate(fields) if g.name == "layer"), None)
    before_layer = first_layer is not None and first_layer < anchor_j
    if before_layer:
        assert first_layer is not None
        ind = _line_indent(fields[first_layer])
    elif _starts_line(fields[anchor_j]):
        ind = _line_indent(fields[anchor_j])
    else:
        ind = _child_indent(body, indent, unit)
        # the anchor's own comments stay in front of the new layer
    if not before_layer:
        for j, line in heads:
            if j == anchor_j:
                line.comments = []
    for line, g in shape_fields:
        line.raw = _reindent(_field_text(g, "shape"), _line_indent(g), ind + unit + unit)
    if has_shape:
        shapes = [line for line, _ in shape_fields[:n]]
    else:
        shapes = [_Line(name="shape", value=dims[4 * i : 4 * i + 4]) for i in range(n)]
    layer = _Line(
        name="layer",
        value=[
            _Line(name="name", value='"input"'),
            _Line(name="type", value='"Input"'),
            *tops,
            _Line(name="input_param", value=shapes),
        ],
    )
    existing = [g for g in fields if g.name == "layer"]
    multiline = not existing or "\n" in existing[0].code or layer.has_comments()
    text = _render_one(layer, ind, unit, multiline)
    actions: dict[int, _Action] = {j: "drop" if j in contributes else "keep" for j, _ in legacy}
    if before_layer:
        assert first_layer is not None
        _insert_before(sp, fields[first_layer], text, multiline)
    else:
        actions[anchor_j] = ("replace", text)
    _edit_siblings(sp, fields, actions)
    return sp.apply()
