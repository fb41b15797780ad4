"""The engine derives the output's graph from the input's when only parameter multipliers
changed (rewriter.caffe.derive); such a graph must equal one built from scratch, and every
edit the derivation cannot vouch for must still meet the full build and its checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rewriter.caffe.graph import build_graph
from rewriter.recipes.checks import CheckFailed
from rewriter.recipes.engine import apply
from rewriter.recipes.recipe import Recipe, Step
from rewriter.recipes.select import NetView, graph_edges
from rewriter.recipes.steps import Plan, StepContext
from rewriter.text.cst import parse
from rewriter.text.edit import Editor
from tests.test_apply_checks import evil
from tests.test_apply_fixtures import CASES, run_case

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def adopted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every graph the engine adopts is compared with a fresh build of the view's message."""
    seen: list[tuple[str, bool]] = []
    original = NetView.adopt_graph

    def checked(
        self: NetView, phase: str, graph: Any, where: Any, edges: Any, as_input: bool
    ) -> None:
        fresh = build_graph(
            self.message,
            phase=phase,
            stages=self.stages,
            level=self.level,
            param_counts=self.param_counts,
        )
        assert graph == fresh
        assert [lay.use_global_stats for lay in graph.layers] == [
            lay.use_global_stats for lay in fresh.layers
        ]
        if edges is not None:
            ins, outs = graph_edges(fresh)
            assert [tuple(x) for x in edges[0]] == [tuple(x) for x in ins]
            assert [tuple(x) for x in edges[1]] == [tuple(x) for x in outs]
        seen.append((phase, as_input))
        original(self, phase, graph, where, edges, as_input)

    monkeypatch.setattr(NetView, "adopt_graph", checked)
    return seen


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_derived_graph_equals_a_fresh_build(
    case: Path, adopted: list[tuple[str, bool]]
) -> None:
    result, _, after = run_case(case)
    assert result.code == after
    if adopted:
        setup = [c for c in result.checks if c.name == "setup"]
        assert setup and all(c.ok for c in setup)


def test_freeze_derives_its_graph_and_says_so(adopted: list[tuple[str, bool]]) -> None:
    """Not vacuous: the seed freeze and a BatchNorm ResNet take the derived path."""
    from bench.gen import resnet_bn

    result = apply(REPO / "examples" / "seed_net.prototxt", Recipe.builtin("seed-freeze"))
    assert ("TRAIN", True) in adopted
    setup = [c.detail for c in result.checks if c.name == "setup"]
    assert setup[0].startswith("TRAIN: sets up as the input does")

    adopted.clear()
    net = resnet_bn(300)
    result = apply(parse(net), Step("freeze", upto="res9_branch2b"))
    assert adopted == [("TRAIN", True)]
    assert result.changed and all(c.ok for c in result.checks)
    result = apply(parse(net), Recipe.builtin("bn-frozen"), options={"upto": "res9_branch2b"})
    assert ("TRAIN", True) in adopted[1:]


def _shared_fixture() -> Path:
    found = [c for c in CASES if c.name == "apply-freeze_shared_unit"]
    assert found
    return found[0]


def test_shared_params_take_the_full_build(adopted: list[tuple[str, bool]]) -> None:
    result, _, after = run_case(_shared_fixture())
    assert result.code == after
    assert adopted == []  # named blobs: AppendParam's sharing needs the whole net
    setup = [c.detail for c in result.checks if c.name == "setup"]
    assert setup and "every set-up check passes" in setup[0]


def _extra_param_blocks(ctx: StepContext) -> Plan:
    p = Plan(ctx.step, Editor(ctx.view.doc))
    k = ctx.view.by_name["conv1"][0]
    layer = ctx.view.field(k)
    assert layer.body is not None and hasattr(layer.body, "fields")
    kids = [c.name for c in layer.body.fields]  # type: ignore[union-attr]
    at = kids.index("param")
    for _ in range(2):
        p.editor.insert(ctx.view.field_path(k), at, "param", [("lr_mult", "0")])
    p.declare(k, ("param",))
    return p


def test_surplus_param_blocks_are_refused(
    monkeypatch: pytest.MonkeyPatch, adopted: list[tuple[str, bool]]
) -> None:
    """A third param block on a two-blob Convolution: the derivation declines and the
    output's own Net::Init refuses it with Caffe's words."""
    from tests.test_apply_checks import NET

    evil(monkeypatch, _extra_param_blocks)
    with pytest.raises(CheckFailed) as e:
        apply(parse(NET), Step("evil"))
    assert adopted == []
    assert "Too many params specified for layer conv1" in str(e.value)


