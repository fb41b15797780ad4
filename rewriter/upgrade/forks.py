"""A fork's V1 layer types (DeepLab's ``IMAGE_SEG_DATA``, CRF-RNN's ``CROP``): found in the
leniently bound net, named by the user (``--v1-type CROP=Crop``), and given to the V2 layers
made from them, in the upgrade and in the net read the old way that checks it. Refused, with
the flags to pass, when a token has no name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewriter.text.cst import Document, MessageBody
from rewriter.upgrade.result import UpgradeError


def _fork_v1_types(
    doc: Document, body: MessageBody, msg: Any, names: Mapping[str, str]
) -> dict[int, str]:
    """V1 layers whose ``type`` is a fork's enum value (DeepLab's ``IMAGE_SEG_DATA``, CRF-RNN's
    ``CROP``), left unset by the lenient binder: layer index -> the V2 type string the user
    gave for it (``names``). Its V2 name is the fork's (its own ``UpgradeV1LayerType``), so
    without one we refuse rather than guess or write a typeless layer."""
    found: dict[int, str] = {}
    missing: dict[str, int] = {}  # token -> offset of its first use
    conns = [f for f in body.fields if f.name == "layers"]
    for k, f in enumerate(conns):
        lb = f.body
        if k >= len(msg.layers) or msg.layers[k].HasField("type"):
            continue
        if not isinstance(lb, MessageBody) or lb.get("layer") is not None:
            continue
        g = lb.get("type")
        if g is None:
            continue
        token = g.value_text.strip()
        if token in names:
            found[k] = names[token]
        else:
            missing.setdefault(token, g.value_start)
    if missing:
        # every token at once, at the first; the guess is CamelCase, which forks mostly use
        flags = " ".join(
            f"--v1-type {t}=" + "".join(w.capitalize() for w in t.split("_")) for t in missing
        )
        first = next(iter(missing))
        what = (
            f"V1 layer type {first} is not one of BVLC Caffe's"
            if len(missing) == 1
            else f"V1 layer types {', '.join(missing)} are not BVLC Caffe's"
        )
        raise UpgradeError(
            f"{what}, whose upgrade stops here "
            f"(upgrade_proto.cpp: 'Unknown V1LayerParameter layer type'); the fork that defines "
            f"it names its V2 type (its upgrade_proto.cpp, UpgradeV1LayerType): pass each, e.g. "
            f"'rewriter upgrade --lenient {flags} FILE', with the names the fork uses",
            doc.location(missing[first]),
        )
    return found


def _set_fork_types(net: Any, fork_types: Mapping[int, str], sources: Sequence[int | None]) -> None:
    """Give the V2 layers that come from fork-typed V1 layers the type the user named."""
    for j, src in enumerate(sources):
        if src is not None and src in fork_types and j < len(net.layer):
            net.layer[j].type = fork_types[src]
