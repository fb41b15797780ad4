"""Shapes of the loss layers (``LossLayer`` and its subclasses' checks), Accuracy and ArgMax."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..layer_params import LOSS_LAYER_TYPES
from .core import (
    Shape,
    _canonical,
    _check,
    _check_eq,
    _check_op,
    _count,
    _Ctx,
    _has,
    _legacy_dim,
    _Result,
)


def _loss_base(ctx: _Ctx) -> None:
    if len(ctx.bottoms) >= 2 and ctx.bottoms[0] and ctx.bottoms[1]:
        _check_eq(
            ctx.bottoms[0][0],
            ctx.bottoms[1][0],
            "bottom[0]->shape(0) == bottom[1]->shape(0)",
            "The data and label should have the same first dimension.",
            "loss_layer.cpp",
        )


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


#: This family's shape rule per layer type (merged in :mod:`rewriter.caffe.shapes.table`).
RULES: dict[str, Callable[[_Ctx], _Result]] = {
    **{t: _loss for t in LOSS_LAYER_TYPES},
    "Accuracy": _accuracy,
    "ArgMax": _argmax,
}
