"""What the demo's summary and report say, read back through the plugin's HTTP API once the run
has gone quiet, so that every number is the database's: groups and their counts from
``GET /errors``, each recovery (and each strategy run in it) from the groups' recovery
histories, strategy evidence from ``GET /recovery/metrics`` and ``GET /recovery/strategies``.
A database reused from earlier runs is read before the run too, and only this run is counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from coordinator_plugins.error_handling.recovery.outcome import recovery_outcome

RAN = ("success", "failure", "timeout", "error")  # attempt outcomes of a strategy that ran


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str = "") -> None:
        self.session = session
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def get(self, path: str, **params: Any) -> Any:
        async with self.session.get(self.url + "/api" + path, params=params, headers=self.headers,
                                    timeout=aiohttp.ClientTimeout(total=60)) as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"GET /api{path}: {r.status} {body}")
            return body

    async def groups(self) -> list[dict[str, Any]]:
        """Every group in the database, newest first."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.get("/errors", status="all", limit=1000, **({"cursor": cursor} if cursor else {}))
            out += page["errors"]
            cursor = page["next_cursor"]
            if not cursor:
                return out

    async def history(self, error_id: str) -> list[dict[str, Any]]:
        return list((await self.get("/recovery/history", error_id=error_id))["history"])


@dataclass
class Before:
    """The database before the run: each group's count, and when the run started."""

    started: datetime
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Results:
    groups: list[dict[str, Any]]  # groups that had an occurrence during the run
    earlier_groups: int  # groups in the database that this run did not touch
    occurrences: int  # occurrences stored during the run
    recoveries: list[dict[str, Any]]  # every recovery that finished during the run, oldest first
    metrics: dict[str, Any]
    strategies: dict[str, Any]
    history_limit_reached: bool


async def before(api: ApiClient, started: datetime) -> Before:
    return Before(started, {g["error_id"]: int(g["aggregated_count"]) for g in await api.groups()})


def _after(ts: str | None, started: datetime) -> bool:
    return bool(ts) and datetime.fromisoformat(str(ts)) >= started


async def collect(api: ApiClient, prior: Before, history_limit: int = 50) -> Results:
    everything = await api.groups()
    groups = [g for g in everything if _after(g["last_seen"], prior.started)]
    histories = await asyncio.gather(*(api.history(g["error_id"]) for g in groups))
    recoveries: list[dict[str, Any]] = []
    capped = False
    for g, hist in zip(groups, histories, strict=True):
        capped |= len(hist) >= history_limit
        for entry in hist:
            if _after(entry.get("at"), prior.started):
                recoveries.append({**entry, "error_id": g["error_id"], "component": g["component"],
                                   "outcome": recovery_outcome(entry)})
    recoveries.sort(key=lambda r: str(r["at"]))
    return Results(
        groups=groups,
        earlier_groups=len(everything) - len(groups),
        occurrences=sum(int(g["aggregated_count"]) - prior.counts.get(g["error_id"], 0) for g in groups),
        recoveries=recoveries,
        metrics=await api.get("/recovery/metrics"),
        strategies=await api.get("/recovery/strategies"),
        history_limit_reached=capped,
    )


def tally(res: Results) -> dict[str, Any]:
    """The summary's numbers; each total is the sum of its parts."""
    outcomes = {o: 0 for o in ("succeeded", "failed", "nothing_applicable", "budget_deferred")}
    by_level: dict[int, dict[str, int]] = {}
    by_strategy: dict[str, dict[str, int]] = {}
    by_type_strategy: dict[tuple[str, str], dict[str, int]] = {}
    skipped = refused = 0
    ttr: list[float] = []
    for r in res.recoveries:
        outcomes[r["outcome"]] += 1
        lv = by_level.setdefault(int(r["recovery_level"]), {"recoveries": 0, "succeeded": 0})
        lv["recoveries"] += 1
        lv["succeeded"] += int(r["outcome"] == "succeeded")
        if r["outcome"] == "succeeded":
            ttr.append(float(r["execution_time"]))
        for a in r.get("attempts") or []:
            if a["outcome"] == "not_applicable":
                skipped += 1
            elif a["outcome"] == "budget_exhausted":
                refused += 1
            elif a["outcome"] in RAN:
                pair = (r["error_type"], a["strategy_id"])
                for d in (by_strategy.setdefault(a["strategy_id"], {"runs": 0, "succeeded": 0}),
                          by_type_strategy.setdefault(pair, {"runs": 0, "succeeded": 0})):
                    d["runs"] += 1
                    # a run's success counts once it held (SPEC 9), as /recovery/metrics counts it
                    d["succeeded"] += int(a["outcome"] == "success" and r.get("verification") != "recurred")
    return {
        "groups": len(res.groups),
        "open_groups": sum(1 for g in res.groups if g["resolution_status"] != "resolved"),
        "earlier_groups": res.earlier_groups,
        "occurrences": res.occurrences,
        "recoveries": len(res.recoveries),
        "outcomes": outcomes,
        "by_level": dict(sorted(by_level.items())),
        "strategy_runs": sum(d["runs"] for d in by_strategy.values()),
        "by_strategy": dict(sorted(by_strategy.items())),
        "by_type_strategy": dict(sorted(by_type_strategy.items())),
        "not_applicable": skipped,
        "budget_refusals": refused,
        "ttr": ttr,
        "history_limit_reached": res.history_limit_reached,
    }


def learned(res: Results, types: set[str]) -> dict[str, str]:
    """Per error type this run recovered: the strategy the learner ranks first, and its evidence."""
    out: dict[str, str] = {}
    for et, info in sorted((res.strategies.get("error_types") or {}).items()):
        if et not in types:
            continue
        tried = [s for s in info.get("strategies", []) if s.get("samples") and s.get("score") is not None]
        if not tried:
            continue
        best = max(tried, key=lambda s: s["score"])
        n = best["samples"]
        out[et] = (f"{best['strategy_id']} (score {best['score']:.2f}; {best['success_rate']:.0%} success over its "
                   f"last {n} sample{'' if n == 1 else 's'}); new groups start at L{info.get('start_level', 1)}")
    return out


def attribute(faults: list[dict[str, Any]], res: Results, t0: float) -> list[dict[str, Any]]:
    """Which recovery followed each fault: the first recovery that started after the fault and
    acted on what it hit (its worker, its error group, or its component)."""
    starts = []
    for r in res.recoveries:
        end = datetime.fromisoformat(str(r["at"])).timestamp()
        starts.append((end - float(r.get("execution_time") or 0.0), r))
    out = []
    for f in faults:
        target = f["target"]
        match = None
        for start, r in starts:
            if start < f["t"] - 0.25:
                continue
            workers = (r.get("targets") or {}).get("workers") or []
            if (("worker" in target and target["worker"] in workers)
                    or ("error_id" in target and target["error_id"] == r["error_id"])
                    or ("component" in target and target["component"] == r["component"])):
                match = r
                break
        out.append({**f, "at": f["t"] - t0, "recovery": match})
    return out
