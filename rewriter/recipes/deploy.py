"""train_val -> deploy: the inference net Caffe users write by hand, made by minimal edits.

:func:`deploy_document` edits the lossless tree (:mod:`rewriter.text.edit`), so the comments and
layout of every kept layer survive. What it does, in order:

1. **Phase.** Caffe's TEST net (with the chosen stages) decides which layers stay; a
   TRAIN-only layer is deleted, a kept layer loses its ``include``/``exclude`` rules.
2. **Outputs.** A ``SoftmaxWithLoss`` becomes a ``Softmax`` (a ``SigmoidCrossEntropyLoss`` a
   ``Sigmoid``) named ``output`` (default ``prob``) that reads only the prediction. By default
   only the *last* such loss becomes an output (GoogLeNet's auxiliary classifiers go away);
   ``outputs="all"`` or a list of loss-layer names chooses otherwise. A loss that runs only in
   TRAIN (SqueezeNet's) still counts. Every other loss and ``Accuracy`` layer is deleted.
3. **Dead layers.** A layer that now feeds nothing (an auxiliary branch, a label reshape) is
   deleted; so is a ``Silence`` whose inputs are gone.
4. **Inputs.** Each data layer (no bottoms: ``Data``, ``ImageData``, ``HDF5Data``, ``Python``,
   ``DummyData``...) becomes an ``Input`` layer named after its data top, with only the tops
   the deploy net still reads (the label goes). Its shape is ``(batch, channels, height,
   width)``: batch from the options (default 1), the rest from the options or the layer's
   ``crop_size`` / ``new_height``/``new_width``; other tops need ``input_shapes``. A V1 file
   gets the legacy ``input:``/``input_dim:`` fields instead (V1 has no ``Input`` type).
5. **Optional:** ``strip_params`` (``param`` blocks; named ones keep only their name, so weight
   sharing survives; V1 ``blobs_lr``/``weight_decay``), ``strip_fillers`` (every ``*filler``
   of a kept layer), ``strip_dropout`` (Dropout is the identity at TEST; readers are rewired).

The result is checked before it is returned: it must bind strictly to the schema and Caffe's
``Net::Init`` and shape inference must accept it (:class:`DeployError` otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewriter import hints
from rewriter.caffe.layer_params import is_loss_type
from rewriter.errors import RewriterError
from rewriter.recipes.settings import parse_settings
from rewriter.text.cst import Document, Field, MessageBody, encode_string, parse
from rewriter.text.edit import Editor, Value

__all__ = [
    "DEPLOY_KEYS",
    "DeployError",
    "DeployResult",
    "deploy_document",
    "is_loss_type",
    "parse_settings",
    "verify_deploy",
]

#: loss type -> its inference counterpart (V2 type string)
CONVERTIBLE: dict[str, str] = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}
_V1_TYPE = {"Softmax": "SOFTMAX", "Sigmoid": "SIGMOID"}
_KEEP_BOTTOMLESS = frozenset({"Input", "Parameter"})


class DeployError(RewriterError):
    """The deploy net cannot be made (or would not load in Caffe); the message says why."""


def _is_accuracy(layer_type: str) -> bool:
    return layer_type.endswith("Accuracy")


@dataclass
class DeployResult:
    """The deploy document plus an account of every change."""

    document: Document
    #: (layer name, type, why it was removed), file order
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    #: (old name, old type, new name, new type)
    converted: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: (Input layer name, tops, shapes) created from data layers
    inputs: list[tuple[str, tuple[str, ...], list[tuple[int, ...]]]] = field(default_factory=list)
    #: Caffe's net outputs of the deploy net (sorted, like Caffe)
    outputs: list[str] = field(default_factory=list)
    #: (blob, why) kept as an output: the prediction a loss without an inference form read
    kept: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: shape inference on the result (a rewriter.caffe.shapes.Shapes)
    shapes: Any = None

    @property
    def code(self) -> str:
        return self.document.code

    def summary(self) -> list[str]:
        lines = []
        for name, tops, shapes in self.inputs:
            dims = "; ".join(
                f"{t} ({', '.join(map(str, s))})" for t, s in zip(tops, shapes, strict=False)
            )
            lines.append(f"input  {name}: {dims}")
        for old, old_type, new, new_type in self.converted:
            lines.append(f"output {new} ({new_type}) from {old or '(unnamed)'} ({old_type})")
        for blob, why in self.kept:
            lines.append(f"output {blob}: kept ({why})")
        for name, layer_type, why in self.removed:
            lines.append(f"remove {name or '(unnamed)'} ({layer_type}): {why}")
        lines.append(f"net outputs: {', '.join(self.outputs) or '(none)'}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return lines


@dataclass
class _Entry:
    """One layer of the (upgraded) net the deploy decisions are made on."""

    index: int  # in the upgraded message's layer list
    doc_index: int | None  # position among the document's layer fields (None: legacy input)
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    msg: Any
    role: str  # data | input | loss | accuracy | layer | excluded-loss
    sources: list[int | None] = field(default_factory=list)  # entry per bottom (version)
    readers: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # top j -> readers
    needed: bool = False
    convert: bool = False


def _options_stages(stage: str | Sequence[str] | None) -> tuple[str, ...]:
    if stage is None:
        return ()
    if isinstance(stage, str):
        return tuple(s for s in stage.split(",") if s)
    return tuple(stage)


def deploy_document(
    doc: Document,
    *,
    batch: int = 1,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
    output: str | None = None,
    outputs: str | Sequence[str] = "last",
    stage: str | Sequence[str] | None = None,
    phase: str = "TEST",
    strip_params: bool = False,
    strip_fillers: bool = False,
    strip_dropout: bool = False,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    lenient: bool = False,
    schema: Any = None,
    editor: Editor | None = None,
) -> DeployResult:
    """Turn a train/val net into a deploy net; see the module docstring for the rules.

    ``output`` names the converted output layer and its top (default ``"prob"``; with several
    outputs each is ``<output>_<prediction blob>``). ``stage`` (a name, comma-separated names
    or a list) selects the stages whose layers are kept, ``phase`` (default ``TEST``) the phase.
    ``input_shapes`` gives shapes by top name for Input tops that cannot be derived (and wins
    over derived ones).

    With ``editor`` (an :class:`~rewriter.text.edit.Editor` on ``doc``), the edits are only recorded
    there, for a caller that applies them together with others: the result then carries the
    account of the changes but ``document`` is ``doc`` itself, unchecked; call
    :func:`verify_deploy` on the applied document.
    """
    from rewriter.caffe.graph import CaffeError, build_graph, upgrade_net_message
    from rewriter.schema.bind import bind

    stages = _options_stages(stage)
    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise DeployError(f"phase must be TRAIN or TEST, not {phase!r}")
    # Fork-only fields often sit in the data layers a deploy net drops: read the input
    # leniently; the result is held to the strict schema below (unless lenient).
    from rewriter.schema.bind import require_net

    require_net(doc)
    bound = bind(doc, schema, "caffe.NetParameter", lenient=True)
    bound.raise_for_errors()
    net: Any = bound.message
    if any(layer.HasField("layer") for layer in net.layers):
        raise DeployError(
            f"{doc.path}: a V0 net (layers {{ layer {{ ... }} }}); upgrade it first "
            "(Caffe's upgrade_net_proto_text) and run deploy on the result"
        )
    v1 = len(net.layers) > 0
    if v1 and len(net.layer) > 0:
        raise DeployError(f"{doc.path}: the net mixes V1 'layers' and V2 'layer' fields")
    key = "layers" if v1 else "layer"
    layer_paths = [i for i, f in enumerate(doc.fields) if f.name == key]
    upgraded = upgrade_net_message(net)
    legacy = 1 if len(net.input) > 0 else 0
    if len(layer_paths) + legacy != len(upgraded.layer):
        raise DeployError(f"{doc.path}: cannot match the document's layers to the net's")
    try:
        graph = build_graph(upgraded, phase, stages)
    except CaffeError as err:
        from rewriter.caffe.diagnose import diagnostic

        found = diagnostic(err, doc, phase)
        if not stages and not found.hint:
            found.hint = f"does it need a stage? {hints.net_state()}"
        raise DeployError(found.render()) from None
    kept = {la.source_index for la in graph.layers if la.source_index is not None}
    result = DeployResult(doc)

    # ---- the entries: TEST layers plus losses that only run in another phase
    entries: list[_Entry] = []
    for i, msg in enumerate(upgraded.layer):
        doc_index = i - legacy if i >= legacy else None
        ltype = str(msg.type)
        bottoms, tops = list(msg.bottom), list(msg.top)
        if i not in kept:
            if ltype in CONVERTIBLE and bottoms:
                entries.append(
                    _Entry(i, doc_index, msg.name, ltype, bottoms, tops, msg, "excluded-loss")
                )
            continue
        if not bottoms and ltype not in _KEEP_BOTTOMLESS:
            role = "data"
        elif ltype == "Input":
            role = "input"
        elif is_loss_type(ltype) or any(w != 0 for w in msg.loss_weight):
            role = "loss"
        elif _is_accuracy(ltype):
            role = "accuracy"
        else:
            role = "layer"
        entries.append(_Entry(i, doc_index, msg.name, ltype, bottoms, tops, msg, role))

    # ---- blob versions: which entry wrote what each bottom reads
    last: dict[str, int] = {}
    for e_i, e in enumerate(entries):
        e.sources = [last.get(b) for b in e.bottoms]
        for j, b in enumerate(e.bottoms):
            src = e.sources[j]
            if src is None or e.role == "excluded-loss":
                continue
            writer = entries[src]
            top_j = _top_index(writer, b)
            writer.readers.setdefault(top_j, []).append((e_i, j))
        if e.role == "excluded-loss":
            continue
        for t in e.tops:
            last[t] = e_i

    # ---- which losses become outputs
    candidates = [
        e_i
        for e_i, e in enumerate(entries)
        if e.type in CONVERTIBLE and e.role in ("loss", "excluded-loss") and e.sources
    ]
    seen_pred: dict[tuple[int | None, str], int] = {}
    unique: list[int] = []
    for e_i in candidates:
        e = entries[e_i]
        pred = (e.sources[0], e.bottoms[0])
        if e.sources[0] is None:
            continue
        if pred in seen_pred:
            # the same prediction read by a TRAIN and a TEST variant: prefer the TEST one
            other = seen_pred[pred]
            if entries[other].role == "excluded-loss" and e.role == "loss":
                unique[unique.index(other)] = e_i
                seen_pred[pred] = e_i
            continue
        seen_pred[pred] = e_i
        unique.append(e_i)
    # Losses with no inference counterpart (ContrastiveLoss, EuclideanLoss...): their
    # prediction inputs (every bottom not read straight from a data layer) stay as outputs.
    plain = [
        e_i
        for e_i, e in enumerate(entries)
        if e.role == "loss" and e.type not in CONVERTIBLE and _predictions(entries, e)
    ]
    selected: list[int]
    #: (writer entry, blob, why) kept as net outputs
    keep: list[tuple[int, str, str]] = []
    if isinstance(outputs, str) and outputs in ("last", "all"):
        selected = unique[-1:] if outputs == "last" else unique
        if not unique:
            for e_i in plain[-1:] if outputs == "last" else plain:
                e = entries[e_i]
                why = f"{e.type} '{e.name}' read it"
                keep += [(src, b, why) for src, b in _predictions(entries, e)]
    else:
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        selected = []
        for name in names:
            hits = [e_i for e_i in unique if entries[e_i].name == name]
            if hits:
                selected.extend(hits)
                continue
            loss = [e_i for e_i in plain if entries[e_i].name == name]
            for e_i in loss:
                e = entries[e_i]
                why = f"{e.type} '{e.name}' read it"
                keep += [(src, b, why) for src, b in _predictions(entries, e)]
            producer = _last_writer(entries, name)
            if not loss and producer is None:
                known = [entries[e_i].name for e_i in unique + plain]
                raise DeployError(
                    f"{doc.path}: no loss layer or blob named {name!r} in the {phase} net "
                    f"(losses: {', '.join(map(repr, known)) or 'none'}); outputs takes loss "
                    "layer names or any blob: --set outputs=BLOB[,BLOB...]"
                )
            if not loss and producer is not None:
                keep.append((producer, name, "asked for"))
    for e_i in selected:
        entries[e_i].convert = True

    # ---- liveness: outputs and natural outputs are needed, and whatever feeds them
    def mark(e_i: int) -> None:
        stack = [e_i]
        while stack:
            k = stack.pop()
            e = entries[k]
            if e.needed:
                continue
            e.needed = True
            for j, src in enumerate(e.sources):
                if e.convert and j > 0:
                    break  # a converted loss reads only its prediction
                if src is not None:
                    stack.append(src)

    for src, _, _ in keep:
        mark(src)
    for e_i, e in enumerate(entries):
        if e.convert:
            mark(e_i)
        elif (
            e.role in ("layer", "input")
            and e.tops
            and any(not e.readers.get(j) for j in range(len(e.tops)))
        ):
            # a top version nobody reads is one of the net's outputs: keep its producer
            mark(e_i)

    def read_elsewhere(src: int | None, blob: str) -> bool:
        """The blob version is still read by a kept layer that has outputs."""
        if src is None:
            return False
        w = entries[src]
        return any(
            entries[r].needed and entries[r].tops and not (entries[r].convert and k > 0)
            for r, k in w.readers.get(_top_index(w, blob), [])
        )

    for e in entries:
        if e.role == "layer" and not e.tops and not e.needed and e.sources:
            # Silence, HDF5Output...: kept only while everything they read is still there
            e.needed = all(read_elsewhere(s, b) for s, b in zip(e.sources, e.bottoms, strict=True))
    for e in entries:
        if e.needed and e.role in ("loss", "accuracy") and not e.convert:
            raise DeployError(
                f"{doc.path}: layer '{e.name}' ({e.type}) is removed in a deploy net but a "
                "kept layer reads its output"
            )

    # ---- edits
    ed = editor if editor is not None else Editor(doc)
    layer_fields = [doc.fields[i] for i in layer_paths]

    def path_of(e: _Entry) -> tuple[int, ...]:
        assert e.doc_index is not None
        return (layer_paths[e.doc_index],)

    converted_names: list[str] = []
    for e_i in selected:
        e = entries[e_i]
        if len(selected) == 1:
            converted_names.append(output or "prob")
        else:
            converted_names.append(f"{output or 'prob'}_{e.bottoms[0]}")
    existing_tops = {t for e in entries if e.needed and not e.convert for t in e.tops}
    for new_name in converted_names:
        if new_name in existing_tops:
            raise DeployError(
                f"{doc.path}: the output name {new_name!r} is already a blob of the "
                "net; choose another: --set output=NAME (Python API: output='NAME')"
            )

    removed_rows: list[tuple[int, str, str, str]] = []
    in_test = {e.index for e in entries if e.role != "excluded-loss"}
    for i, msg in enumerate(upgraded.layer):
        if i < legacy:
            continue
        if i not in in_test and not any(e.index == i and e.convert for e in entries):
            ed.remove((layer_paths[i - legacy],))
            removed_rows.append((i, str(msg.name), str(msg.type), f"not in the {phase} net"))

    dropout_rewire: set[tuple[int, int]] = set()
    stripped: set[int] = set()
    k_out = 0
    for e_i, e in enumerate(entries):
        if e.role == "excluded-loss" and not e.convert:
            continue  # already removed above
        if e.doc_index is None:
            continue  # the Input layer Caffe makes from legacy input fields
        path = path_of(e)
        lf = layer_fields[e.doc_index]
        if e.convert:
            new_name = converted_names[k_out]
            k_out += 1
            new_type = CONVERTIBLE[e.type]
            _convert(ed, path, lf, new_name, new_type, v1)
            result.converted.append((e.name, e.type, new_name, new_type))
            continue
        if e.role in ("loss", "accuracy"):
            ed.remove(path)
            why = "loss layer" if e.role == "loss" else "accuracy layer"
            if e.type in CONVERTIBLE:
                why += " (not a selected output)"
            removed_rows.append((e.index, e.name, e.type, why))
            continue
        if not e.needed:
            ed.remove(path)
            what = "data layer" if e.role == "data" else "layer"
            removed_rows.append((e.index, e.name, e.type, f"{what} feeds no output"))
            continue
        if e.role == "data":
            _replace_data(
                ed, doc, path, e, entries, v1, result,
                batch=batch, channels=channels, height=height, width=width,
                input_shapes=input_shapes,
            )  # fmt: skip
            continue
        if strip_dropout and e.type == "Dropout" and len(e.bottoms) == 1 and len(e.tops) == 1:
            ed.remove(path)
            removed_rows.append((e.index, e.name, e.type, "Dropout is the identity at TEST"))
            stripped.add(e_i)
            dropout_rewire.update(e.readers.get(0, []))
            continue
        _clean_layer(ed, path, lf, v1, strip_params, strip_fillers)

    # rewire readers of stripped Dropout tops (a chain of them resolves to its first input)
    for reader, j in sorted(dropout_rewire):
        r = entries[reader]
        blob = r.bottoms[j]
        w_i = r.sources[j]
        while w_i is not None and w_i in stripped:
            blob = entries[w_i].bottoms[0]
            w_i = entries[w_i].sources[0]
        if r.doc_index is not None and blob != r.bottoms[j]:
            _set_nth(ed, path_of(r), layer_fields[r.doc_index], "bottom", j, encode_string(blob))

    result.removed = [(n, t, why) for _, n, t, why in sorted(removed_rows)]
    result.kept = [(blob, why) for _, blob, why in keep]
    if editor is not None:
        return result
    new_doc = parse(ed.apply().code, doc.path)
    result.document = new_doc
    verify_deploy(new_doc, result, lenient, schema)
    return result


def _predictions(entries: list[_Entry], loss: _Entry) -> list[tuple[int, str]]:
    """(writer, blob) of a loss's inputs that a layer computes (a label comes from data)."""
    return [
        (src, b)
        for src, b in zip(loss.sources, loss.bottoms, strict=True)
        if src is not None and entries[src].role not in ("data", "input")
    ]


