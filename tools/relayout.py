#!/usr/bin/env python3
"""Issue 17's package layout as one mechanical move: ``python tools/relayout.py``.

Run from the repository root on a clean tree (``git status`` shows no changes to tracked
files). In one go it

1. checks that every module and package directly in ``rewriter/`` has an entry in
   :data:`MAPPING` (modules that other branches added since the table was written make it stop,
   listing them: add them to the table and run it again);
2. ``git mv``-s each flat module (or whole subpackage) to its place in the table, so history
   follows the files;
3. rewrites every reference to a moved module in ``rewriter/``, ``tests/`` (not
   ``tests/fixtures``), ``bench/``, ``tools/``, ``fuzz/``, ``docs/*.md`` and ``README.md``:
   absolute imports (``import rewriter.x``, ``from rewriter.x import y``), ``from rewriter
   import x``, relative imports (``from .x import y``, ``from . import x``; turned absolute
   where the relative form would now point elsewhere), and dotted names and paths in strings,
   comments and docs (``"rewriter.cli"`` for ``python -m``, ``mock.patch`` targets,
   ``:mod:`rewriter.graph```, ``rewriter/cst.py``), plus the two string tables that name
   modules by their short name (``rewriter/__init__.py``'s ``_LAZY`` and the tests' ``_have``);
4. writes the new packages' ``__init__.py`` (a docstring each) and ``rewriter/cli/__main__.py``
   (``python -m rewriter.cli`` keeps working), and re-exports the public API from
   ``rewriter/__init__.py`` (``parse``, ``read``, ``load``, ``Document``, ``CaffeFile`` as
   before, plus ``Recipe``, ``Step``, ``Result``, ``CheckFailed``, ``UpgradeResult``,
   ``RewriterError``);
5. rewrites ``pyproject.toml`` (entry point, package list, the built-in recipes as the package
   data ``rewriter.recipes.builtin``, ``import-linter`` in the dev extra, and the import-linter
   contracts of the new layout) and adds ``lint-imports`` to ``.ci/run``;
6. sorts the rewritten imports and formats with ruff (when installed).

It refuses to run twice: on a tree already laid out it says so and exits 0; on a half-moved
tree it stops. Nothing is committed: review ``git status``/``git diff --staged``, reinstall
(``pip install -e '.[dev]'``: the package list changed), run ``lint-imports`` and the tests,
then commit.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

# =============================================================================== the mapping
#: Every module or subpackage directly in rewriter/ (before the move) -> its dotted path after.
#: A subpackage moves whole (its modules, and any added later, come along). Identity entries
#: mark what stays where it is.
MAPPING: dict[str, str] = {
    # ---- directly in rewriter/: the façade, errors and hints every layer may use
    "rewriter.errors": "rewriter.errors",
    "rewriter.hints": "rewriter.hints",
    "rewriter.model": "rewriter.api",
    # ---- util: helpers with no knowledge of Caffe
    "rewriter.lazyseq": "rewriter.util.lazyseq",
    "rewriter.memory": "rewriter.util.memory",
    "rewriter.plaindiff": "rewriter.util.plaindiff",  # from the perf branch
    # ---- text: the lossless tree, edits, file IO
    "rewriter.cst": "rewriter.text.cst",
    "rewriter.edit": "rewriter.text.edit",
    "rewriter.fileio": "rewriter.text.fileio",
    # ---- schema: caffe.proto at run time, binding, diagnostics
    "rewriter.schema": "rewriter.schema.runtime",
    "rewriter.bind": "rewriter.schema.bind",
    "rewriter.forkhint": "rewriter.schema.forkhint",
    # ---- caffe: Caffe's semantics
    "rewriter.caffe_errors": "rewriter.caffe.errors",
    "rewriter.upgrade_proto": "rewriter.caffe.upgrade_proto",
    "rewriter.layer_params": "rewriter.caffe.layer_params",
    "rewriter.graph": "rewriter.caffe.graph",
    "rewriter.netinit": "rewriter.caffe.netinit",
    "rewriter.states": "rewriter.caffe.states",
    "rewriter.shapes": "rewriter.caffe.shapes",
    "rewriter.setup_checks": "rewriter.caffe.setup_checks",
    "rewriter.initcheck": "rewriter.caffe.initcheck",
    "rewriter.diagnose": "rewriter.caffe.diagnose",
    "rewriter.weights": "rewriter.caffe.weights",
    "rewriter.netfile": "rewriter.caffe.netfile",
    "rewriter.solver_ref": "rewriter.caffe.solver_ref",
    # ---- upgrade: the legacy formats as minimal edits (text, solvers, .caffemodel)
    "rewriter.upgrade": "rewriter.upgrade.document",
    "rewriter.caffemodel": "rewriter.upgrade.caffemodel",
    # ---- recipes: recipe files, selectors, steps, the engine, its checks
    "rewriter.recipe": "rewriter.recipes.recipe",
    "rewriter.recipe_common": "rewriter.recipes.common",
    "rewriter.recipe_hints": "rewriter.recipes.hints",
    "rewriter.select": "rewriter.recipes.select",
    "rewriter.steps": "rewriter.recipes.steps",
    "rewriter.step_table": "rewriter.recipes.step_table",
    "rewriter.weightsteps": "rewriter.recipes.weightsteps",
    "rewriter.deploy": "rewriter.recipes.deploy",
    "rewriter.apply": "rewriter.recipes.engine",
    "rewriter.checks": "rewriter.recipes.checks",
    # ---- review: the semantic diff and its renderers
    "rewriter.semdiff": "rewriter.review.semdiff",
    "rewriter.explain_text": "rewriter.review.explain_text",
    "rewriter.render": "rewriter.review.render",
    # ---- netspec, onnx: as today
    "rewriter.netspec": "rewriter.netspec",
    "rewriter.onnx": "rewriter.onnx",
    # ---- cli: the typer app, its help, the batch worker, one module per command
    "rewriter.cli": "rewriter.cli.app",
    "rewriter.cli_help": "rewriter.cli.help",
    "rewriter.runfile": "rewriter.cli.runfile",
    "rewriter.commands": "rewriter.cli.commands",
}

#: The docstring of each package the move creates.
PACKAGE_DOCS: dict[str, str] = {
    "rewriter.util": "Helpers that know nothing of Caffe: lazy sequences, pausing the garbage "
    "collector for bulk steps, differences between plain values.",
    "rewriter.text": "The lossless tree of a protobuf text file (``cst``), edits on it that leave "
    "every other byte alone (``edit``) and file IO that loses nothing (``fileio``).",
    "rewriter.schema": "``caffe.proto`` at run time (``runtime``: descriptors in a private pool), "
    "binding the lossless tree to it with located diagnostics (``bind``) and the hint for a "
    "fork's fields (``forkhint``). ``proto/caffe.proto`` stays at the repository root.",
    "rewriter.caffe": "Caffe's semantics, reproduced: the in-memory legacy upgrade "
    "(``upgrade_proto``), layer tables (``layer_params``), the graph ``Net::Init`` wires "
    "(``graph``), backward analysis (``netinit``, ``states``), shapes and set-up checks "
    "(``shapes``, ``setup_checks``, ``initcheck``), located errors (``diagnose``), "
    "``.caffemodel`` reading and the weight-loading rules (``weights``), and a file with "
    "all of these computed once (``netfile``).",
    "rewriter.upgrade": "Caffe's legacy-format upgrade as minimal edits: nets and solvers "
    "(``document``) and streaming ``.caffemodel`` files (``caffemodel``).",
    "rewriter.recipes": "Recipes: the recipe files (``recipe``; the built-in TOML files ship as "
    "``rewriter.recipes.builtin``), selectors (``select``), the step catalogue (``step_table``, "
    "``steps``, ``deploy``, ``weightsteps``), the engine (``engine``) and its round-trip "
    "checks (``checks``).",
    "rewriter.review": "Reviewing a change: the semantic diff (``semdiff``), the backward "
    "analysis as text (``explain_text``) and the renderers (``render``: text, JSON, Markdown, "
    "Mermaid, DOT, HTML).",
    "rewriter.cli": "The ``rewriter`` command: the entry point (:func:`main`, here), the typer app "
    "with ``check`` and ``explain`` (``app``), its help (``help``), the batch worker (``runfile``) "
    "and one module per other command (``commands``). Nothing here is imported by the library.",
}

#: Names ``rewriter/__init__.py`` re-exports (lazily), beyond those it already has:
#: name -> (module after the move, relative to ``rewriter``, attribute).
PUBLIC_API: dict[str, tuple[str, str]] = {
    "RewriterError": ("errors", "RewriterError"),
    "Recipe": ("recipes.recipe", "Recipe"),
    "Step": ("recipes.recipe", "Step"),
    "Result": ("recipes.engine", "Result"),
    "CheckFailed": ("recipes.checks", "CheckFailed"),
    "UpgradeResult": ("upgrade.document", "UpgradeResult"),
}

#: import-linter contracts of the new layout (written into pyproject.toml).
IMPORTLINTER = """
[tool.importlinter]
root_package = "rewriter"
# Imports under ``if TYPE_CHECKING:`` name types only; they run nowhere and are not counted.
exclude_type_checking_imports = true

