"""Caffe's set-up checks over a whole net, in ``Net::Init``'s order: the first failure wins.

``Net::Init`` sets the layers up one at a time. For each layer it wires bottoms and tops, runs
``Layer::SetUp`` (``LayerSetUp`` and ``Reshape``, whose CHECKs need the blob shapes, then
``SetLossWeights``), then ``AppendParam`` for each parameter blob ("Too many params", sharing
by name: STRICT / PERMISSIVE shapes, ``lr_mult`` / ``decay_mult`` agreement). The graph
(:func:`rewriter.caffe.graph.build_graph`) makes the checks that need no shapes and stops at the
first one; the shape walk (:func:`rewriter.caffe.shapes.infer_shapes`) makes the ``LayerSetUp`` /
``Reshape`` ones. :func:`check_setup` interleaves the two as Caffe does: a shape check of an
earlier layer beats a graph error of a later one, and within one layer the checks Caffe makes
after ``Reshape`` lose to the shape checks.

Where shapes cannot be known (a fork data layer without given shapes, an unknown type), the
report names the layers whose checks were skipped instead of passing silently.

The failure carries what caused it (``layer``, ``layer_index``, ``field``: a dotted path such
as ``convolution_param.group``, ``index``: which occurrence), from the table :data:`FIELDS`,
so it can be placed at ``path:line:col``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rewriter.errors import Diagnostic

from .graph import CaffeError, Graph, build_graph, upgrade_net_message
from .shapes import Shape, ShapeError, Shapes, infer_shapes, shape_string

if TYPE_CHECKING:
    from rewriter.text.cst import Document

__all__ = [
    "FIELDS",
    "SetupReport",
    "check_setup",
    "field_of",
    "phases_of",
    "refuse_or_warn",
    "skipped_warnings",
]


# --------------------------------------------------------------------------- fields

_Index = Callable[[re.Match[str], str], int | None]


def _none(m: re.Match[str], msg: str) -> int | None:
    return None


def _const(i: int) -> _Index:
    return lambda m, msg: i


def _group(i: int) -> _Index:
    return lambda m, msg: int(m.group(i))


#: (layer types or None for any, pattern on the FATAL text, field, occurrence): the field of
#: the layer that makes each set-up check fail, first match wins.
FIELDS: tuple[tuple[frozenset[str] | None, re.Pattern[str], str, _Index], ...] = tuple(
    (frozenset(types.split()) if types else None, re.compile(pattern), fld, index)
    for types, pattern, fld, index in (
        # Layer::SetUp (layer.hpp)
        ("", r"top\.size\(\) == num_loss_weights", "loss_weight", _none),
        # Net::Init / AppendParam (net.cpp)
        ("", r"\(\d+ vs\. (\d+)\) Too many params specified", "param", _group(1)),
        ("", r"mismatched lr_mult", "param.lr_mult", _none),
        ("", r"mismatched decay_mult", "param.decay_mult", _none),
        ("", r"Cannot share param", "param.name", _none),
        # Convolution / Deconvolution / Im2col (base_conv_layer.cpp)
        ("Convolution Deconvolution Im2col", r"% group_", "convolution_param.group", _none),
        ("Convolution Deconvolution Im2col", r"kernel", "convolution_param.kernel_size", _none),
        ("Convolution Deconvolution Im2col", r"[Ss]tride", "convolution_param.stride", _none),
        ("Convolution Deconvolution Im2col", r"pad", "convolution_param.pad", _none),
        ("Convolution Deconvolution Im2col", r"dilation", "convolution_param.dilation", _none),
        ("Convolution Deconvolution Im2col", r"axis_index", "convolution_param.axis", _none),
        ("Convolution Deconvolution", r"shape\[i\] >= 0", "convolution_param.kernel_size", _none),
        ("Convolution Deconvolution", r"num_output", "convolution_param.num_output", _none),
        # Pooling / SPP / LRN
        ("Pooling", r"Global_pooling", "pooling_param.global_pooling", _none),
        ("Pooling", r"pad", "pooling_param.pad", _none),
        ("Pooling", r"kernel|Filter", "pooling_param.kernel_size", _none),
        ("Pooling", r"stride|Stride", "pooling_param.stride", _none),
        ("LRN", r"local_size", "lrn_param.local_size", _none),
        # axes
        ("Concat", r"axis_index|concat_dim", "concat_param.axis", _none),
        ("Concat", r"All inputs must have the same shape", "bottom", _none),
        ("Slice", r"axis_index|slice_dim", "slice_param.axis", _none),
        ("Slice", r"slice_point|shape\[i\] >= 0", "slice_param.slice_point", _none),
        ("Slice", r"bottom_slice_axis", "bottom", _const(0)),
        ("InnerProduct", r"axis_index", "inner_product_param.axis", _none),
        ("Softmax SoftmaxWithLoss", r"axis_index", "softmax_param.axis", _none),
        ("Flatten", r"axis", "flatten_param.axis", _none),
        ("Reshape", r"inferred_axis_|copy_axis|explicit_count", "reshape_param.shape.dim", _none),
        ("Reshape", r"axis", "reshape_param.axis", _none),
        ("Crop", r"offset|crop", "crop_param.offset", _none),
        ("Eltwise", r"coeff", "eltwise_param.coeff", _none),
        ("Eltwise", r".*bottom\[(\d+)\]: ", "bottom", _group(1)),
        ("Embed", r"input_dim", "embed_param.input_dim", _none),
        ("Accuracy", r"top_k", "accuracy_param.top_k", _none),
        ("Scale", r"axis_index|num_axes", "scale_param.axis", _none),
        ("Bias", r"axis_index|num_axes", "bias_param.axis", _none),
        ("Scale Bias", r"scale->shape|bias->shape", "bottom", _const(1)),
        # a check on a later bottom: the last one the condition names
        ("", r".*bottom\[(\d+)\]", "bottom", _group(1)),
        ("", r"(?:label|labels)", "bottom", _const(1)),
        ("", r"legacy accessors|4 axes|num_axes", "bottom", _const(0)),
    )
)


def field_of(layer_type: str, message: str) -> tuple[str | None, int | None]:
    """(dotted field, occurrence) that makes ``message`` fail in a ``layer_type`` layer."""
    for types, pattern, fld, index in FIELDS:
        if types is not None and layer_type not in types:
            continue
        m = pattern.search(message)
        if m is not None:
            return fld, index(m, message)
    return None, None


def _place(
    err: CaffeError, layer: str, layer_index: int | None, layer_type: str, p: int | None = None
) -> CaffeError:
    """Record what caused ``err`` (the attributes :mod:`rewriter.caffe.diagnose` reads); ``p`` is
    the parameter blob a ``param.*`` field belongs to."""
    fld, index = field_of(layer_type, err.message)
    if p is not None and fld is not None and fld.startswith("param."):
        index = p
    err.layer = err.layer or layer
    if err.layer_index is None:
        err.layer_index = layer_index
    if err.field is None:
        err.field, err.index = fld, index
    return err


# --------------------------------------------------------------------------- the report


@dataclass
class SetupReport:
    """What ``Net::Init`` would say about one phase of a net, set-up checks included."""

    phase: str
    #: the first check that fails (Caffe's FATAL text in ``.message``), else None
    error: CaffeError | None = None
    #: the layer being set up when it failed
    layer: str | None = None
    #: layers whose shape-dependent checks could not be made, and why
    skipped: list[str] = field(default_factory=list)
    skipped_reason: str | None = None
    shapes: Shapes | None = None
    #: the initialised net, when Net::Init gets through every layer
    graph: Graph | None = None
    #: what the graph (wiring, loss weights, param specs) refuses, even when a set-up check
    #: of an earlier layer fails first
    graph_error: CaffeError | None = None
    #: the upgrade's own refusal behind ``error`` (it names the file's layers entry)
    refusal: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """One line: the verdict of the phase."""
        if self.error is not None:
            return f"phase {self.phase}: Caffe refuses the net ({self.error.location}): " + (
                self.error.message
            )
        if self.skipped:
            return (
                f"phase {self.phase}: set-up checks skipped for {len(self.skipped)} layer(s) "
                f"from '{self.skipped[0]}' on ({self.skipped_reason})"
            )
        return f"phase {self.phase}: every set-up check passes"

    def diagnostics(self, doc: Document | None) -> list[Diagnostic]:
        """The report as findings: the failure placed in ``doc`` (``path:line:col`` and a
        caret at the field), skipped layers as a warning."""
        from .diagnose import diagnostic

        if self.error is not None:
            if doc is not None:
                err = self.error
                exact = err.location == "upgrade_proto.cpp" and err.layer is None
                return [diagnostic(err, doc, self.phase, exact_index=exact)]
            text = f"Caffe refuses the net in phase {self.phase} ({self.error.location}): "
            return [Diagnostic("error", text + self.error.message, code="net-init")]
        return skipped_warnings([self], doc)

    def to_json(self) -> dict[str, Any]:
        err = self.error
        return {
            "phase": self.phase,
            "ok": self.ok,
            "error": err.message if err is not None else None,
            "error_location": err.location if err is not None else None,
            "layer": self.layer,
            "field": err.field if err is not None else None,
            "index": err.index if err is not None else None,
            "skipped": list(self.skipped),
            "skipped_reason": self.skipped_reason,
        }


# --------------------------------------------------------------------------- the walk

# graph errors Caffe raises after the layer's Reshape: its shape checks come first
_AFTER_RESHAPE = re.compile(
    r"Too many params specified|Shared param '|loss_weight must be unspecified"
)
_COUNTS = re.compile(r"\((-?\d+) vs\. (-?\d+)\)")


def check_setup(
    net: Any,
    phase: str = "TRAIN",
    *,
    stages: Sequence[str] = (),
    level: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    param_counts: Mapping[str, int] | None = None,
    batch: int | None = None,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
    graph: Graph | None = None,
) -> SetupReport:
    """Set ``net`` (a ``caffe.NetParameter``) up for ``phase`` as ``Net::Init`` would.

    Never raises :class:`CaffeError`: the first failure is ``report.error``, placed at its
    layer and field. Errors of the upgrade (before any layer is set up) are reported as well.
    ``graph``: the net's graph for these options when the caller already built it.
    """
    phase = phase.upper()
    report = SetupReport(phase)
    shape_opts: dict[str, Any] = {
        "input_shapes": input_shapes,
        "batch": batch,
        "channels": channels,
        "height": height,
        "width": width,
        "param_counts": param_counts,
    }
    from .upgrade_proto import Refusal, from_refusal

    try:
        # the graph upgrades BatchNorm param specs itself; nothing else here reads them
        upgraded = upgrade_net_message(net, batch_norm=False)
    except CaffeError as e:
        report.error = e
        return report
    except Refusal as r:  # the in-memory upgrade refuses the file's own layers entry
        report.error, report.refusal = from_refusal(r), r
        return report

    def build(msg: Any) -> Graph:
        return build_graph(msg, phase, tuple(stages), level, param_counts)

    graph_error: CaffeError | None = None
    failing = -1  # source index of the layer the graph refuses
    try:
        graph, used = (graph if graph is not None else build(upgraded)), upgraded
    except CaffeError as e:
        graph_error = e
        # the error names its layer (rewriter.caffe.diagnose's contract), else search for it
        failing = e.layer_index if e.layer_index is not None else -2
        if failing == -2 or not 0 <= failing < len(upgraded.layer):
            failing = _first_failing_layer(upgraded, build)
        if failing < 0:  # not a per-layer error: Caffe stops before any layer is set up
            report.error = e
            return report
        graph, used = _graph_through(upgraded, failing, e, build)
    report.graph_error = graph_error
    try:
        shapes = infer_shapes(graph, phase, message=used, **shape_opts)
    except ShapeError as e:
        name = e.layer or ""
        report.error = _place(e, name, _source_index(graph, name), e.layer_type)
        report.layer = name
        return report
    report.shapes = shapes
    if shapes.stopped_layer is not None:
        start = next(i for i, lay in enumerate(graph.layers) if lay.name == shapes.stopped_layer)
        report.skipped = [lay.name for lay in graph.layers[start:]]
        report.skipped_reason = shapes.stopped
    if graph_error is not None:
        lay = upgraded.layer[failing]
        graph_error = _place(graph_error, lay.name, failing, lay.type, _named(lay, graph_error))
    share_error = _sharing_checks(graph, used, shapes)
    if share_error is not None and (graph_error is None or _beats(share_error, graph_error)):
        report.error, report.layer = share_error, share_error.layer
    elif graph_error is not None:
        report.error, report.layer = graph_error, upgraded.layer[failing].name
    else:
        report.graph = graph
    return report


def _named(layer: Any, error: CaffeError) -> int | None:
    """Which of the layer's param blocks a "Shared param 'w'" error is about."""
    if "Shared param '" not in error.message:
        return None
    name = error.message.split("'")[1]
    return next((p for p, spec in enumerate(layer.param) if spec.name == name), None)