def _last_writer(entries: list[_Entry], blob: str) -> int | None:
    """The entry that last writes ``blob`` in the kept net (its final version)."""
    found = None
    for e_i, e in enumerate(entries):
        if e.role not in ("excluded-loss", "loss", "accuracy") and blob in e.tops:
            found = e_i
    return found


def _top_index(writer: _Entry, blob: str) -> int:
    # the last top of that name (a layer cannot write the same name twice)
    for j in range(len(writer.tops) - 1, -1, -1):
        if writer.tops[j] == blob:
            return j
    return 0


# --------------------------------------------------------------------------- edit helpers


def _children(lf: Field) -> list[tuple[int, Field]]:
    body = lf.body
    if not isinstance(body, MessageBody):
        return []
    return list(enumerate(body.fields))


def _named(lf: Field, name: str) -> list[int]:
    return [j for j, f in _children(lf) if f.name == name]


def _set_nth(ed: Editor, path: tuple[int, ...], lf: Field, name: str, n: int, value: str) -> None:
    hits = _named(lf, name)
    if n >= len(hits):
        raise DeployError(f"layer at {path}: no {name} #{n} to rewrite")
    f = lf.message.fields[hits[n]]
    if f.body is not None:
        raise DeployError(f"layer at {path}: list syntax for '{name}' is not supported")
    ed.set_value(path + (hits[n],), value)


