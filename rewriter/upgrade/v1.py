"""Step 3, ``UpgradeV1Net`` as text edits: ``layers`` -> ``layer``, enum types -> type strings
(a fork's own type token -> the V2 name the user gave), and ``param: "w"``,
``blob_share_mode``, ``blobs_lr``, ``weight_decay`` -> ``param { name share_mode lr_mult
decay_mult }`` blocks, written where the first of them was, their comments on the new lines.
"""

from __future__ import annotations

from typing import Any

from rewriter.caffe.upgrade_proto import _PARAM_SPEC, _SPEC_ORDER, _enum_name, _v1_types
from rewriter.text.cst import Document, Field, MessageBody, encode_string
from rewriter.upgrade.splice import (
    _child_indent,
    _Ctx,
    _edit_siblings,
    _Line,
    _line_indent,
    _render_lines,
    _render_one,
    _Splices,
    _split_prefix,
    _starts_line,
    _trailing,
    _value_texts,
)


def _step_v1(
    ctx: _Ctx, doc: Document, body: MessageBody, msg: Any, base: tuple[int, ...], indent: str
) -> str | None:
    conns = [f for f in body.fields if f.name == "layers"]
    if not conns:
        return None
    types = _v1_types()
    sp = _Splices(doc.src)
    for k, f in enumerate(conns):
        layer = msg.layers[k]
        sp.add(f.name_start, f.name_end, "layer")
        lb = f.body
        assert isinstance(lb, MessageBody)
        if layer.HasField("type") or k in ctx.fork_types:
            v2 = ctx.fork_types.get(k) or types[_enum_name(layer, "type")]
            new_type = encode_string(v2)
            # (a scan, not ``lb.get_all``: its index would stay with the tree, ~2x the file)
            for g in lb.fields:
                if g.name == "type":
                    sp.add(g.value_start, g.value_end, new_type)
        _merge_params(ctx, sp, f, lb)
        sp.settle(f.end)  # every edit above is inside this layer
    return sp.apply()


def _merge_params(ctx: _Ctx, sp: _Splices, f: Field, lb: MessageBody) -> None:
    """``param: "w"``, ``blob_share_mode``, ``blobs_lr``, ``weight_decay`` -> ``param`` blocks,
    written where the first of them was; their comments go to the matching new lines."""
    contrib = [(j, g) for j, g in enumerate(lb.fields) if g.name in _PARAM_SPEC]
    if not contrib:
        return
    first_j = contrib[0][0]
    entries: list[dict[str, _Line]] = []
    counters = dict.fromkeys(_PARAM_SPEC, 0)
    for j, g in contrib:
        values = _value_texts(g)
        pre = [] if j == first_j else _split_prefix(g)[1]
        tr = _trailing(g)
        for m, v in enumerate(values):
            idx = counters[g.name]
            counters[g.name] += 1
            while len(entries) <= idx:
                entries.append({})
            key = _PARAM_SPEC[g.name]
            entries[idx][key] = _Line(
                name=key,
                value=v,
                comments=pre if m == 0 else [],
                trailing=tr if m == len(values) - 1 else "",
            )
    blocks = [_Line(name="param", value=[e[k] for k in _SPEC_ORDER if k in e]) for e in entries]
    js = [j for j, _ in contrib]
    first, last = contrib[0][1], contrib[-1][1]
    contiguous = js == list(range(js[0], js[-1] + 1))
    same_line = "\n" not in f.src[first.name_start : last.value_end]
    if "\n" not in lb.code or (same_line and contiguous):
        joined = " ".join(_render_one(b, "", ctx.unit, False) for b in blocks)
        if contiguous:
            sp.add(first.name_start, last.value_end, joined)
        else:
            sp.add(first.name_start, first.value_end, joined)
            _edit_siblings(sp, lb.fields, dict.fromkeys(js[1:], "keep"))
        return
    if _starts_line(first):
        ind = _line_indent(first)
    else:
        ind = _child_indent(lb, _line_indent(f), ctx.unit)
    sp.add(first.name_start, first.end, _render_lines(blocks, ind, ctx.unit, lead=False))
    _edit_siblings(sp, lb.fields, dict.fromkeys(js[1:], "drop"))
