"""A plain record class: what ``@dataclass`` would generate for ``__repr__`` and ``__eq__``, read
from ``__slots__``, without creating code when the class is defined.

Python 3.11's ``@dataclass`` execs and compiles several methods for each class as its module is
imported (~0.6-1 ms per class, more when frozen): the ~30 of ours on a command's import path cost
~30 ms of every start. A subclass lists its fields in ``__slots__`` (in order) and writes
``__init__`` (a mutable default is ``None``, replaced by a new list or dict); it names in
``_no_repr`` / ``_no_compare`` the fields ``field(repr=False)`` / ``field(compare=False)`` left
out. One that stands for a frozen dataclass derives from :class:`FrozenRecord` (hashable; its
fields are read-only by convention, which is not enforced). No ``dataclasses.replace``,
``fields`` or ``asdict`` works on these.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["FrozenRecord", "Record"]


class Record:
    """``__repr__`` and ``__eq__`` over the fields in ``__slots__``; unhashable, like a dataclass
    with ``eq=True``."""

    __slots__: ClassVar[tuple[str, ...]] = ()
    _no_repr: ClassVar[tuple[str, ...]] = ()
    _no_compare: ClassVar[tuple[str, ...]] = ()
    # (defining __eq__ sets __hash__ to None, as for a dataclass with eq=True)

    def _values(self) -> tuple[Any, ...]:
        skip = self._no_compare
        return tuple(getattr(self, f) for f in self.__slots__ if f not in skip)

    def __repr__(self) -> str:
        skip = self._no_repr
        shown = (f"{f}={getattr(self, f)!r}" for f in self.__slots__ if f not in skip)
        return f"{type(self).__qualname__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()


class FrozenRecord(Record):
    """A :class:`Record` hashed over its fields, like a frozen dataclass (whose fields nobody
    assigns after ``__init__``; that is not enforced here)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())