def _convert(
    ed: Editor, path: tuple[int, ...], lf: Field, new_name: str, new_type: str, v1: bool
) -> None:
    """Loss layer -> its inference layer, in place (comments inside the layer stay)."""
    kids = _children(lf)
    for _, f in kids:
        if f.body is not None and f.name in ("bottom", "top"):
            raise DeployError(f"layer '{new_name}': list syntax for '{f.name}' is not supported")
    names = _named(lf, "name")
    if names:
        ed.set_value(path + (names[-1],), encode_string(new_name))
    else:
        ed.insert(path, 0, "name", encode_string(new_name))
    types = _named(lf, "type")
    type_text = _V1_TYPE[new_type] if v1 else encode_string(new_type)
    if types:
        ed.set_value(path + (types[-1],), type_text)
    for j in _named(lf, "bottom")[1:]:
        ed.remove(path + (j,))
    tops = _named(lf, "top")
    if tops:
        ed.set_value(path + (tops[0],), encode_string(new_name))
        for j in tops[1:]:
            ed.remove(path + (j,))
    else:
        bottoms = _named(lf, "bottom")
        at = bottoms[0] + 1 if bottoms else len(kids)
        ed.insert(path, at, "top", encode_string(new_name))
    for j, f in kids:
        if f.name in ("loss_weight", "loss_param", "propagate_down", "include", "exclude"):
            ed.remove(path + (j,))


