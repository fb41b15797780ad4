"""The round-trip checks refuse bad rewrites, and the fast paths equal the slow, exact ones."""

from __future__ import annotations

import difflib
import random
from pathlib import Path
from typing import Any

import pytest

from rewriter.recipes.checks import CheckFailed, rebind
from rewriter.recipes.engine import apply, unified_diff
from rewriter.recipes.recipe import Recipe, Step
from rewriter.recipes.select import NetView
from rewriter.recipes.step_table import STEPS
from rewriter.recipes.steps import Plan, StepContext, StepSpec, StructChange, fast_doc
from rewriter.schema.bind import bind
from rewriter.text.cst import parse
from rewriter.text.edit import Editor
from tests.conftest import corpus_params, read_corpus
from tests.test_apply_fixtures import CASES, apply_patch, run_case, split_lines

NET = """name: "n"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 }
  param { lr_mult: 2 }
  convolution_param { num_output: 4 kernel_size: 3 }
}
layer {
  name: "fc"
  type: "InnerProduct"
  bottom: "conv1"
  top: "fc"
  inner_product_param { num_output: 2 }
}
layer {
  name: "loss"
  type: "EuclideanLoss"
  bottom: "fc"
  bottom: "fc"
  top: "loss"
}
"""


def evil(monkeypatch: pytest.MonkeyPatch, plan_fn: object) -> None:
    """Register a misbehaving step (tests only)."""
    spec = StepSpec("evil", "test", {}, "none", plan_fn)  # type: ignore[arg-type]
    monkeypatch.setitem(STEPS, "evil", spec)


def conv1_child(ctx: StepContext, name: str) -> tuple[int, ...]:
    k = ctx.view.by_name["conv1"][0]
    layer = ctx.view.field(k)
    assert layer.body is not None and hasattr(layer.body, "fields")
    idx = [i for i, c in enumerate(layer.body.fields) if c.name == name]  # type: ignore[union-attr]
    return ctx.view.field_path(k) + (idx[0],)


def failed(text: str, step: Step) -> CheckFailed:
    with pytest.raises(CheckFailed) as e:
        apply(parse(text), step)
    return e.value


def test_undeclared_change_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def plan(ctx: StepContext) -> Plan:
        p = Plan(ctx.step, Editor(ctx.view.doc))
        path = conv1_child(ctx, "convolution_param")
        p.editor.set_value(path + (0,), "8")  # num_output: 4 -> 8, declared as "param" only
        p.declare(ctx.view.by_name["conv1"][0], ("param",))
        return p

    evil(monkeypatch, plan)
    err = failed(NET, Step("evil"))
    bad = [f for f in err.failures if f.name == "semantic-diff"]
    assert bad and bad[0].layer == "conv1" and "convolution_param.num_output" in bad[0].detail
    assert "nothing written" in str(err)


def test_undeclared_structure_change_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def plan(ctx: StepContext) -> Plan:
        p = Plan(ctx.step, Editor(ctx.view.doc))
        if "conv1" not in ctx.view.by_name:
            return p  # renamed already
        k = ctx.view.by_name["conv1"][0]
        p.editor.set_value(conv1_child(ctx, "name"), '"conv_x"')
        p.declare(k, ("name",))  # the field is declared, the structural change is not
        return p

    evil(monkeypatch, plan)
    err = failed(NET, Step("evil"))
    assert any(f.name == "structure" and "conv_x" in f.detail for f in err.failures)

    def declared(ctx: StepContext) -> Plan:
        p = plan(ctx)
        p.structural.append(StructChange("rename-layer", "conv1", "conv_x"))
        return p

    evil(monkeypatch, declared)
    assert 'name: "conv_x"' in apply(parse(NET), Step("evil")).code


def test_output_that_does_not_bind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def plan(ctx: StepContext) -> Plan:
        p = Plan(ctx.step, Editor(ctx.view.doc))
        path = conv1_child(ctx, "param")
        p.editor.set_value(path + (0,), '"fast"')
        p.declare(ctx.view.by_name["conv1"][0], ("param",))
        return p

    evil(monkeypatch, plan)
    err = failed(NET, Step("evil"))
    assert err.failures[0].name == "parse-bind"
    assert ":13:" in err.failures[0].detail  # located in the output text


def test_non_idempotent_step_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def plan(ctx: StepContext) -> Plan:
        p = Plan(ctx.step, Editor(ctx.view.doc))
        k = ctx.view.by_name["fc"][0]
        n = len(ctx.view.layer(k).param)
        if n < 2:  # adds one more param block every time, up to Caffe's limit
            p.editor.insert(ctx.view.field_path(k), 4, "param", [("lr_mult", "3")])
        p.declare(k, ("param",))
        return p

    evil(monkeypatch, plan)
    err = failed(NET, Step("evil"))
    assert [f.name for f in err.failures] == ["idempotence"]


