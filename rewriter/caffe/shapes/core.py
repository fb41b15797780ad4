"""Blob and parameter shapes, computed the way Caffe's layers compute them in ``Reshape``.

``infer_shapes(net, phase)`` walks Caffe's initialised net
(:func:`rewriter.caffe.graph.build_graph`:
phase filtering, inserted splits) in order and applies, per layer, the arithmetic of the BVLC
layer's ``LayerSetUp``/``Reshape`` (``src/caffe/layers/*.cpp``), including the checks Caffe makes
there. The rules that decide most shapes:

* convolution: ``out = (in + 2*pad - (dilation*(kernel-1)+1)) / stride + 1`` with C++ integer
  division; deconvolution: ``out = stride*(in-1) + dilation*(kernel-1)+1 - 2*pad``;
* pooling: ``out = ceil((in + 2*pad - kernel) / stride) + 1`` (``floor`` with
  ``round_mode: FLOOR``), then, when there is padding and the last window would start in the
  padding (``(out-1)*stride >= in + pad``), one less; global pooling uses the whole plane;
* inner product: ``axis`` splits the bottom into "batch" dims and ``K = count(axis)``.

A check Caffe makes that fails raises :class:`ShapeError` (a
:class:`~rewriter.caffe.graph.CaffeError`)
with Caffe's text. A layer whose arithmetic is not known here (a fork type, a Python layer, an
HDF5 source without a given shape) stops the walk: :attr:`Shapes.stopped` says
``shape unknown after <layer> (type <T>)`` and every blob before it keeps its shape. Nothing is
guessed: where a data layer's size lives in its database (a ``Data`` layer without
``crop_size``), the caller passes ``height``/``width`` (and ``channels``, which defaults to 3 and
is reported as an assumption).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rewriter import hints
from rewriter.errors import RewriterError, UsageError

from ..graph import AUTOMATIC_TOP, CaffeError, Graph, build_graph, upgrade_net_message
from ..layer_params import LOSS_LAYER_TYPES, param_roles

__all__ = [
    "DATA_LAYER_TYPES",
    "LayerShapes",
    "Shape",
    "ShapeError",
    "ShapeUnknown",
    "Shapes",
    "data_layer_shapes",
    "infer_shapes",
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


# --------------------------------------------------------------------------- helpers


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


_Result = tuple[list[Shape], list[Shape]]  # (top shapes, param shapes)


# --------------------------------------------------------------------------- data layers


def _given(ctx: _Ctx, j: int) -> Shape | None:
    if j < len(ctx.top_names):
        return ctx.opts.input_shapes.get(ctx.top_names[j])
    return None


def _image_tops(ctx: _Ctx, batch: int, channels: int, height: int, width: int) -> _Result:
    tops: list[Shape] = []
    for j in range(ctx.n_tops):
        given = _given(ctx, j)
        if given is not None:
            tops.append(given)
        elif j == 0:
            tops.append((batch, channels, height, width))
        else:
            tops.append((batch,))  # label: vector<int> label_shape(1, batch_size)
    return tops, []


def _batch(ctx: _Ctx, value: int | None, what: str) -> int:
    if ctx.opts.batch is not None:
        return ctx.opts.batch
    if value:
        return value
    ctx.assumptions.append(f"{what} unset: batch 1 assumed")
    return 1


def _crop(msg: Any, legacy: Any | None) -> int:
    crop = int(msg.transform_param.crop_size) if _has(msg, "transform_param") else 0
    if not crop and legacy is not None:
        crop = int(legacy.crop_size)
    return crop


def _data_channels(ctx: _Ctx, default_note: str) -> int:
    if ctx.opts.channels is not None:
        return ctx.opts.channels
    tp = ctx.msg.transform_param
    if tp.force_gray:
        return 1
    if tp.force_color:
        return 3
    ctx.assumptions.append(default_note)
    return 3


def _hw(ctx: _Ctx, crop: int, new_h: int, new_w: int, where: str) -> tuple[int, int]:
    if crop:
        return crop, crop
    h = ctx.opts.height or new_h
    w = ctx.opts.width or new_w
    if h and w:
        return h, w
    raise _Unknown(
        f"the image size of a {ctx.type} layer without crop_size lives in {where}; "
        + hints.image_size()
    )


def _data(ctx: _Ctx) -> _Result:
    dp = ctx.msg.data_param
    batch = _batch(ctx, int(dp.batch_size), "data_param.batch_size")
    if all(_given(ctx, j) is not None for j in range(ctx.n_tops)):
        return [_given(ctx, j) or () for j in range(ctx.n_tops)], []
    channels = _data_channels(
        ctx, "channels assumed 3 (stored in the database; give them: --set channels=C)"
    )
    h, w = _hw(ctx, _crop(ctx.msg, dp), 0, 0, "the database")
    return _image_tops(ctx, batch, channels, h, w)


def _image_data(ctx: _Ctx) -> _Result:
    ip = ctx.msg.image_data_param
    batch = _batch(ctx, int(ip.batch_size), "image_data_param.batch_size")
    channels = ctx.opts.channels if ctx.opts.channels is not None else (3 if ip.is_color else 1)
    nh, nw = int(ip.new_height), int(ip.new_width)
    h, w = _hw(
        ctx, _crop(ctx.msg, ip), nh if nh and nw else 0, nw if nh and nw else 0, "the image files"
    )
    return _image_tops(ctx, batch, channels, h, w)


def _window_data(ctx: _Ctx) -> _Result:
    wp = ctx.msg.window_data_param
    batch = _batch(ctx, int(wp.batch_size), "window_data_param.batch_size")
    crop = _crop(ctx.msg, wp)
    _check(crop > 0, "Check failed: crop_size > 0 (0 vs. 0)")
    channels = ctx.opts.channels or 3
    return _image_tops(ctx, batch, channels, crop, crop)


def _memory_data(ctx: _Ctx) -> _Result:
    mp = ctx.msg.memory_data_param
    batch = ctx.opts.batch or int(mp.batch_size)
    c, h, w = int(mp.channels), int(mp.height), int(mp.width)
    _check(
        batch > 0 and c > 0 and h > 0 and w > 0,
        "Check failed: batch_size_ * size_ > 0 (0 vs. 0) batch_size, channels, height, and "
        "width must be specified and positive in memory_data_param",
    )
    return _image_tops(ctx, batch, c, h, w)


def _given_or_unknown(ctx: _Ctx, why: str) -> _Result:
    tops: list[Shape] = []
    for j in range(ctx.n_tops):
        given = _given(ctx, j)
        if given is None:
            missing = [t for t in ctx.top_names if t not in ctx.opts.input_shapes]
            raise _Unknown(f"{why}; {hints.shape(missing)}")
        tops.append(given)
    return tops, []


def _hdf5_data(ctx: _Ctx) -> _Result:
    _check(
        not _has(ctx.msg, "transform_param"),
        "Check failed: !this->layer_param_.has_transform_param() HDF5Data does not transform data.",
    )
    return _given_or_unknown(ctx, "HDF5Data shapes are stored in the HDF5 files")


def _python(ctx: _Ctx) -> _Result:
    if ctx.bottoms:
        raise _Unknown("a Python layer's shapes are decided by user code")
    return _given_or_unknown(ctx, "a Python data layer's shapes are decided by user code")


def _shape_of(blob_shape: Any) -> Shape:
    return tuple(int(d) for d in blob_shape.dim)


def _input(ctx: _Ctx) -> _Result:
    shapes = ctx.msg.input_param.shape
    n = len(shapes)
    _check(
        n in (0, 1, ctx.n_tops),
        "Check failed: num_shape == 0 || num_shape == 1 || num_shape == num_top Must specify "
        "'shape' once, once per top blob, or 0 times (e.g. for an input layer with shapes "
        "specified at run time).",
    )
    tops: list[Shape] = []
    for j in range(ctx.n_tops):
        given = _given(ctx, j)
        if given is not None:
            tops.append(given)
        elif n == 0:
            raise _Unknown(
                "the Input layer gives no shape (set at run time); "
                + hints.shape([ctx.top_names[j]])
            )
        else:
            tops.append(_shape_of(shapes[0 if n == 1 else j]))
    return tops, []


def _dummy_data(ctx: _Ctx) -> _Result:
    p = ctx.msg.dummy_data_param
    num_top = ctx.n_tops
    nf = len(p.data_filler)
    _check(
        nf in (0, 1, num_top),
        f"Check failed: num_data_filler == 0 || num_data_filler == 1 || num_data_filler == "
        f"num_top Number of data fillers must be 0, 1 or equal to the number of tops: "
        f"{num_top}; you specified {nf} data fillers.",
    )
    legacy = any(len(getattr(p, k)) for k in ("num", "channels", "height", "width"))
    tops: list[Shape] = []
    if legacy:
        _check(
            len(p.shape) == 0,
            "Check failed: !shape_specified Both shape and legacy fields were specified",
        )
        for k in ("num", "channels", "height", "width"):
            size = len(getattr(p, k))
            _check(
                size in (1, num_top),
                f"Check failed: param.{k}_size() == 1 || param.{k}_size() == num_top Must "
                f"specify '{k}' once, or once per top blob ({num_top}); specified {size}.",
            )
        for j in range(num_top):
            dims = []
            for k in ("num", "channels", "height", "width"):
                vals = getattr(p, k)
                dims.append(int(vals[0 if len(vals) == 1 else j]))
            tops.append(tuple(dims))
    else:
        ns = len(p.shape)
        _check(
            ns in (1, num_top),
            f"Check failed: shape_count == 1 || shape_count == num_top Must specify 'shape' "
            f"once, or once per top blob ({num_top}); specified {ns}.",
        )
        for j in range(num_top):
            tops.append(_shape_of(p.shape[0 if ns == 1 else j]))
    return [_given(ctx, j) or tops[j] for j in range(num_top)], []


# --------------------------------------------------------------------------- vision layers


def _spatial_param(
    values: Sequence[int],
    has_hw: bool,
    hw: tuple[int, int],
    n_sp: int,
    what: str,
    default: int,
    end: str = ").",
) -> list[int]:
    """Kernel, stride, pad or dilation per spatial axis. ``end``: Im2col's copy of these
    messages ends kernel/stride/pad's count sentence with ``);`` instead of ``).``."""
    if has_hw:
        short = "kernel" if what == "kernel_size" else what
        _check_eq(
            n_sp,
            2,
            "num_spatial_axes_ == 2",
            f"{short}_h & {short}_w can only be used for 2D convolution.",
        )
        _check_eq(
            0,
            len(values),
            f"0 == conv_param.{what}_size()",
            f"Either {what} or {short}_h/w should be specified; not both.",
        )
        return [hw[0], hw[1]]
    n = len(values)
    if what == "kernel_size":
        _check(
            n == 1 or n == n_sp,
            f"Check failed: num_kernel_dims == 1 || num_kernel_dims == num_spatial_axes_ "
            f"kernel_size must be specified once, or once per spatial dimension (kernel_size "
            f"specified {n} times; {n_sp} spatial dims{end}",
        )
    else:
        _check(
            n in (0, 1, n_sp),
            f"Check failed: num_{what}_dims == 0 || num_{what}_dims == 1 || num_{what}_dims == "
            f"num_spatial_axes_ {what} must be specified once, or once per spatial dimension "
            f"({what} specified {n} times; {n_sp} spatial dims{end}",
        )
    return [default if n == 0 else int(values[0 if n == 1 else i]) for i in range(n_sp)]