def skipped_warnings(reports: Sequence[SetupReport], doc: Document | None) -> list[Diagnostic]:
    """One warning per place the set-up checks stopped (phases that stop at the same layer
    for the same reason share it), located at that layer."""
    from .diagnose import locate_error

    groups: dict[tuple[str, str | None], list[SetupReport]] = {}
    for r in reports:
        if r.error is None and r.skipped:
            groups.setdefault((r.skipped[0], r.skipped_reason), []).append(r)
    out: list[Diagnostic] = []
    for (first, reason), same in groups.items():
        loc = locate_error(CaffeError("", "", layer=first), doc) if doc is not None else None
        phases = " and ".join(r.phase for r in same)
        counts = " and ".join(str(len(r.skipped)) for r in same)
        out.append(
            Diagnostic(
                "warning",
                f"phase {phases}: set-up checks skipped for {counts} layer(s) from '{first}' "
                f"on: {reason}",
                loc,
                code="setup-skipped",
                hint="give the data layers' shapes (--set shape.BLOB=N,C,H,W) or the "
                "parameter count of a fork layer type",
            )
        )
    return out


def phases_of(net: Any) -> tuple[str, ...]:
    """The phases worth setting up: TRAIN, and TEST when a rule or NetState can tell them
    apart (without any, both phases see the same layers)."""
    rules = net.HasField("state") or any(len(x.include) or len(x.exclude) for x in net.layer)
    rules = rules or any(len(x.include) or len(x.exclude) for x in net.layers)
    return ("TRAIN", "TEST") if rules else ("TRAIN",)


