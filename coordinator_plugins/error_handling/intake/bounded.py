"""A dict bounded by entries and by the memory its callers estimate, for intake's caches."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A cache that starts over (empties itself) when an entry put in it would make it hold
    ``max_entries`` entries or more than ``budget`` bytes by the sizes its callers give. Lookups
    are dict's own (``get``, ``in``): the bounds cost nothing on a hit."""

    __slots__ = ("budget", "max_entries", "size")

    def __init__(self, max_entries: int, budget: int) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.budget = budget
        self.size = 0  # the estimated bytes of what it holds

    def put(self, key: K, value: V, size: int) -> None:
        self.size += size
        if len(self) >= self.max_entries or self.size > self.budget:
            self.clear()
            self.size = size
        self[key] = value

    def clear(self) -> None:
        super().clear()
        self.size = 0