def _conv_geometry(ctx: _Ctx) -> tuple[int, list[int], list[int], list[int], list[int]]:
    cp = ctx.msg.convolution_param
    bottom = ctx.bottoms[0]
    axis = _canonical(int(cp.axis), bottom)
    n_sp = len(bottom) - axis - 1
    if ctx.type == "Im2col":
        _check_op(n_sp >= 1, n_sp, 1, "num_spatial_axes_ >= 1")
    _check_op(n_sp >= 0, n_sp, 0, "num_spatial_axes_ >= 0")
    end = ");" if ctx.type == "Im2col" else ")."
    kernel = _spatial_param(
        list(cp.kernel_size),
        _has(cp, "kernel_h") or _has(cp, "kernel_w"),
        (int(cp.kernel_h), int(cp.kernel_w)),
        n_sp,
        "kernel_size",
        0,
        end,
    )
    for k in kernel:
        _check_op(k > 0, k, 0, "kernel_shape_data[i] > 0", "Filter dimensions must be nonzero.")
    stride_hw = _has(cp, "stride_h") or _has(cp, "stride_w")
    stride = _spatial_param(
        list(cp.stride),
        stride_hw,
        (int(cp.stride_h), int(cp.stride_w)),
        n_sp,
        "stride",
        1,
        end,
    )
    for s in stride:
        if stride_hw:
            # Caffe checks only stride, not stride_h/stride_w: it divides by zero (SIGFPE)
            _check(
                s > 0,
                "stride_h/stride_w is 0: Caffe does not check this and dies of a division by "
                "zero (SIGFPE) while setting the layer up",
            )
        _check_op(s > 0, s, 0, "stride_data[i] > 0", "Stride dimensions must be nonzero.")
    pad = _spatial_param(
        list(cp.pad),
        _has(cp, "pad_h") or _has(cp, "pad_w"),
        (int(cp.pad_h), int(cp.pad_w)),
        n_sp,
        "pad",
        0,
        end,
    )
    dilation = _spatial_param(list(cp.dilation), False, (0, 0), n_sp, "dilation", 1)
    return axis, kernel, stride, pad, dilation


