"""Every step and built-in recipe on hand-written before/after pairs (tests/fixtures/apply-*).

Each case holds ``before.prototxt``, ``after.prototxt`` (written by hand: the before text with
the expected edits, never the tool's output), ``recipe.toml`` and optionally ``options.json``
(``{"options": {...}, "lenient": true, "phase": "TEST"}``). The result must equal ``after``
byte for byte, every check must pass, and the unified diff must apply to ``before`` to give
``after`` and touch exactly the lines a plain line diff of the two files touches.
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rewriter.recipes.engine import apply
from rewriter.recipes.recipe import Recipe

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CASES = sorted(p for p in FIXTURES.glob("apply-*") if (p / "recipe.toml").is_file())


def split_lines(text: str) -> list[str]:
    parts = text.split("\n")
    last = parts.pop()
    return [p + "\n" for p in parts] + ([last] if last else [])


def apply_patch(old: str, diff: str) -> str:
    """Apply a unified diff to ``old``; every context and removed line must match exactly."""
    a = split_lines(old)
    lines = split_lines(diff)
    assert lines[0].startswith("--- ") and lines[1].startswith("+++ ")
    out: list[str] = []
    ai = 0
    i = 2
    while i < len(lines):
        m = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@\n", lines[i])
        assert m, lines[i]
        start, count = int(m.group(1)), int(m.group(2) or 1)
        first = start - 1 if count else start
        assert first >= ai, "hunks out of order"
        out.extend(a[ai:first])
        ai = first
        i += 1
        while i < len(lines) and not lines[i].startswith("@@"):
            tag, body = lines[i][0], lines[i][1:]
            no_newline = i + 1 < len(lines) and lines[i + 1].startswith("\\ No newline")
            if no_newline:
                body = body[:-1]
            if tag == " ":
                assert a[ai] == body
                out.append(body)
                ai += 1
            elif tag == "-":
                assert a[ai] == body
                ai += 1
            else:
                assert tag == "+", lines[i]
                out.append(body)
            i += 2 if no_newline else 1
    out.extend(a[ai:])
    return "".join(out)


def changed_lines(diff: str) -> Counter[str]:
    return Counter(
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def run_case(case: Path) -> tuple[Any, str, str]:
    before = (case / "before.prototxt").read_bytes().decode()
    after = (case / "after.prototxt").read_bytes().decode()
    opts: dict[str, Any] = {}
    if (case / "options.json").is_file():
        opts = json.loads((case / "options.json").read_text())
    recipe = Recipe.load(case / "recipe.toml")
    weights: dict[str, Any] = {}
    if (case / "digests.json").is_file():  # a weight step: the pair (tests/test_weightsteps.py)
        from tests.weightgen import make_caffemodel

        pytest.importorskip("numpy")
        folder = Path(tempfile.mkdtemp(prefix="weights-"))
        make_caffemodel(case / "before.prototxt", folder / "before.caffemodel")
        weights = {
            "weights": folder / "before.caffemodel",
            "weights_out": folder / "out.caffemodel",
        }
    result = apply(
        case / "before.prototxt",
        recipe,
        options=opts.get("options"),
        lenient=opts.get("lenient", False),
        phase=opts.get("phase", "TRAIN"),
        **weights,
    )
    return result, before, after


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixture(case: Path) -> None:
    result, before, after = run_case(case)
    assert result.code == after
    assert all(c.ok for c in result.checks), [c.render() for c in result.checks]
    names = {c.name for c in result.checks}
    assert {"parse-bind", "semantic-diff", "structure", "promises", "idempotence"} <= names
    if before == after:
        assert not result.changed and result.diff == "" and not result.changes
        return
    assert result.changed and result.changes
    assert apply_patch(before, result.diff) == after
    plain = "".join(difflib.unified_diff(split_lines(before), split_lines(after), "a", "b"))
    assert changed_lines(result.diff) == changed_lines(plain)


def test_every_step_and_builtin_has_a_fixture() -> None:
    from rewriter.recipes.recipe import builtin_names
    from rewriter.recipes.step_table import STEPS

    used_steps: set[str] = set()
    used_builtins: set[str] = set()
    for case in CASES:
        recipe = Recipe.load(case / "recipe.toml")
        used_steps.update(s.kind for s in recipe.all_steps())
        used_builtins.update(r.name for r in recipe.includes)
    assert set(STEPS) <= used_steps, set(STEPS) - used_steps
    assert set(builtin_names()) <= used_builtins, set(builtin_names()) - used_builtins


def test_crlf_and_comments_survive() -> None:
    result, before, _ = run_case(FIXTURES / "apply-freeze_crlf_tabs")
    assert result.code.count("\r\n") == result.code.count("\n")
    assert before.count("\r\n") == before.count("\n")
    result, before, _ = run_case(FIXTURES / "apply-freeze_upto_comments")
    comments = [line[line.index("#") :] for line in before.splitlines() if "#" in line]
    for c in comments:
        assert c in result.code


def test_fork_file_needs_lenient() -> None:
    from rewriter.errors import RewriterError

    case = FIXTURES / "apply-fork_lenient"
    recipe = Recipe.load(case / "recipe.toml")
    with pytest.raises(RewriterError, match="engine_hint"):
        apply(case / "before.prototxt", recipe)
    result = apply(case / "before.prototxt", recipe, lenient=True)
    assert "lenient" in result.checks[0].detail
    assert "engine_hint: FAST" in result.code and "fork_extra { flag: true }" in result.code
