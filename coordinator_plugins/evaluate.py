"""``coordinator-plugins evaluate``: off-policy estimates of the selection policies from a farm's
own database (a DuckDB file or a ``postgresql://`` URL), read through the store.

:func:`evaluate_database` answers for one database, :func:`evaluate_databases` for a list (one
report each, in order); :func:`format_report` prints one. The estimators are
``error_handling.learning.offpolicy``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling.config import validate_config
from coordinator_plugins.error_handling.learning.offpolicy import POLICIES, START_REASON, evaluate_runs
from coordinator_plugins.error_handling.storage.base import StoreError
from coordinator_plugins.error_handling.storage.factory import open_store, scheme_of
from coordinator_plugins.error_handling.storage.records import StrategyRun
from coordinator_plugins.error_handling.strategies import BUILTIN_CLASSES, RecoveryLevel, RecoveryStrategy

DEFAULT_LIMIT = 100_000
# a strategy the catalogue does not know: its level guessed from the lowest recovery level it ran at
_LEVEL_OF_LOWEST_RUN = {1: RecoveryLevel.LOW, 2: RecoveryLevel.MEDIUM, 3: RecoveryLevel.MEDIUM,
                        4: RecoveryLevel.HIGH, 5: RecoveryLevel.CRITICAL}


class EvaluationError(ValueError):
    """The database cannot be evaluated: missing, unreadable, or without logged decisions."""


class _Logged(RecoveryStrategy):
    """A strategy as the log knows it: its id, level and the categories it ran for (never run)."""

    def __init__(self, strategy_id: str, level: RecoveryLevel, categories: Iterable[str] | None) -> None:
        super().__init__(None, strategy_id, level, categories)
        self.strategy_id = strategy_id

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        raise NotImplementedError("a catalogue entry is never run")


def catalogue(runs: Iterable[StrategyRun]) -> tuple[list[RecoveryStrategy], list[RecoveryStrategy]]:
    """(registered, could run): the built-in strategies with their levels and categories (only
    those the adaptive policy's logged start draws name, when it logged any), then each other
    strategy the log names in order of appearance (any category, as a custom strategy declares
    by default; at the level the lowest recovery level it ran at implies, LOW for one never run);
    and the same strategies, each a candidate only for the error categories the log shows it
    running for (one never run for a category was not applicable there)."""
    lowest: dict[str, int] = {}
    categories: dict[str, set[str]] = {}
    drawn: dict[str, None] = {}  # the options of the adaptive policy's start draws: the registered ones
    for run in runs:
        lowest[run.strategy_id] = min(run.level, lowest.get(run.strategy_id, 9))
        context = run.context if isinstance(run.context, Mapping) else {}
        if context.get("category"):
            categories.setdefault(run.strategy_id, set()).add(str(context["category"]))
        decision = context.get("decision")
        if isinstance(decision, Mapping) and str(decision.get("reason") or "").startswith(START_REASON):
            drawn.update(dict.fromkeys(str(k) for k in decision.get("scores") or {}))
    registered: list[RecoveryStrategy] = [
        cls(None) for sid, cls in BUILTIN_CLASSES.items()  # type: ignore[call-arg]
        if not drawn or sid in drawn or sid in lowest
    ]
    for sid in [*drawn, *lowest]:  # the draws list the options in registration order
        if sid not in BUILTIN_CLASSES and all(s.strategy_id != sid for s in registered):
            registered.append(_Logged(sid, _LEVEL_OF_LOWEST_RUN.get(lowest.get(sid, 1), RecoveryLevel.LOW), None))
    could: list[RecoveryStrategy] = [
        _Logged(s.strategy_id, s.level, categories[s.strategy_id]) for s in registered if s.strategy_id in categories
    ]
    return registered, could


async def read_runs(database: str, limit: int = DEFAULT_LIMIT) -> list[StrategyRun]:
    """The newest ``limit`` strategy runs of ``database``, oldest first. EvaluationError when the
    store cannot open it (a missing file is refused before: opening would create it)."""
    try:
        store = open_store(validate_config({"database": database}))
        await store.open()
    except (StoreError, OSError, ValueError) as exc:
        raise EvaluationError(f"--database {database}: cannot be opened: {exc}") from exc
    try:
        runs = await store.strategy_runs(None, limit)
    finally:
        await store.close()
    return runs[::-1]


def evaluate_database(database: str, policies: Sequence[str] = POLICIES, limit: int = DEFAULT_LIMIT,
                      strategies: Sequence[RecoveryStrategy] | None = None, max_level: int = 5,
                      resamples: int = 400, seed: int = 0) -> dict[str, Any]:
    """The off-policy report of one database. EvaluationError when it cannot be read or holds
    no recovery whose choices were logged with their probabilities. ``strategies``: the farm's
    strategies in registration order (default: the built-ins and those the log names). Runs its
    own event loop; :func:`evaluate_database_async` is the same in a running one."""
    if scheme_of(database) is None and not Path(database).is_file():
        raise EvaluationError(f"--database {database}: no such file (give the plugin's DuckDB file or a "
                              "postgresql:// URL)")
    return asyncio.run(evaluate_database_async(database, policies, limit, strategies, max_level, resamples, seed))


async def evaluate_database_async(database: str, policies: Sequence[str] = POLICIES, limit: int = DEFAULT_LIMIT,
                                  strategies: Sequence[RecoveryStrategy] | None = None, max_level: int = 5,
                                  resamples: int = 400, seed: int = 0) -> dict[str, Any]:
    """:func:`evaluate_database` in a running event loop (the estimation itself runs on it)."""
    if scheme_of(database) is None and not await asyncio.to_thread(Path(database).is_file):
        raise EvaluationError(f"--database {database}: no such file (give the plugin's DuckDB file or a "
                              "postgresql:// URL)")
    runs = await read_runs(database, limit)
    if not runs:
        raise EvaluationError(f"--database {database}: no strategy run is logged in it: nothing to evaluate "
                              "(the plugin logs a run per recovery strategy it runs)")
    registry, could = catalogue(runs) if strategies is None else (list(strategies), list(strategies))
    report = evaluate_runs(runs, could, policies, max_level, resamples, seed, registry)
    if report["incidents"] == 0:
        raise EvaluationError(f"--database {database}: {len(runs)} runs, but none belongs to a recovery whose "
                              "choices were logged with their probability (runs written before decisions were "
                              "logged cannot be evaluated)")
    report["database"] = database
    report["read_limit"] = limit
    return report


def evaluate_databases(databases: Iterable[str], policies: Sequence[str] = POLICIES,
                       **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`evaluate_database` of each database, in order (one that fails raises)."""
    return [evaluate_database(db, policies, **kwargs) for db in databases]


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as text: what was read, what the log measured, and per target policy each
    estimator with its interval, the effective sample sizes, the support and the verdict."""
    logged = ", ".join(f"{k} {v}" for k, v in sorted(report["logged_policies"].items())) or "none"
    left = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in report["left_out"].items() if v)
    lines = [
        f"database: {report.get('database', '?')}",
        f"read: {report['runs']} strategy runs (newest {report.get('read_limit', '?')} at most), "
        f"{report['incidents']} recoveries evaluated" + (f"; left out: {left}" if left else ""),
        f"logged decisions by policy: {logged}"
        + (f"; adaptive choices whose logged probability the replay reproduces: {check['recomputed'] - check['differ']}"
           f" of {check['recomputed']}" if (check := report.get("replay_check") or {}).get("recomputed") else ""),
        f"measured in the log: first-try success {_fmt(report['measured']['first_try_success'])}, "
        f"strategy runs per incident {_fmt(report['measured']['runs_per_incident'])}",
    ]
    names = {"first_try_success": "first-try success", "runs_per_incident": "runs per incident"}
    for name, est in report["targets"].items():
        lines.append("")
        lines.append(f"policy {name}:")
        for metric, label in names.items():
            row = est["estimates"].get(metric, {})
            cells = []
            for e in ("ips", "snips", "dr"):
                v = row.get(e, {})
                ci = v.get("interval")
                cells.append(f"{e.upper()} {_fmt(v.get('value'))}"
                             + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""))
            lines.append(f"  {label:<18} " + "   ".join(cells))
        if est["incidents"]:
            ess, sup = est["effective_sample_size"], est["support"]
            lines.append(f"  effective sample size: {ess['first_choice']} (first choices), {ess['whole_recovery']} "
                         f"(whole recoveries) of {est['incidents']}; first choice agrees with the log in "
                         f"{est['agreement']:.0%}")
            lines.append(f"  support: target's first choice never made by the log {sup['never_tried']:.0%}, "
                         f"made fewer than 5 times {sup['rarely_tried']:.0%}")
            for c in est.get("first_choices", [])[:5]:
                n = c["logged_first"]
                if n < 5 and c["target_share"] >= 0.01:
                    lines.append(f"    {c['error_type']}: {c['strategy_id']} first in {c['target_share']:.0%} of "
                                 f"recoveries; the log ran it first {n} time" + "s" * (n != 1))
        if est["supported"]:
            lines.append("  verdict: the log supports these estimates")
        else:
            lines.append("  verdict: THE LOG CANNOT SUPPORT AN ESTIMATE for this policy: " + "; ".join(est["problems"]))
    lines.append("")
    lines.append("intervals: 95% percentile bootstrap over recoveries; the target's choice probabilities come from "
                 "its own code on the learner state replayed from the log")
    return "\n".join(lines)
