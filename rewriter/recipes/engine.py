"""The engine: run a recipe on a net, check the result, produce a minimal diff.

``apply(path_or_file_or_doc, recipe, **options) -> Result``:

1. parse and bind the input (once); check the recipe's preconditions;
2. run the steps in order, each planning its edits on the document the previous one produced
   (edits go through :class:`rewriter.text.edit.Editor`, so every untouched byte survives); after
   each step only the changed fields are re-read (:func:`rewriter.recipes.checks.rebind`) and the
   step's promise is checked with Caffe's backward analysis;
3. run the round-trip checks (:mod:`rewriter.recipes.checks`) on the final document; if any fails,
   :class:`~rewriter.recipes.checks.CheckFailed` is raised and nothing can be written;
4. return a :class:`Result` with the new text, the semantic changes, the check results, the
   warnings and (lazily) a unified diff.

The diff is computed from the edit itself, not by diffing two whole files: untouched top-level
fields are the same objects in both documents, so only the changed stretches are compared
(with :mod:`difflib`, line by line) and the output equals ``difflib.unified_diff`` of the two
texts in the usual case, in time proportional to the change.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import compress, count
from operator import ne
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewriter.errors import RewriterError

from .checks import Change, CheckFailed, CheckResult

if TYPE_CHECKING:
    from rewriter.caffe.netfile import NetFile
    from rewriter.schema.runtime import Schema
    from rewriter.text.cst import Document

    from .recipe import Recipe, Step
    from .select import NetView
    from .steps import Plan, Struct, StructChange, StructDigest

__all__ = ["Result", "apply", "apply_text", "unified_diff", "as_recipe"]

NET = "caffe.NetParameter"


@dataclass
class Result:
    """What a recipe did to one file. ``code`` is the new text; nothing is written until
    :meth:`write` is called."""

    path: str
    recipe: str
    original: Document
    document: Document
    changes: list[Change] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: steps run, in order (kind and a short note when a step did nothing)
    steps: list[str] = field(default_factory=list)
    #: set when a precondition with on_fail = "skip" was not met
    skipped: str | None = None
    #: the rewritten net (document, message, Caffe's graphs): ``result.net.graph("TRAIN")``,
    #: ``result.net.backward("TRAIN")``; ``net_before`` is the input. Their graphs are built
    #: again on first use: the checks' copies are dropped to save memory
    net: NetView | None = field(default=None, repr=False)
    net_before: NetView | None = field(default=None, repr=False)
    #: (step, rewriter.recipes.weightsteps.store.WeightOp, needs the weights) of the steps that
    # changed
    #: the net, in order; run on ``apply(weights=...)``
    weight_ops: list[tuple[Any, Any, bool]] = field(default_factory=list, repr=False)
    #: the new weights, written and checked (rewriter.recipes.weightsteps.pair.WeightPair)
    weights: Any = field(default=None, repr=False)
    _diff: str | None = field(default=None, repr=False)
    _code: str | None = field(default=None, repr=False)
    _offsets: list[int] | None = field(default=None, repr=False)

    @property
    def code(self) -> str:
        if self._code is None:
            with bulk():
                self._code, self._offsets = doc_text(self.document)
        return self._code

    @property
    def changed(self) -> bool:
        return self.document is not self.original and self.code != self.original.code

    @property
    def diff(self) -> str:
        """Unified diff of the original and the new text ('' when nothing changed)."""
        if self._diff is None:
            with bulk():
                self._diff = (
                    unified_diff(
                        self.original,
                        self.document,
                        self.path,
                        self.path,
                        a_text=self.original.code,
                        b_text=self.code,
                        b_offsets=self._offsets,
                    )
                    if self.changed
                    else ""
                )
        return self._diff

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def write(
        self,
        path: str | os.PathLike[str] | None = None,
        weights_out: str | os.PathLike[str] | None = None,
    ) -> None:
        """Write the new text atomically (to ``path``, default the input file); with
        ``weights_out``, the new weights too: both files or neither."""
        from rewriter.text.fileio import write_text_atomic

        if weights_out is not None or self.weights is not None:
            from .weightsteps.pair import write_pair

            if weights_out is None:
                raise RewriterError(
                    f"{self.path}: the weights changed too: write them with --weights-out "
                    "OUT.caffemodel (Result.write(path, weights_out))"
                )
            write_pair(self, path, weights_out)
            return

        target = path if path is not None else self.path
        if target is None or str(target).startswith("<"):
            raise RewriterError("Result.write: no path to write to (pass one)")
        write_text_atomic(target, self.code)

    def to_json(self, with_diff: bool = True, with_changes: bool = True) -> dict[str, Any]:
        """Plain data; without ``with_changes``, only how many changes in how many layers
        (``change_count``, ``changed_layers``): a list of dicts per change is ~1x the file."""
        data: dict[str, Any] = {
            "path": self.path,
            "recipe": self.recipe,
            "changed": self.changed,
            "skipped": self.skipped,
            "steps": list(self.steps),
            "checks": [c.as_dict() for c in self.checks],
            "warnings": list(self.warnings),
        }
        if with_changes:
            data["changes"] = [c.as_dict() for c in self.changes]
        else:
            data["change_count"] = len(self.changes)
            data["changed_layers"] = len({c.layer for c in self.changes if c.layer is not None})
        if with_diff:
            data["diff"] = self.diff
        return data


# --------------------------------------------------------------------------- entry points


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic GC for bulk work, then file the survivors as old objects.

    A 3.5 MB net makes millions of small acyclic objects (tree nodes, graph records). With the
    collector running, young-generation passes rescan them again and again; merely pausing it
    (:func:`rewriter.util.memory.gc_paused`) defers one full pass over all of them to the first
    allocation after. Here the survivors are moved straight to the oldest generation instead
    (``gc.freeze()`` + ``gc.unfreeze()``: two list splices, no scan), where they wait for the
    next regular full collection. Skipped when the process uses ``gc.freeze`` itself.
    """
    was_enabled = gc.isenabled()
    frozen_before = gc.get_freeze_count()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if frozen_before == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def as_recipe(recipe: Recipe | Step | Sequence[Step] | str | os.PathLike[str]) -> Recipe:
    from .recipe import Recipe, Step, recipe_from_steps

    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Step):
        return recipe_from_steps([recipe])
    if isinstance(recipe, str | os.PathLike):
        return Recipe.find(recipe if isinstance(recipe, str) else Path(recipe))
    steps = list(recipe)
    if not all(isinstance(s, Step) for s in steps):
        raise RewriterError("apply: recipe must be a Recipe, a Step, steps, a name or a path")
    return recipe_from_steps(steps)


