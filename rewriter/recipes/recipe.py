"""Recipes: declarative, ordered rewrite steps read from TOML (or built in Python).

A recipe is *data*. Nothing in it is executed: it names steps from a fixed catalogue
(:mod:`rewriter.recipes.steps`), gives them values, and may include other recipes, either built-in
ones
by name or files under the including recipe's own directory. Every error found while loading
names the recipe file and the ``line:col`` of the offending key (``tomllib`` gives no positions,
so :func:`key_positions` finds them in the TOML text itself).

Layout of a recipe file::

    name = "freeze-backbone"
    description = "Freeze everything up to a layer"
    include = ["zero-decay-frozen"]          # built-in name, or a path relative to this file

    [options.upto]
    type = "string"                           # string | int | float | bool | list
    description = "last layer to freeze"      # no default: the option is required

    [preconditions]
    has_layer = "{upto}"
    format = "current"

    [[steps]]
    step = "freeze"
    upto = "{upto}"                           # "{option}" alone keeps the option's type

Steps of included recipes run first, in ``include`` order, then the recipe's own steps. Options
of included recipes are merged into the including recipe's options (its own declarations win).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rewriter.errors import Diagnostic, Location
from rewriter.recipes.common import _PLACEHOLDER, RecipeError, _hint, placeholders
from rewriter.util.record import FrozenRecord, Record

__all__ = [
    "Option",
    "Precondition",
    "Recipe",
    "RecipeError",
    "Step",
    "builtin_dir",
    "builtin_names",
    "coerce_option",
    "key_positions",
    "parse_step_spec",
]

OPTION_TYPES = ("string", "int", "float", "bool", "list")
FORMATS = ("current", "V2", "V1", "V0", "any")
_TOP_KEYS = ("name", "description", "include", "options", "steps", "preconditions")
_OPTION_KEYS = ("type", "default", "description")
_PRECONDITION_KEYS = ("has_layer", "has_type", "format", "on_fail")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _toml() -> Any:
    # tomllib is in the standard library from 3.11; tomli is the same parser for 3.10.
    return importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")


# --------------------------------------------------------------------------- where keys are

Key = tuple[str | int, ...]


def key_positions(text: str) -> dict[Key, tuple[int, int]]:
    """``(line, col)`` (1-based) of every key and table header in a TOML text.

    Keys are paths as the parsed document sees them: ``("steps", 2, "upto")`` is the ``upto``
    key of the third ``[[steps]]`` table, ``("options", "upto")`` the ``[options.upto]`` header.
    Keys inside inline tables and multi-line arrays are not listed separately; callers look up
    the longest listed prefix (:meth:`_Source.where`).
    """
    out: dict[Key, tuple[int, int]] = {}
    table: Key = ()
    aot: dict[Key, int] = {}
    in_string: str | None = None
    depth = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            end = line.find(in_string)
            if end < 0:
                continue
            rest = line[end + 3 :]
            in_string = None
            depth += _bracket_delta(rest)
            continue
        if depth > 0:
            delta, in_string = _scan_value(line)
            depth += delta
            continue
        stripped = line.lstrip()
        col = len(line) - len(stripped) + 1
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[["):
            keys = _split_key(stripped[2 : stripped.find("]]")])
            index = aot.get(keys, -1) + 1
            aot[keys] = index
            table = keys + (index,)
            out.setdefault(keys, (lineno, col))
            out[table] = (lineno, col)
            continue
        if stripped.startswith("["):
            table = _split_key(stripped[1 : stripped.find("]")])
            out.setdefault(table, (lineno, col))
            continue
        eq = _find_equals(stripped)
        if eq < 0:
            continue
        keys = _split_key(stripped[:eq])
        for n in range(1, len(keys) + 1):
            out.setdefault(table + keys[:n], (lineno, col))
        delta, in_string = _scan_value(stripped[eq + 1 :])
        depth += delta
    return out


def _find_equals(s: str) -> int:
    quote = None
    for i, c in enumerate(s):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "=":
            return i
    return -1


def _split_key(s: str) -> Key:
    parts: list[str | int] = []
    for m in re.finditer(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[^.\s]+)\s*(?:\.|$)', s.strip()):
        part = m.group(1)
        if part[:1] in "\"'":
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


def _scan_value(s: str) -> tuple[int, str | None]:
    """Bracket depth change of a value's text, and an unterminated multi-line string opener."""
    depth = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "#":
            break
        if s.startswith('"""', i) or s.startswith("'''", i):
            delim = s[i : i + 3]
            end = s.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if c in "\"'":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if c == '"' and s[j] == "\\" else 1
            i = j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth, None


