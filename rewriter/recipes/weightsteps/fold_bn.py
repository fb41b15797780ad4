"""``fold-bn``: BatchNorm (and the Scale after it) folded into the layer before it.

Caffe's BatchNorm with global statistics computes, per channel ``c`` of axis 1
(``batch_norm_layer.cpp``)::

    s = 0 if factor == 0 else 1 / factor          # blob 2, the moving-average factor
    y = (x - mean[c] * s) / sqrt(var[c] * s + eps)

an affine map ``y = a[c] x + b[c]``; a Scale (``scale_layer.cpp``, one factor per channel of
axis 1, optional bias) after it is another one. Their product is folded into

* the **Convolution / Deconvolution / InnerProduct** that writes the BatchNorm's input, when
  nothing else reads that blob: its weights are multiplied per output channel and it gets a
  bias (``bias_term: true`` and a ``param`` block like its first one when it had none);
* otherwise into the **Scale** that follows: its factors and bias absorb the BatchNorm.

The prototxt loses the BatchNorm (and the folded Scale) layers; the folding layer takes the top
of the last folded layer, so every other layer and the net's outputs keep their blob names.
Refused, with the reason, where the result would differ (docs/recipes.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rewriter.util.record import Record

if TYPE_CHECKING:
    from ..select import NetView
    from ..steps import Plan, StepContext
    from .store import WeightStore

__all__ = ["KEYS", "DOC", "plan"]

DOC = (
    "fold BatchNorm (use_global_stats) and the Scale after it into the Convolution, "
    "Deconvolution or InnerProduct before it (else into the Scale); the weights follow"
)
#: key -> (type, default, doc)
KEYS: dict[str, tuple[str, Any, str]] = {
    "scale": ("bool", True, "also fold the Scale layer that follows a BatchNorm"),
    "unfoldable": (
        "choice",
        "error",
        "a BatchNorm that cannot be folded: error (default) or skip (a warning)",
    ),
}
UNFOLDABLE_CHOICES = ("error", "skip")

_FOLD_INTO = ("Convolution", "Deconvolution", "InnerProduct")
_PARAM_BLOCK = {
    "Convolution": "convolution_param",
    "Deconvolution": "convolution_param",
    "InnerProduct": "inner_product_param",
    "Scale": "scale_param",
}


class _Refused(Exception):
    """Why a BatchNorm cannot be folded; ``path``: the field at fault in the BatchNorm."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


class _Fold(Record):
    # a Record, not a dataclass: the step table imports this module on every apply (~1 ms)
    __slots__ = ("bn", "scale", "target", "target_type", "new_bottom", "new_top")

    def __init__(
        self,
        bn: int,  # document layer indices
        scale: int | None,
        target: int,
        target_type: str,
        new_bottom: str | None,  # Scale target: its new bottom
        new_top: str | None,  # producer target: its new top
    ) -> None:
        self.bn = bn
        self.scale = scale
        self.target = target
        self.target_type = target_type
        self.new_bottom = new_bottom
        self.new_top = new_top


def _trains(view: NetView) -> bool:
    """The net trains: it has a loss, a TRAIN phase rule, or says ``state { phase: TRAIN }``.
    A net that does none of these is a deploy/TEST net, run with ``caffe.TEST``."""
    msg = view.message
    if msg.HasField("state") and msg.state.HasField("phase") and msg.state.phase == 0:
        return True
    for layer in msg.layer:
        if layer.type.endswith("Loss") or len(layer.loss_weight):
            return True
        for rule in list(layer.include) + list(layer.exclude):
            if rule.HasField("phase"):
                return True
    return False