def _clean_layer(
    ed: Editor,
    path: tuple[int, ...],
    lf: Field,
    v1: bool,
    strip_params: bool,
    strip_fillers: bool,
) -> None:
    for j, f in _children(lf):
        if (
            f.name in ("include", "exclude")
            or strip_params
            and v1
            and f.name in ("blobs_lr", "weight_decay")
        ):
            ed.remove(path + (j,))
        elif strip_params and not v1 and f.name == "param" and isinstance(f.body, MessageBody):
            inner = list(enumerate(f.body.fields))
            if any(g.name == "name" for _, g in inner):
                for k, g in inner:
                    if g.name not in ("name", "share_mode"):
                        ed.remove(path + (j, k))
            else:
                ed.remove(path + (j,))
        elif strip_fillers and f.name.endswith("_param") and isinstance(f.body, MessageBody):
            for k, g in enumerate(f.body.fields):
                if g.name.endswith("filler"):
                    ed.remove(path + (j, k))


def _replace_data(
    ed: Editor,
    doc: Document,
    path: tuple[int, ...],
    e: _Entry,
    entries: list[_Entry],
    v1: bool,
    result: DeployResult,
    *,
    batch: int,
    channels: int | None,
    height: int | None,
    width: int | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
) -> None:
    from rewriter.caffe.shapes import ShapeError, ShapeUnknown, data_layer_shapes

    wanted = [
        j
        for j in range(len(e.tops))
        if any(
            entries[r].needed and not (entries[r].convert and k > 0)
            for r, k in e.readers.get(j, [])
        )
    ]
    tops = [e.tops[j] for j in wanted]
    given = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    notes: list[str] = []
    try:
        shapes, notes = data_layer_shapes(
            e.msg, batch=batch, channels=channels, height=height, width=width,
            input_shapes=given,
        )  # fmt: skip
        if e.type == "DummyData":
            shapes = [(batch, *s[1:]) if s and e.tops[j] not in given else s
                      for j, s in enumerate(shapes)]  # fmt: skip
    except ShapeUnknown as err:
        # A layer whose shapes live in user code or files: build them from the options.
        shapes = []
        for j, t in enumerate(e.tops):
            if t in given:
                shapes.append(given[t])
            elif j == 0 and height and width:
                shapes.append((batch, channels or 3, height, width))
            elif j in wanted:
                hint = hints.shape([t])
                if "input_shapes" not in str(err):
                    hint = f"or {hint}"
                raise DeployError(
                    f"{doc.path}: cannot size Input top '{t}': {err}; {hint}"
                ) from None
            else:
                shapes.append(())
    except ShapeError as err:
        raise DeployError(f"{doc.path}: {err}") from None
    chosen = [tuple(int(d) for d in shapes[j]) for j in wanted]
    for k, (j, t) in enumerate(zip(wanted, tops, strict=True)):
        if j > 0 and t not in given:
            result.warnings.append(
                f"Input top '{t}' gets shape {chosen[k]} from the data layer; to change it, "
                f"{hints.shape([t])}"
            )
    result.warnings.extend(f"data layer '{e.name}': {n}" for n in notes)
    name = e.tops[0] if e.tops else e.name
    ed.remove(path)
    at = path[0]
    if v1:
        use_dims = all(len(s) == 4 for s in chosen)
        for t, s in zip(tops, chosen, strict=True):
            ed.insert((), at, "input", encode_string(t))
            if use_dims:
                for d in s:
                    ed.insert((), at, "input_dim", str(d))
            else:
                dims: list[tuple[str, Value]] = [("dim", str(d)) for d in s]
                ed.insert((), at, "input_shape", dims)
        name = "input"
    else:
        value: list[tuple[str, Value]] = [
            ("name", encode_string(name)),
            ("type", encode_string("Input")),
        ]
        value += [("top", encode_string(t)) for t in tops]
        shapes_v: list[tuple[str, Value]] = [
            ("shape", [("dim", str(d)) for d in s]) for s in chosen
        ]
        value.append(("input_param", shapes_v))
        ed.insert((), at, "layer", value)
    result.inputs.append((name, tuple(tops), chosen))


