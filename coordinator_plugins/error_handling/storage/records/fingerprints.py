"""The fingerprints of stored groups that are not in memory, in a few bytes each.

A group the index no longer holds (evicted, or not loaded at startup) must be found again when
its error recurs, or a second group would open. A Python set of 64-bit keys of its fingerprints,
built from a list of them all, cost 90 bytes a group kept and 147 at the peak (RSS once started
over 1,000,000 stored groups: 350 MiB, 96 on an empty database); a Bloom filter costs 16 bits
(153-179 MiB). It never answers "no" for a fingerprint it was given, so grouping stays exact; a
wrong "maybe" (about 0.4%
of the fingerprints it was never given, fewer while a layer is not full) costs one batched
lookup that finds nothing. Nothing is ever removed: a fingerprint whose group is gone from the
store (retention) costs at most that one lookup, after which its new group is in memory.

The filter grows by layers: when one holds its capacity, the next is sized for everything added
so far, so the layers stay few (a doubling each) and none is ever rebuilt; each further layer
spends 2 bits more a fingerprint, so that the false positives of all the layers together stay
near 1% (ten doublings, a thousand times the first layer, cost 36 bits a fingerprint).
"""

from __future__ import annotations

import hashlib
import random
from array import array
from collections.abc import Iterable

_BITS_PER_ITEM = 16  # of a first layer: about 0.4% false positives when full
_TIGHTEN = 2  # more bits a fingerprint in each further layer, so the layers' rates stay small together
_FIRST = 65_536  # the capacity of a first layer sized for nothing in particular (128 KiB)
# A blocked Bloom filter: a fingerprint sets k bits of one 64-bit word, a pattern picked from a
# table of 16,384 (one word read or written a fingerprint, and no loop over k in Python: four
# times faster to fill than k probes over the whole array, for a little more false positives).
_PATTERN_BITS = 14
_PATTERN_MASK = (1 << _PATTERN_BITS) - 1
_PATTERNS: dict[int, array[int]] = {}
_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd: multiplying by it mod 2**128 is a bijection
_M128 = (1 << 128) - 1


def _patterns(k: int) -> array[int]:
    """16,384 words of k bits each, the same on every run (a fixed seed)."""
    table = _PATTERNS.get(k)
    if table is None:
        rng = random.Random(k)
        table = _PATTERNS[k] = array("Q", (sum(1 << b for b in rng.sample(range(64), k))
                                           for _ in range(1 << _PATTERN_BITS)))
    return table


def _hash(fp: str) -> int:
    """128 well-mixed bits of ``fp``: a fingerprint is hex (a blake2b) in practice, read as a
    number; any other string is hashed first. Folded and multiplied: fingerprints that are
    counters (tests, imports) spread as well as hashes do."""
    try:
        v = int(fp, 16)
    except ValueError:
        v = int.from_bytes(hashlib.blake2b(fp.encode("utf-8", "surrogatepass"), digest_size=16).digest(), "little")
    return ((v ^ (v >> 64)) * _MIX) & _M128


class _Layer:
    __slots__ = ("blocks", "capacity", "count", "n", "patterns")

    def __init__(self, capacity: int, bits_per_item: int) -> None:
        self.capacity = max(1, capacity)
        self.n = max(1, -(-self.capacity * bits_per_item // 64))  # 64-bit words
        self.blocks = array("Q", bytes(8 * self.n))
        self.patterns = _patterns(min(8, max(1, round(bits_per_item * 0.4))))
        self.count = 0


class StoredFingerprints:
    """A set of fingerprints that answers "maybe" or "no" (``fp in s``), never "no" for one added.

    ``capacity``: the fingerprints the first layer is sized for (more may be added: a layer is
    added); ``bits_per_item``: its bits per fingerprint; ``grow``: False keeps a single layer,
    however full (only to force false positives in tests: a full layer answers "maybe" to
    almost anything, which costs lookups, never exactness).
    """

    def __init__(self, capacity: int = 0, bits_per_item: int = _BITS_PER_ITEM, grow: bool = True) -> None:
        if bits_per_item < 1:
            raise ValueError("bits_per_item must be at least 1")
        self._layers: list[_Layer] = []
        self._capacity = capacity
        self._bits_per_item = bits_per_item
        self._grow = grow
        self._count = 0

    def __len__(self) -> int:
        """Fingerprints added (a fingerprint added twice counts twice)."""
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    @property
    def nbytes(self) -> int:
        """The bytes of its bit arrays (what grows with the fingerprints)."""
        return sum(8 * layer.n for layer in self._layers)

    @property
    def layers(self) -> int:
        return len(self._layers)

    def add(self, fp: str) -> None:
        layer = self._open_layer()
        x = _hash(fp)
        layer.blocks[(x >> 64) % layer.n] |= layer.patterns[(x >> 50) & _PATTERN_MASK]
        layer.count += 1
        self._count += 1

    def update(self, fingerprints: Iterable[str]) -> None:
        """Add each (the empty string is skipped): the loop of a startup over every stored group."""
        layer = self._open_layer()
        blocks, n, patterns, room = layer.blocks, layer.n, layer.patterns, layer.capacity - layer.count
        added = 0
        for fp in fingerprints:
            if not fp:
                continue
            if room <= 0 and self._grow:
                layer.count += added
                self._count += added
                added = 0
                layer = self._open_layer()
                blocks, n, patterns, room = layer.blocks, layer.n, layer.patterns, layer.capacity - layer.count
            x = _hash(fp)
            blocks[(x >> 64) % n] |= patterns[(x >> 50) & _PATTERN_MASK]
            added += 1
            room -= 1
        layer.count += added
        self._count += added

    def merge(self, other: StoredFingerprints) -> None:
        """Hold every fingerprint ``other`` holds too (its layers join these; it is left as it is
        and must not be added to afterwards)."""
        if other is self or not other._layers:
            return
        current = self._layers.pop() if self._layers else None
        self._layers.extend(other._layers)
        if current is not None:
            self._layers.append(current)  # the layer being filled stays the last one
        self._count += other._count

    def __contains__(self, fp: object) -> bool:
        if not self._count or not isinstance(fp, str):
            return False
        x = _hash(fp)
        block, pattern = x >> 64, (x >> 50) & _PATTERN_MASK
        for layer in self._layers:
            m = layer.patterns[pattern]
            if layer.blocks[block % layer.n] & m == m:
                return True
        return False

    def _open_layer(self) -> _Layer:
        layers = self._layers
        if layers and (layers[-1].count < layers[-1].capacity or not self._grow):
            return layers[-1]
        capacity = max(self._capacity, self._count) if layers else (self._capacity or _FIRST)
        layer = _Layer(capacity, self._bits_per_item + _TIGHTEN * len(layers))
        layers.append(layer)
        return layer