def test_batchnorm_rates_are_not_derived(
    monkeypatch: pytest.MonkeyPatch, adopted: list[tuple[str, bool]]
) -> None:
    """lr_mult: 1 on a BatchNorm blob: Caffe refuses it while setting the layer up."""
    net = """name: "bn"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv1" type: "BatchNorm" bottom: "data" top: "conv1"
  param { lr_mult: 0 } }
"""

    def plan(ctx: StepContext) -> Plan:
        p = Plan(ctx.step, Editor(ctx.view.doc))
        k = ctx.view.by_name["conv1"][0]
        layer = ctx.view.field(k)
        assert layer.body is not None and hasattr(layer.body, "fields")
        kids = [c.name for c in layer.body.fields]  # type: ignore[union-attr]
        param = ctx.view.field_path(k) + (kids.index("param"),)
        p.editor.set_value(param + (0,), "1")
        p.declare(k, ("param",))
        return p

    evil(monkeypatch, plan)
    with pytest.raises(CheckFailed) as e:
        apply(parse(net), Step("evil"))
    assert adopted == []
    assert "Cannot configure batch normalization statistics" in str(e.value)


def test_a_later_step_that_rewires_is_still_caught(
    monkeypatch: pytest.MonkeyPatch, adopted: list[tuple[str, bool]]
) -> None:
    """freeze (derived: the input's structure is never hashed) then a step that renames a
    bottom without declaring it: the structure check must still compare with the input."""
    from tests.test_apply_checks import NET

    def plan(ctx: StepContext) -> Plan:
        p = Plan(ctx.step, Editor(ctx.view.doc))
        k = ctx.view.by_name["fc"][0]
        layer = ctx.view.field(k)
        assert layer.body is not None and hasattr(layer.body, "fields")
        kids = [c.name for c in layer.body.fields]  # type: ignore[union-attr]
        p.editor.set_value(ctx.view.field_path(k) + (kids.index("bottom"),), '"data"')
        p.declare(k, ("bottom",))  # the field is declared, the rewiring is not
        return p

    evil(monkeypatch, plan)
    with pytest.raises(CheckFailed) as e:
        apply(parse(NET), [Step("freeze", upto="conv1"), Step("evil")])
    assert adopted == [("TRAIN", True)]  # the freeze was derived
    assert any(f.name == "structure" and "fc" in f.detail for f in e.value.failures)
    ok = apply(parse(NET), [Step("freeze", upto="conv1"), Step("freeze", upto="fc")])
    assert all(c.ok for c in ok.checks)
    assert ("TRAIN", True) in adopted[1:]


@pytest.mark.parametrize(
    "recipe, options",
    [
        ("freeze", {"upto": "res9_branch2b"}),  # selection needs the graph
        ("freeze", {"layers": ["res3_branch2a", "bn_res3_branch2a"]}),  # selection by name
        ("bn-frozen", {}),  # by type
        ("set-lr", {"glob": "res*", "lr_mult": 0.5, "bias_lr_mult": 1.0}),
    ],
)
def test_apply_parses_binds_and_wires_the_input_once(
    recipe: str, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the selection needs, the checks never read the input again: one whole
    parse and bind, and one Net::Init wiring (the output's graph is derived from it)."""
    import rewriter.caffe.graph
    import rewriter.schema.bind
    from bench.gen import resnet_bn

    text = resnet_bn(300)
    n_fields = len(parse(text).fields)
    binds: list[int] = []
    builds: list[str] = []
    real_bind, real_build = rewriter.schema.bind.bind, rewriter.caffe.graph.build_graph

    def counting_bind(doc: Any, *a: Any, **k: Any) -> Any:
        binds.append(len(doc.fields))
        return real_bind(doc, *a, **k)

    def counting_build(net: Any, *a: Any, **k: Any) -> Any:
        builds.append(str(k.get("phase", a[0] if a else "TRAIN")))
        return real_build(net, *a, **k)

    monkeypatch.setattr(rewriter.schema.bind, "bind", counting_bind)
    monkeypatch.setattr(rewriter.caffe.graph, "build_graph", counting_build)
    result = apply(parse(text), Recipe.builtin(recipe), options=options)
    assert result.changed and all(c.ok for c in result.checks)
    assert [n for n in binds if n == n_fields] == [n_fields]  # (the rest: edited fields)
    assert builds == ["TRAIN"]


def test_a_net_with_phase_rules_derives_both_phases(
    adopted: list[tuple[str, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed net has TRAIN- and TEST-only layers: both input nets are wired once, before
    the edits, and both output nets are derived (and set up as the input's)."""
    import rewriter.caffe.graph

    builds: list[str] = []
    real_build = rewriter.caffe.graph.build_graph

    def counting_build(net: Any, *a: Any, **k: Any) -> Any:
        builds.append(str(k.get("phase", a[0] if a else "TRAIN")))
        return real_build(net, *a, **k)

    monkeypatch.setattr(rewriter.caffe.graph, "build_graph", counting_build)
    result = apply(REPO / "examples" / "seed_net.prototxt", Recipe.builtin("seed-freeze"))
    assert sorted(builds) == ["TEST", "TRAIN"]
    assert set(adopted) == {("TEST", True), ("TRAIN", True)}  # (per step)
    setup = [c.detail for c in result.checks if c.name == "setup"]
    assert len(setup) == 2 and all("sets up as the input does" in d for d in setup)
