"""Step 1, ``UpgradeV0Net`` as text edits: V0 ``layers { layer { ... } bottom top }`` become flat
V1 ``layers``; "padding" layers are folded into the convolution / pooling layer that reads
them; the flat V0 fields (``kernelsize``, ``num_output``, ``meanfile``...) move into the typed
``*_param`` messages; what Caffe drops is kept as a comment.

What to do comes from Caffe's message-level upgrade (:mod:`rewriter.caffe.upgrade_proto`: the
padding plan, the V0 field targets); this module only writes it into the text.
"""

from __future__ import annotations

from typing import Any

from rewriter.caffe.upgrade_proto import (
    _V0_IGNORED,
    _V0_NET_KEEPS,
    _v0_types,
    _v0_unknown,
    v0_keeps_input_shape,
    v0_padding_plan,
    v0_target,
)
from rewriter.text.cst import Document, Field, MessageBody, encode_string
from rewriter.upgrade.splice import (
    _Action,
    _child_indent,
    _close_comments,
    _commented_out,
    _Ctx,
    _edit_siblings,
    _field_text,
    _inner_comments,
    _Line,
    _line_indent,
    _open_comments,
    _prefix_lines,
    _reindent,
    _render_lines,
    _Splices,
    _trailing,
    _value_texts,
)


def _step_v0(
    ctx: _Ctx, doc: Document, body: MessageBody, msg: Any, base: tuple[int, ...], indent: str
) -> str | None:
    if not any(conn.HasField("layer") for conn in msg.layers):
        return None
    plan = v0_padding_plan(msg)
    kept = set(plan.kept)
    fields = body.fields
    conns = [f for f in fields if f.name == "layers"]
    sp = _Splices(doc.src)
    actions: dict[int, _Action] = {}
    index = {id(f): i for i, f in enumerate(fields)}
    for k, f in enumerate(conns):
        assert isinstance(f.body, MessageBody)
        if k not in kept:
            # A padding layer: Caffe folds it into its reader; only its comments stay.
            inner = _inner_comments(f)
            ind = _line_indent(f)
            actions[index[id(f)]] = ("replace", f"\n{ind}".join(inner)) if inner else "keep"
            continue
        pad_text = None
        if k in plan.pad_from:
            pconn = conns[plan.pad_from[k]]
            assert isinstance(pconn.body, MessageBody)
            player = pconn.body.get("layer")
            pfield = (
                player.body.get("pad") if player and isinstance(player.body, MessageBody) else None
            )
            pad_text = pfield.value_text if pfield is not None else "0"
        text = _render_v0_conn(ctx, f, msg.layers[k], plan.rewire.get(k, {}), pad_text)
        last = f.body.fields[-1]
        if "#" not in last.suffix:  # keep the spacing before a one-line block's '}'
            text += last.suffix[len(last.suffix.rstrip(" \t")) :]
        sp.add(f.body.fields[0].name_start, last.end, text)
    keep_shape = v0_keeps_input_shape(msg)
    if keep_shape:
        ctx.differences.append(
            "input_shape is kept and becomes the Input layer's shape; Caffe's UpgradeV0Net drops "
            "it, then UpgradeNetInput drops the input, and the net no longer builds (a layer "
            "reads a blob nothing produces)"
        )
    for i, f in enumerate(body.fields):
        if keep_shape and f.name == "input_shape":
            continue
        if f.name not in _V0_NET_KEEPS:
            reason = "Caffe's V0 upgrade drops net-level field " + repr(f.name)
            actions[i] = ("replace", f"\n{_line_indent(f)}".join(_commented_out(f, reason)))
            ctx.differences.append(
                f"net-level field '{f.name}' is kept as a comment; Caffe's UpgradeV0Net drops it"
            )
    _edit_siblings(sp, body.fields, actions)
    return sp.apply()


