"""Shapes of the layers that read their tops from outside the net: Data, ImageData, WindowData,
MemoryData, HDF5Data, Python, Input, DummyData (``*_data_layer.cpp``, ``input_layer.cpp``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rewriter import hints

from .core import (
    Shape,
    _check,
    _Ctx,
    _given,
    _given_or_unknown,
    _has,
    _Result,
    _shape_of,
    _Unknown,
)


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


#: This family's shape rule per layer type (merged in :mod:`rewriter.caffe.shapes.table`).
RULES: dict[str, Callable[[_Ctx], _Result]] = {
    "Data": _data,
    "DummyData": _dummy_data,
    "HDF5Data": _hdf5_data,
    "ImageData": _image_data,
    "Input": _input,
    "MemoryData": _memory_data,
    "Python": _python,
    "WindowData": _window_data,
}
