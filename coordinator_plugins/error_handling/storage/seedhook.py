"""The seam through which the DuckDB store converts a database file the seed framework wrote.

The store owns the SQL: it recognises a seed-written file, reads the seed's tables row by row
(a :class:`SeedSource`), and writes what comes back (a :class:`SeedConversion`) in the one
transaction that drops the seed's tables and creates its own. What the rows mean (classifying
the seed's errors, grouping them, replaying its recovery records through the learners) is the
domain's, in ``error_handling/seed/``, handed to the store at construction as a
:data:`SeedHook` (``open_store`` does it). A store given no hook refuses such a file.

A conversion is a set of records, the same that cross the ``Store`` protocol, plus the seed's ids
that became other ids of a group (``aliases``, written to ``error_aliases``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator_plugins.error_handling.storage.records import (
    AliasRecord,
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)


class SeedSource(Protocol):
    """The seed's tables of a seed-written file, as the store reads them."""

    @property
    def tables(self) -> Mapping[str, set[str]]:
        """The seed's tables that the file has in the seed's layout, with their columns."""

    @property
    def read(self) -> Mapping[str, int]:
        """Rows read so far per table (a table appears once its reading started)."""

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        """The rows of ``table`` as dicts of the seed's columns (none when the file lacks it). Read
        in chunks: consume one table's rows before asking for another's."""


@dataclass
class SeedConversion:
    """What a seed-written file becomes: the records the store writes in its own layout.

    ``groups`` are new groups, each written with its whole ``aggregated_count``; ``aliases`` the
    seed's ids folded into them (each keeps answering for its group); ``runs`` are written oldest
    first; ``report`` is what the conversion did (kept in
    ``StoreStatus.seed_migration``), and ``summary`` the line the store logs once it committed."""

    groups: list[GroupRecord] = field(default_factory=list)
    occurrences: list[OccurrenceRecord] = field(default_factory=list)
    aliases: list[AliasRecord] = field(default_factory=list)
    runs: list[StrategyRun] = field(default_factory=list)
    levels: list[LevelRecord] = field(default_factory=list)
    scores: list[StrategyScore] = field(default_factory=list)
    timeouts: list[TimeoutRecord] = field(default_factory=list)
    learner: list[LearnerRecord] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


SeedHook = Callable[[SeedSource], SeedConversion]

__all__ = ["SeedConversion", "SeedHook", "SeedSource"]
