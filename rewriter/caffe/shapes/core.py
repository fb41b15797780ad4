"""The shapes' result and errors (:class:`Shapes`, :class:`ShapeError`, :class:`ShapeUnknown`),
the per-layer context and the CHECK helpers every layer family's rules use, and the text
rendering.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rewriter import hints
from rewriter.errors import RewriterError

from ..graph import CaffeError

__all__ = [
    "DATA_LAYER_TYPES",
    "LayerShapes",
    "Shape",
    "ShapeError",
    "ShapeUnknown",
    "Shapes",
    "shape_string",
]


Shape = tuple[int, ...]


#: Layer types that read their tops from outside the net (no bottoms).
DATA_LAYER_TYPES: frozenset[str] = frozenset(
    {"Data", "ImageData", "WindowData", "HDF5Data", "MemoryData", "DummyData", "Input", "Python"}
)


class ShapeError(CaffeError):
    """A layer's shape check fails: Caffe would stop with ``message`` (its FATAL text)."""

    def __init__(
        self,
        message: str,
        location: str,
        layer: str = "",
        layer_type: str = "",
        *,
        layer_index: int | None = None,
        field: str | None = None,
        index: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(
            message,
            location,
            layer=layer or None,
            layer_index=layer_index,
            field=field,
            index=index,
            hint=hint,
        )
        self.layer = layer
        self.layer_type = layer_type

    def __str__(self) -> str:
        if self.diagnostic is not None:
            return self.diagnostic.render()
        where = f"layer '{self.layer}' (type {self.layer_type}): " if self.layer else ""
        return f"{where}{self.location}: {self.message}"


class ShapeUnknown(RewriterError):
    """The shape of a data layer's top cannot be known from the definition alone."""


class _Unknown(Exception):
    """Internal: the layer's output shape cannot be known from the definition."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def shape_string(shape: Sequence[int]) -> str:
    """``Blob::shape_string()``: ``"2 3 4 (24)"``; a scalar blob is ``"(1)"``."""
    return "".join(f"{d} " for d in shape) + f"({math.prod(shape)})"


@dataclass(frozen=True)
class LayerShapes:
    """One layer of the initialised net with the shapes Caffe gives its blobs."""

    name: str
    type: str
    index: int
    inserted_split: bool
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    bottom_shapes: tuple[Shape, ...]
    top_shapes: tuple[Shape, ...]
    #: learnable blob shapes, in blob order
    params: tuple[Shape, ...]
    param_roles: tuple[str, ...]
    #: what had to be assumed (e.g. a data layer's channel count)
    assumptions: tuple[str, ...] = ()

    @property
    def param_count(self) -> int:
        return sum(math.prod(p) for p in self.params)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "index": self.index,
            "inserted_split": self.inserted_split,
            "bottoms": [
                {"blob": b, "shape": list(s)}
                for b, s in zip(self.bottoms, self.bottom_shapes, strict=False)
            ],
            "tops": [
                {"blob": t, "shape": list(s)}
                for t, s in zip(self.tops, self.top_shapes, strict=False)
            ],
            "params": [
                {"role": r, "shape": list(s), "count": math.prod(s)}
                for r, s in zip(self.param_roles, self.params, strict=False)
            ],
            "param_count": self.param_count,
            "assumptions": list(self.assumptions),
        }


@dataclass
class Shapes:
    """Result of :func:`infer_shapes`."""

    phase: str
    #: blob name (as Caffe wired it, inserted split tops included) -> shape
    blobs: dict[str, Shape]
    #: layers in net order, up to (not including) the one where inference stopped
    layers: list[LayerShapes]
    #: ``"shape unknown after <layer> (type <T>): <why>"`` when the walk stopped early
    stopped: str | None = None
    stopped_layer: str | None = None
    stopped_type: str | None = None
    #: layer names whose parameter shapes could not be computed (at and after the stop)
    unknown_layers: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.stopped is None

    def layer(self, name: str) -> LayerShapes:
        for ls in self.layers:
            if ls.name == name:
                return ls
        raise KeyError(name)

    def params_of(self, name: str) -> tuple[Shape, ...] | None:
        """Parameter shapes of the first layer called ``name`` (None when unknown)."""
        for ls in self.layers:
            if ls.name == name:
                return ls.params
        return None

    @property
    def param_count(self) -> int:
        return sum(ls.param_count for ls in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "complete": self.complete,
            "stopped": self.stopped,
            "stopped_layer": self.stopped_layer,
            "stopped_type": self.stopped_type,
            "param_count": self.param_count,
            "layers": [ls.to_json() for ls in self.layers],
            "blobs": {k: list(v) for k, v in self.blobs.items()},
        }


def _has(msg: Any, name: str) -> bool:
    return bool(msg.HasField(name))


def _count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    return math.prod(shape[start:end])


def _cpp_div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _check(cond: bool, message: str, location: str = "") -> None:
    if not cond:
        raise _Fail(message, location)


class _Fail(Exception):
    """Internal: a CHECK failed in the current layer; turned into a ShapeError.

    ``location`` names the source file when it is not the layer's own (``blob.hpp`` for
    ``CanonicalAxisIndex`` and the legacy accessors, ``blob.cpp`` for ``Blob::Reshape``).
    """

    def __init__(self, message: str, location: str = "") -> None:
        super().__init__(message)
        self.location = location
        #: the field that causes it, when the rule knows better than the message says
        self.field: str | None = None
        self.index: int | None = None


@contextmanager
def _blame(field_path: str, index: int | None = None) -> Iterator[None]:
    """A CHECK failing inside is caused by ``field_path`` (occurrence ``index``)."""
    try:
        yield
    except _Fail as e:
        e.field, e.index = field_path, index
        raise


def _check_eq(a: int, b: int, expr: str, message: str = "", location: str = "") -> None:
    if a != b:
        raise _Fail(f"Check failed: {expr} ({a} vs. {b}) {message}".rstrip(), location)


def _check_op(ok: bool, a: int, b: int, expr: str, message: str = "", location: str = "") -> None:
    if not ok:
        raise _Fail(f"Check failed: {expr} ({a} vs. {b}) {message}".rstrip(), location)


def _canonical(axis: int, shape: Sequence[int]) -> int:
    """``Blob::CanonicalAxisIndex`` (its CHECKs live in ``blob.hpp``)."""
    n = len(shape)
    if -n <= axis < n:  # the usual case: no message to build
        return axis + n if axis < 0 else axis
    msg = f"axis {axis} out of range for {n}-D Blob with shape {shape_string(shape)}"
    _check_op(axis >= -n, axis, -n, "axis_index >= -num_axes()", msg, "blob.hpp")
    _check_op(axis < n, axis, n, "axis_index < num_axes()", msg, "blob.hpp")
    return axis + n if axis < 0 else axis


def _legacy(shape: Sequence[int]) -> None:
    """``Blob::LegacyShape`` (``num()``, ``channels()``, ``height()``, ``width()``): refuses a
    blob with more than 4 axes; fewer axes read as 1."""
    n = len(shape)
    _check_op(
        n <= 4,
        n,
        4,
        "num_axes() <= 4",
        "Cannot use legacy accessors on Blobs with > 4 axes.",
        "blob.hpp",
    )


def _nonnegative(dims: Iterable[int]) -> None:
    """``Blob::Reshape``'s ``CHECK_GE(shape[i], 0)``."""
    for d in dims:
        _check_op(d >= 0, d, 0, "shape[i] >= 0", location="blob.cpp")