def apply(
    target: str | os.PathLike[str] | NetFile | Document,
    recipe: Recipe | Step | Sequence[Step] | str | os.PathLike[str],
    *,
    options: Mapping[str, Any] | None = None,
    phase: str = "TRAIN",
    lenient: bool | None = None,
    schema: Schema | None = None,
    param_counts: Mapping[str, int] | None = None,
    weights: str | os.PathLike[str] | None = None,
    weights_out: str | os.PathLike[str] | None = None,
    **option_values: Any,
) -> Result:
    """Apply ``recipe`` to a net (a path, a :class:`~rewriter.api.CaffeFile` or a parsed
    :class:`~rewriter.text.cst.Document`) and check the result; raise
    :class:`~rewriter.recipes.checks.CheckFailed` if a check fails. Recipe options come as keyword
    arguments (``upto="pool2"``) or as ``options={...}``; ``phase`` is the default phase of
    the steps' selectors. With ``weights`` (a .caffemodel) the weights follow the net (renamed
    layers, folded BatchNorm...) and the pair is checked (rewriter.recipes.weightsteps.pair); a
    temporary
    file next to ``weights_out`` holds them until :meth:`Result.write`."""
    from rewriter.caffe.netfile import NetFile
    from rewriter.text.cst import Document, read

    values = dict(options or {})
    values.update(option_values)
    if isinstance(target, Document):
        doc = target
    elif isinstance(target, NetFile):
        doc = target.document
        if lenient is None:
            lenient = target.lenient
        schema = schema or target.schema
    else:
        doc = read(target)
    rec = as_recipe(recipe)
    steps = rec.resolve(values)
    if steps and steps[0].kind == "upgrade":
        result = _upgrade_then_run(
            doc, rec, values, phase.upper(), bool(lenient), schema, param_counts
        )
    else:
        result = _run(doc, rec, values, phase.upper(), bool(lenient), schema, param_counts)
    if weights is not None or result.weight_ops:
        from .weightsteps.pair import carry_weights

        carry_weights(result, weights, weights_out)
    return result


def _upgrade_then_run(
    doc: Document,
    recipe: Recipe,
    values: Mapping[str, Any],
    phase: str,
    lenient: bool,
    schema: Schema | None,
    param_counts: Mapping[str, int] | None,
) -> Result:
    """A recipe that starts with ``upgrade``: Caffe's legacy upgrade first, then the rest.

    The upgrade is checked by :func:`rewriter.upgrade.document.upgrade_document` itself (its message
    equals Caffe's upgrade of the original, and the graphs of both phases are unchanged); the
    remaining steps are then checked against the upgraded net as usual. The result's diff is
    against the original legacy text.
    """
    from rewriter.text.cst import parse
    from rewriter.upgrade.document import upgrade_document

    up = upgrade_document(doc, kind="net", lenient=lenient)
    if not up.changed:
        return _run(doc, recipe, values, phase, lenient, schema, param_counts)
    base = parse(up.document.code, doc.path)
    result = _run(base, recipe, values, phase, lenient, schema, param_counts)
    result.original = doc
    result._diff = None
    detail = f"{len(up.messages)} upgrade message(s); equal to Caffe's upgrade, same graphs"
    if up.deliberate_differences:
        detail += "; deliberate differences: " + "; ".join(up.deliberate_differences)
    result.checks.insert(0, CheckResult("upgrade", True, detail))
    result.steps[0] = "1:upgrade"
    return result


def apply_text(text: str, recipe: Recipe | Step | Sequence[Step] | str, **kw: Any) -> Result:
    """Convenience: apply to a text (path shown as ``<string>``)."""
    from rewriter.text.cst import parse

    return apply(parse(text), recipe, **kw)


# --------------------------------------------------------------------------- the engine


