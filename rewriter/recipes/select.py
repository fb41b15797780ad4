"""Selectors: which layers of a net a step acts on.

Every step takes the same selector keys; when several are given the selections intersect:

=============  ==================================================================================
``layers``     names (a layer that exists only in TEST is still found: names are looked up in
               the whole file, every phase)
``glob``       shell pattern on names (``"conv*"``), ``fnmatch`` rules, case-sensitive
``regex``      regular expression *searched* in names (anchor it with ``^...$`` for a full match)
``type``       layer type or list of types (``"BatchNorm"``)
``upto``       the layer X and all its ancestors in the graph of ``phase``
``after``      every descendant of X in the graph of ``phase`` (X itself excluded)
``between``    ``[X, Y]``: X, Y and every layer on a path from X to Y
``phase``      the phase whose graph ``upto``/``after``/``between`` walk (default TRAIN)
=============  ==================================================================================

Graph walks follow Caffe's wiring exactly (:func:`rewriter.caffe.graph.build_graph`): a layer reads
the *version* of a blob written last before it, so an in-place ReLU after ``conv1`` is an
ancestor of whatever reads ``conv1`` afterwards but not of ``conv1`` itself, and inserted Split
layers are walked through. One pass over the net builds both edge lists (linear time).

A selected layer is returned as its index among the document's top-level ``layer`` fields
(:class:`NetView` maps the graph's ``source_index`` back, minding the ``Input`` layer Caffe makes
from legacy ``input:`` fields).
"""

from __future__ import annotations

import fnmatch
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError
from rewriter.recipes.common import RecipeError, _hint
from rewriter.util.lazyseq import LazySequence

if TYPE_CHECKING:
    from rewriter.caffe.graph import Graph
    from rewriter.caffe.netinit import Backward
    from rewriter.text.cst import Document, Field

    from .recipe import Step

__all__ = ["SELECTOR_KEYS", "NetView", "SelectionError", "select", "graph_edges"]

SELECTOR_KEYS = ("layers", "glob", "regex", "type", "upto", "after", "between")
PHASES = ("TRAIN", "TEST")


class SelectionError(RecipeError):
    """A selector names something that is not there, or selects nothing (a step's error: a
    built-in recipe restates it in its own options, as any step error)."""


