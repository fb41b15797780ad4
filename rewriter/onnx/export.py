"""The graph walk: Caffe's initialised net (phase/stage filtered, splits inserted) to ONNX.

Caffe blobs are rewritten in place (``conv1 -> bn -> relu`` is one blob); ONNX values are
written once. Each layer's top therefore gets a fresh ONNX value, and the *last* write of a
blob takes the blob's own name, so every net output keeps its Caffe name. Inserted Split layers
are aliases (no node). Shapes come from :mod:`rewriter.caffe.shapes` (Caffe's own Reshape
arithmetic), so every Reshape/Slice here is static.

Weights are read one layer record at a time from the ``.caffemodel`` (only the layers the
net uses, matched by name to the first layer of that name, as ``CopyTrainedLayersFrom`` does)
and become initializers; without weights each parameter blob is a graph input of its shape.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rewriter.caffe.graph import CaffeError, Layer, build_graph, upgrade_net_message
from rewriter.caffe.shapes import LayerShapes, ShapeError, Shapes, infer_shapes
from rewriter.errors import Location

from .builder import DEFAULT_OPSET, MIN_OPSET, Builder, Ctx
from .errors import ExportError

if TYPE_CHECKING:
    from rewriter.caffe.netfile import NetFile

# --------------------------------------------------------------------------- locations


def layer_location(
    caffe_file: NetFile, source_index: int | None, fld: str | None
) -> Location | None:
    """Where layer ``source_index`` of the upgraded message is written (its ``fld`` field
    inside ``*_param`` or the layer when given and present, else its ``type``)."""
    if source_index is None:
        return None
    doc = caffe_file.document
    blocks = doc.get_all("layer") or doc.get_all("layers")
    # upgrade_net_message puts an Input layer first for legacy ``input:`` fields
    legacy = 1 if doc.get_all("input") and doc.get_all("layer") == blocks else 0
    i = source_index - legacy
    if not 0 <= i < len(blocks) or not blocks[i].is_message:
        return None
    layer = blocks[i]
    target = layer
    found = layer.message.get("type")
    if fld is not None:
        parts = fld.split(".")
        body = layer.message
        hit = None
        for part in parts:
            f = body.get(part)
            if f is None:
                break
            hit = f
            if not f.is_message:
                break
            body = f.message
        if hit is not None:
            found = hit
    if found is not None:
        target = found
    return doc.location(target.name_start)


# --------------------------------------------------------------------------- weights


def _read_weights(
    path: str, wanted: Mapping[str, list[tuple[int, ...]]], net: str
) -> dict[str, list[Any]]:
    """The blobs of each wanted layer (by name), as arrays of the net's parameter shapes; one
    layer record is in memory at a time. A later file layer of the same name overwrites an
    earlier one, as ``CopyTrainedLayersFrom`` copies each into the same net layer."""
    from rewriter.caffe.weights import WeightError, _Stream
    from rewriter.schema.runtime import default_schema

    schema = default_schema()
    v2 = schema.message_class("caffe.LayerParameter")
    v1 = schema.message_class("caffe.V1LayerParameter")
    out: dict[str, list[Any]] = {}
    try:
        size = os.path.getsize(path)
        fh = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise ExportError(f"{path}: cannot read: {e.strerror or e}") from None
    with fh:
        s = _Stream(fh, size, path)
        while s.pos < size:
            key = s.varint()
            fnum, wt = key >> 3, key & 7
            if wt == 2 and fnum in (100, 2):
                raw = s.read(s.varint())
                try:
                    msg: Any = (v2 if fnum == 100 else v1).FromString(raw)
                except Exception:  # protobuf's DecodeError
                    raise s.fail("a layer record that does not decode") from None
                name = str(msg.name)
                if name not in wanted:
                    continue
                out[name] = _blobs(path, name, msg.blobs, wanted[name], net)
            elif wt in (0, 1, 2, 5):
                s.skip_value(wt)
            else:
                raise WeightError(f"{path}: not a valid caffemodel: wire type {wt}")
    return out


def _blobs(path: str, name: str, blobs: Any, shapes: list[tuple[int, ...]], net: str) -> list[Any]:
    if len(blobs) != len(shapes):
        raise ExportError(
            f"{path}: Check failed: target_blobs.size() == source_layer.blobs_size() "
            f"({len(shapes)} vs. {len(blobs)}) Incompatible number of blobs for layer {name}"
        )
    arrays = []
    for j, (blob, shape) in enumerate(zip(blobs, shapes, strict=True)):
        data = blob.double_data if len(blob.double_data) else blob.data
        arr = np.asarray(data, dtype=np.float32)
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ExportError(
                f"{path}: Cannot copy param {j} weights from layer '{name}'; shape mismatch: "
                f"the file holds {arr.size} values, the net's blob {' '.join(map(str, shape))} "
                f"needs {count}; check with: rewriter weights {net} {path}"
            )
        arrays.append(arr.reshape(shape))
    return arrays


# --------------------------------------------------------------------------- the walk


def _load(net: Any) -> NetFile:
    from rewriter.caffe.netfile import NetFile, load_file

    if isinstance(net, NetFile):
        return net
    return load_file(net, root="caffe.NetParameter")


def export(
    net: Any,
    weights: str | os.PathLike[str] | None = None,
    *,
    phase: str = "TEST",
    stages: Sequence[str] = (),
    level: int = 0,
    opset: int | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    top_values: dict[tuple[str, int], str] | None = None,
) -> onnx.ModelProto:
    """Build, check (``onnx.checker``, strict shape inference) and return the ONNX model.

    ``top_values``, when given, is filled with the ONNX value holding each layer's top
    ``(layer name, top index)`` right after that layer ran (in-place chains included).
    """
    from .layers import CONVERTERS, refusal

    opset = DEFAULT_OPSET if opset is None else opset
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f"--opset {opset}: this exporter writes opsets {MIN_OPSET} to {newest}")
    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise ExportError(f"phase must be TRAIN or TEST, not {phase!r}")
    cf = _load(net)
    upgraded = upgrade_net_message(cf.message)
    try:
        graph = build_graph(upgraded, phase, tuple(stages), level)
    except CaffeError as e:
        raise ExportError(f"{cf.path}: error: Caffe stops building this net: {e}") from None
    msgs = upgraded.layer

    def fail_at(layer: Layer, why: str, fld: str | None = None) -> ExportError:
        loc = layer_location(cf, layer.source_index, fld)
        head = f"{loc}: " if loc else f"{cf.path}: "
        text = f"{head}error: layer '{layer.name}' (type {layer.type}): {why}"
        if loc is not None and loc.excerpt():
            text += "\n" + loc.excerpt()
        return ExportError(text)

    if not any(la.type != "Input" for la in graph.layers):
        raise ExportError(
            f"{cf.path}: error: nothing to export: the net has no layers besides inputs in "
            f"phase {graph.phase}"
            + (f" with stages {', '.join(graph.stages)}" if graph.stages else "")
            + " (choose the net state with --phase, --stage, --level)"
        )
    # Refuse unmappable types before any work.
    for layer in graph.layers:
        if layer.inserted_split:
            continue
        why = refusal(
            layer.type, msgs[layer.source_index] if layer.source_index is not None else None
        )
        if why is not None:
            raise fail_at(layer, why[0], why[1])
    try:
        shapes: Shapes = infer_shapes(graph, phase, input_shapes, message=upgraded)
    except ShapeError as e:
        if e.layer:
            stop = f"Caffe stops here: {e.location}: {e.message}"
            raise fail_at(graph.layer(e.layer), stop) from None
        raise ExportError(f"{cf.path}: error: Caffe stops sizing this net: {e}") from None
    layer_shapes = {ls.index: ls for ls in shapes.layers}
    if not shapes.complete:
        _filter_tail(graph, shapes, layer_shapes, fail_at)

    first_index: dict[str, int] = {}
    for layer in graph.layers:
        first_index.setdefault(layer.name, layer.index)
    values: dict[str, list[Any]] | None = None
    if weights is not None:
        wanted: dict[str, list[tuple[int, ...]]] = {}
        for ls in shapes.layers:
            if ls.params and first_index[ls.name] == ls.index:
                wanted[ls.name] = [tuple(p) for p in ls.params]
        values = _read_weights(os.fspath(weights), wanted, cf.path)
        missing = [n for n in wanted if n not in values]
        if missing:
            raise ExportError(
                f"{os.fspath(weights)}: no weights for layer(s) {', '.join(missing)}: Caffe "
                "would fill them from their fillers (random); export from a caffemodel that "
                f"holds them (see: rewriter weights {cf.path} {os.fspath(weights)})"
            )

    b = Builder(opset)
    # The last layer writing each blob (its in-place chain's end) gives the value its name.
    last_write: dict[str, int] = {}
    for layer in graph.layers:
        for t in layer.tops:
            last_write[t] = layer.index
    input_names = set(graph.inputs)
    cur: dict[str, str] = {}
    graph_inputs: list[onnx.ValueInfoProto] = []
    param_inputs: list[onnx.ValueInfoProto] = []
    param_names: dict[tuple[int, int], str] = {}

    def top_name(layer: Layer, blob: str) -> str:
        # A net input keeps its name; a blob rewritten in place is named by its last writer.
        if layer.type == "Input":
            plain = True
        else:
            plain = last_write.get(blob) == layer.index and blob not in input_names
        if plain and blob not in b.used:
            b.used.add(blob)
            return blob
        return b.fresh(f"{blob}/{layer.name}")

    for layer in graph.layers:
        ls = layer_shapes[layer.index]
        if layer.inserted_split:
            for t in layer.tops:
                cur[t] = cur[layer.bottoms[0]]
            continue
        if layer.type == "Input":
            for t, shape in zip(layer.tops, ls.top_shapes, strict=True):
                name = top_name(layer, t)
                cur[t] = name
                graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
            continue
        msg = msgs[layer.source_index] if layer.source_index is not None else None
        pnames: list[str] = []
        # Caffe copies a file layer into the *first* net layer of its name only.
        first = first_index[layer.name] == layer.index
        pvals = values.get(layer.name) if values is not None and first else None
        for j, pshape in enumerate(ls.params):
            # a blob shared by ``param { name }`` is the owner's blob
            src = layer.params[j].shared_from if j < len(layer.params) else None
            key = src if src is not None else (layer.index, j)
            if key in param_names:
                pnames.append(param_names[key])
                continue
            pname = b.fresh(f"{layer.name}/param{j}")
            if values is not None:
                if pvals is None:
                    raise fail_at(
                        layer,
                        "an earlier layer has the same name, so Caffe copies no weights into "
                        "this one (it keeps its fillers' random values); rename one of them",
                        "name",
                    )
                b.initializers.append(numpy_helper.from_array(pvals[j], pname))
            else:
                param_inputs.append(
                    helper.make_tensor_value_info(pname, TensorProto.FLOAT, list(pshape))
                )
            param_names[key] = pname
            pnames.append(pname)
        tops = [top_name(layer, t) for t in layer.tops]
        ctx = Ctx(
            b,
            layer,
            msg,
            [cur[x] for x in layer.bottoms],
            [tuple(s) for s in ls.bottom_shapes],
            tops,
            [tuple(s) for s in ls.top_shapes],
            pnames,
            [tuple(p) for p in ls.params],
            pvals,
            graph.phase,
            functools.partial(fail_at, layer),
        )
        CONVERTERS[layer.type](ctx)
        if top_values is not None:
            top_values.update({(layer.name, j): t for j, t in enumerate(tops)})
        for t, name in zip(layer.tops, tops, strict=True):
            cur[t] = name

    outputs = []
    for out in graph.outputs:
        name = cur[out]
        if name != out and out not in b.used:
            b.used.add(out)
            name = b.node("Identity", [name], [out], name=f"{out}/output")[0]
        dims: list[int | str] = list(shapes.blobs[out])
        if dims and dims[0] == -1:
            dims[0] = "batch"  # a Filter's output: as many items as the selector keeps
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    gp = helper.make_graph(
        b.nodes,
        graph.net_name or "net",
        graph_inputs + param_inputs,
        outputs,
        initializer=b.initializers,
    )
    model = helper.make_model(
        gp,
        producer_name="prototxt-rewriter",
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = min(model.ir_version, _ir_version(opset))
    model.doc_string = f"{cf.path}, phase {graph.phase}" + (
        f", weights {os.fspath(weights)}" if weights is not None else ", weights as inputs"
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError or shape inference errors
        raise ExportError(f"{cf.path}: the ONNX model does not check (a bug here): {e}") from None
    return model


def _filter_tail(
    graph: Any,
    shapes: Shapes,
    layer_shapes: dict[int, LayerShapes],
    fail_at: Callable[[Layer, str, str | None], ExportError],
) -> None:
    """Shapes past a Filter layer (its batch size depends on the data): allowed only when
    the Filter layers' tops are net outputs, which ONNX declares with a symbolic batch."""
    stop = graph.layer(shapes.stopped_layer or "")
    for layer in graph.layers[stop.index :]:
        if layer.type != "Filter" or any(t not in graph.outputs for t in layer.tops):
            raise fail_at(
                layer,
                f"{shapes.stopped}; give the input shapes: --set shape.BLOB=D,D,...",
                None,
            )
        bottoms = tuple(shapes.blobs[x] for x in layer.bottoms)
        tops = tuple((-1, *s[1:]) for s in bottoms[:-1])
        for t, s in zip(layer.tops, tops, strict=True):
            shapes.blobs[t] = s
        layer_shapes[layer.index] = LayerShapes(
            layer.name, layer.type, layer.index, False, layer.bottoms, layer.tops, bottoms,
            tops, (), (),
        )  # fmt: skip


def _ir_version(opset: int) -> int:
    """The IR version that goes with ``opset`` (so older runtimes load the file)."""
    for ir, op in ((7, 14), (8, 18), (9, 20), (10, 22)):
        if opset <= op:
            return ir
    return int(onnx.IR_VERSION)
