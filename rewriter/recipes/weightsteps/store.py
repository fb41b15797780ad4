"""The ``.caffemodel`` as the weight steps see it, and its streaming rewrite.

:class:`WeightStore` walks the file's top-level fields once and keeps, per layer record, its
byte span, its fields without the blobs (a few hundred bytes) and where each blob is; no weight
is read. Steps then record :class:`WeightOp` s (rename a layer, drop one, give one new blobs);
only the blobs a step computes from are read, one layer at a time.

:meth:`WeightStore.write` writes the result like the ``.caffemodel`` upgrade does
(:mod:`rewriter.upgrade.caffemodel`): a record no op touched is copied byte for byte from the input
(by
the kernel where it can), a renamed layer gets its new name with its blob bytes copied as they
are, a changed layer its new blobs; the output goes to a temporary file renamed over the target.

Layers are matched by name, as ``Net::CopyTrainedLayersFrom`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rewriter.errors import RewriterError
from rewriter.upgrade.caffemodel import (
    _BLOBS_V2,
    _LAYER_V2,
    CaffemodelError,
    _enc,
    _key,
    _Out,
    _split_at,
    scan,
    write_streamed,
)

__all__ = ["WeightError", "WeightOp", "WeightStore", "in_order"]


class WeightError(RewriterError):
    """The weights cannot be carried: a layer missing from the file, a V1 file, a bad blob."""


#: a step's edit of the weights: called with the store, in recipe order
WeightOp = Callable[["WeightStore"], None]


def in_order(ops: list[WeightOp]) -> WeightOp:
    """One op running ``ops`` in order (a step's edits of several layers)."""

    def run(store: WeightStore) -> None:
        for op in ops:
            op(store)

    return run


@dataclass
class _Record:
    field_no: int
    start: int  # offset of the record's key
    end: int
    name: str
    light: bytes
    blobs: list[tuple[int, int]]  # (payload offset, length)


@dataclass
class _State:
    """What becomes of one record: its name, type and blobs in the output."""

    name: str
    type: str | None = None
    arrays: list[Any] | None = None  # new blobs (numpy arrays), None: the file's
    dropped: bool = False


@dataclass
class WeightStore:
    path: str
    size: int
    records: list[_Record]
    states: dict[int, _State] = field(default_factory=dict)
    #: current layer name -> record index (the last record of that name: Caffe copies each)
    by_name: dict[str, int] = field(default_factory=dict)
    duplicates: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> WeightStore:
        """The first pass (:func:`rewriter.upgrade.caffemodel.scan`): names, record spans, blob
        spans."""
        try:
            s = scan(path)
        except CaffemodelError as e:
            raise WeightError(str(e)) from None
        v2 = iter(s.net.layer)
        v1 = iter(s.net.layers)
        records = [
            _Record(
                ref.field_no,
                *ref.span,
                str(next(v2 if ref.field_no == _LAYER_V2 else v1).name),
                ref.light,
                ref.blobs,
            )  # fmt: skip
            for ref in s.refs
        ]
        store = cls(s.path, s.size, records)
        seen: set[str] = set()
        for i, r in enumerate(records):
            if r.name in seen:
                store.duplicates.add(r.name)
            seen.add(r.name)
            store.by_name[r.name] = i
        return store

    # ----------------------------------------------------------------- what steps use

    def has(self, name: str) -> bool:
        return name in self.by_name

    def _index(self, name: str, why: str) -> int:
        i = self.by_name.get(name)
        if i is None:
            raise WeightError(
                f"{self.path}: no layer named '{name}' in the weights ({why}); check the pair "
                f"with: rewriter weights NET {self.path}"
            )
        if name in self.duplicates:
            raise WeightError(
                f"{self.path}: two layers are named '{name}' (Caffe copies both into one net "
                f"layer, the later wins); {why} needs one"
            )
        return i

    def _state(self, i: int) -> _State:
        st = self.states.get(i)
        if st is None:
            st = self.states[i] = _State(self.records[i].name)
        return st

    def blobs(self, name: str, why: str) -> list[Any]:
        """The current blobs of layer ``name`` as float32 numpy arrays of their stored shape."""

        i = self._index(name, why)
        st = self.states.get(i)
        if st is not None and st.arrays is not None:
            return [a.copy() for a in st.arrays]
        out = []
        with open(self.path, "rb") as fh:
            for offset, n in self.records[i].blobs:
                fh.seek(offset)
                try:
                    shape, arr = decode_blob(fh.read(n))
                except ValueError as e:
                    raise WeightError(f"{self.path}: layer '{name}': {e}") from None
                out.append(arr.reshape(shape))
        return out

    def set(self, name: str, arrays: list[Any], why: str, type_: str | None = None) -> None:
        i = self._index(name, why)
        if self.records[i].field_no != _LAYER_V2:
            raise self._v1(why)
        st = self._state(i)
        st.arrays = list(arrays)
        if type_ is not None:
            st.type = type_

    def drop(self, name: str, why: str) -> None:
        i = self._index(name, why)
        self._state(i).dropped = True
        del self.by_name[name]

    def rename(self, old: str, new: str) -> None:
        """Layer ``old`` is now ``new`` (nothing to do when the file has no ``old``)."""
        i = self.by_name.get(old)
        if i is None:
            return
        if old in self.duplicates:
            raise WeightError(
                f"{self.path}: two layers are named '{old}'; renaming one would change which "
                "blobs Caffe copies"
            )
        if self.records[i].field_no != _LAYER_V2:
            raise self._v1("rename-layer")
        if new in self.by_name:
            raise WeightError(
                f"{self.path}: the weights already hold a layer named '{new}'; Caffe would copy "
                f"both into it"
            )
        self._state(i).name = new
        del self.by_name[old]
        self.by_name[new] = i

    def _v1(self, why: str) -> WeightError:
        return WeightError(
            f"{self.path}: a V1 (`layers`) caffemodel; {why} writes current-format layers: "
            f"upgrade it first with: rewriter upgrade {self.path} -o UPGRADED.caffemodel"
        )

    @property
    def changed(self) -> bool:
        return any(
            st.dropped or st.arrays is not None or st.type is not None or st.name != r.name
            for i, st in self.states.items()
            for r in (self.records[i],)
        )

    # ----------------------------------------------------------------- writing

    def write(self, target: str | os.PathLike[str]) -> int:
        """Write the weights to ``target`` atomically; returns the bytes written."""
        try:
            return write_streamed(self.path, target, self._stream)
        except CaffemodelError as e:
            raise WeightError(str(e)) from None

    def _stream(self, in_fd: int, out: _Out) -> None:
        from rewriter.schema.runtime import default_schema

        v2 = default_schema().message_class("caffe.LayerParameter")
        pos = 0
        for i, r in enumerate(self.records):
            out.copy_from(in_fd, pos, r.start - pos)  # non-layer fields, as they are
            pos = r.end
            st = self.states.get(i)
            if st is None or not (
                st.dropped or st.arrays is not None or st.type is not None or st.name != r.name
            ):
                out.copy_from(in_fd, r.start, r.end - r.start)
                continue
            if st.dropped:
                continue
            msg: Any = v2.FromString(r.light)
            msg.name = st.name
            if st.type is not None:
                msg.type = st.type
            light = msg.SerializeToString(deterministic=True)
            cut = _split_at(light, _BLOBS_V2)
            key = _key(_BLOBS_V2, 2)
            if st.arrays is None:
                blob_bytes = sum(len(key) + len(_enc(n)) + n for _, n in r.blobs)
                out.write(_key(_LAYER_V2, 2) + _enc(len(light) + blob_bytes) + light[:cut])
                for offset, n in r.blobs:
                    out.write(key + _enc(n))
                    out.copy_from(in_fd, offset, n)
            else:
                encoded = [blob_proto(a) for a in st.arrays]
                blob_bytes = sum(len(key) + len(_enc(len(b))) + len(b) for b in encoded)
                out.write(_key(_LAYER_V2, 2) + _enc(len(light) + blob_bytes) + light[:cut])
                for b in encoded:
                    out.write(key + _enc(len(b)) + b)
            out.write(light[cut:])
        out.copy_from(in_fd, pos, self.size - pos)


def decode_blob(buf: bytes) -> tuple[tuple[int, ...], Any]:
    """(shape, float32 values) of a serialized BlobProto, the packed values read in place
    (a 400 MB InnerProduct is not turned into 100 million Python floats)."""
    import numpy as np

    from rewriter.caffe.weights import _keys, _packed_varints, _signed

    legacy: dict[int, int] = {}
    dims: list[int] = []
    chunks: list[Any] = []
    doubles: list[Any] = []
    view = memoryview(buf)
    for fno, wt, v, end in _keys(buf):
        if fno in (1, 2, 3, 4) and wt == 0:
            legacy[fno] = _signed(v, 32)
        elif fno == 5 and wt == 2 or fno == 5 and wt == 5:
            chunks.append(np.frombuffer(view[v:end], dtype="<f4"))
        elif fno == 8 and wt in (1, 2):
            doubles.append(np.frombuffer(view[v:end], dtype="<f8"))
        elif fno == 7 and wt == 2:
            for f2, w2, v2, e2 in _keys(bytes(view[v:end])):
                if f2 == 1 and w2 == 0:
                    dims.append(_signed(v2))
                elif f2 == 1 and w2 == 2:
                    dims.extend(_packed_varints(bytes(view[v:end])[v2:e2]))
    parts = doubles or chunks
    arr = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    shape = tuple(dims) if not legacy else tuple(legacy.get(k, 0) for k in (1, 2, 3, 4))
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"a blob of shape {shape} holds {arr.size} values")
    return shape, arr


def blob_proto(arr: Any) -> bytes:
    """A BlobProto as Caffe's ``Blob::ToProto`` writes it: packed float ``data`` (field 5),
    then ``shape`` (field 7) with packed dims."""
    import numpy as np

    data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
    dims = b"".join(_enc(int(d)) for d in arr.shape)
    shape = _key(1, 2) + _enc(len(dims)) + dims
    return _key(5, 2) + _enc(len(data)) + data + _key(7, 2) + _enc(len(shape)) + shape