class _Setting:
    """What stays fixed while a recipe runs: its steps, the default phase and how the output is
    read back (as strictly as the input allows, with the input's line ending).

    (A plain class: this module is on every apply's start-up path, and creating a dataclass
    costs ~1 ms at import.)"""

    __slots__ = ("recipe", "steps", "phase", "path", "counts", "schema", "newline", "out_lenient")

    def __init__(
        self,
        recipe: Recipe,
        steps: list[Step],
        phase: str,
        path: str,
        counts: dict[str, int] | None,
        schema: Schema | None,
        newline: str,
        out_lenient: bool,
    ) -> None:
        self.recipe = recipe
        self.steps = steps
        self.phase = phase
        self.path = path
        self.counts = counts
        self.schema = schema
        self.newline = newline
        #: lenient only if the input needed it
        self.out_lenient = out_lenient

    def view_of(self, d: Document, msg: Any) -> NetView:
        from .select import NetView

        return NetView(d, msg, path=self.path, param_counts=self.counts)


class _Progress:
    """What the steps did so far, as the checks need it; ``view`` is the current net.
    (A plain class, as :class:`_Setting`.)"""

    def __init__(self, orig: NetView, view: NetView, origin: Sequence[int | None]) -> None:
        self.orig = orig
        self.view = view
        #: output layer index -> input layer index (None: added); a range until a step adds
        #: or removes layers (a list of 100k ints is 3 MB)
        self.origin = origin
        self.effects: dict[int, frozenset[tuple[str, ...]]] = {}
        self.step_of: dict[int, dict[tuple[str, ...], str]] = {}
        self.declared: dict[Any, tuple[frozenset[tuple[str, ...]], dict[tuple[str, ...], str]]] = {}
        self.net_effects: set[tuple[str, ...]] = set()
        self.structural: list[StructChange] = []
        self.removed_orig: list[int] = []
        self.promise_failures: list[CheckResult] = []
        #: the input's structures, read before its graphs were dropped
        self.before: dict[str, Struct | StructDigest] | None = None
        self.promised = 0
        self.touched: set[str] = set()
        #: phases whose input digest is not read: the output's graph still has the input's
        #: wiring
        self.deferred: set[str] = set()


def _run(
    doc0: Document,
    recipe: Recipe,
    values: Mapping[str, Any],
    phase: str,
    lenient: bool,
    schema: Schema | None,
    param_counts: Mapping[str, int] | None,
) -> Result:
    """Bind the input, check the preconditions, run the steps, run the checks."""
    from rewriter.schema.bind import require_net

    if phase not in ("TRAIN", "TEST"):
        raise RewriterError(f"phase must be TRAIN or TEST, not {phase!r}")
    path = doc0.path
    steps = recipe.resolve(values)
    preconditions = recipe.resolve_preconditions(values)
    counts = dict(param_counts) if param_counts else None

    require_net(doc0)
    with bulk():
        run, orig = _bind_input(doc0, recipe, steps, phase, lenient, schema, counts)
        result = Result(path, recipe.name, doc0, doc0)
        skipped = _preconditions(orig, preconditions)
        if skipped is not None:
            result.skipped = skipped
            result.checks.append(CheckResult("preconditions", True, f"skipped: {skipped}"))
            return result

        progress = _Progress(orig, orig, range(len(orig)))
        for n, step in enumerate(steps, 1):
            _run_step(run, progress, result, n, step)

        final = progress.view
        result.document = final.doc
        result.net, result.net_before = final, orig
        _run_checks(run, progress, result)
        result.warnings.extend(_analysis_warnings(final, phase, progress.touched))
        result.warnings = list(dict.fromkeys(result.warnings))
        # The graphs are rebuilt on demand (result.net.graph(phase)); held until the result is
        # dropped, they would double the memory the diff and the output text are made in.
        orig.forget_graphs()
        final.forget_graphs()
    bad = [c for c in result.checks if not c.ok]
    if bad:
        raise CheckFailed(path, bad)
    return result


def _bind_input(
    doc0: Document,
    recipe: Recipe,
    steps: list[Step],
    phase: str,
    lenient: bool,
    schema: Schema | None,
    counts: dict[str, int] | None,
) -> tuple[_Setting, NetView]:
    """Bind the input (errors raise) and fix how the output will be read back."""
    from rewriter.schema.bind import bind

    from .steps import fast_doc

    doc = fast_doc(doc0)
    bound = bind(doc, schema, NET, lenient)
    bound.raise_for_errors()
    # Check the output as strictly as the input allows: lenient only if the input needed it.
    out_lenient = lenient and bool(bound.warnings)
    run = _Setting(recipe, steps, phase, doc0.path, counts, schema, doc.newline, out_lenient)
    return run, run.view_of(doc, bound.message)


