"""`rewriter diff` keeps its per-phase facts packed: edges as flat arrays, layer keys as an
occurrence array, the old side reduced to one shared record per layer. These tests pin down that
the packed facts read exactly like the object lists they replace and that the Python-side memory
of a diff stays bounded (tracemalloc: deterministic; protobuf's C memory is not counted)."""

from __future__ import annotations

import gc
import tracemalloc
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest

from rewriter.caffe.graph import Graph, build_graph
from rewriter.caffe.netinit import Backward
from rewriter.caffe.states import compute
from rewriter.review import semdiff
from rewriter.schema.bind import NET, bind
from rewriter.text.cst import parse

SEED = Path(__file__).resolve().parents[1] / "examples" / "seed_net.prototxt"

_CONV = """layer {{
  name: "{name}"
  type: "Convolution"
  bottom: "{bottom}"
  top: "{name}"
  param {{ lr_mult: {lr} decay_mult: 1 }}
  param {{ lr_mult: 2 decay_mult: 0 }}
  convolution_param {{ num_output: 12 kernel_size: 3 pad: 1 }}
}}
"""


def densenet(blocks: int, frozen: int = -1) -> str:
    """Conv, in-place ReLU, Concat of the block's input and the conv: a split per block."""
    parts = [
        'name: "dense"\n'
        'layer { name: "data" type: "Input" top: "data" top: "label"\n'
        "  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }\n"
    ]
    prev = "data"
    for i in range(blocks):
        parts.append(_CONV.format(name=f"d{i}_conv", bottom=prev, lr=0 if i == frozen else 1))
        parts.append(
            f'layer {{ name: "d{i}_relu" type: "ReLU" bottom: "d{i}_conv" top: "d{i}_conv" }}\n'
            f'layer {{ name: "d{i}_cat" type: "Concat" bottom: "{prev}" bottom: "d{i}_conv"\n'
            f'  top: "d{i}_cat" }}\n'
        )
        prev = f"d{i}_cat"
    parts.append(
        f'layer {{ name: "fc" type: "InnerProduct" bottom: "{prev}" top: "fc"\n'
        "  inner_product_param { num_output: 10 } }\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
    )
    return "".join(parts)


#: splits of splits, an in-place writer on a split's top, propagate_down, a layer name used
#: twice, a loss on a split blob and an unconsumed top
ODD = """
name: "odd"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        param { lr_mult: 0 } param { lr_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "a" type: "ReLU" bottom: "c1" top: "a" }
layer { name: "b" type: "ReLU" bottom: "c1" top: "b" }
layer { name: "r" type: "ReLU" bottom: "a" top: "a" }
layer { name: "c2" type: "Convolution" bottom: "a" top: "c2"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "cat" type: "Concat" bottom: "c2" bottom: "b" bottom: "a" top: "cat"
        propagate_down: true propagate_down: false propagate_down: true }
layer { name: "c2" type: "Convolution" bottom: "cat" top: "c3"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "c3" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "loss2" type: "EuclideanLoss" bottom: "ip" bottom: "ip" top: "loss2" }
"""


def _graph(text: str, phase: str = "TRAIN") -> tuple[Graph, Backward]:
    g = build_graph(bind(parse(text), root=NET).message, phase=phase)
    return g, g.backward()


def _reference_edges(graph: Graph, backward: Backward) -> list[tuple[Any, ...]]:
    """The edges as the object-list version of phase_facts computed them."""
    layers, blobs, verdicts = graph.layers, graph.blob_list, backward.layers
    writers = []
    for b in blobs:
        w = [] if b.producer is None else [b.producer]
        w.extend(b.writers)
        writers.append(w)
    blob_flag = [False] * len(blobs)
    read_flag = []
    for layer in layers:
        flags = tuple(blob_flag[b] for b in layer.bottom_ids)
        read_flag.append(flags)
        if any(flags) or any(p.local_lr_mult != 0 for p in layer.params):
            for t in layer.top_ids:
                blob_flag[t] = True

    def source(li: int, j: int) -> tuple[int | None, str]:
        while True:
            bid = layers[li].bottom_ids[j]
            w = writers[bid]
            at = bisect_left(w, li)
            src = w[at - 1] if at > 0 else None
            if src is None or not layers[src].inserted_split:
                return src, blobs[bid].name
            li, j = src, 0

    out = []
    for li, layer in enumerate(layers):
        if layer.inserted_split:
            continue
        v = verdicts[li]
        for j in range(len(layer.bottoms)):
            src, blob = source(li, j)
            if v.bottom_need_backward[j]:
                grad = "flows"
            elif read_flag[li][j] and v.contributes_loss:
                grad = "cut"
            else:
                grad = "none"
            out.append((src, li, j, blob, grad))
    return out


@pytest.mark.parametrize("which", ["odd", "dense", "seed"])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_packed_facts_read_like_the_object_lists(which: str, phase: str) -> None:
    text = {"odd": ODD, "dense": densenet(20), "seed": SEED.read_text()}[which]
    g, bw = _graph(text, phase)
    facts = semdiff.phase_facts(g, bw)
    edges = list(facts.edges)
    assert [(e.source, e.target, e.bottom, e.blob, e.gradient) for e in edges] == (
        _reference_edges(g, bw)
    )
    assert len(facts.edges) == len(edges)
    assert facts.edges[-1] == edges[-1] and facts.edges[1:3] == edges[1:3]
    assert facts.edges == edges and facts.edges == semdiff.phase_facts(g, bw).edges
    with pytest.raises(IndexError):
        facts.edges[len(edges)]
    # keys and by_key as the lists and dicts they were
    seen: dict[str, int] = {}
    keys: list[tuple[str, int] | None] = []
    for layer in g.layers:
        if layer.inserted_split:
            keys.append(None)
        else:
            k = seen.get(layer.name, 0)
            seen[layer.name] = k + 1
            keys.append((layer.name, k))
    assert list(facts.keys) == keys and facts.keys[-1] == keys[-1]
    assert dict(facts.by_key) == {k: li for li, k in enumerate(keys) if k is not None}
    assert facts.states == compute(bw).layers


