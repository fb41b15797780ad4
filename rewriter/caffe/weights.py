"""Which layers a ``.caffemodel`` initialises, read as a stream, checked the way Caffe copies.

A ``.caffemodel`` is a binary ``NetParameter`` whose layers carry their learned ``blobs``. It can
be hundreds of megabytes; :func:`read_caffemodel` walks the protobuf wire format itself and keeps
only each layer's name, type and blob *shapes*: the ``data`` payloads are skipped with a seek and
never read, so memory stays small whatever the file size.

:func:`check_weights` then does what ``Net::CopyTrainedLayersFrom`` (``net.cpp``) does when
``caffe train --weights`` or ``net.copy_from`` loads the file (after ``UpgradeNetAsNeeded``, so
V1 ``layers`` and V0 files count too):

* each layer of the file is matched **by name** to the *first* layer of the net with that name;
  a file layer with no such net layer is ignored ("Ignoring source layer ...");
* the blob count must equal the net layer's parameter count, else Caffe stops with
  ``Check failed: target_blobs.size() == source_layer.blobs_size() (T vs. S) Incompatible
  number of blobs for layer NAME``;
* every blob's shape must equal the net's parameter shape (``Blob::ShapeEquals``: a blob saved
  with the legacy ``num/channels/height/width`` fields matches a shape of at most 4 axes padded
  with 1s on the left), else Caffe stops with ``Cannot copy param J weights from layer 'NAME';
  shape mismatch.  Source param shape is ...; target param shape is .... To learn this layer's
  parameters from scratch rather than copying from a saved net, rename the layer.``

Net layers with parameters that receive nothing start from their fillers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rewriter.errors import RewriterError

__all__ = [
    "BlobInfo",
    "SourceLayer",
    "WeightError",
    "WeightFile",
    "WeightReport",
    "check_weights",
    "iter_caffemodel",
    "read_caffemodel",
]


class WeightError(RewriterError):
    """The weights file cannot be read (not a caffemodel, truncated, HDF5...)."""


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob: its shape as Caffe's ``Blob::FromProto`` makes it, never its values."""

    shape: tuple[int, ...]
    #: (num, channels, height, width) when the blob uses the legacy 4-D fields
    legacy: tuple[int, int, int, int] | None
    #: number of stored values (``data`` or ``double_data``)
    stored: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SourceLayer:
    """One layer of the weights file (after Caffe's V0/V1 upgrade rules)."""

    index: int
    name: str
    type: str
    blobs: tuple[BlobInfo, ...]
    format: str  # "V2" (layer), "V1" (layers), "V0" (layers { layer })

    @property
    def param_count(self) -> int:
        return sum(b.count for b in self.blobs)


@dataclass
class WeightFile:
    path: str
    size: int
    net_name: str
    layers: list[SourceLayer]
    format: str


# --------------------------------------------------------------------------- wire format

_WT_VARINT, _WT_64, _WT_LEN, _WT_SGROUP, _WT_EGROUP, _WT_32 = 0, 1, 2, 3, 4, 5


def _refuse_text(fh: IO[bytes], path: str) -> None:
    """A prototxt given where the binary model goes: say so, not "field number 13 at byte 1"."""
    from rewriter.text.fileio import looks_binary

    head = fh.read(4096)
    fh.seek(0)
    start = head.lstrip()[:1]
    if head and not looks_binary(head) and (start.isalpha() or start == b"#"):
        raise WeightError(
            f"{path}: a text file (a prototxt?), not a binary .caffemodel; weights takes "
            "the net first and the model second: rewriter weights NET.prototxt MODEL.caffemodel"
        )


