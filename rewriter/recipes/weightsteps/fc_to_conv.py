"""``fc-to-conv``: InnerProduct -> Convolution with the kernel of its input (FCN's net surgery).

An InnerProduct (``axis: 1``) reading a ``N x C x H x W`` blob computes, per output ``o``,
``sum W[o, c*H*W + h*W + w] x[n, c, h, w]``: a Convolution with ``num_output`` outputs and an
``H x W`` kernel does the same on that input (output ``N x O x 1 x 1``) and slides over a larger
one. The prototxt edit is minimal: ``type`` becomes ``"Convolution"``, ``inner_product_param``
becomes ``convolution_param`` (its ``num_output``, ``bias_term`` and fillers keep their meaning)
with ``kernel_size`` (``kernel_h``/``kernel_w`` when H != W) added; the weights are reshaped
to ``O x C x H x W`` (transposed first under ``transpose: true``), the bias kept.

The output gains two unit axes; Caffe's layers reading it with ``axis: 1`` (InnerProduct,
Softmax...) see the same values. Refused for ``axis`` != 1, an input that is not 4-D, and
shared weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..select import NetView
    from ..steps import Plan, StepContext
    from .store import WeightStore

__all__ = ["DOC", "KEYS", "plan"]

DOC = (
    "InnerProduct -> Convolution with the kernel of its input's shape (FCN's net surgery); "
    "the weights are reshaped"
)
KEYS: dict[str, tuple[str, Any, str]] = {}


def plan(ctx: StepContext) -> Plan:
    from rewriter.caffe.shapes import infer_shapes
    from rewriter.text.cst import encode_string

    from ..steps import LayerEditor, Plan, StructChange, _children, _selection
    from .store import in_order
    from .where import layer_error

    step, view = ctx.step, ctx.view
    p = Plan(step, LayerEditor(view.doc))
    p.needs_weights = True
    chosen = _selection(ctx, p)
    phase = str(step.get("phase") or "TEST")
    todo = []
    for k in chosen:
        msg = view.layer(k)
        if msg.type == "Convolution" and ctx.rerun:
            continue
        if msg.type != "InnerProduct":
            raise layer_error(
                view, k, "fc-to-conv", f"a {msg.type}, not an InnerProduct", ("type",),
                "select InnerProduct layers: --step 'fc-to-conv layers=fc6,fc7'",
            )  # fmt: skip
        todo.append(k)
    if not todo:
        p.note = "no InnerProduct selected"
        return p
    shapes = infer_shapes(view.graph(phase), phase, message=view.message)
    by_name = {ls.name: ls for ls in shapes.layers if not ls.inserted_split}
    ops = []
    #: tops of the layers converted so far: 2-D (N x K) there, N x K x 1 x 1 after
    converted: set[str] = set()
    for k in sorted(todo):
        msg = view.layer(k)
        name = view.names[k]
        ls = by_name.get(name)
        if ls is None:
            raise layer_error(
                view, k, "fc-to-conv",
                f"the shape of its input is unknown in the {phase} net"
                + (f" ({shapes.stopped})" if shapes.stopped else ""),
                then=f"check the shapes with: rewriter shapes {view.path}",
            )  # fmt: skip
        shape = ls.bottom_shapes[0]
        if len(shape) == 2 and str(msg.bottom[0]) in converted:
            shape = (*shape, 1, 1)
        ip = msg.inner_product_param
        if ip.axis not in (1, -3) or len(shape) != 4:
            raise layer_error(
                view, k, "fc-to-conv",
                f"reads a {len(shape)}-D blob with axis {ip.axis}; fc-to-conv needs axis 1 on a "
                "4-D (N x C x H x W) input, or on the output of an InnerProduct converted with it",
                ("bottom",),
                "convert the InnerProduct before it in the same step (layers=fc6,fc7)",
            )  # fmt: skip
        if any(prm.name for prm in msg.param):
            raise layer_error(
                view, k, "fc-to-conv", "its weights are shared with other layers (param name)",
                ("param",),
            )  # fmt: skip
        _, c, h, w = (int(d) for d in shape)
        converted.add(str(msg.top[0]))
        f = view.field(k)
        kids = _children(f)
        base = view.field_path(k)
        ti = max(i for i, x in enumerate(kids) if x.name == "type")
        p.editor.set_value(base + (ti,), encode_string("Convolution"))
        pi = [i for i, x in enumerate(kids) if x.name == "inner_product_param"]
        kernel = (
            [("kernel_size", str(h))] if h == w else [("kernel_h", str(h)), ("kernel_w", str(w))]
        )
        if not pi:
            raise layer_error(
                view, k, "fc-to-conv", "no inner_product_param (Caffe needs num_output)"
            )
        if pi:
            block = kids[pi[-1]]
            inner = _children(block)
            for j, x in enumerate(inner):
                if x.name in ("axis", "transpose"):
                    p.editor.remove(base + (pi[-1], j))
            p.editor.rename(base + (pi[-1],), "convolution_param")
            for kn, kv in kernel:
                p.editor.insert(base + (pi[-1],), len(inner), kn, kv)
        p.declare(k, ("type",), ("inner_product_param",), ("convolution_param",))
        p.structural.append(StructChange("relayer", name, "fc-to-conv", type="Convolution"))
        ops.append(_weight_op(name, (c, h, w), bool(ip.transpose)))
    p.selected = list(todo)
    names = [view.names[k] for k in todo]

    def promise(after: NetView) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        for n in names:
            ks = after.by_name.get(n, [])
            if not ks or after.layer(ks[0]).type != "Convolution":
                out.append((n, "not a Convolution"))
        return out

    p.promise = promise

    p.weights = in_order(ops)
    return p


def _weight_op(name: str, chw: tuple[int, int, int], transpose: bool) -> Any:
    why = f"fc-to-conv of '{name}'"

    def op(store: WeightStore) -> None:
        from .store import WeightError

        blobs = store.blobs(name, why)
        wt = blobs[0]
        wt = wt.reshape(wt.shape[-2], wt.shape[-1]) if wt.ndim >= 2 else wt
        if transpose:
            wt = wt.T
        c, h, w = chw
        if wt.ndim != 2 or wt.shape[1] != c * h * w:
            raise WeightError(
                f"{store.path}: '{name}' holds weights of shape {blobs[0].shape}; its input "
                f"{c}x{h}x{w} needs {c * h * w} per output"
            )
        new = [wt.reshape(wt.shape[0], c, h, w).copy(), *(b.ravel() for b in blobs[1:])]
        store.set(name, new, why, type_="Convolution")

    return op