def _run_step(run: _Setting, progress: _Progress, result: Result, n: int, step: Step) -> None:
    """Plan one step on the current net, apply its edits, check its promise."""
    from .step_table import STEPS

    view = progress.view
    plan = _plan(run, view, step)
    label = f"{n}:{step.kind}"
    _declare_effects(progress, plan, label)
    progress.net_effects |= plan.net_effects
    progress.structural.extend(plan.structural)
    if STEPS[step.kind].analysis_warnings:
        progress.touched.update(view.names[k] for k in plan.selected)
    if plan.editor.empty:
        after = view
        result.steps.append(f"{label} (no change{': ' + plan.note if plan.note else ''})")
    else:
        after = _apply_edits(run, progress, plan)
        result.steps.append(label)
        if plan.weights is not None:
            result.weight_ops.append((step, plan.weights, plan.needs_weights))
    if plan.promise is not None:
        progress.promised += 1
        for layer, why in plan.promise(after):
            progress.promise_failures.append(
                CheckResult("promises", False, f"step {label}: {why}", layer)
            )
    result.warnings.extend(plan.warnings)
    progress.view = after


def _plan(run: _Setting, view: NetView, step: Step) -> Plan:
    """Plan ``step`` on ``view``; a planning error is told in the recipe's terms."""
    from .recipe import RecipeError
    from .step_table import plan_step

    try:
        return plan_step(view, step, run.phase)
    except RecipeError as e:
        from rewriter.recipes.hints import in_recipe_terms

        raise in_recipe_terms(run.recipe, step, e, run.path or "<net>") from None


def _declare_effects(progress: _Progress, plan: Plan, label: str) -> None:
    """Record the paths the step declares it changes, per input layer, and which step declared
    each first (for the semantic diff check)."""
    effects, step_of, declared = progress.effects, progress.step_of, progress.declared
    for k, paths in plan.effects.items():
        ko = progress.origin[k]
        if ko is None:  # a layer an earlier step added: covered by ADDED
            continue
        # One step declares the same paths in thousands of layers: share the records.
        memo_key = (effects.get(ko), step_of.get(ko) and id(step_of[ko]), frozenset(paths))
        shared = declared.get(memo_key)
        if shared is None:
            old = effects.get(ko, frozenset())
            labels = dict(step_of.get(ko) or {})
            for p in paths:
                labels.setdefault(p, label)
            shared = declared[memo_key] = (old | memo_key[2], labels)
        effects[ko], step_of[ko] = shared


def _apply_edits(run: _Setting, progress: _Progress, plan: Plan) -> NetView:
    """Apply the step's edits and re-read only what changed; the first edit drops the input's
    graphs (after reading the structures the structure check needs)."""
    from rewriter.text.edit import Editor

    from .checks import rebind
    from .steps import STRUCTURAL_KINDS, fast_doc

    view, orig = progress.view, progress.orig
    first = view is orig and progress.before is None
    if first and not plan.structural:
        # The checks need the input's nets (TRAIN; TEST when rules tell them apart); built
        # now, from the message the steps have not edited yet, the output's can be derived
        # from them. (Later, the input's text would have to be parsed and bound again.)
        from .checks import phase_independent

        for phase in ("TRAIN",) if phase_independent(orig) else ("TRAIN", "TEST"):
            with suppress(RewriterError):
                orig.graph(phase)
    inherited = view.graph_cache() if not plan.structural else {}
    if first:
        digests = not any(s.kind in STRUCTURAL_KINDS for s in run.steps)
        # a graph the output may derive has the input's wiring: its digest can wait
        progress.deferred = set(inherited) if digests else set()
        progress.before = _release_graphs(orig, progress.structural, digests, progress.deferred)
    new_doc = fast_doc(plan.editor.apply(), run.newline)
    plan.editor = Editor(new_doc)  # done: let its records go before the checks
    edits: list[tuple[int, set[str] | None]] = []
    msg = rebind(
        view,
        new_doc,
        lenient=run.out_lenient,
        schema=run.schema,
        in_place=True,
        edits=edits,
    )
    after = run.view_of(new_doc, msg)
    if len(after) == len(view) and all(n is not None and "name" not in n for _, n in edits):
        after.share_names(view)
    if inherited:
        _derive_graphs(run, view, after, inherited, edits, first=view is orig)
    _settle_digests(progress, view, after, inherited)
    del inherited
    _follow_layer_moves(progress, plan)
    return after


def _settle_digests(
    progress: _Progress,
    view: NetView,
    after: NetView,
    inherited: dict[str, tuple[Any, Any, Any]],
) -> None:
    """Read the input's structure digest of each deferred phase that ``after`` no longer
    derives from the input (from ``view``'s graph, which still has the input's wiring), or
    leave it to the structure check when ``view`` has no such graph."""
    from .steps import StructDigest, graph_structure

    before = progress.before
    for phase in list(progress.deferred):
        if phase in after.derived_from_input:
            continue
        progress.deferred.discard(phase)
        assert before is not None
        got = inherited.get(phase)
        if got is not None and (view is progress.orig or phase in view.derived_from_input):
            before[phase] = StructDigest.of(graph_structure(got[0]))


def _derive_graphs(
    run: _Setting,
    view: NetView,
    after: NetView,
    inherited: dict[str, tuple[Any, Any, Any]],
    edits: list[tuple[int, set[str] | None]],
    first: bool,
) -> None:
    """Give ``after`` the graphs of ``view`` with only the edited layers' parameters set up
    again, when the edits changed nothing else Net::Init reads (rewriter.caffe.derive);
    otherwise ``after`` builds its own graphs when they are asked for."""
    if view.format != "V2" or after.format != "V2" or len(after) != len(view):
        return
    changed: list[tuple[int, set[str]]] = []
    for k, names in edits:
        if names is None:
            return
        changed.append((k, names))
    from rewriter.caffe.derive import derive_graph

    layer_msgs = after.message.layer
    for phase, (graph, where, edges) in inherited.items():
        if where is None:
            where = view.index_map(graph)
        derived = derive_graph(graph, layer_msgs, changed, where, run.counts)
        if derived is not None:
            as_input = first or phase in view.derived_from_input
            after.adopt_graph(phase, derived, where, edges, as_input)