def test_broken_promise_force_backward() -> None:
    net = NET.replace('name: "n"', 'name: "n"\nforce_backward: true')
    err = failed(net, Step("stop-gradient", from_="conv1", to="fc"))
    bad = [f for f in err.failures if f.name == "promises"]
    assert bad and "force_backward" in bad[0].detail and bad[0].layer == "fc"


def test_remove_layer_refuses_what_it_cannot_reconnect() -> None:
    from rewriter.errors import RewriterError

    with pytest.raises(RewriterError, match="2 bottom"):
        apply(parse(NET), Step("remove-layer", layers=["loss"]))


# --------------------------------------------------------------------------- fast == exact


def _assert_rebind_exact(text: str, path: str, step: Step) -> None:
    from rewriter.errors import RewriterError

    doc = fast_doc(parse(text, path))
    bound = bind(doc, None, "caffe.NetParameter", lenient=True)
    view = NetView(doc, bound.message, path=path)
    resolved = Recipe(steps=[step]).resolve()[0]
    try:
        spec = STEPS[step.kind]
        plan = spec.plan(StepContext(view, resolved, "TRAIN", spec))
    except RewriterError as e:
        pytest.skip(str(e))
    new_doc = fast_doc(plan.editor.apply())
    fast = rebind(view, new_doc, lenient=True, schema=None)
    exact = bind(parse(new_doc.code, path), None, "caffe.NetParameter", lenient=True).message
    assert fast.SerializeToString(deterministic=True) == exact.SerializeToString(deterministic=True)


@pytest.mark.parametrize("case", CASES[:12], ids=[c.name for c in CASES[:12]])
def test_incremental_rebind_equals_full_bind_fixtures(case: Path) -> None:
    recipe = Recipe.load(case / "recipe.toml")
    text = (case / "before.prototxt").read_text()
    for step in recipe.resolve({}) if not recipe.all_options() else []:
        _assert_rebind_exact(text, str(case), step)


@pytest.mark.parametrize("row", corpus_params(kind="net", fmt="V2", fork="no")[::7])
def test_incremental_rebind_equals_full_bind_corpus(row: dict[str, str] | None) -> None:
    path, text = read_corpus(row)
    _assert_rebind_exact(text, str(path), Step("set-lr", glob="*", scale=0.5))
    _assert_rebind_exact(text, str(path), Step("zero-decay", glob="*"))


def test_unified_diff_is_a_valid_patch_and_usually_difflib() -> None:
    rng = random.Random(7)
    for case in CASES:
        doc = parse((case / "before.prototxt").read_bytes().decode())
        scalars = [p for p, f in doc.walk() if f.body is None]
        same = 0
        for _ in range(15):
            ed = Editor(doc)
            for _ in range(rng.randint(1, 5)):
                p = rng.choice(scalars)
                r = rng.random()
                if r < 0.5:
                    ed.set_value(p, str(rng.randint(100, 999)))
                elif r < 0.7:
                    ed.remove(p)
                else:
                    ed.insert(p[:-1], p[-1], "lr_mult", "3")
            try:
                new = ed.apply()
            except (IndexError, TypeError, ValueError):
                continue
            ours = unified_diff(doc, new, "a", "b")
            assert apply_patch(doc.code, ours) == new.code
            ref = "".join(
                difflib.unified_diff(split_lines(doc.code), split_lines(new.code), "a", "b")
            )
            same += ours == ref
        assert same >= 5, case.name


def test_fixture_results_equal_a_fresh_parse() -> None:
    for case in CASES:
        result, _, _ = run_case(case)
        assert parse(result.code).code == result.code


def test_layer_editor_equals_one_editor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-layer Editors (the default) give exactly what one whole-document Editor gives."""
    import importlib
    import pkgutil

    import rewriter.recipes.steps

    split = [run_case(case)[0].code for case in CASES]
    # every module of the steps package binds the name (the weight steps read the package's)
    package = rewriter.recipes.steps
    for module in [package] + [
        importlib.import_module(f"{package.__name__}.{m.name}")
        for m in pkgutil.iter_modules(package.__path__)
    ]:
        if hasattr(module, "LayerEditor"):
            monkeypatch.setattr(module, "LayerEditor", Editor)
    whole = [run_case(case)[0].code for case in CASES]
    assert split == whole


def test_large_unindented_file_is_linear() -> None:
    """Unindented files (like the seed) made the Editor's style lookup scan the whole file
    for every edited block; 4,000 layers took about a minute that way."""
    import re
    import time

    from bench.gen import chain
    from rewriter.recipes.engine import apply_text

    text = re.sub(r"(?m)^[ ]+", "", chain(4000))
    start = time.process_time()
    result = apply_text(text, Step("freeze", upto="conv1000"))
    assert result.changed and len(result.changes) == 2002
    assert "\nlr_mult: 0\n" in result.code
    assert time.process_time() - start < 15


MULTI = [
    Step("freeze", upto="conv1"),
    Step("set-lr", layers=["conv1", "fc"], value=0.5),
    Step("zero-decay", glob="*"),
    Step("set-field", layers=["fc"], field="inner_product_param.num_output", value=3),
]


def _copying_rebind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every step copy its input's message again (the engine before it edited in place)."""
    import rewriter.recipes.checks

    plain = rewriter.recipes.checks.rebind

    def copy(*args: object, **kw: object) -> object:
        kw.pop("in_place", None)
        return plain(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rewriter.recipes.checks, "rebind", copy)


