"""Renderings of nets and semantic diffs: text, JSON, Markdown, HTML, DOT and Mermaid.

This module holds the drawing model shared by the DOT and Mermaid writers: a :class:`View` is a
net drawn the way Netron draws it. Each layer that rewrites its input in place (a ReLU on
``conv1`` with ``top == bottom``) is folded into the node of the layer that produced that input,
Caffe's inserted Split layers are not drawn (edges go from the real producer to each reader),
every node carries its layer's training state and every edge the state of the gradient that
goes back along it (see :func:`rewriter.review.facts.phase_facts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rewriter.review.semdiff import FileDiff, PhaseFacts

__all__ = ["Member", "Node", "Edge", "View", "build_view", "diff_view", "STATES", "MAX_NODES"]

#: layer states (:mod:`rewriter.caffe.states`, defined in docs/explain.md) and their short
#: CSS-safe class names
STATES = {
    "trainable": "trainable",
    "decay-only": "decay",
    "statistics-only": "stats",
    "frozen": "frozen",
    "backward only": "bwonly",
    "no backward": "nobw",
}

#: a diff's neighbourhood graph is cut off beyond this many nodes (PR comments stay readable)
MAX_NODES = 80


@dataclass(frozen=True)
class Member:
    name: str
    type: str
    state: str


@dataclass
class Node:
    """One drawn box: a layer plus the in-place layers folded into it."""

    key: str
    members: list[Member]
    #: diff marks: "changed", "added", "renamed", "removed", "affected"
    marks: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.members[0].name

    @property
    def state(self) -> str:
        return self.members[0].state


@dataclass
class Edge:
    source: str
    target: str
    blob: str
    #: "flows", "cut" or "none" (see rewriter.review.facts.EdgeFact)
    gradient: str
    #: diff marks: "added", "removed", "newly-cut", "restored"
    marks: set[str] = field(default_factory=set)


@dataclass
class View:
    title: str
    phase: str
    nodes: dict[str, Node]
    edges: list[Edge]
    #: layer name -> key of the node drawing it
    layer_node: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def neighbourhood(self, keys: set[str], hops: int = 1, limit: int = MAX_NODES) -> View:
        """The nodes in ``keys`` plus ``hops`` steps along edges, in drawing order."""
        keep = {k for k in keys if k in self.nodes}
        for _ in range(hops):
            more = set(keep)
            for e in self.edges:
                if e.source in keep:
                    more.add(e.target)
                if e.target in keep:
                    more.add(e.source)
            keep = more
        ordered = [k for k in self.nodes if k in keep]
        notes = list(self.notes)
        if len(ordered) > limit:
            # changed nodes first, then their neighbours, each in net order
            first = [k for k in ordered if k in keys]
            rest = [k for k in ordered if k not in keys]
            chosen = set((first + rest)[:limit])
            notes.append(
                f"graph limited to {limit} of the {len(ordered)} layers changed or next to a change"
            )
            ordered = [k for k in ordered if k in chosen]
        kept = set(ordered)
        return View(
            self.title,
            self.phase,
            {k: self.nodes[k] for k in ordered},
            [e for e in self.edges if e.source in kept and e.target in kept],
            {n: k for n, k in self.layer_node.items() if k in kept},
            notes,
        )


def build_view(facts: PhaseFacts, title: str = "", fold: bool = True) -> View:
    """The phase's net as drawn: in-place chains folded, splits hidden."""
    g = facts.graph
    layers = g.layers
    nodes: dict[str, Node] = {}
    node_of: dict[int, str] = {}
    layer_node: dict[str, str] = {}
    by_target: dict[int, list[int]] = {}
    for i, e in enumerate(facts.edges):
        by_target.setdefault(e.target, []).append(i)
    seen: dict[str, int] = {}
    for li, layer in enumerate(layers):
        if layer.inserted_split:
            continue
        member = Member(layer.name, layer.type, facts.states[li])
        in_edges = by_target.get(li, [])
        host = None
        if (
            fold
            and len(layer.bottoms) == 1
            and len(layer.tops) == 1
            and layer.tops[0] == layer.bottoms[0]
            and len(in_edges) == 1
        ):
            src = facts.edges[in_edges[0]].source
            if src is not None and src in node_of:
                host = node_of[src]
        if host is not None:
            nodes[host].members.append(member)
            node_of[li] = host
            layer_node.setdefault(layer.name, host)
            continue
        k = seen.get(layer.name, 0)
        seen[layer.name] = k + 1
        key = layer.name if k == 0 else f"{layer.name}@{k + 1}"
        nodes[key] = Node(key, [member])
        node_of[li] = key
        layer_node.setdefault(layer.name, key)
    edges: list[Edge] = []
    for e in facts.edges:
        if e.source is None:
            continue
        s, t = node_of.get(e.source), node_of.get(e.target)
        if s is None or t is None or s == t:
            continue
        edges.append(Edge(s, t, e.blob, e.gradient))
    return View(title or g.net_name or "net", g.phase, nodes, edges, layer_node)