def _follow_layer_moves(progress: _Progress, plan: Plan) -> None:
    """Keep ``origin`` (output layer -> input layer) up to date with the layers the step
    removed and inserted."""
    from .checks import ADDED

    origin = progress.origin
    if plan.removed:
        gone = set(plan.removed)
        progress.removed_orig.extend(o for k in plan.removed if (o := origin[k]) is not None)
        origin = [o for i, o in enumerate(origin) if i not in gone]
    if plan.inserted:
        grown = list(origin)
        for k in plan.inserted:
            grown.insert(k, None)
        origin = grown
        progress.effects[ADDED] = progress.effects.get(ADDED, frozenset()) | {("*",)}
    progress.origin = origin


def _run_checks(run: _Setting, progress: _Progress, result: Result) -> None:
    """The round-trip checks on the final net, appended to ``result.checks`` in order:
    parse-bind, semantic-diff, structure, set-up, promises, idempotence."""
    from .checks import semantic_diff, setup_check, structure_check

    orig, final = progress.orig, progress.view
    checks = result.checks
    checks.append(CheckResult("parse-bind", True, _bind_detail(orig, final, run.out_lenient)))
    changes, failures = semantic_diff(
        orig,
        final,
        progress.origin,
        progress.effects,
        progress.net_effects,
        progress.removed_orig,
        progress.step_of,
        run.out_lenient,
        run.schema,
    )
    result.changes = changes
    if failures:
        checks.extend(failures)
    else:
        n_layers = len({c.layer for c in changes if c.layer is not None})
        checks.append(
            CheckResult(
                "semantic-diff",
                True,
                f"{len(changes)} change(s) in {n_layers} layer(s), all declared",
            )
        )
    checks.extend(structure_check(orig, final, progress.structural, progress.before))
    if not any(c.kind == "rewrite" for c in progress.structural):  # deploy verifies its own
        checks.extend(setup_check(orig, final, run.out_lenient, run.schema, run.counts))
    if progress.promise_failures:
        checks.extend(progress.promise_failures)
    else:
        checks.append(CheckResult("promises", True, f"{progress.promised} step promise(s) hold"))
    checks.append(
        _idempotence(
            final, run.steps, run.phase, run.newline, run.out_lenient, run.schema, run.view_of
        )
    )


def _release_graphs(
    orig: NetView,
    structural: Sequence[StructChange],
    digests: bool,
    deferred: AbstractSet[str] = frozenset(),
) -> dict[str, Struct | StructDigest]:
    """Read the input's structures (what the structure check needs of its graphs), then drop
    its graphs: the first step is planned, and the output's graphs are about to be built.
    With ``digests`` (no step of the recipe changes the structure) only their digests, and
    not those of the ``deferred`` phases (see :func:`_settle_digests`)."""
    from .checks import phase_independent
    from .steps import StructDigest, structure

    def read(phase: str) -> Struct | StructDigest:
        st = structure(orig, phase)
        return StructDigest.of(st) if digests else st

    out: dict[str, Struct | StructDigest] = {}
    if not any(c.kind == "rewrite" for c in structural):
        for phase in orig.built_phases():
            if phase not in deferred:
                out[phase] = read(phase)
        orig.forget_graphs()
        # the check compares TRAIN, and TEST when rules tell them apart: read what is missing
        # now (one graph at a time), while the input's message is still the input's
        for phase in ("TRAIN", "TEST") if not phase_independent(orig) else ("TRAIN",):
            if phase not in out and phase not in deferred:
                # (if it does not build, the check builds it again and reports why)
                with suppress(RewriterError):
                    out[phase] = read(phase)
                orig.forget_graphs()
    orig.forget_graphs()
    return out


def _bind_detail(orig: NetView, final: NetView, lenient: bool) -> str:
    mode = "lenient (as the input needed)" if lenient else "strict"
    n = sum(1 for a, b in zip(orig.doc.fields, final.doc.fields, strict=False) if a is not b)
    n += abs(len(orig.doc.fields) - len(final.doc.fields))
    return f"{n} changed top-level field(s) re-read and bound ({mode})"


def _preconditions(view: NetView, preconditions: Sequence[Any]) -> str | None:
    for pre in preconditions:
        problems: list[str] = []
        if pre.format not in ("any",):
            want = "V2" if pre.format == "current" else pre.format
            if view.format != want:
                problems.append(f"format is {view.format}, the recipe needs {pre.format}")
        for name in pre.has_layer:
            if name not in view.by_name:
                problems.append(f"no layer named '{name}'")
        if pre.has_type:
            types = {str(layer.type) for layer in view.message.layer}
            problems += [f"the net has no {t} layer" for t in pre.has_type if t not in types]
        if problems:
            text = "; ".join(problems)
            if pre.on_fail == "skip":
                return text
            raise RewriterError(f"{view.path}: precondition not met: {text}")
    return None