def _bracket_delta(s: str) -> int:
    return _scan_value(s)[0]


class _Source(FrozenRecord):
    """A recipe file's text and key positions, for error messages (read-only)."""

    __slots__ = ("path", "text", "positions")

    def __init__(self, path: str, text: str, positions: Mapping[Key, tuple[int, int]]) -> None:
        self.path = path
        self.text = text
        self.positions = positions

    def where(self, key: Key) -> Location:
        k = tuple(key)
        while k and k not in self.positions:
            k = k[:-1]
        line, col = self.positions.get(k, (1, 1))
        lines = self.text.splitlines()
        line_text = lines[line - 1] if 0 < line <= len(lines) else ""
        return Location(self.path, line, col, line_text)

    def error(self, key: Key, message: str, expected: str | None = None) -> RecipeError:
        return _error(self.where(key), message, expected)


def _error(loc: Location | None, message: str, expected: str | None = None) -> RecipeError:
    return RecipeError(Diagnostic("error", message, loc, expected, "recipe").render())


# --------------------------------------------------------------------------- data model
# Records, not dataclasses: ``apply`` imports this module, and each @dataclass costs ~1 ms to
# create at import (see rewriter.util.record).


class Option(Record):
    """A typed recipe option: set with ``--set name=value`` or ``apply(..., name=value)``."""

    __slots__ = ("name", "type", "default", "description", "required", "where")
    _no_repr = _no_compare = ("where",)

    def __init__(
        self,
        name: str,
        type: str = "string",
        default: Any = None,
        description: str = "",
        required: bool = False,
        where: Location | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.default = default
        self.description = description
        #: no default was given: the option must be set
        self.required = required
        self.where = where
        if self.type not in OPTION_TYPES:
            raise _error(
                self.where,
                f"option '{self.name}' has unknown type '{self.type}'",
                "one of " + ", ".join(OPTION_TYPES),
            )
        if self.default is None:
            self.required = True
        else:
            self.default = check_option_value(self, self.default, self.where)


def check_option_value(opt: Option, value: Any, where: Location | None = None) -> Any:
    """``value`` checked against the option's type (ints are accepted for floats)."""
    t = opt.type
    ok = (
        (t == "string" and isinstance(value, str))
        or (t == "bool" and isinstance(value, bool))
        or (t == "int" and isinstance(value, int) and not isinstance(value, bool))
        or (t == "float" and isinstance(value, int | float) and not isinstance(value, bool))
        or (t == "list" and isinstance(value, list | tuple))
    )
    if not ok:
        raise _error(
            where,
            f"option '{opt.name}' takes a {t}, not {type(value).__name__} {value!r}",
        )
    if t == "float":
        return float(value)
    if t == "list":
        return list(value)
    return value


def coerce_option(opt: Option, text: str) -> Any:
    """The typed value of ``--set name=text``."""
    t = opt.type
    try:
        if t == "string":
            return text
        if t == "int":
            return int(text, 0)
        if t == "float":
            return float(text)
        if t == "bool":
            low = text.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        # list: a TOML array, or comma-separated words
        if text.strip().startswith("["):
            value = _toml().loads(f"v = {text}")["v"]
            return list(value)
        return [part.strip() for part in text.split(",") if part.strip()]
    except (ValueError, TypeError, _toml().TOMLDecodeError):
        raise RecipeError(f"option {opt.name}={text!r}: not a valid {t}") from None


class Precondition(Record):
    """Checked before any step runs; ``on_fail = "skip"`` leaves the file unchanged instead."""

    __slots__ = ("has_layer", "format", "on_fail", "has_type")

    def __init__(
        self,
        has_layer: list[str] | None = None,
        format: str = "any",
        on_fail: str = "error",
        has_type: list[str] | None = None,
    ) -> None:
        self.has_layer: list[str] = [] if has_layer is None else has_layer
        self.format = format
        self.on_fail = on_fail
        #: layer types of which the net must have at least one layer each (any phase)
        self.has_type: list[str] = [] if has_type is None else has_type


class Step:
    """One step: ``Step("freeze", upto="pool2")``. ``from_`` stands for the key ``from``."""

    __slots__ = ("kind", "params", "source", "key", "recipe")

    def __init__(self, kind: str, /, **params: Any) -> None:
        self.kind = kind
        self.params: dict[str, Any] = {
            (k[:-1] if k.endswith("_") and k[:-1] in ("from", "type", "in") else k): v
            for k, v in params.items()
        }
        #: where it was read from, for messages (None when built in Python)
        self.source: _Source | None = None
        self.key: Key = ()
        self.recipe = ""

    def where(self, key: str | None = None) -> Location | None:
        if self.source is None:
            return None
        return self.source.where(self.key + ((key,) if key else ()))

    def label(self) -> str:
        where = self.where()
        at = f" at {where}" if where is not None else ""
        return f"step '{self.kind}'{at}"

    def error(
        self,
        message: str,
        key: str | None = None,
        expected: str | None = None,
        reason: str | None = None,
    ) -> RecipeError:
        """A RecipeError for this step, located at ``key`` when known."""
        where = self.where(key)
        bare = f"{self.kind}: {message}" + (f" (expected {expected})" if expected else "")
        if where is None:
            err = RecipeError(bare)
        else:
            err = _error(where, f"{self.kind}: {message}", expected)
        err.bare, err.reason = bare, reason
        return err

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    def with_params(self, params: dict[str, Any]) -> Step:
        new = Step(self.kind)
        new.params = params
        new.source, new.key, new.recipe = self.source, self.key, self.recipe
        return new

    def to_toml(self) -> str:
        lines = ["[[steps]]", f"step = {_toml_value(self.kind)}"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in self.params.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Step({self.kind!r}{', ' if args else ''}{args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Step) and (self.kind, self.params) == (other.kind, other.params)

    def __hash__(self) -> int:
        return hash(self.kind)

    def __getstate__(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


class Recipe(Record):
    """An ordered list of steps with typed options, preconditions and included recipes."""

    __slots__ = (
        "name",
        "steps",
        "description",
        "options",
        "preconditions",
        "includes",
        "path",
        "text",
    )
    _no_repr = ("text",)

    def __init__(
        self,
        name: str = "recipe",
        steps: list[Step] | None = None,
        description: str = "",
        options: dict[str, Option] | None = None,
        preconditions: Precondition | None = None,
        includes: list[Recipe] | None = None,
        path: Path | None = None,
        text: str | None = None,
    ) -> None:
        self.name = name
        self.steps: list[Step] = [] if steps is None else steps
        self.description = description
        self.options: dict[str, Option] = {} if options is None else options
        self.preconditions = Precondition() if preconditions is None else preconditions
        #: included recipes, already loaded (their steps run first, in this order)
        self.includes: list[Recipe] = [] if includes is None else includes
        self.path = path
        self.text = text
        if isinstance(self.options, list | tuple):
            self.options = {o.name: o for o in self.options}
        for i, step in enumerate(self.steps):
            if not isinstance(step, Step):
                raise RecipeError(f"recipe '{self.name}': steps[{i}] is not a Step")
            if not step.recipe:
                step.recipe = self.name
        _check_steps(self)

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe file (TOML); includes are resolved relative to its directory."""
        return _load_file(Path(path), chain=())

    @classmethod
    def builtin(cls, name: str) -> Recipe:
        """A recipe of the built-in catalogue (``rewriter recipes`` lists them)."""
        path = _builtin_path(name)
        if path is None:
            names = builtin_names()
            raise RecipeError(
                f"no built-in recipe named '{name}'{_hint(name, names)} "
                f"(built-in: {', '.join(names) or 'none'})"
            )
        return _load_file(path, chain=())

    @classmethod
    def from_text(cls, text: str, path: str | Path = "<recipe>") -> Recipe:
        return _load_text(text, Path(path), chain=())

    @classmethod
    def find(cls, spec: str | Path) -> Recipe:
        """A built-in name or a path (anything with a '/' or ending in .toml is a path)."""
        s = str(spec)
        if isinstance(spec, Path) or "/" in s or s.endswith(".toml") or Path(s).is_file():
            if not Path(s).is_file() and _builtin_path(s) is not None:
                return cls.builtin(s)
            return cls.load(s)
        return cls.builtin(s)

    # --- options and steps ---------------------------------------------------------------------
    def all_options(self) -> dict[str, Option]:
        """Own options plus those of included recipes (own declarations win)."""
        merged: dict[str, Option] = {}
        for inc in self.includes:
            for name, opt in inc.all_options().items():
                prev = merged.get(name)
                if prev is not None and prev.type != opt.type:
                    raise _error(
                        opt.where,
                        f"option '{name}' is a {opt.type} here but a {prev.type} in another "
                        "included recipe",
                    )
                merged[name] = opt
        merged.update(self.options)
        return merged

    def all_steps(self) -> list[Step]:
        out: list[Step] = []
        for inc in self.includes:
            out.extend(inc.all_steps())
        out.extend(self.steps)
        return out

    def all_preconditions(self) -> list[tuple[Precondition, Recipe]]:
        out: list[tuple[Precondition, Recipe]] = []
        for inc in self.includes:
            out.extend(inc.all_preconditions())
        out.append((self.preconditions, self))
        return out

    def option_values(
        self, values: Mapping[str, Any] | None = None, /, **kw: Any
    ) -> dict[str, Any]:
        """Every option's value: ``values`` (typed, or strings from the CLI) over defaults."""
        opts = self.all_options()
        out: dict[str, Any] = {}
        given = dict(values or {})
        given.update(kw)
        for name in given:
            if name not in opts:
                known = ", ".join(sorted(opts)) or "none"
                raise RecipeError(
                    f"recipe '{self.name}' has no option '{name}'{_hint(name, opts)} "
                    f"(options: {known})"
                )
        for name, opt in opts.items():
            if name in given:
                value = given[name]
                if isinstance(value, str) and opt.type != "string":
                    value = coerce_option(opt, value)
                out[name] = check_option_value(opt, value)
            elif opt.required:
                raise RecipeError(
                    f"recipe '{self.name}' needs option '{name}'"
                    + (f" ({opt.description})" if opt.description else "")
                    + f": --set {name}=... on the command line, or {name}=... in Python"
                )
            else:
                out[name] = opt.default
        return out

    def resolve(self, values: Mapping[str, Any] | None = None, /, **kw: Any) -> list[Step]:
        """The steps to run, with ``{option}`` placeholders substituted and values checked."""
        opts = self.option_values(values, **kw)
        from .step_table import validate_step

        out: list[Step] = []
        for step in self.all_steps():
            params = {k: _substitute(step, k, v, opts) for k, v in step.params.items()}
            resolved = step.with_params(params)
            validate_step(resolved, resolved_values=True)
            out.append(resolved)
        return out

    def resolve_preconditions(self, values: Mapping[str, Any] | None = None) -> list[Precondition]:
        opts = self.option_values(values)
        out: list[Precondition] = []
        for pre, owner in self.all_preconditions():
            dummy = Step("preconditions")
            dummy.source = _source_of(owner)
            dummy.key = ("preconditions",)
            layers: list[str] = []
            for name in pre.has_layer:
                value = _substitute(dummy, "has_layer", name, opts)
                layers.extend(value if isinstance(value, list) else [str(value)])
            out.append(
                Precondition([n for n in layers if n], pre.format, pre.on_fail, pre.has_type)
            )
        return out

    def to_toml(self) -> str:
        """The recipe as TOML (includes are listed by name; options and steps in full)."""
        lines = [f"name = {_toml_value(self.name)}"]
        if self.description:
            lines.append(f"description = {_toml_value(self.description)}")
        if self.includes:
            lines.append(f"include = {_toml_value([r.name for r in self.includes])}")
        for opt in self.options.values():
            lines += ["", f"[options.{_toml_key(opt.name)}]", f"type = {_toml_value(opt.type)}"]
            if not opt.required:
                lines.append(f"default = {_toml_value(opt.default)}")
            if opt.description:
                lines.append(f"description = {_toml_value(opt.description)}")
        for step in self.steps:
            lines += ["", step.to_toml()]
        return "\n".join(lines) + "\n"


def _source_of(recipe: Recipe) -> _Source | None:
    if recipe.text is None or recipe.path is None:
        return None
    return _Source(str(recipe.path), recipe.text, key_positions(recipe.text))


def _substitute(step: Step, key: str, value: Any, opts: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            sub = _substitute(step, key, item, opts)
            if isinstance(item, str) and isinstance(sub, list) and _whole(item):
                out.extend(sub)
            else:
                out.append(sub)
        return out
    if not isinstance(value, str):
        return value
    whole = _whole(value)
    if whole is not None:
        if whole not in opts:
            raise step.error(f"unknown option '{{{whole}}}'{_hint(whole, opts)}", key)
        return opts[whole]

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = m.group(1)
        if name not in opts:
            raise step.error(f"unknown option '{{{name}}}'{_hint(name, opts)}", key)
        v = opts[name]
        if isinstance(v, list):
            raise step.error(f"list option '{name}' cannot be part of a longer string", key)
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    return _PLACEHOLDER.sub(repl, value)


def _whole(value: str) -> str | None:
    m = _PLACEHOLDER.fullmatch(value)
    return m.group(1) if m is not None and m.group(1) else None


def _check_steps(recipe: Recipe) -> None:
    """Static checks: known step kinds and keys, typed values, placeholders that exist."""
    from .step_table import validate_step

    opts = recipe.all_options()
    for step in recipe.steps:
        validate_step(step, resolved_values=False)
        for key, value in step.params.items():
            for name in placeholders(value):
                if name not in opts:
                    raise step.error(
                        f"'{{{name}}}' names no option of recipe '{recipe.name}'"
                        f"{_hint(name, opts)}",
                        key,
                    )


# --------------------------------------------------------------------------- the catalogue


def builtin_dir() -> Path:
    """The built-in catalogue: ``recipes/`` at the repository root (next to ``rewriter/``).

    An installed wheel carries the same files as package data, in ``rewriter/recipes/builtin``
    (``rewriter/recipes`` in layouts before issue 17, where that name was the data folder
    itself); all are searched. The package directory is found from this module's dotted name,
    so the answer does not depend on how deep in the package this module sits.
    """
    package = Path(__file__).resolve().parents[__name__.count(".") - 1]  # rewriter/
    for candidate in (package.parent / "recipes", package / "recipes" / "builtin"):
        if candidate.is_dir():
            return candidate
    legacy = package / "recipes"
    if legacy.is_dir() and any(legacy.glob("*.toml")):
        return legacy
    return package.parent / "recipes"


def builtin_names() -> list[str]:
    d = builtin_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def _builtin_path(name: str) -> Path | None:
    if not _NAME_RE.match(name):
        return None
    stem = name[:-5] if name.endswith(".toml") else name
    path = builtin_dir() / f"{stem}.toml"
    return path if path.is_file() else None


# --------------------------------------------------------------------------- reading files


def _load_file(path: Path, chain: tuple[Path, ...]) -> Recipe:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: recipe is not UTF-8 text ({e.reason})") from None
    return _load_text(text, path, chain)


_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def _load_text(text: str, path: Path, chain: tuple[Path, ...]) -> Recipe:
    toml = _toml()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_POS.search(msg)
        line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        lines = text.splitlines()
        line_text = lines[line - 1] if 0 < line <= len(lines) else ""
        loc = Location(str(path), line, col, line_text)
        raise _error(loc, "not valid TOML: " + _TOML_POS.sub("", msg).strip()) from None
    src = _Source(str(path), text, key_positions(text))
    for top in data:
        if top not in _TOP_KEYS:
            raise src.error(
                (top,),
                f"unknown recipe key '{top}'{_hint(top, _TOP_KEYS)}",
                "one of " + ", ".join(_TOP_KEYS),
            )
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise src.error(("name",), "'name' must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise src.error(("description",), "'description' must be a string")

    here = path.resolve() if path.exists() else path
    includes: list[Recipe] = []
    raw_inc = data.get("include", [])
    if isinstance(raw_inc, str):
        raw_inc = [raw_inc]
    if not isinstance(raw_inc, list) or not all(isinstance(x, str) for x in raw_inc):
        raise src.error(("include",), "'include' must be a list of recipe names or paths")
    for i, spec in enumerate(raw_inc):
        includes.append(_include(spec, here, chain + (here,), src, ("include", i)))

    options: dict[str, Option] = {}
    raw_opts = data.get("options", {})
    if not isinstance(raw_opts, dict):
        raise src.error(("options",), "'options' must be a table of option tables")
    for oname, spec in raw_opts.items():
        key: Key = ("options", oname)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", oname):
            raise src.error(key, f"option name '{oname}' is not an identifier")
        if not isinstance(spec, dict):
            raise src.error(key, f"option '{oname}' must be a table with type/default/description")
        for k in spec:
            if k not in _OPTION_KEYS:
                raise src.error(
                    key + (k,),
                    f"unknown key '{k}' in option '{oname}'{_hint(k, _OPTION_KEYS)}",
                    "one of " + ", ".join(_OPTION_KEYS),
                )
        otype = spec.get("type", "string")
        odesc = spec.get("description", "")
        if not isinstance(odesc, str):
            raise src.error(key + ("description",), "an option's description must be a string")
        where = src.where(key + ("type",) if "type" in spec else key)
        if not isinstance(otype, str) or otype not in OPTION_TYPES:
            raise _error(
                where,
                f"option '{oname}' has unknown type {otype!r}",
                "one of " + ", ".join(OPTION_TYPES),
            )
        default = spec.get("default")
        dwhere = src.where(key + ("default",)) if "default" in spec else where
        opt = Option(oname, otype, None, odesc, where=dwhere)
        if default is not None:
            opt.default = check_option_value(opt, default, dwhere)
            opt.required = False
        options[oname] = opt

    pre = Precondition()
    raw_pre = data.get("preconditions", {})
    if not isinstance(raw_pre, dict):
        raise src.error(("preconditions",), "'preconditions' must be a table")
    for k, v in raw_pre.items():
        pkey: Key = ("preconditions", k)
        if k not in _PRECONDITION_KEYS:
            raise src.error(
                pkey,
                f"unknown precondition '{k}'{_hint(k, _PRECONDITION_KEYS)}",
                "one of " + ", ".join(_PRECONDITION_KEYS),
            )
        if k in ("has_layer", "has_type"):
            if isinstance(v, str):
                v = [v]
            what = "layer name" if k == "has_layer" else "layer type"
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise src.error(pkey, f"{k} takes a {what} or a list of them")
            setattr(pre, k, list(v))
        elif k == "format":
            if v not in FORMATS:
                raise src.error(pkey, f"unknown format {v!r}", "one of " + ", ".join(FORMATS))
            pre.format = v
        elif k == "on_fail":
            if v not in ("error", "skip"):
                raise src.error(pkey, f"on_fail must be 'error' or 'skip', not {v!r}")
            pre.on_fail = v

    steps: list[Step] = []
    raw_steps = data.get("steps", [])
    if not isinstance(raw_steps, list):
        raise src.error(("steps",), "'steps' must be an array of tables ([[steps]])")
    for i, raw in enumerate(raw_steps):
        skey: Key = ("steps", i)
        if not isinstance(raw, dict):
            raise src.error(skey, f"steps[{i}] must be a table")
        kind = raw.get("step")
        if not isinstance(kind, str):
            raise src.error(skey, "a step needs 'step = \"<kind>\"'", 'e.g. step = "freeze"')
        step = Step(kind)
        step.params = {k: v for k, v in raw.items() if k != "step"}
        step.source, step.key, step.recipe = src, skey, name
        steps.append(step)
    if not steps and not includes:
        raise src.error((), f"recipe '{name}' has no steps and includes nothing")

    return Recipe(
        name=name,
        steps=steps,
        description=description,
        options=options,
        preconditions=pre,
        includes=includes,
        path=path,
        text=text,
    )


def _include(spec: str, here: Path, chain: tuple[Path, ...], src: _Source, key: Key) -> Recipe:
    """Resolve one ``include`` entry: a built-in name, or a path under the includer's folder."""
    is_path = "/" in spec or spec.endswith(".toml") or spec.startswith(".")
    if is_path:
        base = here.parent
        target = (base / spec).resolve()
        allowed = (base.resolve(), builtin_dir().resolve())
        if not any(target == a or a in target.parents for a in allowed):
            raise src.error(
                key,
                f"include '{spec}' is outside the recipe's folder {base} and the built-in "
                "catalogue; a recipe may only include files below its own folder",
            )
        if not target.is_file():
            raise src.error(key, f"included recipe '{spec}' not found (looked for {target})")
    else:
        found = _builtin_path(spec)
        if found is None:
            raise src.error(
                key,
                f"no built-in recipe named '{spec}'{_hint(spec, builtin_names())}",
                "a built-in name or a path such as ./other.toml",
            )
        target = found.resolve()
    if target in chain:
        names = [p.name for p in chain[chain.index(target) :]] + [target.name]
        raise src.error(key, "include cycle: " + " -> ".join(names))
    return _load_file(target, chain)


# --------------------------------------------------------------------------- one-off steps


def parse_step_spec(spec: str) -> Step:
    """``--step 'freeze upto=pool2 zero_decay=true'``: a step from its command-line form.

    Values are typed by the step's own key types (lists take commas: ``layers=a,b``).
    """
    import shlex

    from .step_table import STEPS, coerce_key

    try:
        words = shlex.split(spec)
    except ValueError as e:
        raise RecipeError(f"--step {spec!r}: {e}") from None
    if not words:
        raise RecipeError("--step needs a step kind, e.g. --step 'freeze upto=conv3'")
    kind = words[0]
    if kind not in STEPS:
        raise RecipeError(
            f"--step {spec!r}: unknown step '{kind}'{_hint(kind, STEPS)} "
            f"(steps: {', '.join(sorted(STEPS))})"
        )
    params: dict[str, Any] = {}
    for word in words[1:]:
        k, eq, v = word.partition("=")
        if not eq or not k:
            raise RecipeError(f"--step {spec!r}: expected key=value, not {word!r}")
        params[k] = coerce_key(kind, k, v, spec)
    step = Step(kind)
    step.params = params
    step.recipe = "--step"
    return step


def recipe_from_steps(steps: Sequence[Step]) -> Recipe:
    return Recipe(name="--step", steps=list(steps), description="one-off steps")
