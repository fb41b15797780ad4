"""Step 2, ``UpgradeNetDataTransformation`` as text edits: ``scale``, ``mean_file``,
``crop_size`` and ``mirror`` of V1 DATA / IMAGE_DATA / WINDOW_DATA layers move into
``transform_param``, with their comments.

A step of its own, not part of :mod:`v0`: Caffe runs it on any V1 net (one written as V1
before ``transform_param`` existed as well as one just upgraded from V0).
"""

from __future__ import annotations

from typing import Any

from rewriter.caffe.upgrade_proto import (
    _DATA_PARAMS,
    _TRANSFORM_FIELDS,
    _enum_name,
    _needs_data_upgrade,
)
from rewriter.text.cst import Document, Field, MessageBody
from rewriter.upgrade.splice import (
    _append_to_body,
    _child_indent,
    _Ctx,
    _edit_siblings,
    _field_text,
    _insert_before,
    _insert_comment_lines,
    _Line,
    _line_indent,
    _render_one,
    _Splices,
    _split_prefix,
    _trailing,
)


def _step_data(
    ctx: _Ctx, doc: Document, body: MessageBody, msg: Any, base: tuple[int, ...], indent: str
) -> str | None:
    if not _needs_data_upgrade(msg):
        return None
    sp = _Splices(doc.src)
    conns = [f for f in body.fields if f.name == "layers"]
    for k, f in enumerate(conns):
        pname = _DATA_PARAMS.get(_enum_name(msg.layers[k], "type"))
        lb = f.body
        if pname is None or not isinstance(lb, MessageBody):
            continue
        ci = _child_indent(lb, _line_indent(f), ctx.unit)
        pfield = lb.get(pname)
        tfield = lb.get("transform_param")
        moved: list[tuple[int, Field]] = []
        if pfield is not None and isinstance(pfield.body, MessageBody):
            moved = [
                (j, g) for j, g in enumerate(pfield.body.fields) if g.name in _TRANSFORM_FIELDS
            ]
            _edit_siblings(sp, pfield.body.fields, {j: "drop" for j, _ in moved})
        members = [
            _Line(raw=_field_text(g), comments=_split_prefix(g)[1], trailing=_trailing(g))
            for _, g in moved
        ]
        if tfield is None or not isinstance(tfield.body, MessageBody):
            block = _Line(name="transform_param", value=members)
            multiline = "\n" in lb.code and (
                pfield is None or "\n" in pfield.value_text or block.has_comments()
            )
            text = _render_one(block, ci, ctx.unit, multiline)
            if pfield is not None:
                _insert_before(sp, pfield, text, "\n" in lb.code)
            else:
                _append_to_body(sp, lb, [block], ci, ctx.unit)
        else:
            tb = tfield.body
            appended: list[_Line] = []
            for line, (_, g) in zip(members, moved, strict=True):
                existing = tb.get(g.name)
                if existing is None:
                    appended.append(line)
                    continue
                # The moved value wins over the one already in transform_param (as in Caffe);
                # the line it replaces keeps its comment above it.
                one_line = "\n" not in tb.code
                notes = ([_trailing(existing).strip()] if _trailing(existing) else []) + list(
                    line.comments
                )
                if one_line:
                    notes += [line.trailing.strip()] if line.trailing else []
                    sp.add(existing.name_start, existing.value_end, _field_text(g))
                else:
                    sp.add(existing.name_start, existing.end, _field_text(g) + line.trailing)
                if notes:
                    _insert_comment_lines(sp, [existing, tfield, f], notes)
            if appended:
                tind = _child_indent(tb, _line_indent(tfield), ctx.unit)
                _append_to_body(sp, tb, appended, tind, ctx.unit)
        if pfield is None:
            # Caffe's mutable_<x>_param() leaves the layer an empty <x>_param.
            _append_to_body(sp, lb, [_Line(name=pname, value=[])], ci, ctx.unit)
        sp.settle(f.end)  # every edit above is inside this layer
    return sp.apply()