def _summary(result: object) -> tuple[object, ...]:
    r: Any = result
    return (
        r.code,
        [c.as_dict() for c in r.changes],
        [c.as_dict() for c in r.checks],
        r.net_before.message.SerializeToString(deterministic=True),
        r.net.message.SerializeToString(deterministic=True),
    )


def test_editing_the_message_in_place_equals_copying_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step edits its input's message in place (the semantic diff reads the original
    values from the input's text); the changes, checks, and both messages (``net_before`` is
    bound again from the input's text) equal those of copying the message at every step."""
    runs = [lambda case=case: run_case(case)[0] for case in CASES]
    runs.append(lambda: apply(parse(NET), MULTI))
    # a later step rewriting what an earlier one changed, and a step undoing one
    runs.append(lambda: apply(parse(NET), [Step("freeze", upto="fc"), Step("unfreeze", glob="*")]))
    in_place = [_summary(run()) for run in runs]
    _copying_rebind(monkeypatch)
    copied = [_summary(run()) for run in runs]
    for got, want in zip(in_place, copied, strict=True):
        assert got == want
    full = bind(parse(NET), None, "caffe.NetParameter").message
    assert in_place[-2][3] == full.SerializeToString(deterministic=True)
    assert len(in_place[-2][1]) >= 6  # lr_mult, decay_mult and num_output changes


def test_diff_of_edits_in_many_layers_splits_only_the_changed_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Freezing half of a net edits a value or two in hundreds of layers a few lines apart.
    The diff equals difflib's, and only the few lines around each edit are split into lines
    (splitting whole layers made one stretch of half the file, twice: ~4x its size)."""
    import rewriter.recipes.engine

    parts = ['name: "n"\n']
    for i in range(400):
        parts.append(
            f'layer {{\n  name: "c{i}"\n  type: "Convolution"\n'
            f'  bottom: "{f"c{i - 1}" if i else "data"}"\n  top: "c{i}"\n'
            "  param {\n    lr_mult: 1\n  }\n  param {\n    lr_mult: 2\n  }\n"
            "  convolution_param {\n    num_output: 8\n    kernel_size: 1\n  }\n}\n"
            f'layer {{\n  name: "r{i}"\n  type: "ReLU"\n  bottom: "c{i}"\n  top: "c{i}"\n}}\n'
        )
    text = 'layer { name: "data" type: "Input" top: "data" }\n' + "".join(parts)
    split: list[int] = []
    plain_split = rewriter.recipes.engine._split_lines

    def spy(t: str) -> list[str]:
        split.append(len(t))
        return plain_split(t)

    monkeypatch.setattr(rewriter.recipes.engine, "_split_lines", spy)
    result = apply(parse(text), Step("freeze", upto="c199"))
    diff = result.diff
    assert apply_patch(text, diff) == result.code
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in "+++---"]
    assert len(changed) == 800 and all("lr_mult" in line for line in changed)
    assert diff.count("\n@@ ") == 200  # one hunk per frozen layer, as difflib groups them
    assert max(split) < len(text) / 50, max(split)


def test_structure_digest_keeps_what_the_check_compares() -> None:
    """A recipe with no structural step keeps only digests of the input's structures; they
    tell apart exactly what the rows do (names, types, bottoms, tops, order)."""
    from rewriter.recipes.engine import _release_graphs
    from rewriter.recipes.steps import StructDigest, structure

    doc = parse(NET)
    view = NetView(doc, bind(doc, None, "caffe.NetParameter").message)
    rows = structure(view, "TRAIN")
    digests = _release_graphs(view, [], True)
    assert digests["TRAIN"] == StructDigest.of(rows)
    assert not view.built_phases()  # the graphs went
    view.graph("TRAIN")
    assert _release_graphs(view, [], False)["TRAIN"] == rows
    variants = [
        rows[:-1],
        rows[1:2] + rows[:1] + rows[2:],
        [(n + "x", t, b, o) if i == 1 else (n, t, b, o) for i, (n, t, b, o) in enumerate(rows)],
        [(n, t, b + b, o) if i == 2 else (n, t, b, o) for i, (n, t, b, o) in enumerate(rows)],
    ]
    for other in variants:
        assert StructDigest.of(other) != digests["TRAIN"]
    assert StructDigest.of(list(rows)) == digests["TRAIN"]
