"""Shared test helpers: where the truth data lives and how to skip without it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
ORACLE = SHARED / "oracle"


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user does, through the interpreter running the tests.

    Never a fixed path to a virtual environment: the README's test command must pass in a fresh
    clone in any folder, with or without an activated venv.
    """
    return subprocess.run(
        [sys.executable, "-m", "rewriter.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )


def need_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: the corpus and oracle tests need it")


def manifest() -> list[dict[str, str]]:
    """Rows of corpus/MANIFEST.tsv (empty when ../shared is absent, so ids stay collectable)."""
    path = CORPUS / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def corpus_params(
    kind: str | None = None, fmt: str | None = None, fork: str | None = None
) -> list[object]:
    rows = [
        r
        for r in manifest()
        if (kind is None or r["kind"] == kind)
        and (fmt is None or r["format"] == fmt)
        and (fork is None or r["fork_specific"] == fork)
    ]
    if not rows:
        return [pytest.param(None, id="no-shared-corpus")]
    return [pytest.param(r, id=r["path"]) for r in rows]


def read_corpus(row: dict[str, str] | None) -> tuple[Path, str]:
    need_shared()
    assert row is not None
    path = CORPUS / row["path"]
    return path, path.read_bytes().decode("utf-8", "surrogateescape")
