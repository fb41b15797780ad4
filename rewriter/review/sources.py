"""Where the texts of a diff come from, besides the caller: the ``*.prototxt`` files of a
directory, paired by relative path (:func:`_prototxt_files`), and a file at a git revision
(:func:`git_show`, :class:`GitError`). :func:`rewriter.review.semdiff.diff_dirs` and
:func:`~rewriter.review.semdiff.diff_git` compare what they give.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rewriter.errors import RewriterError


class GitError(RewriterError):
    """``git`` is missing, the path is outside a repository, or the revision is unknown."""


def _prototxt_files(directory: Path) -> dict[str, Path]:
    return {
        q.relative_to(directory).as_posix(): q
        for q in sorted(directory.rglob("*.prototxt"))
        if q.is_file()
    }


def git_show(path: str | os.PathLike[str], rev: str) -> str | None:
    """The text of ``path`` at git revision ``rev`` (None when it did not exist there)."""
    p = Path(path)
    cwd = p.parent if str(p.parent) else Path(".")
    if not cwd.is_dir():
        raise GitError(f"{path}: directory {cwd} does not exist")
    try:
        proc = subprocess.run(
            ["git", "show", f"{rev}:./{p.name}"],
            cwd=cwd,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (needed for --git)") from None
    if proc.returncode == 0:
        return proc.stdout.decode("utf-8", "surrogateescape")
    err = proc.stderr.decode("utf-8", "replace").strip()
    # The revision exists but the file did not: an added file.
    check = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    if check.returncode == 0 and ("does not exist" in err or "exists on disk" in err):
        return None
    raise GitError(f"{path}: git show {rev}:{p.name} failed: {err or 'unknown error'}")