class _Stream:
    """A binary file read forward, with skips done by seeking (payloads are never read)."""

    def __init__(self, fh: IO[bytes], size: int, path: str) -> None:
        self.fh = fh
        self.size = size
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> WeightError:
        return WeightError(f"{self.path}: not a valid caffemodel: {what} at byte {self.pos}")

    def varint(self) -> int:
        result = 0
        shift = 0
        while True:
            b = self.fh.read(1)
            if not b:
                raise self.fail("the file ends inside a number (truncated?)")
            self.pos += 1
            byte = b[0]
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise self.fail("a number longer than 10 bytes")

    def read(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise self.fail(f"a {n}-byte field runs past the end of the file (truncated?)")
        data = self.fh.read(n)
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"a {n}-byte field runs past the end of the file (truncated?)")
        self.fh.seek(n, os.SEEK_CUR)
        self.pos += n

    def skip_value(self, wire_type: int) -> None:
        if wire_type == _WT_VARINT:
            self.varint()
        elif wire_type == _WT_64:
            self.skip(8)
        elif wire_type == _WT_LEN:
            self.skip(self.varint())
        elif wire_type == _WT_32:
            self.skip(4)
        else:
            raise self.fail(f"wire type {wire_type} (groups are not used by caffe.proto)")


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _keys(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(field, wire type, value or start, end) over an in-memory message (small ones only)."""
    pos = 0
    n = len(buf)

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            if pos >= n:
                raise ValueError("truncated varint")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    while pos < n:
        key = varint()
        fnum, wt = key >> 3, key & 7
        if wt == _WT_VARINT:
            yield fnum, wt, varint(), pos
        elif wt == _WT_LEN:
            length = varint()
            yield fnum, wt, pos, pos + length
            pos += length
        elif wt == _WT_64:
            yield fnum, wt, pos, pos + 8
            pos += 8
        elif wt == _WT_32:
            yield fnum, wt, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"wire type {wt}")


def _packed_varints(buf: bytes) -> list[int]:
    out: list[int] = []
    pos = 0
    while pos < len(buf):
        result = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        out.append(_signed(result))
    return out


# BlobProto field numbers
_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH = 1, 2, 3, 4
_B_DATA, _B_DIFF, _B_SHAPE, _B_DDATA, _B_DDIFF = 5, 6, 7, 8, 9


def _blob(s: _Stream, end: int) -> BlobInfo:
    legacy: dict[int, int] = {}
    dims: list[int] = []
    stored = 0
    dstored = 0
    while s.pos < end:
        key = s.varint()
        fnum, wt = key >> 3, key & 7
        if fnum in (_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH) and wt == _WT_VARINT:
            legacy[fnum] = _signed(s.varint(), 32)
        elif fnum == _B_SHAPE and wt == _WT_LEN:
            raw = s.read(s.varint())
            try:
                for f2, w2, v, e2 in _keys(raw):
                    if f2 == 1 and w2 == _WT_VARINT:
                        dims.append(_signed(v))
                    elif f2 == 1 and w2 == _WT_LEN:
                        dims.extend(_packed_varints(raw[v:e2]))
            except (ValueError, IndexError):
                raise s.fail("a malformed blob shape") from None
        elif fnum == _B_DATA and wt == _WT_LEN:
            length = s.varint()
            stored += length // 4
            s.skip(length)
        elif fnum == _B_DATA and wt == _WT_32:
            stored += 1
            s.skip(4)
        elif fnum == _B_DDATA and wt == _WT_LEN:
            length = s.varint()
            dstored += length // 8
            s.skip(length)
        elif fnum == _B_DDATA and wt == _WT_64:
            dstored += 1
            s.skip(8)
        else:
            s.skip_value(wt)
    if s.pos != end:
        raise s.fail("a blob's fields overrun its length")
    if legacy:
        n, c, h, w = (legacy.get(k, 0) for k in (_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH))
        return BlobInfo((n, c, h, w), (n, c, h, w), dstored if dstored else stored)
    return BlobInfo(tuple(dims), None, dstored if dstored else stored)


def _v1_type_names() -> dict[int, str]:
    from rewriter.schema.runtime import default_schema

    from .upgrade_proto import _V1_TYPES

    cls: Any = default_schema().message_class("caffe.V1LayerParameter")
    enum = cls.DESCRIPTOR.fields_by_name["type"].enum_type
    return {v.number: _V1_TYPES.get(v.name, v.name) for v in enum.values}


def _layer(s: _Stream, end: int, fmt: str, index: int, v1_names: dict[int, str]) -> SourceLayer:
    """A V2 LayerParameter (fmt "V2") or V1LayerParameter ("V1"; may hold a V0 layer)."""
    name_f, type_f, blobs_f = (1, 2, 7) if fmt == "V2" else (4, 5, 6)
    name = ""
    ltype = ""
    blobs: list[BlobInfo] = []
    v0: SourceLayer | None = None
    while s.pos < end:
        key = s.varint()
        fnum, wt = key >> 3, key & 7
        if fnum == name_f and wt == _WT_LEN:
            name = s.read(s.varint()).decode("utf-8", "surrogateescape")
        elif fnum == type_f and fmt == "V2" and wt == _WT_LEN:
            ltype = s.read(s.varint()).decode("utf-8", "surrogateescape")
        elif fnum == type_f and fmt == "V1" and wt == _WT_VARINT:
            number = s.varint()
            ltype = v1_names.get(number, str(number))
        elif fnum == blobs_f and wt == _WT_LEN:
            length = s.varint()
            blobs.append(_blob(s, s.pos + length))
        elif fmt == "V1" and fnum == 1 and wt == _WT_LEN:
            # V0: layers { layer { name type blobs=50 } }
            length = s.varint()
            v0 = _v0_layer(s, s.pos + length, index)
        else:
            s.skip_value(wt)
    if s.pos != end:
        raise s.fail("a layer's fields overrun its length")
    if v0 is not None:
        return v0
    return SourceLayer(index, name, ltype, tuple(blobs), fmt)


def _v0_layer(s: _Stream, end: int, index: int) -> SourceLayer:
    name = ""
    ltype = ""
    blobs: list[BlobInfo] = []
    while s.pos < end:
        key = s.varint()
        fnum, wt = key >> 3, key & 7
        if fnum == 1 and wt == _WT_LEN:
            name = s.read(s.varint()).decode("utf-8", "surrogateescape")
        elif fnum == 2 and wt == _WT_LEN:
            ltype = s.read(s.varint()).decode("utf-8", "surrogateescape")
        elif fnum == 50 and wt == _WT_LEN:
            length = s.varint()
            blobs.append(_blob(s, s.pos + length))
        else:
            s.skip_value(wt)
    return SourceLayer(index, name, ltype, tuple(blobs), "V0")


def iter_caffemodel(path: str | os.PathLike[str]) -> Iterator[SourceLayer | str]:
    """Stream a caffemodel: yields the net name (a ``str``) when met, then each layer.

    Layers come in file order; V2 ``layer`` and V1/V0 ``layers`` entries are yielded as they
    appear (Caffe refuses a file holding both; :func:`read_caffemodel` reports that).
    """
    p = os.fspath(path)
    if p.endswith(".h5"):
        raise WeightError(
            f"{p}: HDF5 weights (.h5) are not read by this tool; save them as .caffemodel"
        )
    try:
        size = os.path.getsize(p)
        fh = open(p, "rb")  # noqa: SIM115 (closed in finally; a generator holds it)
    except OSError as e:
        raise WeightError(f"{p}: cannot read: {e.strerror or e}") from None
    v1_names: dict[int, str] | None = None
    try:
        _refuse_text(fh, p)
        s = _Stream(fh, size, p)
        index = 0
        while s.pos < size:
            key = s.varint()
            fnum, wt = key >> 3, key & 7
            if fnum == 100 and wt == _WT_LEN:
                length = s.varint()
                yield _layer(s, s.pos + length, "V2", index, {})
                index += 1
            elif fnum == 2 and wt == _WT_LEN:
                if v1_names is None:
                    v1_names = _v1_type_names()
                length = s.varint()
                yield _layer(s, s.pos + length, "V1", index, v1_names)
                index += 1
            elif fnum == 1 and wt == _WT_LEN:
                yield s.read(s.varint()).decode("utf-8", "surrogateescape")
            elif fnum == 0 or wt in (_WT_SGROUP, _WT_EGROUP) or wt > _WT_32:
                raise s.fail(f"field number {fnum} with wire type {wt}")
            else:
                s.skip_value(wt)
    finally:
        fh.close()


def read_caffemodel(path: str | os.PathLike[str]) -> WeightFile:
    """Names, types and blob shapes of every layer of a caffemodel (payloads skipped)."""
    p = os.fspath(path)
    layers: list[SourceLayer] = []
    net_name = ""
    for item in iter_caffemodel(p):
        if isinstance(item, str):
            net_name = item
        else:
            layers.append(item)
    formats = {la.format for la in layers}
    if "V2" in formats and formats & {"V1", "V0"}:
        raise WeightError(
            f"{p}: Refusing to upgrade inconsistent NetParameter input; the definition includes "
            "both 'layer' and 'layers' fields."
        )
    fmt = "V0" if "V0" in formats else "V1" if "V1" in formats else "V2"
    if fmt == "V0":
        # UpgradeV0Net drops V0 "padding" layers (they have no blobs).
        layers = [la for la in layers if la.type != "padding"]
    if fmt != "V2":
        layers = [
            SourceLayer(i, la.name, la.type, la.blobs, la.format) for i, la in enumerate(layers)
        ]
    return WeightFile(p, os.path.getsize(p), net_name, layers, fmt)


# --------------------------------------------------------------------------- the check


def _shape_string(shape: Sequence[int]) -> str:
    return "".join(f"{d} " for d in shape) + f"({math.prod(shape)})"


def _legacy_shape(shape: Sequence[int], index: int) -> int:
    """``Blob::LegacyShape``: axes counted from the end, 1 beyond the blob's axes."""
    n = len(shape)
    if index >= n or index < -n:
        return 1
    return shape[index]


def shape_equals(target: Sequence[int], blob: BlobInfo) -> bool:
    """``Blob::ShapeEquals(const BlobProto&)``."""
    if blob.legacy is not None:
        return len(target) <= 4 and all(
            _legacy_shape(target, -4 + k) == blob.legacy[k] for k in range(4)
        )
    return tuple(target) == blob.shape


@dataclass(frozen=True)
class Copied:
    """A net layer that receives its parameters from the file."""

    name: str
    type: str
    shapes: tuple[tuple[int, ...], ...]
    source_index: int

    @property
    def param_count(self) -> int:
        return sum(math.prod(s) for s in self.shapes)


@dataclass(frozen=True)
class FromFiller:
    """A net layer with parameters that the file does not provide."""

    name: str
    type: str
    shapes: tuple[tuple[int, ...], ...] | None
    fillers: tuple[str, ...]
    reason: str

    @property
    def param_count(self) -> int:
        return sum(math.prod(s) for s in self.shapes or ())


@dataclass(frozen=True)
class Mismatch:
    """A file layer Caffe refuses to copy (a FATAL error in Caffe)."""

    name: str
    kind: str  # "count" | "shape" | "stored"
    message: str  # Caffe's FATAL text
    source_index: int
    target_type: str
    source_shapes: tuple[tuple[int, ...], ...]
    target_shapes: tuple[tuple[int, ...], ...] | None


@dataclass
class WeightReport:
    net: str
    weights: str
    phase: str
    file_size: int
    weights_format: str
    copied: list[Copied] = field(default_factory=list)
    from_filler: list[FromFiller] = field(default_factory=list)
    #: file layers no net layer is named after (Caffe: "Ignoring source layer")
    unused: list[SourceLayer] = field(default_factory=list)
    #: mismatches, in file order; Caffe stops at the first
    errors: list[Mismatch] = field(default_factory=list)
    #: names matched but the net's shapes are unknown past a layer shapes could not handle
    unchecked: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: net layers without parameters that a file layer of that name matched (nothing copied)
    matched_without_params: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def fatal(self) -> Mismatch | None:
        return self.errors[0] if self.errors else None

    def to_json(self) -> dict[str, Any]:
        def shapes(s: Sequence[Sequence[int]] | None) -> list[list[int]] | None:
            return None if s is None else [list(x) for x in s]

        return {
            "net": self.net,
            "weights": self.weights,
            "phase": self.phase,
            "weights_format": self.weights_format,
            "file_size": self.file_size,
            "ok": self.ok,
            "fatal": self.fatal.message if self.fatal else None,
            "copied": [
                {
                    "layer": c.name,
                    "type": c.type,
                    "shapes": shapes(c.shapes),
                    "param_count": c.param_count,
                }
                for c in self.copied
            ],  # fmt: skip
            "from_filler": [
                {
                    "layer": f.name,
                    "type": f.type,
                    "shapes": shapes(f.shapes),
                    "fillers": list(f.fillers),
                    "reason": f.reason,
                    "param_count": f.param_count,
                }
                for f in self.from_filler
            ],  # fmt: skip
            "unused": [
                {
                    "layer": u.name,
                    "type": u.type,
                    "shapes": [list(b.shape) for b in u.blobs],
                    "param_count": u.param_count,
                }
                for u in self.unused
            ],  # fmt: skip
            "errors": [
                {
                    "layer": e.name,
                    "kind": e.kind,
                    "message": e.message,
                    "source_shapes": shapes(e.source_shapes),
                    "target_shapes": shapes(e.target_shapes),
                }
                for e in self.errors
            ],  # fmt: skip
            "unchecked": list(self.unchecked),
            "warnings": list(self.warnings),
        }

    def render(self) -> list[str]:
        def dims(shapes: Sequence[Sequence[int]] | None) -> str:
            if shapes is None:
                return "(shapes unknown)"
            return " ".join("(" + ", ".join(map(str, s)) + ")" for s in shapes) or "-"

        # name and type columns aligned over all three tables (one table to the eye)
        names = [c.name for c in self.copied] + [f.name for f in self.from_filler]
        names += [u.name for u in self.unused if u.blobs]
        types = [c.type for c in self.copied] + [f.type for f in self.from_filler]
        types += [u.type for u in self.unused if u.blobs]
        wn = max(map(len, names), default=0)
        wt = max(map(len, types), default=0)

        def row(name: str, ltype: str, rest: str) -> str:
            return f"  {name:<{wn}}  {ltype:<{wt}}  {rest}".rstrip()

        mb = self.file_size / 1e6
        lines = [f"weights: {self.weights} ({self.weights_format}, {mb:.1f} MB)"]
        lines.append(f"net:     {self.net} (phase {self.phase})")
        n = sum(c.param_count for c in self.copied)
        lines.append(f"\ncopied from the file: {len(self.copied)} layer(s), {n:,} parameters")
        for c in self.copied:
            lines.append(row(c.name, c.type, dims(c.shapes)))
        n = sum(f.param_count for f in self.from_filler)
        lines.append(
            f"\nstart from their fillers: {len(self.from_filler)} layer(s), {n:,} parameters"
        )
        for f in self.from_filler:
            fill = f" [{', '.join(f.fillers)}]" if f.fillers else ""
            lines.append(row(f.name, f.type, f"{dims(f.shapes)}{fill}: {f.reason}"))
        with_blobs = [u for u in self.unused if u.blobs]
        lines.append(
            f"\nunused layers in the file: {len(self.unused)} ({len(with_blobs)} with weights)"
        )
        for u in with_blobs:
            lines.append(row(u.name, u.type, dims([b.shape for b in u.blobs])))
        if self.unchecked:
            lines.append(f"\nnot checked (net shapes unknown): {', '.join(self.unchecked)}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.errors:
            lines.append(
                f"\nCaffe would stop (first error in file order):\n  {self.errors[0].message}"
            )
            for e in self.errors[1:]:
                lines.append(f"  also: {e.message}")
        else:
            lines.append("\nok: Caffe copies these weights without error")
        return lines


def check_weights(
    net: Any,
    caffemodel_path: str | os.PathLike[str],
    *,
    phase: str = "TRAIN",
    stages: Sequence[str] = (),
    level: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
    message: Any = None,
    param_counts: Mapping[str, int] | None = None,
    net_label: str | None = None,
) -> WeightReport:
    """What ``Net::CopyTrainedLayersFrom`` does with ``caffemodel_path`` for ``net``.

    ``net`` is what :func:`rewriter.caffe.shapes.infer_shapes` accepts (a message, a CaffeFile, a
    Document, or a Graph with ``message=``); the shape options are passed on to it.
    ``net_label`` names the net in the report (default: the file's path).
    """
    from .layer_params import fillers_used
    from .shapes import _resolve, infer_shapes

    phase = phase.upper()
    graph, upgraded = _resolve(net, phase, stages, level, message, param_counts)
    shapes = infer_shapes(
        graph, phase, input_shapes, batch=batch, channels=channels, height=height,
        width=width, message=upgraded,
    )  # fmt: skip
    wf = read_caffemodel(caffemodel_path)
    net_path = net_label or getattr(net, "path", "") or graph.net_name or "<net>"
    report = WeightReport(str(net_path), wf.path, graph.phase, wf.size, wf.format)
    if not shapes.complete:
        report.warnings.append(str(shapes.stopped))
    first_by_name: dict[str, int] = {}
    for layer in graph.layers:
        first_by_name.setdefault(layer.name, layer.index)
    shape_by_index = {ls.index: ls.params for ls in shapes.layers}

    received: dict[int, int] = {}  # net layer index -> source index (last copy wins)
    seen_names: dict[str, int] = {}
    for src in wf.layers:
        if src.name in seen_names:
            report.warnings.append(
                f"the file has two layers named '{src.name}' (#{seen_names[src.name]} and "
                f"#{src.index}); Caffe copies both into the same net layer, the later wins"
            )
        seen_names[src.name] = src.index
        target_index = first_by_name.get(src.name)
        if target_index is None:
            report.unused.append(src)
            continue
        target = graph.layers[target_index]
        n_target = len(target.params)
        src_shapes = tuple(b.shape for b in src.blobs)
        if n_target != len(src.blobs):
            report.errors.append(
                Mismatch(
                    src.name,
                    "count",
                    f"Check failed: target_blobs.size() == source_layer.blobs_size() "
                    f"({n_target} vs. {len(src.blobs)}) Incompatible number of blobs for "
                    f"layer {src.name}",
                    src.index,
                    target.type,
                    src_shapes,
                    shape_by_index.get(target_index),
                )  # fmt: skip
            )
            continue
        if n_target == 0:
            report.matched_without_params += 1
            continue
        tshapes = shape_by_index.get(target_index)
        if tshapes is None:
            report.unchecked.append(src.name)
            received[target_index] = src.index
            continue
        bad = False
        for j, (t, b) in enumerate(zip(tshapes, src.blobs, strict=True)):
            if not shape_equals(t, b):
                report.errors.append(
                    Mismatch(
                        src.name,
                        "shape",
                        f"Cannot copy param {j} weights from layer '{src.name}'; shape "
                        f"mismatch.  Source param shape is {_shape_string(b.shape)}; target "
                        f"param shape is {_shape_string(t)}. To learn this layer's parameters "
                        "from scratch rather than copying from a saved net, rename the layer.",
                        src.index,
                        target.type,
                        src_shapes,
                        tshapes,
                    )  # fmt: skip
                )
                bad = True
                break
            if b.stored != math.prod(t):
                report.errors.append(
                    Mismatch(
                        src.name,
                        "stored",
                        f"Check failed: count_ == proto.data_size() ({math.prod(t)} vs. "
                        f"{b.stored}) (blob.cpp, loading param {j} of layer '{src.name}')",
                        src.index,
                        target.type,
                        src_shapes,
                        tshapes,
                    )  # fmt: skip
                )
                bad = True
                break
        if not bad:
            received[target_index] = src.index

    msgs = upgraded.layer
    for layer in graph.layers:
        if not layer.params:
            continue
        tshapes = shape_by_index.get(layer.index)
        if layer.index in received:
            report.copied.append(
                Copied(layer.name, layer.type, tshapes or (), received[layer.index])
            )
            continue
        if any(e.name == layer.name for e in report.errors):
            continue
        msg = msgs[layer.source_index] if layer.source_index is not None else None
        fillers = (
            tuple(fillers_used(layer.type, msg, len(layer.bottoms))) if msg is not None else ()
        )
        if first_by_name[layer.name] != layer.index:
            reason = "an earlier layer has the same name; Caffe copies into the first only"
        elif all(p.shared_from is not None and p.shared_from[0] in received for p in layer.params):
            owner = layer.params[0].shared_from_name
            reason = f"not in the file, but shares its parameters with '{owner}' (copied)"
        else:
            reason = "not in the file"
        report.from_filler.append(FromFiller(layer.name, layer.type, tshapes, fillers, reason))
    return report