[[tool.importlinter.contracts]]
name = "Layers: data flows text -> schema -> Caffe semantics -> upgrade -> recipes -> CLI"
type = "layers"
containers = ["rewriter"]
layers = [
    "cli",
    "netspec",
    "api",
    "recipes | review",
    "onnx",
    "upgrade",
    "caffe",
    "schema",
    "text",
    "util",
    "hints | errors",
]

[[tool.importlinter.contracts]]
name = "No import cycles between the modules of any package"
type = "acyclic_siblings"
ancestors = ["rewriter"]
"""

#: Files and folders whose references to modules are rewritten (relative to the root).
PY_TREES = ("rewriter", "tests", "bench", "tools", "fuzz")
SKIP_DIRS = ("tests/fixtures",)
DOCS = ("docs", "README.md")
SELF = Path("tools/relayout.py")
#: written for the new layout already (its names would be mapped a second time)
NEW_LAYOUT_DOCS = (Path("docs/architecture.md"),)
#: ruff's line-length: docstring and comment lines the longer names push past it are rewrapped
LINE_LENGTH = 100

#: ``rewriter.cli`` names the package (not its app module) where it is run or entered: as
#: ``python -m rewriter.cli``/``run_module("rewriter.cli")``, the ``rewriter.cli:main`` entry
#: point and ``from rewriter.cli import main``; those stay as they are.
_KEEP_CLI = re.compile(
    r"""(?<=["'])rewriter\.cli(?=["'])|(?<=-m )rewriter\.cli(?![\w.])|rewriter\.cli(?=:main\b)"""
    r"""|(?<=from )rewriter\.cli(?= import main\b(?!\s*,))"""
)
_SENTINEL = "\x00rewriter-cli\x00"
_DOTTED = re.compile(r"(?<![\w.])rewriter((?:\.[A-Za-z_]\w*)+)")
_PATH = re.compile(r"(?<![\w./-])rewriter/((?:[A-Za-z_]\w*/)*[A-Za-z_]\w*)(\.py\b|/)?")
_HAVE = re.compile(r"""(\b_have\(\s*)(["'])(\w+)\2""")
_LAZY_ITEM = re.compile(r"""(\(\s*)(["'])([a-z_][\w.]*)\2(\s*,\s*["'])""")


class Stop(Exception):
    """A reason not to touch the tree."""


def run(*cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise Stop(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# =============================================================================== the old tree


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the ``rewriter`` package (dotted name -> file), packages as their
    ``__init__.py`` (named without it)."""
    out: dict[str, Path] = {}
    for p in sorted((root / "rewriter").rglob("*.py")):
        rel = p.relative_to(root).with_suffix("")
        if "__pycache__" in rel.parts:
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def top_level_entries(root: Path) -> list[str]:
    """The modules and subpackages directly in rewriter/ (dotted)."""
    out = []
    for p in sorted((root / "rewriter").iterdir()):
        if p.suffix == ".py" and p.stem != "__init__":
            out.append(f"rewriter.{p.stem}")
        elif p.is_dir() and (p / "__init__.py").is_file():
            out.append(f"rewriter.{p.name}")
    return out


def new_name(old: str) -> str | None:
    """The dotted name after the move of ``old`` (a module, package or a name inside one), or
    None when no prefix of it is in :data:`MAPPING`."""
    parts = old.split(".")
    for k in range(len(parts), 1, -1):
        head = ".".join(parts[:k])
        if head in MAPPING:
            return ".".join([MAPPING[head], *parts[k:]])
    return None


def is_package(dotted: str) -> bool:
    """``dotted`` (a MAPPING key) is a subpackage that moves whole, not a module."""
    return (Path(*dotted.split(".")) / "__init__.py").is_file() and not MAPPING[dotted].startswith(
        dotted + "."
    )


def src_path(dotted: str) -> Path:
    """Where a MAPPING key is before the move (a package's folder or a module's file)."""
    base = Path(*dotted.split("."))
    return base if is_package(dotted) else base.with_suffix(".py")


def dst_path(dotted_old: str, dotted_new: str) -> Path:
    """Where it goes (call before the move: a package is recognised by its folder)."""
    base = Path(*dotted_new.split("."))
    return base if is_package(dotted_old) else base.with_suffix(".py")


def exists_as_module(dotted: str) -> bool:
    """A module file or a package folder by that dotted name."""
    base = Path(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


# =============================================================================== rewriting


def _map_dotted(match: re.Match[str], known: set[str]) -> str:
    parts = ("rewriter" + match.group(1)).split(".")
    for k in range(len(parts), 1, -1):
        head = ".".join(parts[:k])
        if head in known:
            mapped = new_name(head)
            if mapped is not None:
                return ".".join([mapped, *parts[k:]])
    return match.group(0)


def _map_path(match: re.Match[str], known: set[str]) -> str:
    rel, tail = match.group(1), match.group(2) or ""
    parts = ["rewriter", *rel.split("/")]
    for k in range(len(parts), 1, -1):
        head = ".".join(parts[:k])
        if head not in known:
            continue
        mapped = new_name(head)
        if mapped is None:
            return match.group(0)
        out = "/".join([*mapped.split("."), *parts[k:]])
        return out + tail
    return match.group(0)


def rewrite_plain(text: str, known: set[str], short: bool) -> str:
    """Dotted names and paths of moved modules in any text (code outside the imports handled
    by :func:`import_edits`, strings, comments, docs)."""
    text = _KEEP_CLI.sub(_SENTINEL, text)
    text = _DOTTED.sub(lambda m: _map_dotted(m, known), text)
    text = _PATH.sub(lambda m: _map_path(m, known), text)
    text = text.replace(_SENTINEL, "rewriter.cli")
    if short:

        def have(m: re.Match[str]) -> str:
            mapped = new_name(f"rewriter.{m.group(3)}")
            if f"rewriter.{m.group(3)}" not in known or mapped is None:
                return m.group(0)
            return f"{m.group(1)}{m.group(2)}{mapped.removeprefix('rewriter.')}{m.group(2)}"

        text = _HAVE.sub(have, text)
    return text


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a relative import names, seen from ``module``."""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def _line_offsets(text: str) -> list[int]:
    out = [0]
    for line in text.splitlines(keepends=True):
        out.append(out[-1] + len(line))
    return out


def import_edits(
    text: str, old_module: str | None, is_package: bool, new_module: str | None, known: set[str]
) -> list[tuple[int, int, str]]:
    """(start, end, new text) for each ``from ... import`` that a plain rename cannot fix:
    relative imports, and ``from rewriter import <module>``."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    offsets = _line_offsets(text)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0 and node.module != "rewriter":
            continue
        if node.level > 0 and old_module is None:
            continue
        if node.level > 0:
            assert old_module is not None
            base_old = _resolve(old_module, is_package, node.level, node.module)
        else:
            base_old = "rewriter"
        if not (base_old == "rewriter" or base_old in known):
            continue
        groups: dict[str, list[str]] = {}
        for alias in node.names:
            full_old = f"{base_old}.{alias.name}"
            if full_old in known:  # a module imported by name
                full_new = new_name(full_old) or full_old
                frm, name = full_new.rsplit(".", 1)
            else:
                frm = new_name(base_old) or base_old if base_old != "rewriter" else "rewriter"
                name = alias.name
            groups.setdefault(frm, []).append(
                name + (f" as {alias.asname}" if alias.asname else "")
            )
        if node.level > 0 and new_module is not None:
            # keep the relative form when it still names the same module from the new place
            if len(groups) == 1:
                (frm,) = groups
                if _resolve(new_module, is_package, node.level, node.module) == frm:
                    continue
        elif node.level == 0 and list(groups) == ["rewriter"]:
            continue
        start = offsets[node.lineno - 1] + node.col_offset
        assert node.end_lineno is not None and node.end_col_offset is not None
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        indent = " " * node.col_offset
        stmts = []
        for frm, names in groups.items():
            one = f"from {frm} import {', '.join(names)}"
            if len(indent) + len(one) > 99:
                one = (
                    f"from {frm} import (\n"
                    + "".join(f"{indent}    {n},\n" for n in names)
                    + f"{indent})"
                )
            stmts.append(one)
        inner = text[start:end]
        if "#" in inner:
            print(f"note: comments inside an import were dropped ({old_module}: {inner[:60]!r})")
        edits.append((start, end, f"\n{indent}".join(stmts)))
    return sorted(edits)


def rewrite_python(
    text: str,
    old_module: str | None,
    is_package: bool,
    new_module: str | None,
    known: set[str],
) -> str:
    edits = import_edits(text, old_module, is_package, new_module, known)
    out, pos = [], 0
    for start, end, new in edits:
        out.append(rewrite_plain(text[pos:start], known, short=True))
        out.append(new)
        pos = end
    out.append(rewrite_plain(text[pos:], known, short=True))
    return "".join(out)


def _prose_lines(text: str) -> tuple[set[int], dict[int, int]]:
    """Line numbers inside docstrings, and comment lines with the comment's column."""
    docs: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
                and first.end_lineno is not None
            ):
                docs.update(range(first.lineno, first.end_lineno + 1))
    comments = {
        tok.start[0]: tok.start[1]
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type == tokenize.COMMENT
    }
    return docs, comments


def reflow(text: str, original: str) -> str:
    """Break the docstring and comment lines that the rewriting made longer than
    :data:`LINE_LENGTH` (code lines are left to ``ruff format``; lines already in the original
    and string values are never touched)."""
    try:
        docs, comments = _prose_lines(text)
    except (SyntaxError, tokenize.TokenError):
        return text
    before = set(original.splitlines())
    out: list[str] = []
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        body = line.rstrip("\r\n")
        newline = line[len(body) :]
        if len(body) <= LINE_LENGTH or body in before or "noqa" in body:
            out.append(line)
            continue
        while len(body) > LINE_LENGTH:
            indent = len(body) - len(body.lstrip())
            cut = body.rfind(" ", 0, LINE_LENGTH + 1)
            if n in docs:
                bullet = re.match(r"(\* |- |\d+\. )", body.lstrip().lstrip("\"'"))
                quotes = body.lstrip().startswith(('"""', "'''"))
                prefix = " " * (indent + (len(bullet.group(1)) if bullet and not quotes else 0))
            elif n in comments and cut > comments[n]:
                prefix = " " * indent + "# "
            else:
                break
            if cut <= indent:
                break
            out.append(body[:cut].rstrip() + newline)
            body = prefix + body[cut + 1 :].lstrip()
        out.append(body + newline)
    return "".join(out)


def rewrite_package_init(text: str, known: set[str]) -> str:
    """rewriter/__init__.py: the lazy table names modules relative to the package; add the
    public names of :data:`PUBLIC_API`."""

    def lazy(m: re.Match[str]) -> str:
        old = f"rewriter.{m.group(3)}"
        mapped = new_name(old) if old in known else None
        if mapped is None:
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}{mapped.removeprefix('rewriter.')}{m.group(2)}{m.group(4)}"

    head, sep, rest = text.partition("_LAZY = {")
    if not sep:
        raise Stop("rewriter/__init__.py has no '_LAZY = {' table; update PUBLIC_API by hand")
    body, close, tail = rest.partition("\n}")
    body = _LAZY_ITEM.sub(lazy, body)
    present = set(re.findall(r"""["'](\w+)["']\s*:""", body))
    for name, (module, attr) in PUBLIC_API.items():
        if name not in present:
            body += f'\n    "{name}": ("{module}", "{attr}"),'
    text = head + sep + body + close + tail
    m = re.search(r"__all__ = \[([^\]]*)\]", text)
    if m is None:
        raise Stop("rewriter/__init__.py has no __all__ list")
    names = re.findall(r"""["'](\w+)["']""", m.group(1))
    names += [n for n in PUBLIC_API if n not in names]
    text = (
        text[: m.start()]
        + "__all__ = ["
        + ", ".join(f'"{n}"' for n in names)
        + "]"
        + text[m.end() :]
    )
    lines = [f"    from .{module} import {attr}" for _n, (module, attr) in PUBLIC_API.items()]
    marker = "if TYPE_CHECKING:\n"
    if marker in text:
        text = text.replace(marker, marker + "\n".join(lines) + "\n", 1)
    return text


def rewrite_pyproject(text: str, known: set[str], packages: list[str]) -> str:
    text = rewrite_plain(text, known, short=False)  # the entry point
    pk = re.search(r"^packages = \[\n(?:[^\]]*\n)?\]\n", text, re.M)
    if pk is None:
        raise Stop("pyproject.toml: no [tool.setuptools] packages list")
    text = (
        text[: pk.start()]
        + "packages = [\n"
        + "".join(f'    "{p}",\n' for p in [*packages, "rewriter.recipes.builtin"])
        + "]\n"
        + text[pk.end() :]
    )
    text = re.sub(
        r'^package-dir = \{ "rewriter\.recipes" = "recipes" \}',
        'package-dir = { "rewriter.recipes.builtin" = "recipes" }',
        text,
        flags=re.M,
    )
    text = re.sub(
        r'^"rewriter\.recipes" = \["\*\.toml"\]',
        '"rewriter.recipes.builtin" = ["*.toml"]',
        text,
        flags=re.M,
    )
    text = text.replace(
        "# inside the wheel as rewriter.recipes.",
        "# inside the wheel as the package data rewriter.recipes.builtin.",
    )
    if '"import-linter' not in text:
        text = re.sub(r'(dev = \[\n(?:    [^\n]*\n)*?)(\])', r'\1    "import-linter>=2.1",\n\2',
                      text, count=1)  # fmt: skip
    if "[tool.importlinter]" not in text:
        text = text.rstrip("\n") + "\n" + IMPORTLINTER
    return text


def rewrite_ci(text: str) -> str:
    if "lint-imports" in text:
        return text
    line = ".venv/bin/mypy --strict rewriter\n"
    if line not in text:
        raise Stop(".ci/run: no mypy line to put lint-imports after")
    return text.replace(line, line + ".venv/bin/lint-imports\n", 1)


# =============================================================================== the CLI entry


CLI_INIT = '''

from __future__ import annotations


def main() -> None:
    """The ``rewriter`` console entry point: every command module loaded, then the app run
    (:func:`rewriter.cli.app.run`). It sits here, above the app and the commands (which import
    the app), so that neither imports the other back."""
    from rewriter.cli.app import run
    from rewriter.cli.commands import load_all

    load_all()
    run()
'''

CLI_MAIN = '''"""``python -m rewriter.cli``: the ``rewriter`` command."""

from rewriter.cli import main

main()
'''


def split_cli_entry(app_py: Path) -> None:
    """Drop ``main`` (load the commands, then ``run``) and the ``__main__`` block from the app
    module: ``rewriter/cli/__init__.py`` and ``__main__.py`` take them over. Stops when ``main``
    does more than that (move the new code by hand)."""
    text = app_py.read_text(encoding="utf-8")
    tree = ast.parse(text)
    spans = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            calls = [ast.unparse(b) for b in body]
            if calls != ["from .commands import load_all", "load_all()", "run()"] and calls != [
                "from rewriter.cli.commands import load_all",
                "load_all()",
                "run()",
            ]:
                raise Stop(
                    f"{app_py}: main() is no longer 'load_all(); run()' ({calls}); move what "
                    "it does now into rewriter/cli/__init__.py by hand"
                )
            spans.append((node.lineno - len(node.decorator_list), node.end_lineno))
        elif (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and ast.unparse(node.test) == "__name__ == '__main__'"
        ):
            spans.append((node.lineno, node.end_lineno))
    lines = text.splitlines(keepends=True)
    for start, end in sorted(spans, reverse=True):
        assert end is not None
        del lines[start - 1 : end]
    out = re.sub(r"\n{3,}", "\n\n\n", "".join(lines)).rstrip("\n") + "\n"
    app_py.write_text(out, encoding="utf-8")


# =============================================================================== the move


def files_to_rewrite(root: Path) -> list[Path]:
    out: list[Path] = []
    for tree in PY_TREES:
        for p in sorted((root / tree).rglob("*.py")):
            rel = p.relative_to(root)
            if "__pycache__" in rel.parts or rel == SELF:
                continue
            if any(str(rel).startswith(s + "/") for s in SKIP_DIRS):
                continue
            out.append(rel)
    for d in DOCS:
        p = root / d
        out += sorted(x.relative_to(root) for x in p.rglob("*.md")) if p.is_dir() else [Path(d)]
    return [p for p in out if p not in NEW_LAYOUT_DOCS]


def check_state(root: Path) -> bool:
    """True when the move is still to do; False when it is done. Raises Stop otherwise."""
    if not (root / "pyproject.toml").is_file() or not (root / "rewriter/__init__.py").is_file():
        raise Stop("run from the repository root (pyproject.toml and rewriter/ not found)")
    moving = {k: v for k, v in MAPPING.items() if k != v}
    present = [k for k in moving if src_path(k).exists()]
    placed = [v for v in moving.values() if exists_as_module(v)]
    if not present and placed:
        return False
    if placed:
        raise Stop(
            "the tree is half laid out (some targets exist: "
            + ", ".join(placed[:5])
            + "); reset it (git checkout/reset) and run again"
        )
    missing = [k for k in MAPPING if not src_path(k).exists()]
    if missing:
        print("note: in the table but not in the tree (skipped): " + ", ".join(missing))
    unmapped = [m for m in top_level_entries(root) if m not in MAPPING]
    if unmapped:
        raise Stop(
            "modules not in the MAPPING table of tools/relayout.py (add each with its new "
            "dotted path, then run again):\n  " + "\n  ".join(unmapped)
        )
    dirty = run("git", "status", "--porcelain", "--untracked-files=no").strip()
    if dirty:
        raise Stop("the tree has uncommitted changes; commit or stash them first:\n" + dirty)
    return True


def relayout(root: Path, ruff: bool = True) -> None:
    modules = module_files(root)
    known = set(modules)
    moving = {k: v for k, v in MAPPING.items() if k != v and k in known}

    # 1. every rewritten text, computed on the old tree
    texts: dict[Path, tuple[Path, str]] = {}  # old path -> (new path, new text)
    by_path = {p.relative_to(root): m for m, p in modules.items()}
    for rel in files_to_rewrite(root):
        old_text = (root / rel).read_text(encoding="utf-8")
        old_module = by_path.get(rel)
        if rel.suffix == ".py":
            is_pkg = rel.name == "__init__.py"
            new_module = new_name(old_module) if old_module else None
            if rel == Path("rewriter/__init__.py"):
                text = rewrite_package_init(rewrite_python(old_text, "rewriter", True,
                                                           "rewriter", known), known)  # fmt: skip
            else:
                text = rewrite_python(old_text, old_module, is_pkg, new_module, known)
            text = reflow(text, old_text)
            if old_module is not None and new_module is not None:
                parts = new_module.split(".")
                new_rel = Path(*parts, "__init__.py") if is_pkg else Path(*parts).with_suffix(".py")
            else:
                new_rel = rel
        else:
            text, new_rel = rewrite_plain(old_text, known, short=False), rel
        texts[rel] = (new_rel, text)
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    ci = (root / ".ci/run").read_text(encoding="utf-8") if (root / ".ci/run").is_file() else None

    # 2. git mv, packages' __init__ files
    new_packages = sorted(
        {".".join(v.split(".")[:i]) for v in moving.values() for i in range(2, v.count(".") + 1)}
    )
    pairs = [(src_path(old), dst_path(old, new)) for old, new in moving.items()]  # before mkdir
    for pkg in new_packages:
        d = root / Path(*pkg.split("."))
        d.mkdir(parents=True, exist_ok=True)
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        run("git", "mv", str(src), str(dst))
        print(f"moved {src} -> {dst}")
    created: list[Path] = []
    for pkg in new_packages:
        init = root / Path(*pkg.split(".")) / "__init__.py"
        if not init.exists():
            doc = PACKAGE_DOCS.get(pkg, f"The {pkg.split('.')[-1]} package (issue 17's layout).")
            init.write_text(_docstring(doc) + (CLI_INIT if pkg == "rewriter.cli" else ""), "utf-8")
            created.append(init)
    main = root / "rewriter/cli/__main__.py"
    if (root / "rewriter/cli").is_dir() and not main.exists():
        main.write_text(CLI_MAIN, encoding="utf-8")
        created.append(main)

    # 3. the rewritten texts, at their new places; the CLI's entry point above its app
    changed: list[Path] = []
    for new_rel, text in texts.values():
        target = root / new_rel
        if target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(new_rel)
    app_py = root / Path(*MAPPING["rewriter.cli"].split(".")).with_suffix(".py")
    if "rewriter.cli" in moving and app_py.is_file():
        split_cli_entry(app_py)
        changed.append(app_py.relative_to(root))
    packages = sorted(
        ".".join(p.parent.relative_to(root).parts)
        for p in (root / "rewriter").rglob("__init__.py")
        if "__pycache__" not in p.parts
    )
    (root / "pyproject.toml").write_text(rewrite_pyproject(pyproject, known, packages), "utf-8")
    if ci is not None:
        (root / ".ci/run").write_text(rewrite_ci(ci), encoding="utf-8")
    run("git", "add", *[str(p.relative_to(root)) for p in created])

    # 4. imports sorted and formatted as the project's ruff wants them
    py = [str(p) for p in {*changed, *(c.relative_to(root) for c in created)} if p.suffix == ".py"]
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if ruff and py and Path(exe).exists():
        run(exe, "check", "--select", "I", "--fix", "--quiet", *py, check=False)
        run(exe, "format", "--quiet", *py, check=False)
    elif ruff:
        print("note: ruff not found; run 'ruff check --select I --fix' and 'ruff format'")

    # 5. what a name table cannot see
    dynamic = re.compile(r"""f["']rewriter\.\{|import_module\(f?["']\.""")
    for p in sorted((root / "rewriter").rglob("*.py")) + sorted((root / "tests").glob("*.py")):
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if dynamic.search(line):
                print(f"check by hand (module named at run time): {p.relative_to(root)}:{n}: "
                      f"{line.strip()}")  # fmt: skip
    print(
        f"\ndone: {len(moving)} moves, {len(changed)} files rewritten, {len(created)} created.\n"
        "next: pip install -e '.[dev]' (the package list changed), lint-imports, ruff, mypy, "
        "the tests; then commit."
    )


def _docstring(text: str) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > 96:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    if len(lines) == 1:
        return f'"""{lines[0]}"""\n'
    return '"""' + "\n".join(lines) + '\n"""\n'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="only check the table against the tree")
    ap.add_argument("--no-ruff", action="store_true", help="do not sort/format with ruff")
    args = ap.parse_args(argv)
    root = Path.cwd()
    try:
        todo = check_state(root)
        if not todo:
            print("already laid out (the table's targets exist): nothing to do")
            return 0
        if args.check:
            print("the MAPPING table covers every module; the tree is clean")
            return 0
        relayout(root, ruff=not args.no_ruff)
    except Stop as e:
        print(f"relayout: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
