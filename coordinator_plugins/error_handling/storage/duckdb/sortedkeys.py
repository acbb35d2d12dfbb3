"""A sorted set of keys in blocks, for the paging view (:mod:`.order`): adding, removing and
finding a key cost O(log n) plus a short move inside one block, however many keys there are, and
a walk newest first from any key reads only the keys it returns.

A plain sorted list would do for reads, but moving a group's key (every new occurrence moves it to
the end) deletes from the middle, a memmove of the whole tail; blocks of at most ``2 * LOAD`` keys
bound that move. Not thread-safe: :class:`.order.GroupOrder` holds its lock around every call.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from typing import Any

LOAD = 512  # a block splits past 2 * LOAD keys; an emptied block goes away

Key = tuple[Any, ...]  # (last_seen us, error_id)


class SortedKeys:
    """Unique keys in ascending order, in blocks; ``_maxes[i]`` is block ``i``'s last key."""

    __slots__ = ("_blocks", "_len", "_maxes")

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        """From ``keys`` already sorted ascending and unique (a build from the table)."""
        ordered = list(keys)
        self._blocks: list[list[Key]] = [ordered[i : i + LOAD] for i in range(0, len(ordered), LOAD)]
        self._maxes: list[Key] = [b[-1] for b in self._blocks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    @property
    def block_count(self) -> int:
        """How many blocks hold the keys (splits and emptied blocks show here)."""
        return len(self._blocks)

    def add(self, key: Key) -> None:
        """Insert ``key`` (not already present). The newest key appends to the last block."""
        maxes = self._maxes
        if not maxes:
            self._blocks.append([key])
            maxes.append(key)
            self._len = 1
            return
        if key > maxes[-1]:  # the common case: a group seen just now
            pos = len(maxes) - 1
            block = self._blocks[pos]
            block.append(key)
            maxes[pos] = key
        else:
            pos = bisect_left(maxes, key)
            block = self._blocks[pos]
            insort(block, key)
        self._len += 1
        if len(block) > 2 * LOAD:
            half = block[LOAD:]
            del block[LOAD:]
            self._blocks.insert(pos + 1, half)
            maxes[pos] = block[-1]
            maxes.insert(pos + 1, half[-1])

    def remove(self, key: Key) -> bool:
        """Remove ``key``; False when it is not there."""
        maxes = self._maxes
        pos = bisect_left(maxes, key)
        if pos == len(maxes):
            return False
        block = self._blocks[pos]
        i = bisect_left(block, key)
        if i == len(block) or block[i] != key:
            return False
        del block[i]
        self._len -= 1
        if not block:
            del self._blocks[pos]
            del maxes[pos]
        elif i == len(block):
            maxes[pos] = block[-1]
        return True

    def __contains__(self, key: Key) -> bool:
        pos = bisect_left(self._maxes, key)
        if pos == len(self._maxes):
            return False
        block = self._blocks[pos]
        i = bisect_left(block, key)
        return i < len(block) and block[i] == key

    def below(self, after: Key | None = None) -> Iterator[Key]:
        """Keys strictly before ``after`` (every key when None), the greatest first. The set must
        not change while the iterator is in use."""
        blocks = self._blocks
        if not blocks:
            return
        if after is None:
            pos, i = len(blocks) - 1, len(blocks[-1])
        else:
            pos = bisect_left(self._maxes, after)
            if pos == len(blocks):
                pos, i = pos - 1, len(blocks[-1])
            else:
                i = bisect_left(blocks[pos], after)
        block = blocks[pos]
        while True:
            while i > 0:
                i -= 1
                yield block[i]
            pos -= 1
            if pos < 0:
                return
            block = blocks[pos]
            i = len(block)

    def __iter__(self) -> Iterator[Key]:
        for block in self._blocks:
            yield from block