def refuse_or_warn(report: SetupReport, path: Any) -> list[str]:
    """For a command: raise the failure placed in the file at ``path`` (exit 2, as Caffe
    refuses the net), else return the warning lines (layers whose checks were skipped)."""
    from .diagnose import located

    if report.error is not None:
        with located(path, report.phase):
            raise report.refusal or report.error
    return [d.render() for d in report.diagnostics(None)]


def _source_index(graph: Graph, name: str) -> int | None:
    for lay in graph.layers:
        if lay.name == name:
            return lay.source_index
    return None


def _prefix(upgraded: Any, n: int) -> Any:
    """A copy of the net with its first ``n`` layers only."""
    msg = type(upgraded)()
    msg.CopyFrom(upgraded)
    del msg.layer[n:]
    return msg


def _first_failing_layer(upgraded: Any, build: Callable[[Any], Graph]) -> int:
    """Source index of the layer whose wiring or parameters the graph refuses (binary search
    over prefixes: Net::Init checks layer by layer), or -1 when the whole net fails."""
    lo, hi = 0, len(upgraded.layer)  # prefix lo builds (assumed), prefix hi fails
    try:
        build(_prefix(upgraded, 0))
    except CaffeError:
        return -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            build(_prefix(upgraded, mid))
            lo = mid
        except CaffeError:
            hi = mid
    return hi - 1