def plan(ctx: StepContext) -> Plan:
    from ..steps import LayerEditor, Plan, StructChange, _selection
    from .store import in_order
    from .where import layer_error

    step, view = ctx.step, ctx.view
    p = Plan(step, LayerEditor(view.doc))
    p.needs_weights = True
    chosen = _selection(ctx, p)
    explicit = any(step.get(k) for k in ("layers", "glob", "regex", "upto", "after", "between"))
    bns = [k for k in chosen if view.layer(k).type == "BatchNorm"]
    if explicit:
        for k in chosen:
            if view.layer(k).type != "BatchNorm":
                raise layer_error(
                    view, k, "fold-bn", f"a {view.layer(k).type}, not a BatchNorm", ("type",)
                )
    phase = str(step.get("phase") or "TEST")
    skip = step.get("unfoldable") == "skip"
    folds: list[_Fold] = []
    used: set[int] = set()
    trains = _trains(view)
    for k in bns:
        try:
            fold = _find(view, phase, k, bool(step.get("scale", True)), trains, used)
            _same_in_every_phase(view, phase, fold, bool(step.get("scale", True)), trains, used)
        except _Refused as e:
            if skip:
                p.warnings.append(f"{view.path}: fold-bn: {view.describe(k)} not folded: {e}")
                continue
            raise layer_error(
                view,
                k,
                "fold-bn",
                f"cannot fold: {e}",
                e.path,
                "leave it with: --step 'fold-bn unfoldable=skip' (unfoldable = \"skip\" in a "
                "recipe), or select the BatchNorm layers to fold with layers=...",
            ) from None
        used.update(x for x in (fold.bn, fold.scale, fold.target) if x is not None)
        folds.append(fold)
    ops = []
    for fold in folds:
        _edit(ctx, p, fold)
        removed = tuple(view.names[x] for x in (fold.bn, fold.scale) if x is not None)
        tl = view.layer(fold.target)
        bottoms = (fold.new_bottom,) if fold.new_bottom else None
        tops = (fold.new_top,) if fold.new_top else None
        p.structural.append(
            StructChange(
                "relayer", view.names[fold.target], "fold-bn", removed=removed,
                bottoms=bottoms, tops=tops,
            )
        )  # fmt: skip
        ops.append(_weight_op(view, fold, tl))
    if not folds:
        p.note = "no BatchNorm to fold"
        return p
    p.selected = sorted(used)
    gone = sorted(view.names[x] for f in folds for x in (f.bn, f.scale) if x is not None)
    targets = sorted(view.names[f.target] for f in folds)

    def promise(after: NetView) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = [
            (n, "still present") for n in gone if n in after.by_name
        ]
        out += [(n, "the folding layer is gone") for n in targets if n not in after.by_name]
        return out

    p.promise = promise

    p.weights = in_order(ops)
    return p


def _no_twin(view: NetView, x: int) -> None:
    from .where import layer_location

    twins = [j for j in view.by_name.get(view.names[x], []) if j != x]
    if twins:
        raise _Refused(
            f"'{view.names[x]}' has a twin of the same name for another phase (at "
            f"{layer_location(view, twins[0])}): folding one would break the other net; "
            "fold the deploy net (rewriter deploy NET -o deploy.prototxt, then fold-bn)",
            ("name",),
        )


def _same_in_every_phase(
    view: NetView, phase: str, fold: _Fold, with_scale: bool, trains: bool, used: set[int]
) -> None:
    """The layers are edited for every phase: the fold must be the same fold in the other
    phase's net, and no layer of the fold may have a twin of the same name there."""
    for x in (fold.bn, fold.scale, fold.target):
        if x is not None:
            _no_twin(view, x)
    other = "TRAIN" if phase == "TEST" else "TEST"
    if view.graph_layers_of(other).get(fold.bn) is None:
        return
    try:
        again = _find(view, other, fold.bn, with_scale, trains, used)
    except _Refused as e:
        raise _Refused(f"in the {other} net: {e}", e.path) from None
    if (again.scale, again.target) != (fold.scale, fold.target):
        raise _Refused(f"the {other} net would fold it differently; fold the deploy net")


