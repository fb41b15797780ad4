"""The walk: :func:`infer_shapes` over Caffe's initialised net, :func:`data_layer_shapes` for one
bottomless layer. Each layer's rule comes from :mod:`rewriter.caffe.shapes.table`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewriter import hints
from rewriter.errors import UsageError

from ..graph import AUTOMATIC_TOP, Graph, build_graph, upgrade_net_message
from .core import (
    LayerShapes,
    Shape,
    ShapeError,
    Shapes,
    ShapeUnknown,
    _Ctx,
    _Fail,
    _Options,
    _source_file,
    _Unknown,
    shape_string,
)
from .table import _RULES


def _resolve(
    net: Any,
    phase: str,
    stages: Sequence[str],
    level: int,
    message: Any,
    param_counts: Mapping[str, int] | None,
) -> tuple[Graph, Any]:
    """(graph, upgraded message) from a Graph(+message), a message, a CaffeFile or a Document."""
    from rewriter.text.cst import Document

    from ..netfile import NetFile

    if isinstance(net, Graph):
        if message is None:
            raise UsageError(
                "infer_shapes(graph) needs the net's message too: infer_shapes(graph, "
                "message=net_message), or pass the message or CaffeFile itself"
            )
        return net, upgrade_net_message(message, batch_norm=False)  # (no rule reads params)
    if isinstance(net, Document):
        from rewriter.schema.bind import bind

        bound = bind(net, root="caffe.NetParameter")
        bound.raise_for_errors()
        net = bound.message
    elif isinstance(net, NetFile):
        net = net.message
    upgraded = upgrade_net_message(net, batch_norm=False)  # the graph upgrades BatchNorm specs
    graph = build_graph(upgraded, phase, tuple(stages), level, param_counts)
    return graph, upgraded


def infer_shapes(
    net: Any,
    phase: str = "TEST",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    stages: Sequence[str] = (),
    level: int = 0,
    batch: int | None = None,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
    message: Any = None,
    param_counts: Mapping[str, int] | None = None,
) -> Shapes:
    """Every blob's shape and every layer's parameter shapes, as Caffe computes them.

    ``net`` is a ``caffe.NetParameter`` message (V0/V1 upgraded in memory), a
    :class:`~rewriter.api.CaffeFile`, a :class:`~rewriter.text.cst.Document`, or a
    :class:`~rewriter.caffe.graph.Graph` together with ``message=`` (the message it was built from).
    ``input_shapes`` gives the shape of tops of data/input layers by blob name (it wins over
    what the layer says). ``batch``, ``channels``, ``height``, ``width`` fill in what data
    layers leave to their database: ``batch`` replaces every data layer's batch size;
    ``channels`` defaults to 3 for ``Data`` layers (reported in ``assumptions``); ``height``
    and ``width`` are needed for ``Data``/``ImageData`` layers without ``crop_size`` or
    ``new_height``/``new_width``.

    Raises :class:`ShapeError` where a layer's check fails in Caffe; stops (``.stopped``) at
    the first layer whose shapes cannot be known.
    """
    phase = phase.upper()
    graph, upgraded = _resolve(net, phase, stages, level, message, param_counts)
    given = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    opts = _Options(batch, channels, height, width, given)
    blobs: dict[str, Shape] = {}
    out: list[LayerShapes] = []
    result = Shapes(graph.phase, blobs, out)
    msgs = upgraded.layer
    for layer in graph.layers:
        msg = msgs[layer.source_index] if layer.source_index is not None else None
        ltype = "Split" if layer.inserted_split else layer.type
        n_tops = len(layer.tops)
        bottom_shapes = [blobs[b] for b in layer.bottoms]
        rule = _RULES.get(ltype)
        ctx = _Ctx(layer.name, ltype, msg, bottom_shapes, n_tops, opts, layer.tops)
        try:
            if rule is None:
                raise _Unknown(f"layer type {ltype} is not known to this tool")
            tops, params = rule(ctx)
        except _Unknown as e:
            result.stopped = f"shape unknown after {layer.name} (type {ltype}): {e.why}"
            result.stopped_layer = layer.name
            result.stopped_type = ltype
            i = layer.index
            result.unknown_layers = [lay.name for lay in graph.layers[i:] if lay.params]
            return result
        except _Fail as e:
            raise ShapeError(
                str(e),
                e.location or _source_file(ltype),
                layer.name,
                ltype,
                layer_index=layer.source_index,
                field=e.field,
                index=e.index,
            ) from None
        except IndexError:
            raise ShapeError(
                f"layer needs more bottoms or axes than it has (bottoms: "
                f"{', '.join(shape_string(s) for s in bottom_shapes) or 'none'})",
                _source_file(ltype), layer.name, ltype,
            ) from None  # fmt: skip
        for dims in tops:
            for d in dims:
                if d < 0:
                    raise ShapeError(
                        f"Check failed: shape[i] >= 0 ({d} vs. 0)",
                        "blob.cpp",
                        layer.name,
                        ltype,
                    )
        for name, dims in zip(layer.tops, tops, strict=False):
            if name != AUTOMATIC_TOP:
                blobs[name] = dims
        if len(layer.params) < len(params):
            # the graph (Net::Init's blob count, e.g. a param_counts override) is the authority
            params = params[: len(layer.params)]
        # the graph named each blob already (param_roles with the same type, message and
        # bottoms; a list whose prefixes agree whatever the count)
        roles = tuple([prm.role for prm in layer.params[: len(params)]]) if msg is not None else ()
        out.append(
            LayerShapes(
                layer.name,
                ltype,
                layer.index,
                layer.inserted_split,
                tuple(layer.bottoms),
                tuple(layer.tops[: len(tops)]),
                tuple(bottom_shapes),
                tuple(tops),
                tuple(params),
                roles,
                tuple(ctx.assumptions),
            )
        )
    return result


def data_layer_shapes(
    layer: Any,
    *,
    batch: int | None = None,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[list[Shape], list[str]]:
    """Top shapes of one bottomless (data or input) ``LayerParameter``, and the assumptions made.

    Raises :class:`ShapeUnknown` (with what to pass) when the definition does not say, and
    :class:`ShapeError` when Caffe's own check fails.
    """
    given = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    opts = _Options(batch, channels, height, width, given)
    tops = tuple(layer.top)
    ctx = _Ctx(str(layer.name), str(layer.type), layer, [], len(tops), opts, tops)
    rule = _RULES.get(ctx.type)
    try:
        if rule is None:
            if all(t in given for t in tops):
                return [given[t] for t in tops], []
            missing = [t for t in tops if t not in given]
            raise _Unknown(
                f"layer type {ctx.type} is not known to this tool; {hints.shape(missing)}"
            )
        shapes, _ = rule(ctx)
    except _Unknown as e:
        raise ShapeUnknown(f"layer '{ctx.name}' (type {ctx.type}): {e.why}") from None
    except _Fail as e:
        raise ShapeError(str(e), e.location or _source_file(ctx.type), ctx.name, ctx.type) from None
    return shapes, ctx.assumptions