@dataclass
class _Ctx:
    name: str
    type: str
    msg: Any
    bottoms: list[Shape]
    n_tops: int
    opts: _Options
    top_names: tuple[str, ...]
    assumptions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Options:
    batch: int | None
    channels: int | None
    height: int | None
    width: int | None
    input_shapes: Mapping[str, Shape]
    #: :func:`_memoized` answers of this walk
    memo: dict[Any, tuple[tuple[Shape, ...], tuple[Shape, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )


_Result = tuple[list[Shape], list[Shape]]  # (top shapes, param shapes)


def _memoized(ctx: _Ctx, field_name: str, rule: Callable[[_Ctx], _Result]) -> _Result:
    """``rule``'s answer for a layer set up like an earlier one of the walk: same type, same
    ``field_name`` sub-message (by its bytes), same bottom shapes and top count: all that the
    rule reads (only for rules that make no assumptions). A deep net repeats a few blocks
    thousands of times; a failing check is never stored, so it is raised every time."""
    key = (ctx.type, getattr(ctx.msg, field_name).SerializeToString(), *ctx.bottoms, ctx.n_tops)
    memo = ctx.opts.memo
    hit = memo.get(key)
    if hit is None:
        tops, params = rule(ctx)
        hit = memo[key] = (tuple(tops), tuple(params))
    return list(hit[0]), list(hit[1])


def _given(ctx: _Ctx, j: int) -> Shape | None:
    if j < len(ctx.top_names):
        return ctx.opts.input_shapes.get(ctx.top_names[j])
    return None


def _given_or_unknown(ctx: _Ctx, why: str) -> _Result:
    tops: list[Shape] = []
    for j in range(ctx.n_tops):
        given = _given(ctx, j)
        if given is None:
            missing = [t for t in ctx.top_names if t not in ctx.opts.input_shapes]
            raise _Unknown(f"{why}; {hints.shape(missing)}")
        tops.append(given)
    return tops, []


def _shape_of(blob_shape: Any) -> Shape:
    return tuple(int(d) for d in blob_shape.dim)


def _legacy_dim(shape: Sequence[int], i: int) -> int:
    """``num()``/``channels()``/``height()``/``width()`` of ``shape`` (index ``i``)."""
    _legacy(shape)
    return shape[i] if i < len(shape) else 1


# Source file of each layer type's checks (for ShapeError.location).
_SOURCE = {
    "Convolution": "base_conv_layer.cpp",
    "Deconvolution": "base_conv_layer.cpp",
    "Im2col": "im2col_layer.cpp",
    "InnerProduct": "inner_product_layer.cpp",
    "SoftmaxWithLoss": "softmax_loss_layer.cpp",
    "LSTM": "recurrent_layer.cpp",
    "RNN": "recurrent_layer.cpp",
    "Data": "data_layer.cpp",
    "ImageData": "image_data_layer.cpp",
    "WindowData": "window_data_layer.cpp",
    "MemoryData": "memory_data_layer.cpp",
    "DummyData": "dummy_data_layer.cpp",
    "Input": "input_layer.cpp",
    # type names whose file is not their snake_case
    "AbsVal": "absval_layer.cpp",
    "ArgMax": "argmax_layer.cpp",
    "BNLL": "bnll_layer.cpp",
    "ELU": "elu_layer.cpp",
    "HDF5Data": "hdf5_data_layer.cpp",
    "HDF5Output": "hdf5_output_layer.cpp",
    "LRN": "lrn_layer.cpp",
    "LSTMUnit": "lstm_unit_layer.cpp",
    "MVN": "mvn_layer.cpp",
    "PReLU": "prelu_layer.cpp",
    "Python": "python_layer.hpp",
    "ReLU": "relu_layer.cpp",
    "SPP": "spp_layer.cpp",
    "TanH": "tanh_layer.cpp",
}


def _source_file(layer_type: str) -> str:
    if layer_type in _SOURCE:
        return _SOURCE[layer_type]
    snake = "".join(("_" + c.lower()) if c.isupper() else c for c in layer_type).lstrip("_")
    return f"{snake}_layer.cpp"


def render_text(shapes: Shapes, show_splits: bool = False) -> list[str]:
    """Human lines: one per layer with top shapes, then parameter shapes and counts."""
    lines: list[str] = []
    width = max((len(ls.name) for ls in shapes.layers), default=4)
    for ls in shapes.layers:
        if ls.inserted_split and not show_splits:
            continue
        tops = ", ".join(f"{t} {_dims(s)}" for t, s in zip(ls.tops, ls.top_shapes, strict=False))
        lines.append(f"{ls.name:<{width}}  {ls.type:<14} -> {tops or '(no tops)'}")
        for role, p in zip(ls.param_roles, ls.params, strict=False):
            lines.append(f"{'':<{width}}    {role}: {_dims(p)} = {math.prod(p):,}")
        for note in ls.assumptions:
            lines.append(f"{'':<{width}}    note: {note}")
    lines.append(f"total learnable parameters: {shapes.param_count:,}")
    if shapes.stopped:
        lines.append(shapes.stopped)
    return lines


def _dims(shape: Iterable[int]) -> str:
    dims = list(shape)
    return "(" + ", ".join(map(str, dims)) + ")" if dims else "() scalar"
