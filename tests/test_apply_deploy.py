"""The `deploy` recipe step: the same result as `rewriter deploy`, through apply's checks."""

from __future__ import annotations

from typing import Any

import pytest

from rewriter.api import read
from rewriter.recipes.deploy import deploy_document
from rewriter.recipes.engine import apply
from rewriter.recipes.recipe import Recipe, Step
from rewriter.text.cst import parse

from .conftest import CORPUS, need_shared
from .test_deploy import PAIRS

# Pairs the step can take as they are (V2 files; options the step's keys can express).
STEP_KEYS = {"batch", "channels", "height", "width", "output", "outputs", "stage"}
CASES = [
    pytest.param(p[0], p[1], p[3], id=f"{p[0]}/{p[1]}")
    for p in PAIRS
    if set(p[3]) <= STEP_KEYS | {"strip_dropout"} and "@11a4c16" not in p[0]
]


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    out = dict(opts)
    for key in ("stage",):
        if isinstance(out.get(key), str):
            out[key] = [out[key]]
    return out


@pytest.mark.parametrize(("folder", "train_val", "opts"), CASES)
def test_deploy_step_equals_deploy_command(folder: str, train_val: str, opts: Any) -> None:
    need_shared()
    path = CORPUS / folder / train_val
    direct = deploy_document(read(path), **opts)
    result = apply(path, Step("deploy", **_options(opts)))
    assert result.code == direct.document.code
    assert all(c.ok for c in result.checks), [c for c in result.checks if not c.ok]
    names = {c.name for c in result.checks}
    assert {"parse-bind", "semantic-diff", "structure", "promises", "idempotence"} <= names
    # Every removed layer of the deploy account shows up as a removal in the changes.
    removed = {c.layer for c in result.changes if c.kind == "removed"}
    assert {name for name, _, _ in direct.removed} <= removed


def test_builtin_deploy_recipe_on_googlenet() -> None:
    need_shared()
    path = CORPUS / "BVLC-caffe/models/bvlc_googlenet/train_val.prototxt"
    result = apply(path, Recipe.builtin("deploy"), batch=10)
    code = result.code
    assert 'type: "Input"' in code and "dim: 10" in code
    assert "SoftmaxWithLoss" not in code and 'top: "prob"' in code
    assert "Accuracy" not in code
    added = [c for c in result.changes if c.kind == "added"]
    assert [c.layer for c in added] == ["data"]
    # Applying the recipe to its own output changes nothing.
    again = apply(parse(code, "deployed.prototxt"), Recipe.builtin("deploy"))
    assert again.code == code


def test_deploy_of_a_deploy_net_is_a_no_op() -> None:
    need_shared()
    path = CORPUS / "BVLC-caffe/models/bvlc_googlenet/deploy.prototxt"
    result = apply(path, Step("deploy"))
    assert result.code == read(path).code