def _affected_layers(fd: FileDiff, phase: str) -> tuple[set[str], dict[str, str]]:
    """Layer names a diff touches in ``phase`` and their strongest mark."""
    marks: dict[str, str] = {}
    for lc in fd.layers:
        if lc.change == "modified":
            marks[lc.name] = "changed"
        elif lc.change in ("added", "renamed"):
            marks[lc.name] = lc.change
    pd = fd.phases.get(phase)
    if pd is not None:
        names: list[str | None] = []
        names += [c.layer for c in pd.backward]
        names += [c.layer for c in pd.params]
        for gc in pd.gradient:
            names += [gc.layer, gc.source]
        for ec in pd.edges:
            names += [ec.source, ec.target]
        names += [c.layer for c in pd.losses]
        names += [w.layer for w in pd.warnings]
        for n in names:
            if n is not None:
                marks.setdefault(n, "affected")
    return set(marks), marks


def diff_view(fd: FileDiff) -> View | None:
    """The neighbourhood of a diff (changed layers plus one hop) in the new net's TRAIN graph
    (TEST when TRAIN does not build), with removed layers and edges drawn from the old net."""
    phase = next((p for p in ("TRAIN", "TEST") if p in fd.new_facts), None)
    if phase is None:
        return None
    view = build_view(fd.new_facts[phase], title=fd.path)
    names, marks = _affected_layers(fd, phase)
    keys: set[str] = set()
    for name in names:
        key = view.layer_node.get(name)
        if key is None:
            continue
        keys.add(key)
        node = view.nodes[key]
        node.marks.add(marks[name])
    for node in view.nodes.values():
        if len(node.marks) > 1:
            node.marks.discard("affected")
    pd = fd.phases.get(phase)
    if pd is not None:
        newly = {(c.layer, c.blob): c.change for c in pd.gradient}
        added = {(c.source, c.target, c.blob) for c in pd.edges if c.change == "added"}
        for e in view.edges:
            tgt = view.nodes[e.target].name
            src = view.nodes[e.source].name
            ch = newly.get((tgt, e.blob))
            if ch == "cut":
                e.marks.add("newly-cut")
            elif ch == "restored":
                e.marks.add("restored")
            if (src, tgt, e.blob) in added:
                e.marks.add("added")
    sub = view.neighbourhood(keys)
    # removed layers (and their edges to drawn nodes) from the old net
    old = fd.old_facts.get(phase)
    removed = [lc for lc in fd.layers if lc.change == "removed"]
    if old is not None and removed:
        rename = {lc.old_name: lc.name for lc in fd.layers if lc.change == "renamed"}
        og = old.graph
        gone = {lc.name for lc in removed}
        for li, layer in enumerate(og.layers):
            if layer.name in gone and layer.name not in sub.nodes:
                key = f"{layer.name} (removed)"
                sub.nodes[key] = Node(key, [Member(layer.name, layer.type, old.states[li])],
                                      {"removed"})  # fmt: skip
                sub.layer_node.setdefault(layer.name, key)
        for fact in old.edges:
            if fact.source is None:
                continue
            s = og.layers[fact.source].name
            t = og.layers[fact.target].name
            if s not in gone and t not in gone:
                continue
            sk = f"{s} (removed)" if s in gone else sub.layer_node.get(rename.get(s, s))
            tk = f"{t} (removed)" if t in gone else sub.layer_node.get(rename.get(t, t))
            if sk in sub.nodes and tk in sub.nodes and sk != tk:
                sub.edges.append(Edge(sk, tk, fact.blob, fact.gradient, {"removed"}))
    return sub
