"""Errors the project raises on purpose.

Every error a user can meet carries enough to act on without a traceback: where (``path:line:col``),
an excerpt with a caret under the spot, and what was expected. The CLI prints ``str(error)`` and
exits 2; anything else escaping the CLI is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class RewriterError(Exception):
    """Base of every error the project raises deliberately."""

    exit_code = 2


class Location:
    """A point in a source text, 1-based line and column (columns count characters).

    Read-only by convention. The classes here are written out, not ``@dataclass``: every command
    imports this module, and creating a dataclass costs ~1 ms at import (see util/record.py)."""

    __slots__ = ("path", "line", "col", "line_text")

    def __init__(self, path: str, line: int, col: int, line_text: str = "") -> None:
        self.path = path
        self.line = line
        self.col = col
        self.line_text = line_text

    def _values(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.col, self.line_text)

    def __repr__(self) -> str:
        return (
            f"{type(self).__qualname__}(path={self.path!r}, line={self.line!r}, "
            f"col={self.col!r}, line_text={self.line_text!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Location)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    def excerpt(self) -> str:
        if not self.line_text and self.col <= 1:
            return ""
        text = self.line_text.replace("\t", " ")
        return f"  {text}\n  {' ' * (self.col - 1)}^"


def locate(source: str, offset: int, path: str = "<string>") -> Location:
    """Turn a character offset into a Location (only used on error paths, so O(n) is fine)."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    line_start = source.rfind("\n", 0, offset) + 1
    line_end = source.find("\n", offset)
    if line_end < 0:
        line_end = len(source)
    line_text = source[line_start:line_end].rstrip("\r")
    if len(line_text) > 200:
        lo = max(0, offset - line_start - 100)
        line_text = line_text[lo : lo + 200]
        col = offset - line_start - lo + 1
    else:
        col = offset - line_start + 1
    printable = "".join(c if c.isprintable() or c == "\t" else "?" for c in line_text)
    return Location(path, line, col, printable)


class Diagnostic:
    """One finding about an input: an error (the file is refused) or a warning (it is kept)."""

    __slots__ = (
        "severity",
        "message",
        "location",
        "expected",
        "code",
        "hint",
        "suggestion",
    )

    def __init__(
        self,
        severity: str,  # "error" | "warning"
        message: str,
        location: Location | None = None,
        expected: str | None = None,
        code: str = "",
        hint: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        self.severity = severity
        self.message = message
        self.location = location
        self.expected = expected
        self.code = code
        #: what to do next (a did-you-mean, the flag to pass), printed under the excerpt
        self.hint = hint
        #: the known name an unknown one is most likely a typo of (not printed: the message
        #: says "did you mean"); unknown names without one look like a fork's fields
        self.suggestion = suggestion

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Diagnostic)
        return self._values() == other._values()

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        text = f"{where}{self.severity}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        if self.location:
            excerpt = self.location.excerpt()
            if excerpt:
                text += "\n" + excerpt
        if self.hint:
            text += f"\n  help: {self.hint}"
        return text

    def as_dict(self) -> dict[str, object]:
        loc = self.location
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "expected": self.expected,
            "path": loc.path if loc else None,
            "line": loc.line if loc else None,
            "col": loc.col if loc else None,
            "hint": self.hint,
        }


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest candidate (difflib), or None if none is close."""
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class ParseError(RewriterError):
    """The text is not protobuf text format; raised by the lossless parser."""

    def __init__(self, message: str, location: Location, expected: str | None = None) -> None:
        self.diagnostic = Diagnostic("error", message, location, expected, code="syntax")
        #: the part of the document parsed before the error (a cst.Document), when known
        self.partial: Any = None
        super().__init__(self.diagnostic.render())

    @property
    def location(self) -> Location:
        assert self.diagnostic.location is not None
        return self.diagnostic.location


class SchemaErrors(RewriterError):
    """The text parsed but does not bind to the schema; carries every error found."""

    def __init__(self, diagnostics: list[Diagnostic] | None = None) -> None:
        self.diagnostics: list[Diagnostic] = [] if diagnostics is None else diagnostics
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(diagnostics={self.diagnostics!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, SchemaErrors)
        return self.diagnostics == other.diagnostics

    def __str__(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


class UsageError(RewriterError):
    """The command line or the API was called wrongly."""
