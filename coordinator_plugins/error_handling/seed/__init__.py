"""Converting a database file the seed framework wrote: what its rows mean here (classification,
grouping, the learners' replay of its recovery records). The DuckDB store reads and writes the
rows; this package is the hook it is given (``open_store(config, seed=convert_seed)``)."""

from coordinator_plugins.error_handling.seed.convert import convert_seed
from coordinator_plugins.error_handling.seed.values import SeedMigrationReport

__all__ = ["SeedMigrationReport", "convert_seed"]
