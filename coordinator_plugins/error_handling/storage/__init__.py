"""Persistence: the ``Store`` contract and its implementations. SQL lives here and nowhere else."""