def _find(
    view: NetView, phase: str, k: int, with_scale: bool, trains: bool, used: set[int]
) -> _Fold:
    from ..steps import bottom_writers

    graph = view.graph(phase)
    gi = view.graph_layers_of(phase).get(k)
    if gi is None:
        _no_twin(view, k)
        raise _Refused(f"it is not in the {phase} net (set phase)")
    bn = graph.layers[gi]
    if bn.use_global_stats is False:
        raise _Refused(
            "use_global_stats: false: Caffe normalises with each batch's own statistics, "
            "even at test time; folding would replace them by the stored ones",
            ("batch_norm_param", "use_global_stats"),
        )
    if bn.use_global_stats is None and trains:
        raise _Refused(
            "statistics still training: use_global_stats is unset and this net trains, where "
            "Caffe uses batch statistics (use_global_stats defaults to phase == TEST); fold the "
            "deploy net, or freeze them first: rewriter apply bn-frozen NET",
            ("type",),
        )
    if any(prm.name for prm in bn.params):
        raise _Refused("its statistics are shared with other layers (param name)")
    if len(bn.bottoms) != 1 or len(bn.tops) != 1:
        raise _Refused("a BatchNorm with more than one bottom or top")
    writers = bottom_writers(graph)
    readers: dict[int, list[int]] = {}
    for li, ws in enumerate(writers):
        for w in ws:
            if w is not None:
                readers.setdefault(w, []).append(li)
    layers = graph.layers

    def doc(li: int) -> int | None:
        return view.doc_index(layers[li].source_index)

    # the Scale after it
    scale: int | None = None
    scale_why = ""
    out_readers = readers.get(gi, [])
    if with_scale and len(out_readers) == 1 and layers[out_readers[0]].type == "Scale":
        sl = layers[out_readers[0]]
        sk = doc(sl.index)
        msg = view.layer(sk) if sk is not None else None
        if sk is None or msg is None or sk in used:
            scale_why = "the Scale after it is folded already"
        elif len(sl.bottoms) != 1:
            scale_why = (
                f"the Scale '{sl.name}' after it has a second bottom (its factors are a blob, "
                "not weights)"
            )
        elif msg.scale_param.axis not in (1, -3) or msg.scale_param.num_axes != 1:
            scale_why = f"the Scale '{sl.name}' is not per channel of axis 1"
        elif any(prm.name for prm in sl.params):
            scale_why = f"the Scale '{sl.name}' shares its parameters (param name)"
        else:
            scale = sk
    # the layer that writes its input
    w = writers[gi][0]
    why = ""
    if w is None:
        why = f"its input '{bn.bottoms[0]}' is a net input"
    else:
        wl = layers[w]
        wk = doc(w)
        if wl.inserted_split:
            others = [layers[r].name for r in readers.get(w, []) if r != gi]
            sw = writers[w][0]
            src = layers[sw].name if sw is not None else "the net input"
            why = (
                f"its input (written by '{src}') is also read by {', '.join(others) or 'others'}; "
                "folding would change what they read"
            )
        elif wl.type not in _FOLD_INTO:
            why = (
                f"its input is written by '{wl.name}', a {wl.type} (folds go into Convolution, "
                "Deconvolution or InnerProduct)"
            )
        elif wl.in_place or len(wl.tops) != 1 or wk is None or wk in used:
            why = f"'{wl.name}' cannot take it (in place, several tops, or folded already)"
        elif any(prm.name for prm in wl.params):
            why = f"the weights of '{wl.name}' are shared with other layers (param name)"
        elif wl.type == "InnerProduct" and view.layer(wk).inner_product_param.axis not in (1, -1):
            why = f"'{wl.name}' has inner_product_param.axis != 1"
        else:
            last = scale if scale is not None else k
            new_top = str(view.layer(last).top[0])
            return _Fold(k, scale, wk, wl.type, None, new_top if new_top != wl.tops[0] else None)
    if scale is not None:
        new_bottom = str(view.layer(k).bottom[0])
        cur = str(view.layer(scale).bottom[0])
        return _Fold(k, None, scale, "Scale", new_bottom if new_bottom != cur else None, None)
    raise _Refused(why + (f"; {scale_why}" if scale_why else "; no Scale follows it to fold into"))


def _edit(ctx: StepContext, p: Plan, fold: _Fold) -> None:
    from rewriter.text.cst import MessageBody, encode_string

    from ..steps import _blob_fields, _children, _ensure_scalar

    view = ctx.view
    ed = p.editor
    for x in (fold.bn, fold.scale):
        if x is not None:
            ed.remove(view.field_path(x))
            p.removed.append(x)
            p.declare(x, ("*",))
    t = fold.target
    msg = view.layer(t)
    block = _PARAM_BLOCK[fold.target_type]
    p.declare(t, ("bottom",), ("top",), (block, "bias_term"), ("param",))
    if fold.new_top is not None:
        top_fields = [c for c in _blob_fields(view, t, str(msg.top[0])) if c[1] == "top"]
        ci = top_fields[-1][0]
        ed.set_value(view.field_path(t) + (ci,), encode_string(fold.new_top))
    if fold.new_bottom is not None:
        bottom_fields = [c for c in _blob_fields(view, t, str(msg.bottom[0])) if c[1] == "bottom"]
        ed.set_value(view.field_path(t) + (bottom_fields[0][0],), encode_string(fold.new_bottom))
    has_bias = (
        getattr(msg, block).bias_term if block != "scale_param" else msg.scale_param.bias_term
    )
    if not has_bias:
        _ensure_scalar(ctx, p, t, (block, "bias_term"), "true", False)
        params = [c for c in _children(view.field(t)) if c.name == "param"]
        if len(params) == 1 and isinstance(params[0].body, MessageBody):
            kids = [
                (c.name, c.value_text)
                for c in _children(params[0])
                if c.name in ("lr_mult", "decay_mult") and c.body is None
            ]
            pos = max(i for i, c in enumerate(_children(view.field(t))) if c.name == "param")
            ed.insert(view.field_path(t), pos + 1, "param", kids)