class NetView:
    """A document, its bound message and Caffe's graphs, with the index maps between them.

    ``message`` is the message bound from ``doc`` (not upgraded); for a current-format (V2) net
    its ``layer`` list is the document's top-level ``layer`` fields in order.
    """

    def __init__(
        self,
        doc: Document,
        message: Any,
        *,
        path: str = "<string>",
        param_counts: dict[str, int] | None = None,
        stages: Sequence[str] = (),
        level: int = 0,
    ) -> None:
        self.doc = doc
        self._message: Any = message
        #: re-binds ``doc`` once the message was handed on to be edited (see :meth:`detach`)
        self._rebind: Callable[[], Any] | None = None
        self.path = path
        self.param_counts = param_counts
        self.stages = tuple(stages)
        self.level = level
        #: indices of the document's top-level ``layer`` fields (an array: ints are 32 B each)
        self.layer_fields = array("i", [i for i, f in enumerate(doc.fields) if f.name == "layer"])
        if any(layer.HasField("layer") for layer in message.layers):
            self.format = "V0"
        elif len(message.layers) > 0:
            self.format = "V1"
        else:
            self.format = "V2"
        #: the upgraded net starts with an Input layer made from legacy ``input:`` fields
        self.offset = 1 if len(message.input) > 0 else 0
        self._graphs: dict[str, Graph] = {}
        self._backward: dict[str, Backward] = {}
        self._where: dict[str, IndexMap] = {}
        self._names: list[str] | None = None
        self._by_name: dict[str, list[int]] | None = None
        #: the message's repeated ``layer`` field (not a list of its elements)
        self._layers: Any = None
        self._edges: dict[str, tuple[Adjacency, Adjacency]] = {}
        #: no include/exclude rule and no NetState (rewriter.recipes.checks.phase_independent)
        self.phase_free: bool | None = None
        #: phases whose graph was derived from the engine input's along every step
        #: (rewriter.caffe.derive): the input's wiring, and nothing Caffe's set-up reads changed
        self.derived_from_input: set[str] = set()

    @property
    def message(self) -> Any:
        """The message bound from ``doc``; after :meth:`detach`, bound again on first use."""
        if self._message is None:
            assert self._rebind is not None
            self._message = self._rebind()
            self._rebind = None
        return self._message

    def detach(self, rebind: Callable[[], Any]) -> Any:
        """Hand the message over to be edited in place, for the next step's view.

        The engine's output differs from its input in a few fields of some layers; editing one
        message instead of copying it saves a whole message (about 4x the file). This view's
        caches of the message go, and its message is bound again from ``doc`` if it is ever
        read (``Result.net_before``); the checks keep the old values they compare against.
        """
        message = self.message
        self._message = None
        self._layers = None
        self._rebind = rebind
        self.forget_graphs()
        return message

    # --- document side -------------------------------------------------------------------------
    def require_current(self, what: str) -> None:
        if self.format != "V2":
            legacy = (
                "V1 'layers { type: ENUM }'" if self.format == "V1" else "V0 'layers { layer }'"
            )
            raise RewriterError(
                f"{self.path}: this net uses the {legacy} format; {what} edits current-format "
                "'layer' blocks only. Upgrade the file first: rewriter upgrade FILE --in-place "
                "(or Caffe's upgrade_net_proto_text)."
            )

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = [str(layer.name) for layer in self.message.layer]
        return self._names

    @property
    def by_name(self) -> dict[str, list[int]]:
        if self._by_name is None:
            idx: dict[str, list[int]] = {}
            for i, name in enumerate(self.names):
                idx.setdefault(name, []).append(i)
            self._by_name = idx
        return self._by_name

    def __len__(self) -> int:
        return len(self.layer_fields)

    def field(self, k: int) -> Field:
        return self.doc.fields[self.layer_fields[k]]

    def field_path(self, k: int) -> tuple[int, ...]:
        return (self.layer_fields[k],)

    def layer(self, k: int) -> Any:
        # (no list of them is kept: a Python object per layer message, ~0.4x the file)
        if k < 0:
            raise IndexError(k)
        layers = self._layers
        if layers is None:
            layers = self._layers = self.message.layer
        return layers[k]

    def describe(self, k: int) -> str:
        return f"layer '{self.names[k]}'"

    def no_such_layer(self, name: str, phase: str | None = None) -> SelectionError:
        if phase is not None and name in self.by_name:
            other = [p for p in PHASES if p != phase][0]
            return SelectionError(
                f"{self.path}: layer '{name}' is not in the {phase} net (its include/exclude "
                f'rules keep it out); add phase = "{other}" to the step'
            )
        return SelectionError(f"{self.path}: no layer named '{name}'{_hint(name, self.by_name)}")

    # --- graph side ----------------------------------------------------------------------------
    def graph(self, phase: str) -> Graph:
        g = self._graphs.get(phase)
        if g is None:
            from rewriter.caffe.graph import CaffeError, build_graph

            try:
                g = build_graph(
                    self.message,
                    phase=phase,
                    stages=self.stages,
                    level=self.level,
                    param_counts=self.param_counts,
                    names=self.names,
                )
            except CaffeError as e:
                from rewriter.caffe.diagnose import diagnostic

                found = diagnostic(e, self.doc, phase, path=self.path)
                raise RewriterError(found.render()) from None
            self._graphs[phase] = g
        return g

    def backward(self, phase: str) -> Backward:
        """Caffe's backward verdicts for ``phase`` (cached)."""
        b = self._backward.get(phase)
        if b is None:
            b = self.graph(phase).backward()
            self._backward[phase] = b
        return b

    def has_graph(self, phase: str) -> bool:
        return phase in self._graphs

    def built_phases(self) -> list[str]:
        """The phases whose graph is cached, in the order they were built."""
        return list(self._graphs)

    def share_names(self, other: NetView) -> None:
        """Take ``other``'s layer names (and their index): this view's document is ``other``'s
        with no layer added, removed or renamed (100k names and their dict are ~1x the file)."""
        self._names = other._names
        self._by_name = other._by_name

    def graph_cache(self) -> dict[str, tuple[Graph, IndexMap | None, Any]]:
        """The graphs built so far, with the maps read off their wiring (see adopt_graph)."""
        return {p: (g, self._where.get(p), self._edges.get(p)) for p, g in self._graphs.items()}

    def adopt_graph(
        self, phase: str, graph: Graph, where: IndexMap | None, edges: Any, as_input: bool
    ) -> None:
        """Take ``graph`` as this view's for ``phase``: one derived from another view's with
        the same wiring (rewriter.caffe.derive), whose index maps and edges still hold.
        ``as_input``: derived along every step from the engine's input (``derived_from_input``)."""
        self._graphs[phase] = graph
        if where is not None:
            self._where[phase] = where
        if edges is not None:
            self._edges[phase] = edges
        if as_input:
            self.derived_from_input.add(phase)

    def forget_graphs(self) -> None:
        """Drop the cached graphs and what was derived from them (rebuilt on demand).

        A graph takes about as much memory as the tree of the text it came from; the engine
        drops the input's once it has read what its checks need, before the output's is built.
        """
        self._graphs.clear()
        self._backward.clear()
        self._where.clear()
        self._edges.clear()

    def doc_index(self, source_index: int | None) -> int | None:
        """The document layer index of a graph layer (None for splits and the legacy Input)."""
        if source_index is None or self.format != "V2":
            return None
        k = source_index - self.offset
        return k if 0 <= k < len(self.layer_fields) else None

    def graph_layers_of(self, phase: str) -> IndexMap:
        """Document layer index -> graph layer index, for the layers in ``phase``'s net."""
        out = self._where.get(phase)
        if out is None:
            out = self._where[phase] = self.index_map(self.graph(phase))
        return out

    def index_map(self, graph: Graph) -> IndexMap:
        """Document layer index -> index in ``graph`` (a graph of this view's document, or of
        one with the same layers)."""
        where = array("i", [-1]) * len(self.layer_fields)
        for layer in graph.layers:
            k = self.doc_index(layer.source_index)
            if k is not None:
                where[k] = layer.index
        return IndexMap(where)

    def edges(self, phase: str) -> tuple[Adjacency, Adjacency]:
        e = self._edges.get(phase)
        if e is None:
            e = graph_edges(self.graph(phase))
            self._edges[phase] = e
        return e