def _render_v0_conn(
    ctx: _Ctx, f: Field, conn: Any, rewire: dict[int, str], pad_text: str | None
) -> str:
    """The children of one V0 ``layers`` entry, written as a flat V1 layer."""
    b = f.body
    assert isinstance(b, MessageBody)
    one_line = "\n" not in b.code
    ci = _child_indent(b, _line_indent(f), ctx.unit)
    items: list[_Line] = []
    pending: list[str] = []
    n_bottom = 0
    for idx, g in enumerate(b.fields):
        pre = _prefix_lines(g) if idx > 0 else []
        if g.name == "layer" and isinstance(g.body, MessageBody):
            pending += pre + _open_comments(g.body)
            produced = _v0_items(ctx, g, conn.layer, ci, pad_text)
            flat = not any(x.has_comments() for x in produced)
            if "\n" not in g.body.code and not one_line and flat:
                items.append(
                    _Line(
                        raw=_render_lines(produced, ci, ctx.unit, lead=False, multiline=False),
                        comments=pending,
                    )
                )
                pending = []
            else:
                if produced:
                    produced[0].comments = pending + produced[0].comments
                    pending = []
                items.extend(produced)
            pending += _close_comments(g.body)
            if _trailing(g):
                pending.append(_trailing(g).strip())
        elif g.name in ("bottom", "top"):
            text = _field_text(g)
            if g.name == "bottom":
                values = _value_texts(g)
                hits = [rewire[n_bottom + m] for m in range(len(values)) if n_bottom + m in rewire]
                if hits:
                    text = "bottom: " + encode_string(hits[0])
                n_bottom += len(values)
            items.append(_Line(raw=text, comments=pending + pre, trailing=_trailing(g)))
            pending = []
        else:
            reason = f"Caffe's V0 upgrade drops field {g.name!r} of a V0 'layers' entry"
            items.append(_Line(comments=pending + pre + _commented_out(g, reason)))
            pending = []
            ctx.differences.append(
                f"layer {conn.layer.name!r}: field '{g.name}' beside the V0 'layer' is kept as "
                "a comment; Caffe's V0 upgrade drops it"
            )
    if pending:
        items.append(_Line(comments=pending))
    multiline = not one_line or any(x.has_comments() for x in items)
    return _render_lines(items, ci, ctx.unit, lead=False, multiline=multiline)


def _v0_items(ctx: _Ctx, g: Field, v0: Any, ci: str, pad_text: str | None) -> list[_Line]:
    """The fields of a V0 ``layer { ... }`` as V1 layer fields (typed params grouped)."""
    assert isinstance(g.body, MessageBody)
    kind = str(v0.type)
    items: list[_Line] = []
    groups: dict[str, _Line] = {}
    member = ci + ctx.unit
    pad_done = False

    def group(sub: str) -> list[_Line]:
        grp = groups.get(sub)
        if grp is None:
            grp = groups[sub] = _Line(name=sub, value=[])
            items.append(grp)
        assert isinstance(grp.value, list)
        return grp.value

    for h in g.body.fields:
        pre = _prefix_lines(h)
        tr = _trailing(h)
        if h.name == "type":
            text = "type" + h.separator + _v0_types()[kind]
            items.append(_Line(raw=text, comments=pre, trailing=tr))
            continue
        target = None if h.name in _V0_IGNORED else v0_target(h.name, kind)
        if target is None:
            if h.name in _V0_IGNORED:
                reason = f"Caffe's V0 upgrade ignores {h.name!r}"
            else:
                reason = f"Caffe: {_v0_unknown(h.name, kind)}"
            items.append(_Line(comments=pre + _commented_out(h, reason)))
            ctx.differences.append(
                f"layer {v0.name!r}: V0 field '{h.name}' has no V1 equivalent for type "
                f"{kind!r} and is kept as a comment; Caffe drops it"
            )
            continue
        sub, fname = target
        text = _field_text(h, fname)
        if h.name == "pad" and pad_text is not None:
            text = fname + h.separator + pad_text
            pad_done = True
        if sub:
            group(sub).append(
                _Line(raw=_reindent(text, _line_indent(h), member), comments=pre, trailing=tr)
            )
        else:
            items.append(_Line(raw=_reindent(text, _line_indent(h), ci), comments=pre, trailing=tr))
    if pad_text is not None and not pad_done:
        group("convolution_param" if kind == "conv" else "pooling_param").append(
            _Line(raw="pad: " + pad_text)
        )
    return items
