"""A read-only sequence whose items are built when read.

Why: a big net has a hundred thousand layers, blobs and edges; a Python object for each one
costs more than the flat columns they are made from. The graph's blobs, the backward verdicts,
the diff's edges and the selection's neighbour lists keep columns and build an item on read;
this base gives them one way to index, slice and iterate.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

T = TypeVar("T")

__all__ = ["LazySequence"]


class LazySequence(Sequence[T]):
    """Subclasses give ``__len__`` and ``_item(i)`` for ``0 <= i < len``; indexing (negative
    indices included), slicing (a list, or what ``_slice`` makes) and iteration follow."""

    __slots__ = ()
    #: what an index counts, for the IndexError message
    _what = "item"

    def _item(self, i: int) -> T:
        raise NotImplementedError

    def _slice(self, items: Iterable[T]) -> Sequence[T]:
        return list(items)

    def __len__(self) -> int:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> Any:
        n = len(self)
        if isinstance(index, slice):
            return self._slice(map(self._item, range(*index.indices(n))))
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self._what} index out of range")
        return self._item(i)

    def __iter__(self) -> Iterator[T]:
        return map(self._item, range(len(self)))
