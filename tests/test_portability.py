"""The README's test command must pass in a fresh clone in any folder.

A test that reaches for a path outside the clone (a venv at a fixed place, a sibling folder other
than ``../shared``) passes on the machine it was written on and fails everywhere else; this has
happened (``/work/venv/bin/rewriter``). Scan the test sources for such paths.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

TEST_FILES = sorted(p for p in (REPO / "tests").glob("*.py") if p.name != "test_portability.py")
#: prefixes of absolute paths that can only exist on one machine
MACHINE_PATHS = ("/work", "/home", "/root", "/opt", "/usr/local", "/Users")


def _outside_paths(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(MACHINE_PATHS)
        ):
            found.append((node.lineno, node.value))
        # REPO.parent / "x": only ../shared is allowed beside the clone
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.left, ast.Attribute)
            and node.left.attr == "parent"
            and isinstance(node.left.value, ast.Name)
            and node.left.value.id == "REPO"
            and isinstance(node.right, ast.Constant)
            and node.right.value != "shared"
        ):
            found.append((node.lineno, f"<parent> / {node.right.value!r}"))
    return found


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_no_path_outside_the_clone(path: Path) -> None:
    found = _outside_paths(ast.parse(path.read_text(), str(path)))
    assert not found, [f"{path.name}:{line}: {text}" for line, text in found]


def test_the_scan_catches_a_fixed_venv_path() -> None:
    """The scan itself finds the two forms that broke fresh clones."""
    bad = 'exe = Path("/work/venv") / "bin"\nexe = REPO.parent / "venv" / "bin" / "rewriter"\n'
    assert [line for line, _ in _outside_paths(ast.parse(bad))] == [1, 2]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run must run exactly the README's test command: the one a new user copies."""
    install_and_run, test_suite = _readme_commands()
    assert "rewriter apply" in install_and_run and "examples/" in install_and_run
    assert "pytest" in test_suite
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_suite in ci, "the README's test command is not a line of .ci/run"