def test_odd_net_diff() -> None:
    # c1 trainable again; the second layer named c2 reads "a" (the first one already does)
    new = ODD.replace("param { lr_mult: 0 } param { lr_mult: 0 }", "")
    new = new.replace('bottom: "cat" top: "c3"', 'bottom: "a" top: "c3"')
    fd = semdiff.diff_texts(ODD, new)
    for phase in semdiff.PHASES:
        pd = fd.phases[phase]
        assert [(c.layer, c.change) for c in pd.backward] == [
            ("c1", "starts"), ("a", "starts"), ("r", "starts"), ("c2", "stops"),
            ("cat", "stops"),
        ]  # fmt: skip
        # the first c2 loses its gradient: weight decay alone moves its default-rate blobs
        assert [(c.layer, c.index, c.change) for c in pd.params] == [
            ("c1", 0, "trainable"), ("c1", 1, "trainable"),
            ("c2", 0, "decay-only"), ("c2", 1, "decay-only"),
        ]  # fmt: skip
        assert [(c.source, c.target, c.blob, c.change) for c in pd.edges] == [
            ("cat", "c2", "cat", "removed")
        ]
        assert pd.gradient == []
    assert [(w.change, w.layer) for w in fd.phases["TRAIN"].warnings] == [("added", "c2")]


def _traced(fn: Any) -> tuple[Any, int, int]:
    """(result, bytes still allocated, peak bytes) of a call, Python allocations only."""
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, cur, peak


def test_facts_and_old_reduction_stay_small() -> None:
    text = densenet(500)
    size = len(text.encode())
    g, bw = _graph(text)
    # (object lists: about 3x the file kept; the arrays and the states list: 0.35x)
    facts, kept, _ = _traced(lambda: semdiff.phase_facts(g, bw))
    assert kept < 1.0 * size, kept / size
    # (three dicts keyed by tuples: 2.7x; one dict of shared records and the edge set: 1.3x)
    _, kept, _ = _traced(lambda: semdiff._old_phase(facts, {}, {}))
    assert kept < 2.0 * size, kept / size


def test_diff_peak_python_memory() -> None:
    old, new = densenet(500), densenet(500, frozen=250)
    size = len(old.encode())
    semdiff.diff_texts(old, new)  # imports, schema
    fd, _, peak = _traced(lambda: semdiff.diff_texts(old, new))
    assert [c.name for c in fd.layers] == ["d250_conv"]
    # (with the object lists: about 16x the file; packed: about 10.7x)
    assert peak < 13 * size, peak / size


_BN_NET = """
name: "bn"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        param { lr_mult: 1 } convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1"
        param { lr_mult: 0 } param { lr_mult: 1 decay_mult: -0.0 } param { lr_mult: 0 } }
layer { name: "ip" type: "InnerProduct" bottom: "c1" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_batch_norm_upgrade_in_place_is_the_copy() -> None:
    from rewriter.caffe.upgrade_proto import upgrade_batch_norm, upgrade_net_message

    msg = bind(parse(_BN_NET), root=NET).message
    copied = upgrade_net_message(msg)
    assert copied is not msg
    upgrade_batch_norm(msg)
    assert msg == copied
    assert [(p.lr_mult, p.decay_mult) for p in msg.layer[2].param] == [(0.0, 0.0)] * 3
    # once upgraded (explicit +0 everywhere), not copied again
    assert upgrade_net_message(msg) is msg


def test_diff_builds_graphs_without_copying_the_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message a diff builds a graph from is its own, upgraded in place: protobuf's copy
    of a whole net (about 5x the file, not seen by tracemalloc) is never made beside it."""
    import rewriter.caffe.graph as graph_mod

    real = graph_mod.upgrade_net_message
    copied: list[str] = []

    def spy(net: Any, **kw: Any) -> Any:
        out = real(net, **kw)
        if out is not net:
            copied.append(str(net.name))
        return out

    monkeypatch.setattr(graph_mod, "upgrade_net_message", spy)
    new = _BN_NET.replace("param { lr_mult: 1 } convolution", "param { lr_mult: 0 } convolution")
    fd = semdiff.diff_texts(_BN_NET, new)
    assert [c.name for c in fd.layers] == ["c1"]
    assert fd.phases["TRAIN"].params and copied == []
    # the drawings rebuild the graphs the same way
    assert fd.new_facts["TEST"].graph.layers[2].name == "bn1" and copied == []


def test_test_phase_shares_train_change_objects() -> None:
    old = densenet(30)
    new = densenet(30, frozen=0).replace("lr_mult: 2", "lr_mult: 0", 1)  # d0_conv frozen
    fd = semdiff.diff_texts(old, new)
    train, test = fd.phases["TRAIN"], fd.phases["TEST"]
    assert train.backward and train.params
    assert test.backward == train.backward and test.params == train.params
    assert all(a is b for a, b in zip(test.backward, train.backward, strict=True))
    assert all(a is b for a, b in zip(test.params, train.params, strict=True))