def _idempotence(
    final: NetView,
    steps: Sequence[Step],
    phase: str,
    newline: str,
    lenient: bool,
    schema: Schema | None,
    view_of: Any,
) -> CheckResult:
    """Check (e): the recipe run again on its own output changes nothing."""
    from .checks import rebind
    from .step_table import plan_step
    from .steps import fast_doc, is_idempotent

    scaling = [f"{n}:{s.kind}" for n, s in enumerate(steps, 1) if not is_idempotent(s)]
    if scaling:
        return CheckResult(
            "idempotence",
            True,
            f"not applicable: step(s) {', '.join(scaling)} multiply values (scale), so a "
            "second run multiplies again",
        )

    view = final
    changed_by: list[str] = []
    try:
        for n, step in enumerate(steps, 1):
            plan = plan_step(view, step, phase, rerun=True)
            if plan.editor.empty:
                continue
            changed_by.append(f"{n}:{step.kind}")
            new_doc = fast_doc(plan.editor.apply(), newline)
            view = view_of(new_doc, rebind(view, new_doc, lenient=lenient, schema=schema))
    except RewriterError as e:
        return CheckResult("idempotence", False, f"running the recipe again fails: {e}")
    if view is final or view.doc.code == final.doc.code:
        return CheckResult("idempotence", True, "running the recipe again changes nothing")
    return CheckResult(
        "idempotence",
        False,
        f"running the recipe again changes the result (steps {', '.join(changed_by)}); "
        "a later step leaves work for an earlier one: reorder the steps",
    )


def _analysis_warnings(view: NetView, phase: str, touched: set[str]) -> list[str]:
    """Caffe-analysis warnings (decay without gradient, moving BatchNorm statistics) about the
    layers the recipe touched, in the final net."""
    if not touched:
        return []
    try:
        backward = view.backward(phase)
    except RewriterError:
        return []
    return [
        f"{w.layer}: {w.message}"
        for w in backward.warnings
        if w.layer in touched and w.kind != "unknown-layer-type"
    ]


# --------------------------------------------------------------------------- unified diff


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """Line opcodes for one changed stretch. Most edits replace values in place: the same
    number of lines on both sides, and no changed line reappears elsewhere; those are paired
    line by line (what difflib would find too), anything else goes to difflib."""
    changed = _changed_lines(a, b) if len(a) == len(b) else None
    if changed is None or _crossing(a, b, changed):
        sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
        return [(str(op), i1, i2, j1, j2) for op, i1, i2, j1, j2 in sm.get_opcodes()]
    out: list[tuple[str, int, int, int, int]] = []
    pos = 0
    k = 0
    while k < len(changed):
        start = changed[k]
        end = start + 1
        k += 1
        while k < len(changed) and changed[k] == end:
            end += 1
            k += 1
        if pos < start:
            out.append(("equal", pos, start, pos, start))
        out.append(("replace", start, end, start, end))
        pos = end
    if pos < len(a):
        out.append(("equal", pos, len(a), pos, len(a)))
    return out


def _changed_lines(a: list[str], b: list[str]) -> list[int]:
    """Indices of the lines that differ between two stretches of the same length."""
    return list(compress(count(), map(ne, a, b)))


def _crossing(a: list[str], b: list[str], changed: list[int]) -> bool:
    """Could a changed line be matched with a line elsewhere on the other side?"""
    if not changed:
        return False
    old = {a[i] for i in changed}
    new = {b[i] for i in changed}
    return not (old.isdisjoint(b) and new.isdisjoint(a))


_OTHER_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def _split_lines(text: str) -> list[str]:
    """Lines with their endings, split at "\\n" only (a lone "\\r" is no line break here)."""
    if _OTHER_BREAKS.search(text) is None:
        return text.splitlines(keepends=True)
    parts = text.split("\n")
    last = parts.pop()
    lines = [p + "\n" for p in parts]
    if last:
        lines.append(last)
    return lines