def _conv(ctx: _Ctx, deconv: bool) -> _Result:
    cp = ctx.msg.convolution_param
    bottom = ctx.bottoms[0]
    axis, kernel, stride, pad, dilation = _conv_geometry(ctx)
    channels = bottom[axis]
    num_output = int(cp.num_output)
    group = int(cp.group)
    _check_op(num_output > 0, num_output, 0, "num_output_ > 0")
    _check_eq(channels % group, 0, "channels_ % group_ == 0")
    _check_eq(
        num_output % group,
        0,
        "num_output_ % group_ == 0",
        "Number of output should be multiples of group.",
    )
    for j, b in enumerate(ctx.bottoms[1:], 1):
        _check(
            b == bottom,
            "Check failed: bottom[0]->shape() == bottom[bottom_id]->shape() shape mismatch - "
            f"bottom[0]: {shape_string(bottom)} vs. bottom[{j}]: {shape_string(b)}",
        )
    if deconv:
        weight = (channels, num_output // group, *kernel)
    else:
        weight = (num_output, channels // group, *kernel)
    params: list[Shape] = [weight]
    if cp.bias_term:
        params.append((num_output,))
    out: list[int] = []
    for i, size in enumerate(bottom[axis + 1 :]):
        extent = dilation[i] * (kernel[i] - 1) + 1
        if deconv:
            out.append(stride[i] * (size - 1) + extent - 2 * pad[i])
        else:
            out.append(_cpp_div(size + 2 * pad[i] - extent, stride[i]) + 1)
    _nonnegative(out)
    top = (*bottom[:axis], num_output, *out)
    return [top] * ctx.n_tops, params


def _convolution(ctx: _Ctx) -> _Result:
    return _conv(ctx, deconv=False)


def _deconvolution(ctx: _Ctx) -> _Result:
    return _conv(ctx, deconv=True)


def _im2col(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    axis, kernel, stride, pad, dilation = _conv_geometry(ctx)
    out = [
        _cpp_div(size + 2 * pad[i] - (dilation[i] * (kernel[i] - 1) + 1), stride[i]) + 1
        for i, size in enumerate(bottom[axis + 1 :])
    ]
    top = (*bottom[:axis], bottom[axis] * math.prod(kernel), *out)
    return [top], []


def _pool_output(size: int, pad: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    num = size + 2 * pad - kernel
    # static_cast<int>(ceil(float(num) / stride)) + 1 (or floor)
    q = -((-num) // stride) if ceil_mode else num // stride
    return q + 1


def _pooling(ctx: _Ctx) -> _Result:
    pp = ctx.msg.pooling_param
    bottom = ctx.bottoms[0]
    global_pooling = bool(pp.global_pooling)
    if global_pooling:
        _check(
            not (_has(pp, "kernel_size") or _has(pp, "kernel_h") or _has(pp, "kernel_w")),
            "Check failed: !(pool_param.has_kernel_size() || pool_param.has_kernel_h() || "
            "pool_param.has_kernel_w()) With Global_pooling: true Filter size cannot specified",
        )
    else:
        _check(
            (not _has(pp, "kernel_size")) != (not (_has(pp, "kernel_h") and _has(pp, "kernel_w"))),
            "Check failed: !pool_param.has_kernel_size() != !(pool_param.has_kernel_h() && "
            "pool_param.has_kernel_w()) Filter size is kernel_size OR kernel_h and kernel_w; "
            "not both",
        )
    _check(
        (not _has(pp, "pad") and _has(pp, "pad_h") and _has(pp, "pad_w"))
        or (not _has(pp, "pad_h") and not _has(pp, "pad_w")),
        "Check failed: (!pool_param.has_pad() && pool_param.has_pad_h() && "
        "pool_param.has_pad_w()) || (!pool_param.has_pad_h() && !pool_param.has_pad_w()) "
        "pad is pad OR pad_h and pad_w are required.",
    )
    _check(
        (not _has(pp, "stride") and _has(pp, "stride_h") and _has(pp, "stride_w"))
        or (not _has(pp, "stride_h") and not _has(pp, "stride_w")),
        "Check failed: (!pool_param.has_stride() && pool_param.has_stride_h() && "
        "pool_param.has_stride_w()) || (!pool_param.has_stride_h() && "
        "!pool_param.has_stride_w()) Stride is stride OR stride_h and stride_w are required.",
    )
    if global_pooling:
        # LayerSetUp reads bottom[0]->height() and width(): the legacy accessors
        _legacy(bottom)
        kh, kw = (bottom[i] if i < len(bottom) else 1 for i in (2, 3))
    elif _has(pp, "kernel_size"):
        kh = kw = int(pp.kernel_size)
    else:
        kh, kw = int(pp.kernel_h), int(pp.kernel_w)
    if not global_pooling:
        _check_op(kh > 0, kh, 0, "kernel_h_ > 0", "Filter dimensions cannot be zero.")
        _check_op(kw > 0, kw, 0, "kernel_w_ > 0", "Filter dimensions cannot be zero.")
    ph, pw = (int(pp.pad_h), int(pp.pad_w)) if _has(pp, "pad_h") else (int(pp.pad),) * 2
    sh, sw = (int(pp.stride_h), int(pp.stride_w)) if _has(pp, "stride_h") else (int(pp.stride),) * 2
    if global_pooling:
        _check(
            ph == 0 and pw == 0 and sh == 1 and sw == 1,
            "Check failed: pad_h_ == 0 && pad_w_ == 0 && stride_h_ == 1 && stride_w_ == 1 "
            "With Global_pooling: true; only pad = 0 and stride = 1",
        )
    if ph or pw:
        method = int(pp.pool)
        _check(
            method in (0, 1),
            "Check failed: pool == AVE || pool == MAX "
            "Padding implemented only for average and max pooling.",
        )
        _check_op(ph < kh, ph, kh, "pad_h_ < kernel_h_")
        _check_op(pw < kw, pw, kw, "pad_w_ < kernel_w_")
    # Reshape, after LayerSetUp's checks
    _check_eq(
        4,
        len(bottom),
        "4 == bottom[0]->num_axes()",
        "Input must have 4 axes, corresponding to (num, channels, height, width)",
    )
    n, c, h, w = bottom
    ceil_mode = int(pp.round_mode) == 0
    oh = _pool_output(h, ph, kh, sh, ceil_mode)
    ow = _pool_output(w, pw, kw, sw, ceil_mode)
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
        _check_op(
            (oh - 1) * sh < h + ph,
            (oh - 1) * sh,
            h + ph,
            "(pooled_height_ - 1) * stride_h_ < height_ + pad_h_",
        )
        _check_op(
            (ow - 1) * sw < w + pw,
            (ow - 1) * sw,
            w + pw,
            "(pooled_width_ - 1) * stride_w_ < width_ + pad_w_",
        )
    top = (n, c, oh, ow)
    return [top] * ctx.n_tops, []


def _spp(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    # LayerSetUp reads num(), channels(), height(), width() (the legacy accessors)
    h, w = _legacy_dim(bottom, 2), _legacy_dim(bottom, 3)
    _check_op(h > 0, h, 0, "bottom_h_ > 0", "Input dimensions cannot be zero.")
    _check_op(w > 0, w, 0, "bottom_w_ > 0", "Input dimensions cannot be zero.")
    _check_eq(
        4,
        len(bottom),
        "4 == bottom[0]->num_axes()",
        "Input must have 4 axes, corresponding to (num, channels, height, width)",
    )
    height = int(ctx.msg.spp_param.pyramid_height)
    n, c = bottom[0], bottom[1]
    if height == 1:
        return [(n, c, 1, 1)], []
    return [(n, c * sum(4**i for i in range(height)))], []


def _lrn(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    size = int(ctx.msg.lrn_param.local_size)
    _check_eq(size % 2, 1, "size_ % 2 == 1", "LRN only supports odd values for local_size")
    if int(ctx.msg.lrn_param.norm_region) == 0:  # ACROSS_CHANNELS
        _check_eq(
            4,
            len(bottom),
            "4 == bottom[0]->num_axes()",
            "Input must have 4 axes, corresponding to (num, channels, height, width)",
        )
    return [bottom], []


# --------------------------------------------------------------------------- common layers


def _inner_product(ctx: _Ctx) -> _Result:
    p = ctx.msg.inner_product_param
    bottom = ctx.bottoms[0]
    axis = _canonical(int(p.axis), bottom)
    k = _count(bottom, axis)
    n = int(p.num_output)
    weight = (k, n) if p.transpose else (n, k)
    params: list[Shape] = [weight]
    if p.bias_term:
        params.append((n,))
    return [(*bottom[:axis], n)], params


def _same(ctx: _Ctx) -> _Result:
    return [ctx.bottoms[0]] * ctx.n_tops, []


def _split(ctx: _Ctx) -> _Result:
    return [ctx.bottoms[0]] * ctx.n_tops, []


def _silence(ctx: _Ctx) -> _Result:
    return [], []


def _concat(ctx: _Ctx) -> _Result:
    p = ctx.msg.concat_param
    _check(
        not (_has(p, "axis") and _has(p, "concat_dim")),
        "Check failed: !(concat_param.has_axis() && concat_param.has_concat_dim()) Either axis "
        "or concat_dim should be specified; not both.",
    )
    first = ctx.bottoms[0]
    num_axes = len(first)
    if _has(p, "concat_dim"):
        axis = int(p.concat_dim)
        _check_op(
            axis < num_axes, axis, num_axes, "concat_axis_ < num_axes", "concat_dim out of range."
        )
    else:
        axis = _canonical(int(p.axis), first)
    top = list(first)
    for i, b in enumerate(ctx.bottoms[1:], 1):
        with _blame("bottom", i):
            _check_eq(
                num_axes,
                len(b),
                "num_axes == bottom[i]->num_axes()",
                "All inputs must have the same #axes.",
            )
            for j in range(num_axes):
                if j == axis:
                    continue
                _check_eq(
                    top[j],
                    b[j],
                    "top_shape[j] == bottom[i]->shape(j)",
                    "All inputs must have the same shape, except at concat_axis.",
                )
        top[axis] += b[axis]
    return [tuple(top)], []


def _slice(ctx: _Ctx) -> _Result:
    p = ctx.msg.slice_param
    _check(
        not (_has(p, "axis") and _has(p, "slice_dim")),
        "Check failed: !(slice_param.has_axis() && slice_param.has_slice_dim()) Either axis or "
        "slice_dim should be specified; not both.",
    )
    bottom = ctx.bottoms[0]
    if _has(p, "slice_dim"):
        axis = int(p.slice_dim)
        _check_op(
            axis < len(bottom),
            axis,
            len(bottom),
            "slice_axis_ < num_axes",
            "slice_dim out of range.",
        )
    else:
        axis = _canonical(int(p.axis), bottom)
    size = bottom[axis]
    points = [int(x) for x in p.slice_point]
    n = ctx.n_tops
    tops: list[Shape] = []
    if points:
        _check_eq(len(points), n - 1, "slice_point_.size() == top.size() - 1")
        _check_op(n <= size, n, size, "top.size() <= bottom_slice_axis")
        prev = 0
        sizes = []
        for pt in points:
            _check_op(pt > prev, pt, prev, "slice_point_[i] > prev")
            sizes.append(pt - prev)
            prev = pt
        sizes.append(size - prev)
        for s in sizes:
            _nonnegative((s,))
            tops.append((*bottom[:axis], s, *bottom[axis + 1 :]))
    else:
        _check_eq(
            size % n,
            0,
            "bottom_slice_axis % top.size() == 0",
            f"Number of top blobs ({n}) should evenly divide input slice axis ({size})",
        )
        tops = [(*bottom[:axis], size // n, *bottom[axis + 1 :])] * n
    return tops, []


def _eltwise(ctx: _Ctx) -> _Result:
    p = ctx.msg.eltwise_param
    nc = len(p.coeff)
    _check(
        nc == 0 or nc == len(ctx.bottoms),
        "Check failed: this->layer_param().eltwise_param().coeff_size() == 0 || "
        "this->layer_param().eltwise_param().coeff_size() == bottom.size() Eltwise Layer takes "
        "one coefficient per bottom blob.",
    )
    _check(
        not (int(p.operation) != 1 and nc),
        "Check failed: !(this->layer_param().eltwise_param().operation() == "
        "EltwiseParameter_EltwiseOp_PROD && this->layer_param().eltwise_param().coeff_size()) "
        "Eltwise layer only takes coefficients for summation.",
    )
    first = ctx.bottoms[0]
    for i, b in enumerate(ctx.bottoms[1:], 1):
        _check(
            b == first,
            f"Check failed: bottom[0]->shape() == bottom[i]->shape() bottom[0]: "
            f"{shape_string(first)}, bottom[{i}]: {shape_string(b)}",
        )
    return [first], []


def _flatten(ctx: _Ctx) -> _Result:
    p = ctx.msg.flatten_param
    bottom = ctx.bottoms[0]
    start = _canonical(int(p.axis), bottom)
    end = _canonical(int(p.end_axis), bottom)
    return [(*bottom[:start], _count(bottom, start, end + 1), *bottom[end + 1 :])], []


def _reshape(ctx: _Ctx) -> _Result:
    p = ctx.msg.reshape_param
    bottom = ctx.bottoms[0]
    dims = [int(d) for d in p.shape.dim]
    copy_axes = [i for i, d in enumerate(dims) if d == 0]
    inferred = [i for i, d in enumerate(dims) if d == -1]
    _check(
        len(inferred) <= 1,
        f"Check failed: inferred_axis_ == -1 ({inferred[0] if inferred else -1} vs. -1) new "
        "shape contains multiple -1 dims; at most a single (1) value of -1 may be specified",
    )
    constant = math.prod(d for d in dims if d not in (0, -1))
    in_axis = int(p.axis)
    n = len(bottom)
    start = in_axis if in_axis >= 0 else n + in_axis + 1
    _check_op(start >= 0, start, 0, "start_axis >= 0", f"axis {in_axis} out of range")
    _check_op(
        start <= n,
        start,
        n,
        "start_axis <= bottom[0]->num_axes()",
        f"axis {in_axis} out of range for {n}-D input blob",
    )
    num_axes = int(p.num_axes)
    _check_op(
        num_axes >= -1, num_axes, -1, "num_axes >= -1", "num_axes must be >= 0, or -1 for all"
    )
    end = n if num_axes == -1 else start + num_axes
    _check_op(
        end <= n,
        end,
        n,
        "end_axis <= bottom[0]->num_axes()",
        "end_axis = axis + num_axes is out of range",
    )
    top = [*bottom[:start], *dims, *bottom[end:]]
    for i in copy_axes:
        _check_op(
            n > start + i,
            n,
            start + i,
            "bottom[0]->num_axes() > start_axis + copy_axis_index",
            "new shape contains a 0, but there was no corresponding bottom axis to copy",
        )
        top[start + i] = bottom[start + i]
    total = _count(bottom)
    if inferred:
        explicit = constant * _count(bottom, 0, start) * _count(bottom, end)
        for i in copy_axes:
            explicit *= top[start + i]
        _check_eq(
            0,
            total % explicit if explicit else 1,
            "0 == bottom[0]->count() % explicit_count",
            f"bottom count ({total}) must be divisible by the product of the specified "
            f"dimensions ({explicit})",
        )
        top[start + inferred[0]] = total // explicit
    _check_eq(
        math.prod(top),
        total,
        "top[0]->count() == bottom[0]->count()",
        "output count must match input count",
    )
    return [tuple(top)], []


def _crop_layer(ctx: _Ctx) -> _Result:
    p = ctx.msg.crop_param
    _check_eq(len(ctx.bottoms), 2, "bottom.size() == 2", "Wrong number of bottom blobs.")
    a, b = ctx.bottoms
    n = len(a)
    start = _canonical(int(p.axis), a)
    _check_op(start < n, start, n, "start_axis < input_dim", "crop axis bigger than input dim")
    offsets = [int(o) for o in p.offset]
    if len(offsets) > 1:
        _check_eq(
            start + len(offsets),
            n,
            "start_axis + param.offset_size() == input_dim",
            "number of offset values specified must be equal to the number of dimensions "
            "following axis.",
        )
    top = list(a)
    for i in range(start, n):
        off = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        _check_op(
            a[i] - off >= b[i],
            a[i] - off,
            b[i],
            "bottom[0]->shape(i) - crop_offset >= bottom[1]->shape(i)",
            f"the crop for dimension {i} is out-of-bounds with size {b[i]} and offset {off}",
        )
        top[i] = b[i]
    return [tuple(top)], []


def _softmax(ctx: _Ctx) -> _Result:
    _canonical(int(ctx.msg.softmax_param.axis), ctx.bottoms[0])
    return [ctx.bottoms[0]], []


def _loss_base(ctx: _Ctx) -> None:
    if len(ctx.bottoms) >= 2 and ctx.bottoms[0] and ctx.bottoms[1]:
        _check_eq(
            ctx.bottoms[0][0],
            ctx.bottoms[1][0],
            "bottom[0]->shape(0) == bottom[1]->shape(0)",
            "The data and label should have the same first dimension.",
            "loss_layer.cpp",
        )


def _legacy_dim(shape: Sequence[int], i: int) -> int:
    """``num()``/``channels()``/``height()``/``width()`` of ``shape`` (index ``i``)."""
    _legacy(shape)
    return shape[i] if i < len(shape) else 1


def _legacy_eq(blob: int, shape: Sequence[int], i: int, want: int) -> None:
    """``CHECK_EQ(bottom[blob]->channels(), 1)`` and its siblings."""
    accessor = ("num", "channels", "height", "width")[i]
    got = _legacy_dim(shape, i)
    _check_eq(got, want, f"bottom[{blob}]->{accessor}() == 1")


def _contrastive_setup(ctx: _Ctx) -> None:
    """ContrastiveLossLayer::LayerSetUp: (N, C, 1, 1) pairs and a (N, 1, 1, 1) similarity."""
    a, b = ctx.bottoms[0], ctx.bottoms[1]
    ca, cb = _legacy_dim(a, 1), _legacy_dim(b, 1)
    _check_eq(ca, cb, "bottom[0]->channels() == bottom[1]->channels()")
    for blob, i in ((0, 2), (0, 3), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)):
        _legacy_eq(blob, ctx.bottoms[blob], i, 1)


def _infogain_setup(ctx: _Ctx) -> None:
    """InfogainLossLayer::LayerSetUp: its internal Softmax, the deprecated ``normalize``, and
    the matrix H (a third bottom, else a file: only its presence can be checked here)."""
    p = ctx.msg.infogain_loss_param
    _canonical(int(p.axis), ctx.bottoms[0])
    _check(
        not _has(ctx.msg.loss_param, "normalize"),
        "Check failed: !this->layer_param_.loss_param().has_normalize() normalize is "
        'deprecated. use "normalization"',
    )
    if len(ctx.bottoms) < 3:
        _check(
            _has(p, "source"),
            "Check failed: this->layer_param_.infogain_loss_param().has_source() Infogain "
            "matrix source must be specified.",
        )


def _label_count(ctx: _Ctx, axis_value: int, kind: str) -> int:
    """SoftmaxWithLoss's and InfogainLoss's Reshape: one label per prediction outside the
    class axis (returned canonical). ``axis == 1`` is literal text in both messages."""
    pred, label = ctx.bottoms[0], ctx.bottoms[1]
    axis = _canonical(axis_value, pred)
    outer, inner = _count(pred, 0, axis), _count(pred, axis + 1)
    _check_eq(
        outer * inner,
        _count(label),
        "outer_num_ * inner_num_ == bottom[1]->count()",
        f"Number of labels must match number of predictions; e.g., if {kind} axis == 1 and "
        "prediction shape is (N, C, H, W), label count (number of labels) must be N*H*W, with "
        "integer values in {0, 1, ..., C-1}.",
    )
    return axis


def _infogain_reshape(ctx: _Ctx) -> None:
    pred = ctx.bottoms[0]
    axis = _label_count(ctx, int(ctx.msg.infogain_loss_param.axis), "infogain")
    if len(ctx.bottoms) >= 3:  # (a matrix read from a file is not known here)
        n = pred[axis]
        _check_eq(_count(ctx.bottoms[2]), n * n, "infogain->count() == num_labels_*num_labels_")


def _loss(ctx: _Ctx) -> _Result:
    t = ctx.type
    if t == "SoftmaxWithLoss":
        # LayerSetUp sets up an internal Softmax on a copy of the LayerParameter (loss weights
        # included, 1 when none) with a single top
        weights = len(ctx.msg.loss_weight) or 1
        _check_eq(
            1,
            weights,
            "top.size() == num_loss_weights",
            "loss_weight must be unspecified or specified once per top blob.",
            "layer.hpp",
        )
        _canonical(int(ctx.msg.softmax_param.axis), ctx.bottoms[0])
    if t == "ContrastiveLoss":
        _contrastive_setup(ctx)
    if t == "InfogainLoss":
        _infogain_setup(ctx)
    _loss_base(ctx)
    if t == "InfogainLoss":
        _infogain_reshape(ctx)
    if t == "MultinomialLogisticLoss":
        for i in (1, 2, 3):
            _legacy_eq(1, ctx.bottoms[1], i, 1)
    if t == "EuclideanLoss":
        _check_eq(
            _count(ctx.bottoms[0], 1),
            _count(ctx.bottoms[1], 1),
            "bottom[0]->count(1) == bottom[1]->count(1)",
            "Inputs must have the same dimension.",
        )
    elif t == "SigmoidCrossEntropyLoss":
        _check_eq(
            _count(ctx.bottoms[0]),
            _count(ctx.bottoms[1]),
            "bottom[0]->count() == bottom[1]->count()",
            "SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count.",
        )
    tops: list[Shape] = [()]
    if t == "SoftmaxWithLoss":
        pred = ctx.bottoms[0]
        _label_count(ctx, int(ctx.msg.softmax_param.axis), "softmax")
        if ctx.n_tops > 1:
            tops.append(pred)
    while len(tops) < ctx.n_tops:
        tops.append(ctx.bottoms[0])
    return tops[: max(ctx.n_tops, 1)], []


def _accuracy(ctx: _Ctx) -> _Result:
    p = ctx.msg.accuracy_param
    pred, label = ctx.bottoms[0], ctx.bottoms[1]
    axis = _canonical(int(p.axis), pred)
    outer, inner = _count(pred, 0, axis), _count(pred, axis + 1)
    top_k = int(p.top_k)
    classes = _count(pred) // max(_count(label), 1)
    _check_op(
        top_k <= classes,
        top_k,
        classes,
        "top_k_ <= bottom[0]->count() / bottom[1]->count()",
        "top_k must be less than or equal to the number of classes.",
    )
    _check_eq(
        outer * inner,
        _count(label),
        "outer_num_ * inner_num_ == bottom[1]->count()",
        f"Number of labels must match number of predictions; e.g., if label axis == "
        f"{axis} and prediction shape is (N, C, H, W), label count (number of labels) "
        f"must be N*H*W, with integer values in {{0, 1, ..., C-1}}.",
    )
    tops: list[Shape] = [()]
    if ctx.n_tops > 1:
        tops.append((pred[axis],))
    return tops, []


def _argmax(ctx: _Ctx) -> _Result:
    p = ctx.msg.argmax_param
    bottom = ctx.bottoms[0]
    top_k = int(p.top_k)
    _check_op(top_k >= 1, top_k, 1, "top_k_ >= 1", "top k must not be less than 1.")
    shape = [1] * max(len(bottom), 3)
    if _has(p, "axis"):
        axis = _canonical(int(p.axis), bottom)
        _check_op(
            bottom[axis] >= top_k,
            top_k,
            bottom[axis],
            "top_k_ <= bottom[0]->shape(axis_)",
            "top_k must be less than or equal to the dimension of the axis.",
        )
        shape = list(bottom)
        shape[axis] = top_k
    else:
        _check_op(
            _count(bottom, 1) >= top_k,
            top_k,
            _count(bottom, 1),
            "top_k_ <= bottom[0]->count(1)",
            "top_k must be less than or equal to the dimension of the flattened bottom blob "
            "per instance.",
        )
        shape[0] = bottom[0]
        shape[2] = top_k
        if p.out_max_val:
            shape[1] = 2
    return [tuple(shape)], []


def _scale_like(ctx: _Ctx, field_name: str, learned_name: str) -> tuple[Shape, int]:
    """Shape of the scale/bias operand and the axis it applies at (Scale/Bias layers)."""
    p = getattr(ctx.msg, field_name)
    bottom = ctx.bottoms[0]
    ax = "axis_" if learned_name == "scale" else "axis"  # as each layer's source spells it
    if len(ctx.bottoms) > 1:
        operand = ctx.bottoms[1]
    else:
        axis = _canonical(int(p.axis), bottom)
        num_axes = int(p.num_axes)
        _check_op(
            num_axes >= -1,
            num_axes,
            -1,
            "num_axes >= -1",
            "num_axes must be non-negative, or -1 to extend to the end of bottom[0]",
        )
        if num_axes >= 0:
            _check_op(
                len(bottom) >= axis + num_axes,
                len(bottom),
                axis + num_axes,
                f"bottom[0]->num_axes() >= {ax} + num_axes",
                f"{learned_name} blob's shape extends past bottom[0]'s shape when applied "
                f"starting with bottom[0] axis = {axis}",
            )
        operand = tuple(bottom[axis:] if num_axes == -1 else bottom[axis : axis + num_axes])
    axis = 0 if len(operand) == 0 else _canonical(int(p.axis), bottom)
    _check_op(
        len(bottom) >= axis + len(operand),
        len(bottom),
        axis + len(operand),
        f"bottom[0]->num_axes() >= {ax} + {learned_name}->num_axes()",
        f"{learned_name} blob's shape extends past bottom[0]'s shape when applied "
        f"starting with bottom[0] axis = {axis}",
    )
    for i, d in enumerate(operand):
        _check_eq(
            bottom[axis + i],
            d,
            f"bottom[0]->shape({ax} + i) == {learned_name}->shape(i)",
            f"dimension mismatch between bottom[0]->shape({axis + i}) and "
            f"{learned_name}->shape({i})",
        )
    return operand, axis


def _scale(ctx: _Ctx) -> _Result:
    operand, axis = _scale_like(ctx, "scale_param", "scale")
    params: list[Shape] = []
    if len(ctx.bottoms) == 1:
        params.append(operand)
    if ctx.msg.scale_param.bias_term:
        bottom = ctx.bottoms[0]
        p = ctx.msg.scale_param
        # The internal Bias layer: axis as given, num_axes = bottom[1]'s or scale num_axes.
        b_axis = _canonical(int(p.axis), bottom)
        num_axes = len(ctx.bottoms[1]) if len(ctx.bottoms) > 1 else int(p.num_axes)
        params.append(
            tuple(bottom[b_axis:] if num_axes == -1 else bottom[b_axis : b_axis + num_axes])
        )
    return [ctx.bottoms[0]], params


def _bias(ctx: _Ctx) -> _Result:
    operand, _ = _scale_like(ctx, "bias_param", "bias")
    params: list[Shape] = [operand] if len(ctx.bottoms) == 1 else []
    return [ctx.bottoms[0]], params


def _batch_norm(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    channels = 1 if len(bottom) == 1 else bottom[1]
    return [bottom], [(channels,), (channels,), (1,)]


def _prelu(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    _check_op(
        len(bottom) >= 2,
        len(bottom),
        2,
        "bottom[0]->num_axes() >= 2",
        "Number of axes of bottom blob must be >=2.",
    )
    channels = _legacy_dim(bottom, 1)
    shape: Shape = () if ctx.msg.prelu_param.channel_shared else (channels,)
    return [bottom], [shape]


def _mvn(ctx: _Ctx) -> _Result:
    """MVNLayer::Reshape builds its top from the legacy accessors: always 4 axes."""
    bottom = ctx.bottoms[0]
    return [tuple(_legacy_dim(bottom, i) for i in range(4))], []


def _embed(ctx: _Ctx) -> _Result:
    p = ctx.msg.embed_param
    n, k = int(p.num_output), int(p.input_dim)
    _check_op(n > 0, n, 0, "N_ > 0", "EmbedLayer num_output must be positive.")
    _check_op(k > 0, k, 0, "K_ > 0", "EmbedLayer input_dim must be positive.")
    params: list[Shape] = [(k, n)]
    if p.bias_term:
        params.append((n,))
    return [(*ctx.bottoms[0], n)], params


def _tile(ctx: _Ctx) -> _Result:
    p = ctx.msg.tile_param
    bottom = ctx.bottoms[0]
    axis = _canonical(int(p.axis), bottom)
    _check(
        _has(p, "tiles"),
        "Check failed: tile_param.has_tiles() Number of tiles must be specified",
    )
    tiles = int(p.tiles)
    _check_op(tiles > 0, tiles, 0, "tiles_ > 0", "Number of tiles must be positive.")
    top = list(bottom)
    top[axis] *= tiles
    return [tuple(top)], []


def _reduction(ctx: _Ctx) -> _Result:
    bottom = ctx.bottoms[0]
    axis = _canonical(int(ctx.msg.reduction_param.axis), bottom)
    return [tuple(bottom[:axis])], []


def _batch_reindex(ctx: _Ctx) -> _Result:
    a, b = ctx.bottoms
    _check_eq(1, len(b), "1 == bottom[1]->num_axes()")
    return [(b[0], *a[1:])], []


def _parameter(ctx: _Ctx) -> _Result:
    shape = _shape_of(ctx.msg.parameter_param.shape)
    return [shape], [shape]


def _recurrent(ctx: _Ctx) -> _Result:
    p = ctx.msg.recurrent_param
    x = ctx.bottoms[0]
    _check_op(
        len(x) >= 2,
        len(x),
        2,
        "bottom[0]->num_axes() >= 2",
        "bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...)",
    )
    t, n = x[0], x[1]
    cont = ctx.bottoms[1]
    _check_eq(
        len(cont),
        2,
        "bottom[1]->num_axes() == 2",
        "bottom[1] must have exactly 2 axes -- (#timesteps, #streams)",
    )
    _check_eq(t, cont[0], "T_ == bottom[1]->shape(0)")
    _check_eq(n, cont[1], "N_ == bottom[1]->shape(1)")
    hidden = int(p.num_output)
    x_dim = _count(x, 2)
    expose = bool(p.expose_hidden)
    n_recur = 2 if ctx.type == "LSTM" else 1
    static = len(ctx.bottoms) > 2 + (n_recur if expose else 0)
    if static:
        x_static = ctx.bottoms[2]
        _check_op(len(x_static) >= 1, len(x_static), 1, "bottom[2]->num_axes() >= 1")
        _check_eq(n, x_static[0], "N_ == bottom[2]->shape(0)")
    if expose:
        # Reshape: each exposed initial state must have the recurrent input's shape
        state: Shape = (1, n, hidden)
        first = 2 + int(static)
        for j, got in enumerate(ctx.bottoms[first:]):
            _check(
                tuple(got) == state,
                "Check failed: recur_input_blobs_[j]->shape() == bottom[i]->shape() shape "
                f"mismatch - recur_input_blobs_[{j}]: {shape_string(state)} vs. "
                f"bottom[{first + j}]: {shape_string(got)}",
            )
    static_dim = _count(ctx.bottoms[2], 1) if static else 0
    params: list[Shape]
    if ctx.type == "LSTM":
        params = [(4 * hidden, x_dim), (4 * hidden,)]
        if static:
            params.append((4 * hidden, static_dim))
        params.append((4 * hidden, hidden))
    else:
        params = [(hidden, x_dim), (hidden,)]
        if static:
            params.append((hidden, static_dim))
        params += [(hidden, hidden), (hidden, hidden), (hidden,)]
    tops: list[Shape] = [(t, n, hidden)]
    for _ in range(1, ctx.n_tops):
        tops.append((1, n, hidden))
    return tops, params


def _lstm_unit(ctx: _Ctx) -> _Result:
    """LSTMUnitLayer::Reshape: c_prev (1, N, D), gates (1, N, 4D), cont (1, N)."""
    c_prev = ctx.bottoms[0]
    n = c_prev[1]
    for i, b in enumerate(ctx.bottoms):
        want = 2 if i == 2 else 3
        with _blame("bottom", i):
            _check_eq(want, len(b), f"{want} == bottom[i]->num_axes()")
            _check_eq(1, b[0], "1 == bottom[i]->shape(0)")
            _check_eq(n, b[1], "num_instances == bottom[i]->shape(1)")
    _check_eq(4 * c_prev[2], ctx.bottoms[1][2], "4 * hidden_dim_ == bottom[1]->shape(2)")
    return [c_prev, c_prev], []


def _log_exp(ctx: _Ctx) -> _Result:
    """Log/Exp LayerSetUp: a base other than -1 (e) must be positive; Log also needs
    1/log(base) finite."""
    p = ctx.msg.log_param if ctx.type == "Log" else ctx.msg.exp_param
    base = float(p.base)
    if base != -1:
        _check(base > 0, f"Check failed: base > 0 ({base:g} vs. 0) base must be strictly positive.")
    if ctx.type == "Log" and base == 1:
        _check(
            False,
            "Check failed: !isinf(base_scale_) Inf result: 1/log(base) = 1/log(1) = 0",
        )
    return [ctx.bottoms[0]], []


def _no_tops(ctx: _Ctx) -> _Result:
    return [], []


def _filter(ctx: _Ctx) -> _Result:
    """FilterLayer's checks on the selector (last bottom); its batch size then depends on the
    selector's values."""
    _check_eq(ctx.n_tops, len(ctx.bottoms) - 1, "top.size() == bottom.size() - 1")
    selector = ctx.bottoms[-1]
    for d in selector[1:]:
        _check_eq(
            d,
            1,
            "bottom[selector_index]->shape(i) == 1",
            "Selector blob dimensions must be singletons (1), except the first",
        )
    for b in ctx.bottoms[:-1]:
        _check_eq(
            selector[0],
            b[0],
            "bottom[selector_index]->shape(0) == bottom[i]->shape(0)",
            "Each bottom should have the same 0th dimension as the selector blob",
        )
    raise _Unknown("the Filter layer's batch size depends on the data")


_SAME_SHAPE = (
    "AbsVal",
    "BNLL",
    "Clip",
    "Dropout",
    "ELU",
    "Power",
    "ReLU",
    "Sigmoid",
    "Swish",
    "TanH",
    "Threshold",
)

_RULES: dict[str, Callable[[_Ctx], _Result]] = {
    **{t: _same for t in _SAME_SHAPE},
    **{t: _loss for t in LOSS_LAYER_TYPES},
    "Softmax": _softmax,
    "Accuracy": _accuracy,
    "ArgMax": _argmax,
    "BatchNorm": _batch_norm,
    "BatchReindex": _batch_reindex,
    "Bias": _bias,
    "Concat": _concat,
    "Convolution": _convolution,
    "Crop": _crop_layer,
    "Data": _data,
    "Deconvolution": _deconvolution,
    "DummyData": _dummy_data,
    "Eltwise": _eltwise,
    "Embed": _embed,
    "Filter": _filter,
    "Flatten": _flatten,
    "HDF5Data": _hdf5_data,
    "HDF5Output": _no_tops,
    "Im2col": _im2col,
    "ImageData": _image_data,
    "InnerProduct": _inner_product,
    "Input": _input,
    "LRN": _lrn,
    "LSTM": _recurrent,
    "LSTMUnit": _lstm_unit,
    "MemoryData": _memory_data,
    "Parameter": _parameter,
    "Pooling": _pooling,
    "PReLU": _prelu,
    "MVN": _mvn,
    "Log": _log_exp,
    "Exp": _log_exp,
    "Python": _python,
    "Reduction": _reduction,
    "Reshape": _reshape,
    "RNN": _recurrent,
    "Scale": _scale,
    "Silence": _silence,
    "Slice": _slice,
    "SPP": _spp,
    "Split": _split,
    "Tile": _tile,
    "WindowData": _window_data,
}

#: Layer types whose shapes this module computes.
KNOWN_TYPES: frozenset[str] = frozenset(_RULES)

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


# --------------------------------------------------------------------------- the walk


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
        return net, upgrade_net_message(message)
    if isinstance(net, Document):
        from rewriter.schema.bind import bind

        bound = bind(net, root="caffe.NetParameter")
        bound.raise_for_errors()
        net = bound.message
    elif isinstance(net, NetFile):
        net = net.message
    upgraded = upgrade_net_message(net)
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
        roles = (
            tuple(param_roles(ltype, msg, len(layer.bottoms), len(params)))
            if msg is not None
            else ()
        )
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
