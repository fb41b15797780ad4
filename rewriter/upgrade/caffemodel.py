"""Streaming upgrade of binary ``.caffemodel`` files: ``upgrade_net_proto_binary`` without the RAM.

Caffe's tool reads the whole NetParameter (weights included), runs ``UpgradeNetAsNeeded`` and
writes it back: a 500 MB model costs more than a gigabyte of memory. Here the file is read as
protobuf wire format, field by field:

1. a first pass walks the top-level fields. Each V1 ``layers`` (field 2) or V2 ``layer``
   (field 100) entry is read *without its weights*: every field of the layer except ``blobs``
   (V1 field 6, V2 field 7, and field 50 of a nested V0 layer) is copied into a small "light"
   layer, and each blob is only remembered as (offset, length) in the file;
2. the light net (all layers, no weights: a few KB per layer) goes through the very same
   message-level upgrade as text files (:func:`rewriter.upgrade.document.upgrade_net_message_caffe`:
   V0 -> V1 with padding layers, data transformation fields, V1 -> V2, legacy inputs, BatchNorm);
3. the output is written layer by layer: the upgraded light layer is serialised and the blobs are
   copied from the input file to the output file by the kernel (``copy_file_range``; 1 MiB
   chunks where that is not available), under the new field numbers, never through Python
   objects. Fields come out in field-number order, so the result is byte-identical to
   ``SerializeToString(deterministic=True)`` of the fully upgraded message when the input was
   canonical.

Peak memory is the light net plus one small buffer, whatever the size of the weights. The output
is written to a temporary file next to the target and renamed over it (atomic).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rewriter.errors import RewriterError

__all__ = ["CaffemodelError", "CaffemodelUpgrade", "scan", "upgrade_caffemodel"]

_LAYERS_V1 = 2  # NetParameter.layers (V1LayerParameter)
_LAYER_V2 = 100  # NetParameter.layer (LayerParameter)
_BLOBS_V1 = 6  # V1LayerParameter.blobs
_V0_IN_V1 = 1  # V1LayerParameter.layer (V0LayerParameter)
_BLOBS_V0 = 50  # V0LayerParameter.blobs
_BLOBS_V2 = 7  # LayerParameter.blobs
_CHUNK = 1 << 20


class CaffemodelError(RewriterError):
    """The binary file is not a NetParameter we can upgrade, or Caffe would refuse it."""


@dataclass
class _LayerRef:
    field_no: int
    light: bytes
    blobs: list[tuple[int, int]] = field(default_factory=list)  # (payload offset, length)
    v0_blobs: list[tuple[int, int]] = field(default_factory=list)
    #: the whole record (key to end) in the file, for copying it as it is
    span: tuple[int, int] = (0, 0)


@dataclass
class Scan:
    """The first pass: everything but the weights, and where the weights are."""

    path: str
    size: int
    net: Any  # the light NetParameter (layers without blobs)
    refs: list[_LayerRef]


@dataclass
class CaffemodelUpgrade:
    changed: bool
    messages: list[str]
    layers_in: int
    layers_out: int
    bytes_in: int
    bytes_out: int = 0
    blobs: int = 0


def _varint(f: IO[bytes], path: str) -> int:
    result = 0
    shift = 0
    while True:
        b = f.read(1)
        if not b:
            raise CaffemodelError(f"{path}: truncated file (inside a varint at byte {f.tell()})")
        result |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise CaffemodelError(f"{path}: malformed varint at byte {f.tell()}")


def _enc(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field_no: int, wire_type: int) -> bytes:
    return _enc((field_no << 3) | wire_type)


def _light(
    f: IO[bytes], path: str, start: int, length: int, blob_field: int, nested_v0: bool
) -> tuple[bytes, list[tuple[int, int]], list[tuple[int, int]]]:
    """Copy a layer's fields except its blobs; return (bytes, blob spans, nested V0 spans)."""
    out = bytearray()
    blobs: list[tuple[int, int]] = []
    v0_blobs: list[tuple[int, int]] = []
    end = start + length
    f.seek(start)
    while f.tell() < end:
        key = _varint(f, path)
        fno, wt = key >> 3, key & 7
        if wt == 2:
            n = _varint(f, path)
            p = f.tell()
            if p + n > end:
                raise CaffemodelError(f"{path}: field {fno} at byte {p} runs past its layer")
            if fno == blob_field:
                blobs.append((p, n))
            elif nested_v0 and fno == _V0_IN_V1:
                sub, v0_blobs, _ = _light(f, path, p, n, _BLOBS_V0, False)
                out += _key(fno, 2) + _enc(len(sub)) + sub
            else:
                out += _key(fno, 2) + _enc(n) + f.read(n)
            f.seek(p + n)
        elif wt == 0:
            out += _enc(key) + _enc(_varint(f, path))
        elif wt in (1, 5):
            size = 8 if wt == 1 else 4
            data = f.read(size)
            if len(data) != size:
                raise CaffemodelError(f"{path}: truncated file at byte {f.tell()}")
            out += _enc(key) + data
        else:
            raise CaffemodelError(f"{path}: unsupported wire type {wt} (field {fno})")
    if f.tell() != end:
        raise CaffemodelError(f"{path}: a layer's fields overrun its length at byte {end}")
    return bytes(out), blobs, v0_blobs