def unified_diff(
    old: Document,
    new: Document,
    fromfile: str,
    tofile: str,
    n: int = 3,
    *,
    a_text: str | None = None,
    b_text: str | None = None,
    b_offsets: list[int] | None = None,
) -> str:
    """``difflib.unified_diff`` of two documents, in time proportional to what changed.

    Unchanged top-level fields are the same objects in both documents, so the changed
    stretches are known without comparing the texts. Stretches at most ``2 * n`` lines apart
    form one cluster (difflib would put them in one hunk); each cluster, with ``n`` lines of
    context around it, is split into lines and aligned on its own (the same number of lines on
    both sides: pairwise, else difflib). The unchanged text between clusters is only counted.
    """
    if a_text is None:
        a_text = old.code
    if b_text is None:
        b_text = new.code
    if a_text == b_text:
        return ""
    regions = _changed_regions(old, new, len(a_text), len(b_text), b_offsets)
    # A field replaced by an edited one: only the stretch between what their texts share at
    # the start and at the end changed (a value or two), not the whole layer. Without this,
    # edits in most layers make one cluster of the whole file, split into lines twice.
    regions = [_trim(a_text, b_text, *r) for r in regions]
    # Widen every changed character range to whole lines, by the same amount on both sides
    # (the text around a change is the same on both sides); merge ranges that then touch.
    spans: list[list[int]] = []
    for a0, a1, b0, b1 in regions:
        back = 0
        if not (_at_line_start(a_text, a0) and _at_line_start(b_text, b0)):
            back = a0 - (a_text.rfind("\n", 0, a0) + 1)
        fwd = 0
        if not (_at_line_start(a_text, a1) and _at_line_start(b_text, b1)):
            nl = a_text.find("\n", a1)
            fwd = (nl + 1 if nl >= 0 else len(a_text)) - a1
        lo_a, hi_a, lo_b, hi_b = a0 - back, a1 + fwd, b0 - back, b1 + fwd
        if spans and lo_a <= spans[-1][1]:
            spans[-1][1], spans[-1][3] = max(spans[-1][1], hi_a), max(spans[-1][3], hi_b)
        else:
            spans.append([lo_a, hi_a, lo_b, hi_b])
    out = [f"--- {fromfile}\n", f"+++ {tofile}\n"]
    a_line = b_line = 0  # lines before a_pos / b_pos
    a_pos = b_pos = 0
    k = 0
    while k < len(spans):
        end = k
        while end + 1 < len(spans) and (
            a_text.count("\n", spans[end][1], spans[end + 1][0]) <= 2 * n
        ):
            end += 1
        first, last = spans[k], spans[end]
        ctx_a0 = _back_lines(a_text, first[0], n)
        ctx_a1 = _fwd_lines(a_text, last[1], n)
        ctx_b0 = first[2] - (first[0] - ctx_a0)
        ctx_b1 = last[3] + (ctx_a1 - last[1])
        a_line += a_text.count("\n", a_pos, ctx_a0)
        b_line += b_text.count("\n", b_pos, ctx_b0)
        a_lines = _split_lines(a_text[ctx_a0:ctx_a1])
        b_lines = _split_lines(b_text[ctx_b0:ctx_b1])
        _hunks(out, a_lines, b_lines, a_line, b_line, n)
        a_line += a_text.count("\n", ctx_a0, ctx_a1)
        b_line += b_text.count("\n", ctx_b0, ctx_b1)
        a_pos, b_pos = ctx_a1, ctx_b1
        k = end + 1
    return "".join(out)


def _trim(a: str, b: str, a0: int, a1: int, b0: int, b1: int) -> tuple[int, int, int, int]:
    """The range (a0, a1) of ``a`` / (b0, b1) of ``b`` without the text both start and end
    with (found by halving: slice comparisons run in C)."""
    size = min(a1 - a0, b1 - b0)
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[a0 : a0 + mid] == b[b0 : b0 + mid]:
            lo = mid
        else:
            hi = mid - 1
    a0, b0, size = a0 + lo, b0 + lo, size - lo
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[a1 - mid : a1] == b[b1 - mid : b1]:
            lo = mid
        else:
            hi = mid - 1
    return a0, a1 - lo, b0, b1 - lo


def _back_lines(text: str, pos: int, n: int) -> int:
    """Start of the line ``n`` lines before the line starting at ``pos``."""
    for _ in range(n):
        if pos <= 0:
            return 0
        pos = text.rfind("\n", 0, pos - 1) + 1
    return pos


def _fwd_lines(text: str, pos: int, n: int) -> int:
    """Position after ``n`` more whole lines from ``pos`` (a line start)."""
    for _ in range(n):
        if pos >= len(text):
            return len(text)
        nl = text.find("\n", pos)
        pos = len(text) if nl < 0 else nl + 1
    return pos