def _graph_through(
    upgraded: Any, failing: int, error: CaffeError, build: Callable[[Any], Graph]
) -> tuple[Graph, Any]:
    """The graph of the layers before ``failing``, and ``failing`` itself when its error comes
    after its ``Reshape`` (with what failed taken out, so its shape checks can run)."""
    if _AFTER_RESHAPE.search(error.message) and not _internal_softmax(upgraded, failing, error):
        msg = _prefix(upgraded, failing + 1)
        lay = msg.layer[failing]
        lay.ClearField("loss_weight")
        m = _COUNTS.search(error.message)
        if "Too many params" in error.message and m is not None:
            del lay.param[int(m.group(2)) :]
        if "Shared param" in error.message:
            name = error.message.split("'")[1]
            for spec in lay.param:
                if spec.name == name:
                    spec.ClearField("lr_mult")
                    spec.ClearField("decay_mult")
        try:
            return build(msg), msg
        except CaffeError:
            pass
    msg = _prefix(upgraded, failing)
    return build(msg), msg


def _internal_softmax(upgraded: Any, failing: int, error: CaffeError) -> bool:
    """Internal layers set up on a copy of the LayerParameter check its loss weights inside
    LayerSetUp, before Reshape: SoftmaxWithLoss's Softmax (one top: "(1 vs. N)"), Scale's
    Bias (``bias_term``, the same tops)."""
    lay = upgraded.layer[failing]
    if "loss_weight" not in error.message:
        return False
    if lay.type == "Scale":
        return bool(lay.scale_param.bias_term)
    return lay.type == "SoftmaxWithLoss" and "(1 vs. " in error.message