def scan(path: str | os.PathLike[str], schema: Any = None) -> Scan:
    """First pass over a .caffemodel: the light net and the positions of every blob."""
    from google.protobuf.message import DecodeError

    if schema is None:
        from rewriter.schema.runtime import default_schema

        schema = default_schema()
    spath = str(path)
    rest = bytearray()
    refs: list[_LayerRef] = []
    try:
        fh = open(spath, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise CaffemodelError(f"{spath}: cannot read: {e.strerror or e}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        while fh.tell() < size:
            start = fh.tell()
            key = _varint(fh, spath)
            fno, wt = key >> 3, key & 7
            if wt == 2:
                n = _varint(fh, spath)
                p = fh.tell()
                if p + n > size:
                    raise CaffemodelError(
                        f"{spath}: field {fno} at byte {p} claims {n} bytes, past the end of "
                        f"the file ({size} bytes): truncated, or not a .caffemodel"
                    )
                if fno == _LAYERS_V1:
                    light, blobs, v0_blobs = _light(fh, spath, p, n, _BLOBS_V1, True)
                    refs.append(_LayerRef(fno, light, blobs, v0_blobs, (start, p + n)))
                elif fno == _LAYER_V2:
                    light, blobs, _ = _light(fh, spath, p, n, _BLOBS_V2, False)
                    refs.append(_LayerRef(fno, light, blobs, span=(start, p + n)))
                else:
                    rest += _key(fno, 2) + _enc(n) + fh.read(n)
                fh.seek(p + n)
            elif wt == 0:
                rest += _enc(key) + _enc(_varint(fh, spath))
            elif wt in (1, 5):
                rest += _enc(key) + fh.read(8 if wt == 1 else 4)
            else:
                raise CaffemodelError(
                    f"{spath}: unsupported wire type {wt} (field {fno}) at byte {fh.tell()}: "
                    "not a Caffe NetParameter binary"
                )
    net_cls = schema.message_class("caffe.NetParameter")
    try:
        net = net_cls.FromString(bytes(rest))
        for ref in refs:
            target = net.layers if ref.field_no == _LAYERS_V1 else net.layer
            target.add().MergeFromString(ref.light)
    except DecodeError as e:
        raise CaffemodelError(f"{spath}: not a Caffe NetParameter binary: {e}") from None
    return Scan(spath, size, net, refs)


def _split_at(data: bytes, field_no: int) -> int:
    """Offset of the first top-level field numbered above ``field_no`` in serialized bytes."""
    pos = 0
    n = len(data)
    while pos < n:
        start = pos
        key = 0
        shift = 0
        while True:
            b = data[pos]
            pos += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if key >> 3 > field_no:
            return start
        wt = key & 7
        if wt == 0:
            while data[pos] >= 0x80:
                pos += 1
            pos += 1
        elif wt == 1:
            pos += 8
        elif wt == 5:
            pos += 4
        elif wt == 2:
            length = 0
            shift = 0
            while True:
                b = data[pos]
                pos += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            pos += length
        else:  # pragma: no cover - serialize() never writes groups for this schema
            return n
    return n


class _Out:
    """An unbuffered output file that can also take byte ranges straight from another file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.kernel_copy = hasattr(os, "copy_file_range")

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.written += n

    def copy_from(self, in_fd: int, offset: int, length: int) -> None:
        while length and self.kernel_copy:
            try:
                n = os.copy_file_range(in_fd, self.fd, length, offset)
            except OSError:
                self.kernel_copy = False
                break
            if n <= 0:
                self.kernel_copy = False
                break
            offset += n
            length -= n
            self.written += n
        while length:
            chunk = os.pread(in_fd, min(_CHUNK, length), offset)
            if not chunk:
                raise CaffemodelError("input file shrank while it was being upgraded")
            self.write(chunk)
            offset += len(chunk)
            length -= len(chunk)


def _write(scan_: Scan, upgraded: Any, sources: list[int | None], out: _Out, in_fd: int) -> int:
    """Write the upgraded net; returns the number of blobs copied."""
    top = type(upgraded)()
    top.CopyFrom(upgraded)
    top.ClearField("layer")
    top.ClearField("layers")
    out.write(top.SerializeToString(deterministic=True))
    # A V0 net's weights live in the nested V0 layers (Caffe drops V1-level blobs there).
    v0 = any(layer.HasField("layer") for layer in scan_.net.layers)
    key = _key(_BLOBS_V2, 2)
    copied = 0
    for layer, src in zip(upgraded.layer, sources, strict=True):
        spans: list[tuple[int, int]] = []
        if src is not None:
            ref = scan_.refs[src]
            spans = ref.v0_blobs if v0 else ref.blobs
        light = layer.SerializeToString(deterministic=True)
        cut = _split_at(light, _BLOBS_V2)
        blob_bytes = sum(len(key) + len(_enc(n)) + n for _, n in spans)
        out.write(_key(_LAYER_V2, 2) + _enc(len(light) + blob_bytes) + light[:cut])
        for offset, n in spans:
            out.write(key + _enc(n))
            out.copy_from(in_fd, offset, n)
            copied += 1
        out.write(light[cut:])
    return copied


def _atomic_output(target: Path) -> tuple[int, str, int | None]:
    try:
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise CaffemodelError(f"{target}: cannot write: {e.strerror or e}") from None
    return fd, tmp, mode


def upgrade_caffemodel(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    schema: Any = None,
) -> CaffemodelUpgrade:
    """Upgrade ``src`` as ``upgrade_net_proto_binary`` does; write to ``dst`` when given.

    A file that needs nothing is copied unchanged (byte-identical) when ``dst`` is given.
    Raises :class:`CaffemodelError` for a malformed file or where Caffe would refuse.
    """
    from rewriter.caffe.upgrade_proto import Refusal, upgrade_net_message_caffe

    s = scan(src, schema)
    try:
        up = upgrade_net_message_caffe(s.net, s.path)
    except Refusal as r:
        where = f" (layer {r.where[1]})" if len(r.where) >= 2 and r.where[0] == "layers" else ""
        raise CaffemodelError(f"{s.path}: {r.message}{where}") from None
    n_in = len(s.refs)
    n_out = len(up.message.layer) + len(up.message.layers)
    result = CaffemodelUpgrade(up.changed, up.log, n_in, n_out, s.size)
    if dst is None:
        return result

    def body(in_fd: int, out: _Out) -> None:
        if up.changed:
            result.blobs = _write(s, up.message, up.sources, out, in_fd)
        else:
            out.copy_from(in_fd, 0, s.size)

    result.bytes_out = write_streamed(s.path, dst, body)
    return result


def write_streamed(src: str, dst: str | os.PathLike[str], body: Callable[[int, _Out], None]) -> int:
    """Write ``dst`` atomically with ``body(input fd, output)``; returns the bytes written."""
    target = Path(os.path.realpath(dst))
    fd, tmp, mode = _atomic_output(target)
    done = False
    try:
        with open(src, "rb") as fin:
            out = _Out(fd)
            body(fin.fileno(), out)
            os.fsync(fd)
        os.close(fd)
        fd = -1
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
        done = True
    except OSError as e:
        raise CaffemodelError(f"{dst}: cannot write: {e.strerror or e}") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return out.written