def verify_deploy(
    doc: Document, result: DeployResult, lenient: bool = False, schema: Any = None
) -> None:
    """Check a deploy document (binds strictly, Caffe's Net::Init and shapes accept it).

    Fills ``result.outputs``, ``result.shapes`` and ``result.document``; raises DeployError.
    """
    result.document = doc
    from rewriter.caffe.setup_checks import check_setup
    from rewriter.schema.bind import bind

    bound = bind(doc, schema, "caffe.NetParameter", lenient)
    if bound.errors:
        text = "\n".join(d.render() for d in bound.errors)
        raise DeployError(
            f"the deploy net keeps fields the schema does not know (pass lenient to keep them "
            f"anyway):\n{text}"
        )
    # Net::Init with every set-up check (shapes, parameter sharing), in Caffe's order
    report = check_setup(bound.message, "TEST")
    if report.error is not None or report.graph is None or report.shapes is None:
        (diag,) = report.diagnostics(doc)
        raise DeployError(f"Caffe would refuse the deploy net: {diag.render()}")
    result.outputs = list(report.graph.outputs)
    if not result.outputs:
        raise DeployError(
            f"{doc.path}: the deploy net would have no output (nothing is left that a loss or "
            "a reader does not consume); name the blob(s) to keep: --set outputs=BLOB[,BLOB...] "
            "(Python API: outputs=['BLOB'])"
        )
    result.shapes = report.shapes
    if not report.shapes.complete:
        result.warnings.append(str(report.shapes.stopped))


DEPLOY_KEYS = (
    "batch", "channels", "height", "width", "output", "outputs", "stage", "phase", "strip_params",
    "strip_fillers", "strip_dropout", "input_shapes",
)  # fmt: skip
