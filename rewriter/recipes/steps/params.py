"""Param-block helpers shared by the steps that edit ``lr_mult`` / ``decay_mult``
(freeze, unfreeze, set-lr, set-decay, zero-decay, zero-decay-frozen, remove-param-blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rewriter.errors import RewriterError
from rewriter.text.cst import MessageBody

from ..select import NetView
from .base import (
    _HEADER,
    Failure,
    Key,
    Plan,
    StepContext,
    _child,
    _insert_pos,
    _last_index,
    f32,
    num,
)

__all__ = ["BN_KEY", "_Params", "_mult_promise"]

BN_KEY = Key("bool", default=True, doc="BatchNorm layers: use_global_stats follows (default true)")


class _Params:
    """Edits of ``lr_mult`` / ``decay_mult`` in the param blocks of many layers."""

    def __init__(self, ctx: StepContext, plan: Plan) -> None:
        self.ctx = ctx
        self.view = ctx.view
        self.plan = plan
        self.ed = plan.editor
        self.new_blocks: dict[int, dict[int, dict[str, str]]] = {}
        self._blocks: dict[int, list[int]] = {}
        self._groups: dict[str, list[tuple[int, int]]] | None = None
        self._info: dict[int, tuple[int, tuple[str, ...]]] = {}
        self._where: Mapping[int, int] | None = None
        #: (layer, param, field) -> value already planned: a blob shared by name is reached
        #: once per sharer, but its param block must be written once
        self._planned: dict[tuple[int, int, str], float] = {}

    def blocks(self, k: int) -> list[int]:
        """Child indices of the layer's ``param`` blocks (message order)."""
        got = self._blocks.get(k)
        if got is None:
            layer = self.view.field(k)
            body = layer.body
            got = list(body.positions("param")) if isinstance(body, MessageBody) else []
            for i in got:
                if not isinstance(_child(layer, i).body, MessageBody):
                    raise self.ctx.error(
                        f"{self.view.describe(k)}: 'param' written as a list is not supported"
                    )
            if len(got) != len(self.view.layer(k).param):
                raise self.ctx.error(f"{self.view.describe(k)}: param blocks do not match")
            self._blocks[k] = got
        return got

    def info(self, k: int) -> tuple[int, tuple[str, ...]]:
        """(number of parameter blobs, their roles) as Caffe's Net::Init counts them."""
        got = self._info.get(k)
        if got is not None:
            return got
        view = self.view
        if self._where is None:
            self._where = view.graph_layers_of(self.ctx.phase)
        gi = self._where.get(k)
        if gi is not None:
            layer = view.graph(self.ctx.phase).layers[gi]
            got = (len(layer.params), tuple(p.role for p in layer.params))
        else:
            other = "TEST" if self.ctx.phase == "TRAIN" else "TRAIN"
            try:
                gi = view.graph_layers_of(other).get(k)
            except RewriterError:
                gi = None
            if gi is not None:
                layer = view.graph(other).layers[gi]
                got = (len(layer.params), tuple(p.role for p in layer.params))
        if got is None:
            from rewriter.caffe.layer_params import param_blob_count, param_roles

            msg = view.layer(k)
            count = param_blob_count(msg.type, msg, len(msg.bottom))
            if count is None:
                count = len(msg.param)
            got = (count, tuple(param_roles(msg.type, msg, len(msg.bottom), count)))
        self._info[k] = got
        return got

    def groups(self) -> dict[str, list[tuple[int, int]]]:
        if self._groups is None:
            g: dict[str, list[tuple[int, int]]] = {}
            for k, layer in enumerate(self.view.message.layer):
                for j, p in enumerate(layer.param):
                    if p.name:
                        g.setdefault(p.name, []).append((k, j))
            self._groups = g
        return self._groups

    def sharers(self, k: int, j: int) -> list[tuple[int, int]]:
        msg = self.view.layer(k)
        if j >= len(msg.param) or not msg.param[j].name:
            return [(k, j)]
        return self.groups()[msg.param[j].name]

    def current(self, k: int, j: int, name: str) -> float:
        msg = self.view.layer(k)
        if j < len(msg.param) and msg.param[j].HasField(name):
            return float(getattr(msg.param[j], name))
        return 1.0

    def set(self, k: int, j: int, name: str, value: float) -> bool:
        """Set ``param[j].<name>`` of layer k; True if the text changes."""
        view = self.view
        msg = view.layer(k)
        blocks = self.blocks(k)
        value32 = f32(value)
        planned = self._planned.get((k, j, name))
        if planned is not None:
            if planned != value32:
                raise self.ctx.error(
                    f"{view.describe(k)}: param {j} is shared by name and would get {name} "
                    f"{num(planned)} and {num(value)}; give its sharers the same value"
                )
            return False
        self._planned[(k, j, name)] = value32
        if j < len(blocks):
            p = msg.param[j]
            if p.HasField(name):
                if getattr(p, name) == value32:  # float fields hold float32 values already
                    return False
            elif value32 == 1.0:
                return False  # the default already
            layer = view.field(k)
            bpath = view.field_path(k) + (blocks[j],)
            block = _child(layer, blocks[j])
            ci = _last_index(block, name)
            if ci is not None:
                self.ed.set_value(bpath + (ci,), num(value))
            else:
                if name == "lr_mult":
                    at = _insert_pos(block, ("name",))
                else:
                    at = _insert_pos(block, ("name", "lr_mult"))
                self.ed.insert(bpath, at, name, num(value))
            self.plan.declare(k, ("param", name))
            return True
        if f32(value) == 1.0:
            return False
        self.new_blocks.setdefault(k, {}).setdefault(j, {})[name] = num(value)
        self.plan.declare(k, ("param", name))
        return True

    def flush(self) -> None:
        for k, wanted in self.new_blocks.items():
            layer = self.view.field(k)
            blocks = self.blocks(k)
            at = blocks[-1] + 1 if blocks else _insert_pos(layer, _HEADER)
            for j in range(len(blocks), max(wanted) + 1):
                values = wanted.get(j, {})
                items = [(n, values[n]) for n in ("lr_mult", "decay_mult") if n in values]
                if not items:
                    self.plan.declare(k, ("param",))  # an empty 'param {}' keeps positions
                self.ed.insert(self.view.field_path(k), at, "param", items)
        self.new_blocks.clear()


def _mult_promise(
    expected: dict[tuple[int, int], float], name: str
) -> Callable[[NetView], list[Failure]]:
    def promise(after: NetView) -> list[Failure]:
        out: list[Failure] = []
        for (k, j), value in sorted(expected.items()):
            msg = after.layer(k)
            got = float(getattr(msg.param[j], name)) if j < len(msg.param) else 1.0
            if j < len(msg.param) and not msg.param[j].HasField(name):
                got = 1.0
            if f32(got) != f32(value):
                out.append((after.names[k], f"param {j} {name} is {num(got)}, not {num(value)}"))
        return out

    return promise