def _weight_op(view: NetView, fold: _Fold, target_msg: Any) -> Any:
    bn_name = view.names[fold.bn]
    scale_name = view.names[fold.scale] if fold.scale is not None else None
    scale_bias = bool(view.layer(fold.scale).scale_param.bias_term) if fold.scale else False
    eps = float(view.layer(fold.bn).batch_norm_param.eps)
    target = view.names[fold.target]
    ttype = fold.target_type
    group = (
        int(target_msg.convolution_param.group) if ttype in ("Convolution", "Deconvolution") else 1
    )
    transpose = ttype == "InnerProduct" and bool(target_msg.inner_product_param.transpose)
    why = f"fold-bn of '{bn_name}' into '{target}'"

    def op(store: WeightStore) -> None:
        import numpy as np

        from .store import WeightError

        bn = store.blobs(bn_name, why)
        if len(bn) != 3:
            raise WeightError(f"{store.path}: BatchNorm '{bn_name}' holds {len(bn)} blobs, not 3")
        factor = float(bn[2].ravel()[0])
        sf = 0.0 if factor == 0 else 1.0 / factor
        mean = bn[0].ravel().astype(np.float64) * sf
        var = bn[1].ravel().astype(np.float64) * sf
        a = 1.0 / np.sqrt(var + eps)
        c = -mean * a
        if scale_name is not None:
            sc = store.blobs(scale_name, why)
            gamma = sc[0].ravel().astype(np.float64)
            beta = sc[1].ravel().astype(np.float64) if scale_bias else 0.0
            a, c = gamma * a, gamma * c + beta
            store.drop(scale_name, why)
        store.drop(bn_name, why)
        blobs = store.blobs(target, why)
        n = a.size
        if ttype == "Scale":
            gamma = blobs[0].astype(np.float64)
            if gamma.size != n:
                raise WeightError(
                    f"{store.path}: '{target}' has {gamma.size} factors, '{bn_name}' {n}"
                )
            beta = blobs[1].astype(np.float64).ravel() if len(blobs) > 1 else np.zeros(n)
            new_gamma = gamma.ravel() * a
            new_beta = beta + gamma.ravel() * c
            shape = (n,)  # Caffe's (C,); a legacy 1x1x1xC blob would no longer load
            store.set(
                target,
                [
                    new_gamma.reshape(shape).astype(np.float32),
                    new_beta.reshape(shape).astype(np.float32),
                ],
                why,
            )
            return
        wt = blobs[0].astype(np.float64)
        if ttype == "InnerProduct" and wt.ndim == 4:  # legacy 1 x 1 x N x K
            wt = wt.reshape(wt.shape[-2], wt.shape[-1])
        bias = blobs[1].astype(np.float64).ravel() if len(blobs) > 1 else np.zeros(n)
        if ttype == "Convolution" or (ttype == "InnerProduct" and not transpose):
            out_ch = wt.shape[0]
            mult = a.reshape((-1,) + (1,) * (wt.ndim - 1))
        elif ttype == "InnerProduct":
            out_ch = wt.shape[-1]
            mult = a.reshape((1,) * (wt.ndim - 1) + (-1,))
        else:  # Deconvolution: (in, out / group, k...)
            cin, per = wt.shape[0], wt.shape[1]
            out_ch = per * group
            idx = (np.arange(cin)[:, None] // (cin // group)) * per + np.arange(per)[None, :]
            mult = a[idx].reshape((cin, per) + (1,) * (wt.ndim - 2)) if out_ch == n else a
        if out_ch != n or bias.size != n:
            raise WeightError(
                f"{store.path}: '{target}' has {out_ch} output channels, BatchNorm '{bn_name}' {n}"
            )
        new_w = (wt * mult).astype(np.float32)
        new_b = (bias * a + c).astype(np.float32)
        # the bias as Caffe shapes it, (C,): a legacy 1x1x1xC blob would fail ShapeEquals
        store.set(target, [new_w, new_b.reshape(n)], why)

    return op