def _hunks(out: list[str], a: list[str], b: list[str], a_base: int, b_base: int, n: int) -> None:
    """Append the hunks of one cluster (context included), grouped as difflib groups."""
    codes = _opcodes(a, b)
    if codes[0][0] == "equal":
        tag, i1, i2, j1, j2 = codes[0]
        codes[0] = tag, max(i1, i2 - n), i2, max(j1, j2 - n), j2
    if codes[-1][0] == "equal":
        tag, i1, i2, j1, j2 = codes[-1]
        codes[-1] = tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)
    groups: list[list[tuple[str, int, int, int, int]]] = []
    group: list[tuple[str, int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in codes:
        if tag == "equal" and i2 - i1 > 2 * n:
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            groups.append(group)
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        groups.append(group)
    for grp in groups:
        if all(g[0] == "equal" for g in grp):
            continue
        f, la = grp[0], grp[-1]
        out.append(
            f"@@ -{_range(a_base + f[1], a_base + la[2])} "
            f"+{_range(b_base + f[3], b_base + la[4])} @@\n"
        )
        for tag, i1, i2, j1, j2 in grp:
            if tag == "equal":
                out.extend(_lines(" ", a[i1:i2]))
                continue
            if tag in ("replace", "delete"):
                out.extend(_lines("-", a[i1:i2]))
            if tag in ("replace", "insert"):
                out.extend(_lines("+", b[j1:j2]))


def _at_line_start(text: str, pos: int) -> bool:
    return pos == 0 or pos >= len(text) or text[pos - 1] == "\n"


def _lines(mark: str, lines: list[str]) -> list[str]:
    out = [mark + line for line in lines]
    if out and not out[-1].endswith("\n"):  # only the file's last line can lack it
        out[-1] += "\n\\ No newline at end of file\n"
    return out


def _range(start: int, stop: int) -> str:
    beginning = start + 1
    length = stop - start
    if length == 1:
        return f"{beginning}"
    if not length:
        beginning -= 1
    return f"{beginning},{length}"


def doc_text(doc: Document) -> tuple[str, list[int]]:
    """``doc.code`` and where each top-level field starts in it (relative to the first field;
    the last entry is the end of the last field).

    Untouched fields that follow each other in the source are copied as one slice: an edit
    touches a few fields here and there, so most of the text goes over in long runs.
    """
    if doc.pristine:
        return doc.code, offsets_of(doc)
    src = doc.src
    pieces: list[str] = []
    offsets = [0]
    total = 0
    lo = hi = -1  # the run of untouched source being gathered
    for f in doc.fields:
        if f.pristine and f.src is src:
            if f.start != hi:
                if lo >= 0:
                    pieces.append(src[lo:hi])
                lo = f.start
            hi = f.end
            total += hi - f.start
        else:
            if lo >= 0:
                pieces.append(src[lo:hi])
                lo = hi = -1
            code = f.code
            pieces.append(code)
            total += len(code)
        offsets.append(total)
    if lo >= 0:
        pieces.append(src[lo:hi])
    pieces.append(src[doc.tail_start :])
    return "".join(pieces), offsets


def offsets_of(doc: Document) -> list[int]:
    from itertools import accumulate

    return [0, *accumulate(f.end - f.start if f.pristine else len(f.code) for f in doc.fields)]


def _changed_regions(
    old: Document,
    new: Document,
    a_len: int,
    b_len: int,
    b_off: list[int] | None = None,
) -> list[tuple[int, int, int, int]]:
    """Character ranges (old lo, old hi, new lo, new hi) where the two documents differ,
    found by matching the top-level fields they share (same objects)."""
    of, nf = old.fields, new.fields
    pos_of = {id(f): i for i, f in enumerate(of)}
    a_tail = old.src[old.tail_start :]
    b_tail = new.src[new.tail_start :]

    a_off = offsets_of(old)
    if b_off is None:
        b_off = offsets_of(new)
    # text before the first field that no field owns (a byte-order mark)
    a_base = a_len - a_off[-1] - len(a_tail)
    b_base = b_len - b_off[-1] - len(b_tail)
    regions: list[tuple[int, int, int, int]] = []
    i = j = 0
    while i < len(of) or j < len(nf):
        if i < len(of) and j < len(nf) and of[i] is nf[j]:
            i += 1
            j += 1
            continue
        jj = j
        while jj < len(nf) and (id(nf[jj]) not in pos_of or pos_of[id(nf[jj])] < i):
            jj += 1
        ii = pos_of[id(nf[jj])] if jj < len(nf) else len(of)
        regions.append(
            (a_base + a_off[i], a_base + a_off[ii], b_base + b_off[j], b_base + b_off[jj])
        )
        i, j = ii, jj
    if a_tail != b_tail or a_base != b_base:
        if a_base != b_base:
            regions.insert(0, (0, a_base, 0, b_base))
        if a_tail != b_tail:
            regions.append((a_len - len(a_tail), a_len, b_len - len(b_tail), b_len))
    return regions


# --------------------------------------------------------------------------- batch worker


def run_file(
    path: str,
    recipe: Recipe,
    values: Mapping[str, Any],
    phase: str = "TRAIN",
    lenient: bool = False,
    weights: str | None = None,
    weights_out: str | None = None,
    write_to: str | None = None,
    with_diff: bool = True,
    with_changes: bool = True,
) -> dict[str, Any]:
    """Apply to one net file and return plain data (for the CLI and its worker processes).

    With ``weights`` the .caffemodel follows; with ``write_to`` (and ``weights_out``) the pair
    is written here, both files or neither (``data["written"]``).

    Never raises for an expected error: ``{"ok": False, "error": message}`` instead.
    :func:`rewriter.cli.runfile.run_file` sends NetSpec scripts (``*.py``) to the codemod instead.
    ``with_diff=False`` leaves out the unified diff (``-o``, ``--in-place`` and ``--check``
    print none): on a net with thousands of edited layers it is a tenth of the run.
    ``with_changes=False`` gives only the counts of changes (see :meth:`Result.to_json`).
    """
    try:
        result = apply(
            path, recipe, options=values, phase=phase, lenient=lenient,
            weights=weights, weights_out=weights_out,
        )  # fmt: skip
        if write_to is not None and weights_out is not None and result.weights is not None:
            result.write(write_to, weights_out)
    except CheckFailed as e:
        return {
            "path": path,
            "ok": False,
            "error": str(e),
            "checks": [c.as_dict() for c in e.failures],
        }
    except RewriterError as e:
        return {"path": path, "ok": False, "error": str(e)}
    data = result.to_json(with_diff=with_diff, with_changes=with_changes)
    data["ok"] = True
    if result.weights is not None:
        data["weights"] = {"source": result.weights.source, "written": result.weights.written}
        data["written"] = result.weights.written is not None
    data["code"] = result.code if result.changed else None
    return data
