"""Deterministic ``.caffemodel`` files for hand-written nets, and digests of their blobs.

Every layer with parameters gets values drawn from a generator seeded by the crc32 of its name,
of the shapes Caffe gives them (:func:`rewriter.caffe.shapes.infer_shapes`): BatchNorm mean
``U(-0.5, 0.5) * F``, variance ``U(0.5, 1.5) * F`` and factor ``F`` (``F`` = 999.982 as in the
oracle, or 0 for a layer whose name ends in ``_f0``); Scale factors ``U(0.5, 1.5)``; anything
else ``U(-0.5, 0.5)``. The file is a V2 NetParameter as Caffe's ``Net::ToProto`` writes it.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Any

FACTOR = 999.982


def make_caffemodel(prototxt: Path, out: Path, phase: str = "TEST", legacy: bool = False) -> None:
    """``legacy``: blobs in the 4-D ``num/channels/height/width`` fields (pre-2015 files: an
    InnerProduct's weights 1 x 1 x N x K, biases 1 x 1 x 1 x N)."""
    import numpy as np

    from rewriter.api import load
    from rewriter.caffe.shapes import infer_shapes
    from rewriter.schema.runtime import default_schema

    cf = load(prototxt)
    shapes = infer_shapes(cf.message, phase)
    assert shapes.complete, shapes.stopped
    net_cls = default_schema().message_class("caffe.NetParameter")
    net: Any = net_cls()
    net.name = cf.message.name
    for ls in shapes.layers:
        if ls.inserted_split or not ls.params:
            continue
        layer = net.layer.add()
        layer.name = ls.name
        layer.type = ls.type
        rng = np.random.default_rng(zlib.crc32(ls.name.encode()))
        for j, shape in enumerate(ls.params):
            if ls.type == "BatchNorm":
                f = 0.0 if ls.name.endswith("_f0") else FACTOR
                if j == 0:
                    arr = rng.uniform(-0.5, 0.5, shape) * f
                elif j == 1:
                    arr = rng.uniform(0.5, 1.5, shape) * f
                else:
                    arr = np.full(shape, f)
            elif ls.type == "Scale" and j == 0:
                arr = rng.uniform(0.5, 1.5, shape)
            else:
                arr = rng.uniform(-0.5, 0.5, shape)
            blob = layer.blobs.add()
            if legacy:
                dims = (1,) * (4 - len(shape)) + tuple(int(d) for d in shape)
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(int(d) for d in shape)
            blob.data.extend(arr.astype(np.float32).ravel().tolist())
    out.write_bytes(net.SerializeToString())


def digests(caffemodel: Path) -> dict[str, list[str]]:
    """Per layer of the file: the sha256 (first 16 hex digits) of each blob's shape and
    float32 values."""
    import numpy as np

    from rewriter.schema.runtime import default_schema

    net: Any = (
        default_schema().message_class("caffe.NetParameter").FromString(caffemodel.read_bytes())
    )
    out: dict[str, list[str]] = {}
    for layer in net.layer:
        hs = []
        for b in layer.blobs:
            h = hashlib.sha256(repr(tuple(b.shape.dim)).encode())
            h.update(np.asarray(b.data, dtype="<f4").tobytes())
            hs.append(h.hexdigest()[:16])
        out[layer.name] = hs
    return out