class IndexMap(Mapping[int, int]):
    """A mapping of small non-negative ints to ints held as one array (-1: no entry): the
    document -> graph layer index of a 100k-layer net in 400 KB instead of a 10 MB dict."""

    __slots__ = ("_items", "_len")

    def __init__(self, items: array[int]) -> None:
        self._items = items
        self._len = len(items) - items.count(-1)

    def get(self, key: int, default: Any = None) -> Any:
        items = self._items
        if 0 <= key < len(items):
            value = items[key]
            if value >= 0:
                return value
        return default

    def __getitem__(self, key: int) -> int:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return int(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.get(key) is not None

    def __iter__(self) -> Iterator[int]:
        return (k for k, v in enumerate(self._items) if v >= 0)

    def __len__(self) -> int:
        return self._len


class Adjacency(LazySequence[Sequence[int]]):
    """Neighbour lists of graph layers, packed (compressed sparse rows): ``adj[i]`` are the
    neighbours of layer ``i``. Lists of lists took ~1x the file for a concat-heavy net."""

    __slots__ = ("_starts", "_targets")
    _what = "layer"

    def __init__(self, starts: array[int], targets: array[int]) -> None:
        self._starts = starts
        self._targets = targets

    def _item(self, i: int) -> Sequence[int]:
        starts = self._starts
        return self._targets[starts[i] : starts[i + 1]]

    def __len__(self) -> int:
        return len(self._starts) - 1


def graph_edges(graph: Graph) -> tuple[Adjacency, Adjacency]:
    """``(preds, succs)`` per graph layer: who wrote the blob version each bottom reads.

    One forward pass keeping the last writer of every blob id (in-place layers share the id, so
    the last writer is the last in-place layer before the reader), as Caffe's wiring does.
    """
    n = len(graph.layers)
    pred_starts = array("i", [0])
    preds = array("i")
    counts = [0] * n
    last: dict[int, int] = {}
    for layer in graph.layers:
        li = layer.index
        for bid in layer.bottom_ids:
            w = last.get(bid)
            if w is not None:
                preds.append(w)
                counts[w] += 1
        pred_starts.append(len(preds))
        for tid in layer.top_ids:
            last[tid] = li
    # successors: the same edges reversed, each list in the order the readers come
    succ_starts = array("i", [0])
    total = 0
    for c in counts:
        total += c
        succ_starts.append(total)
    fill = array("i", succ_starts[:-1]) if n else array("i")
    succs = array("i", [0]) * total
    for li in range(n):
        for w in preds[pred_starts[li] : pred_starts[li + 1]]:
            succs[fill[w]] = li
            fill[w] += 1
    return Adjacency(pred_starts, preds), Adjacency(succ_starts, succs)


def _closure(start: Iterable[int], adj: Sequence[Sequence[int]]) -> set[int]:
    seen = set(start)
    stack = list(seen)
    while stack:
        for nxt in adj[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _graph_nodes(view: NetView, name: str, phase: str) -> list[int]:
    graph = view.graph(phase)
    nodes = [layer.index for layer in graph.layers if layer.name == name]
    if not nodes:
        raise view.no_such_layer(name, phase)
    return nodes


def _to_doc(view: NetView, phase: str, nodes: Iterable[int]) -> set[int]:
    layers = view.graph(phase).layers
    out: set[int] = set()
    for li in nodes:
        k = view.doc_index(layers[li].source_index)
        if k is not None:
            out.add(k)
    return out


def _str_list(step: Step, key: str) -> list[str]:
    value = step.get(key)
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def has_selector(step: Step) -> bool:
    return any(_str_list(step, k) for k in SELECTOR_KEYS)


def select(view: NetView, step: Step, phase: str, missing_ok: bool = False) -> list[int] | None:
    """Document layer indices chosen by the step's selectors (sorted), None if it has none.

    Empty-string and empty-list selector values count as "not given", so a recipe option with
    default ``""`` makes a selector optional. ``missing_ok`` (re-running a recipe on its own
    output, where it may have removed or renamed the layers it names) makes a name that is not
    there select nothing instead of being an error.
    """
    sets: list[set[int]] = []
    names = _str_list(step, "layers")
    if names:
        chosen: set[int] = set()
        for name in names:
            hits = view.by_name.get(name)
            if not hits:
                if missing_ok:
                    continue
                raise _located(step, "layers", view.no_such_layer(name))
            chosen.update(hits)
        sets.append(chosen)
    globs = _str_list(step, "glob")
    if globs:
        sets.append(
            {k for k, n in enumerate(view.names) if any(fnmatch.fnmatchcase(n, g) for g in globs)}
        )
    regexes = _str_list(step, "regex")
    if regexes:
        try:
            compiled = [re.compile(r) for r in regexes]
        except re.error as e:
            raise step.error(f"invalid regex: {e}", "regex") from None
        sets.append({k for k, n in enumerate(view.names) if any(c.search(n) for c in compiled)})
    types = _str_list(step, "type")
    if types:
        wanted = set(types)
        sets.append({k for k, layer in enumerate(view.message.layer) if layer.type in wanted})
    graph_keys = [k for k in ("upto", "after", "between") if _str_list(step, k)]
    if graph_keys:
        view.require_current("selecting layers through the graph")
    for key in graph_keys:
        preds, succs = view.edges(phase)
        try:
            if key == "upto":
                nodes = [
                    n for name in _str_list(step, key) for n in _graph_nodes(view, name, phase)
                ]
                sets.append(_to_doc(view, phase, _closure(nodes, preds)))
            elif key == "after":
                nodes = [
                    n for name in _str_list(step, key) for n in _graph_nodes(view, name, phase)
                ]
                below = _closure(nodes, succs) - set(nodes)
                sets.append(_to_doc(view, phase, below))
            else:
                pair = _str_list(step, key)
                if len(pair) != 2:
                    raise step.error("between takes two layer names [from, to]", key)
                lo = _graph_nodes(view, pair[0], phase)
                hi = _graph_nodes(view, pair[1], phase)
                nodes_between = _closure(lo, succs) & _closure(hi, preds)
                if not nodes_between:
                    raise SelectionError(
                        f"{view.path}: no path from '{pair[0]}' to '{pair[1]}' in the {phase} net"
                    )
                sets.append(_to_doc(view, phase, nodes_between))
        except SelectionError as e:
            if not missing_ok:
                raise _located(step, key, e) from None
            sets.append(set())
    if not sets:
        return None
    result = sets[0]
    for s in sets[1:]:
        result &= s
    return sorted(result)


def _located(step: Step, key: str, err: SelectionError) -> SelectionError:
    where = step.where(key)
    out = err if where is None else SelectionError(f"{err} ({step.kind} step at {where})")
    out.bare = str(err)
    return out
