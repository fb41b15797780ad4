"""``set-field``: a LayerParameter field by dotted path, typed by the schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewriter.text.cst import encode_string

from ..select import NetView
from .base import (
    Failure,
    Key,
    LayerEditor,
    Plan,
    StepContext,
    _children,
    _ensure_scalar,
    _last_index,
    _msg_value,
    _selection,
    f32,
    num,
)

__all__ = ["ANALYSIS_WARNINGS", "DOC", "KEYS", "SELECTION", "plan"]

DOC = (
    "set a LayerParameter field by dotted path (convolution_param.num_output), typed by "
    "the schema; missing blocks are created"
)
KEYS: dict[str, Key] = {
    "field": Key("str", required=True, doc="dotted field path"),
    "value": Key("scalar", required=True, doc="the value (a list for repeated fields)"),
}
SELECTION = "required"
ANALYSIS_WARNINGS = True

_STRUCTURAL_FIELDS = {"name", "type", "bottom", "top", "include", "exclude", "phase", "layer"}


def _field_chain(ctx: StepContext, dotted: str) -> tuple[list[str], Any]:
    """Field names and the leaf FieldInfo, checked against caffe.LayerParameter."""
    from rewriter.schema.bind import field_table
    from rewriter.schema.runtime import default_schema

    names = [n for n in dotted.split(".")]
    if not names or any(not n for n in names):
        raise ctx.error(f"bad field path '{dotted}'", "field")
    if names[0] in _STRUCTURAL_FIELDS:
        raise ctx.error(
            f"'{names[0]}' changes the net's structure; use rename-layer, rename-blob or "
            "remove-layer",
            "field",
        )
    desc = default_schema().descriptor("caffe.LayerParameter")
    info = None
    for depth, name in enumerate(names):
        table = field_table(desc)
        info = table.get(name)
        if info is None:
            from rewriter.recipes.common import _hint

            raise ctx.error(f"{desc.full_name} has no field '{name}'{_hint(name, table)}", "field")
        last = depth == len(names) - 1
        if not last:
            if info.message is None:
                raise ctx.error(f"'{name}' in '{dotted}' is not a message", "field")
            if info.repeated:
                raise ctx.error(f"'{name}' in '{dotted}' is repeated; cannot address it", "field")
            desc = info.message
        elif info.message is not None:
            raise ctx.error(f"'{dotted}' is a message; set one of its scalar fields", "field")
    return names, info


def _render_typed(ctx: StepContext, info: Any, value: Any) -> tuple[str, Any]:
    """(text, python value as the message holds it) for one scalar of the leaf's type."""
    t = info.full_type
    if info.enum_names is not None:
        if isinstance(value, str) and value in info.enum_names:
            return value, info.enum_names[value]
        raise ctx.error(
            f"{info.name} takes one of {', '.join(info.enum_names)}, not {value!r}", "value"
        )
    if t == "bool":
        if isinstance(value, bool):
            return ("true" if value else "false"), value
        raise ctx.error(f"{info.name} takes true or false, not {value!r}", "value")
    if t in ("string", "bytes"):
        if isinstance(value, str):
            return encode_string(value), value
        raise ctx.error(f"{info.name} takes a string, not {value!r}", "value")
    if t in ("float", "double"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return num(float(value)), float(value)
        raise ctx.error(f"{info.name} takes a number, not {value!r}", "value")
    if isinstance(value, int) and not isinstance(value, bool):
        from rewriter.schema.bind import _INT_RANGES

        lo, hi = _INT_RANGES.get(info.type, (-(2**63), 2**64))
        if not lo <= value <= hi:
            raise ctx.error(f"{value} is out of range for {info.name} ({t})", "value")
        return str(value), value
    raise ctx.error(f"{info.name} takes an integer ({t}), not {value!r}", "value")


def plan(ctx: StepContext) -> Plan:
    step, view = ctx.step, ctx.view
    plan = Plan(step, LayerEditor(view.doc))
    names, info = _field_chain(ctx, str(step.get("field")))
    value = step.get("value")
    chosen = _selection(ctx, plan)
    if info.repeated:
        values = value if isinstance(value, list) else [value]
        rendered = [_render_typed(ctx, info, v) for v in values]
    else:
        if isinstance(value, list):
            raise ctx.error(f"'{'.'.join(names)}' is not repeated; give one value", "value")
        rendered = [_render_typed(ctx, info, value)]
    want = [v for _, v in rendered]
    float_leaf = info.full_type in ("float", "double")
    for k in chosen:
        is_set, current = _msg_value(view.layer(k), names)
        if info.repeated:
            same = is_set and _same_values(current, want, float_leaf)
            if same:
                plan.declare(k, tuple(names))
                continue
            _set_repeated(ctx, plan, k, names, [t for t, _ in rendered])
        else:
            same = is_set and _same_values([current], want, float_leaf)
            _ensure_scalar(ctx, plan, k, names, rendered[0][0], same)
    path = tuple(names)

    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for k in chosen:
            is_set, got = _msg_value(after.layer(k), path)
            got_list = got if info.repeated else [got]
            if not is_set or not _same_values(got_list, want, float_leaf):
                out.append((after.names[k], f"{'.'.join(path)} is {got!r}, not {value!r}"))
        return out

    plan.promise = promise
    return plan


def _same_values(a: Sequence[Any], b: Sequence[Any], floats: bool) -> bool:
    if len(a) != len(b):
        return False
    if floats:
        return all(f32(float(x)) == f32(float(y)) for x, y in zip(a, b, strict=True))
    return list(a) == list(b)


def _set_repeated(ctx: StepContext, plan: Plan, k: int, names: list[str], texts: list[str]) -> None:
    view = ctx.view
    plan.declare(k, tuple(names))
    f = view.field(k)
    fpath = view.field_path(k)
    for depth, name in enumerate(names[:-1]):
        ci = _last_index(f, name)
        if ci is None:
            inner: list[tuple[str, Any]] = [(names[-1], t) for t in texts]
            value: Any = inner
            for outer in reversed(names[depth + 1 : -1]):
                value = [(outer, value)]
            plan.editor.insert(fpath, len(_children(f)), name, value)
            return
        f = _children(f)[ci]
        fpath = fpath + (ci,)
    leaf = names[-1]
    existing = [i for i, c in enumerate(_children(f)) if c.name == leaf]
    at = existing[0] if existing else len(_children(f))
    for i in existing:
        plan.editor.remove(fpath + (i,))
    for t in texts:
        plan.editor.insert(fpath, at, leaf, t)
