"""The kinds of fault the demo injects, with what each does (shown by ``demo --help``).

Kept free of imports so that the command line can list them without loading the demo."""

from __future__ import annotations

FAULT_KINDS: dict[str, str] = {
    "kill": "SIGKILL a worker process",
    "hang": "SIGSTOP a worker process (it stops heartbeating)",
    "network": "a connection reset on a worker's report",
    "database": "break the coordinator's database connection",
    "scheduler": "stop the coordinator's scheduler loop",
    "burst": "20-60 identical reports from many hosts at once",
    "rehang": "SIGSTOP a worker whose local state is wedged: it hangs again after a plain restart, a "
              "replacement works",
}
# What ``demo`` injects without --faults: every kind but ``rehang`` (which needs the opt-in
# ``replace`` strategy to be recovered for good).
DEFAULT_KINDS: list[str] = [k for k in FAULT_KINDS if k != "rehang"]


def parse_kinds(text: str) -> list[str]:
    """``"kill,hang"`` -> ``["kill", "hang"]``; ValueError naming the unknown kinds and the accepted ones."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; accepted: {', '.join(FAULT_KINDS)}")
    return list(dict.fromkeys(kinds))