def _beats(share: CaffeError, graph_error: CaffeError) -> bool:
    """The sharing check comes first: in an earlier layer, or in the same layer for a param
    blob up to the one whose multipliers disagree (AppendParam checks shapes first)."""
    if share.layer_index != graph_error.layer_index:
        return True
    if "Shared param '" not in graph_error.message:
        return False  # loss weights and "Too many params" come before any AppendParam
    q, p = share.index, graph_error.index
    return q is None or p is None or q <= p


def _sharing_checks(graph: Graph, upgraded: Any, shapes: Shapes) -> CaffeError | None:
    """AppendParam's STRICT / PERMISSIVE shape checks between a named blob's owner and each
    sharer, on the parameter shapes the shape walk computed."""
    known: dict[int, tuple[Shape, ...]] = {ls.index: ls.params for ls in shapes.layers}
    for lay in graph.layers:
        mine = known.get(lay.index)
        if mine is None:
            break  # shapes unknown from here on (reported as skipped)
        specs = upgraded.layer[lay.source_index].param if lay.source_index is not None else []
        for p, prm in enumerate(lay.params):
            if prm.shared_from is None or prm.shared_from == (lay.index, p):
                continue
            owner_i, owner_p = prm.shared_from
            owner = graph.layers[owner_i]
            owner_shapes = known.get(owner_i, ())
            if p >= len(mine) or owner_p >= len(owner_shapes):
                continue
            this, theirs = mine[p], owner_shapes[owner_p]
            permissive = p < len(specs) and int(specs[p].share_mode) == 1
            head = (
                f"Cannot share param '{prm.name}' owned by layer '{owner.name}' with layer "
                f"'{lay.name}'; "
            )
            msg = None
            if permissive:
                a, b = _count(this), _count(theirs)
                if a != b:
                    msg = (
                        f"Check failed: this_blob->count() == owner_blob->count() ({a} vs. {b}) "
                        f"{head}count mismatch.  Owner layer param shape is "
                        f"{shape_string(theirs)}; sharing layer shape is {shape_string(this)}"
                    )
            elif tuple(this) != tuple(theirs):
                msg = (
                    f"Check failed: this_blob->shape() == owner_blob->shape() {head}shape "
                    f"mismatch.  Owner layer param shape is {shape_string(theirs)}; sharing "
                    f"layer expects shape {shape_string(this)}"
                )
            if msg is not None:
                return _place(CaffeError(msg, "net.cpp"), lay.name, lay.source_index, lay.type, p)
    return None


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
