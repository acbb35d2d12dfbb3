"""The composition root: the one place that builds the plugin's parts and wires them together,
each given what it uses when it is built (no part is handed a collaborator afterwards).

Wiring, in build order (each part needs only those above it):

    store                      open_store(config): DuckDB, or PostgreSQL for a fleet
    groups, writer             the groups in memory, and the writer of a group's state
    perf, policy, timeouts     what recovery learned, and how it chooses and waits
    leases, budget             a fleet's recovery leases and shared budget; a local budget alone
    sampler                    the machine's load, read by recovery and the system strategy
    recovery                   RecoveryManager(... persist = writer, lease = leases)
    claims, error_handler      a fleet's claims of new groups; intake (adopt = claims, on_loaded = recovery)
    fleet                      the fleet's loop (groups, recovery, leases, the runs other members learned)
    metrics                    Prometheus (it listens to recovery)
    explainer, diagnostics     what GET /recovery/strategies and GET /diagnostics answer

then the strategies and hooks the config names are registered. ``EnhancedErrorHandlingIntegration``
(the facade users hold) builds itself with :func:`assemble`; only it and ``plugin.py`` import
this module."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coordinator_plugins.error_handling.config import ErrorHandlingConfig, resolve_dotted
from coordinator_plugins.error_handling.fleet import FleetLedger
from coordinator_plugins.error_handling.fleet.claim import GroupClaims
from coordinator_plugins.error_handling.fleet.lease import LeaseKeeper
from coordinator_plugins.error_handling.fleet.member import Fleet
from coordinator_plugins.error_handling.fleet.memory import learn_remote
from coordinator_plugins.error_handling.intake.group import GroupIndex
from coordinator_plugins.error_handling.intake.handler import ErrorHandler
from coordinator_plugins.error_handling.intake.persist import GroupWriter
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker
from coordinator_plugins.error_handling.learning.policy import SelectionPolicy, make_policy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.observe.diagnose import Diagnostics
from coordinator_plugins.error_handling.observe.explain import Explainer
from coordinator_plugins.error_handling.observe.metrics import PluginMetrics
from coordinator_plugins.error_handling.observe.sampler import ResourceSampler
from coordinator_plugins.error_handling.recovery.budget import FleetBudget, RecoveryBudget
from coordinator_plugins.error_handling.recovery.manager import RecoveryManager
from coordinator_plugins.error_handling.seed import convert_seed
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.storage.factory import open_store
from coordinator_plugins.error_handling.storage.records import StrategyRun
from coordinator_plugins.error_handling.strategies import (
    BUILTIN_CLASSES,
    DatabaseRecoveryStrategy,
    RecoveryStrategy,
    SystemRecoveryStrategy,
)


def adapt_coordinator(coordinator: Any) -> Any:
    """The object strategies act through: the coordinator itself, or a seed adapter around it."""
    from coordinator_plugins.contract.seed_adapter import SeedCoordinatorAdapter

    if coordinator is not None and SeedCoordinatorAdapter.is_seed_shaped(coordinator):
        return SeedCoordinatorAdapter(coordinator)
    return coordinator


@dataclass(frozen=True, slots=True)
class Parts:
    """The parts :func:`assemble` built, wired to each other."""

    actions: Any  # what strategies act through (the coordinator, or its seed adapter)
    rng: random.Random
    store: Store
    error_handler: ErrorHandler
    performance_recovery: PerformanceTracker
    policy: SelectionPolicy
    timeouts: AdaptiveTimeouts
    budget: RecoveryBudget
    sampler: ResourceSampler
    recovery_manager: RecoveryManager
    fleet: Fleet | None
    metrics: PluginMetrics | None
    explainer: Explainer
    diagnostics: Diagnostics


def assemble(
    coordinator: Any, cfg: ErrorHandlingConfig, on_store_error: Callable[[BaseException], None]
) -> Parts:
    """Build every part for ``cfg``. ``on_store_error`` is told when the store's writer fails."""
    actions = adapt_coordinator(coordinator)
    rng = random.Random(cfg.seed)
    # the coordinator's own DuckDB file (the seed keeps its path in db_path and may open it only
    # after installing the plugin) is refused now, not when the app starts in its thread
    host_path = getattr(coordinator, "db_path", None)
    store: Store = open_store(cfg, on_error=on_store_error, seed=convert_seed,
                              host_path=host_path if isinstance(host_path, str) else None)
    groups = GroupIndex(cfg.max_groups_in_memory, getattr(store, "committed_seq", None))
    writer = GroupWriter(store, groups)
    perf = PerformanceTracker(store.save_strategy_score, store.record_strategy_run)
    policy = make_policy(cfg.selection, perf, rng, store.save_learner_state)
    timeouts = AdaptiveTimeouts(cfg.default_timeout, store.save_timeout)
    global_limit = cfg.recovery_budget_global or (3 * cfg.recovery_budget)
    # Several coordinators on one PostgreSQL database are one fleet (SPEC 10): one budget, leases.
    ledger = store if isinstance(store, FleetLedger) else None
    leases = LeaseKeeper(ledger, cfg.lease_ttl) if ledger is not None else None
    budget = (
        FleetBudget(ledger, cfg.recovery_budget, cfg.budget_window, global_limit)
        if ledger is not None
        else RecoveryBudget(cfg.recovery_budget, cfg.budget_window, global_limit)
    )
    sampler = ResourceSampler()
    recovery = RecoveryManager(
        cfg, actions, perf, policy, timeouts, budget, sampler, writer.persist, store.save_recovery_level, lease=leases
    )
    claims = GroupClaims(ledger, groups, cfg.regression_window) if ledger is not None else None
    # A group recurring while its success is on probation is the same group, whatever the
    # regression window: its recurrence makes that success a failure (SPEC section 9).
    handler = ErrorHandler(
        store, cfg.hook_timeout, max(cfg.regression_window, cfg.verify_window), cfg.max_groups_in_memory, rng,
        groups=groups, writer=writer, adopt=claims.adopt if claims is not None else None, on_loaded=recovery.loaded,
        max_metadata_bytes=cfg.max_metadata_bytes,
    )
    fleet = None
    if ledger is not None and leases is not None:

        def learn(run: StrategyRun) -> None:  # with the policy recovery uses then (see RecoveryManager.policy)
            learn_remote(perf, timeouts, recovery.policy, run)

        fleet = Fleet(cfg, ledger, groups, recovery, leases, learn)
    metrics = PluginMetrics(groups, budget, store, recovery) if cfg.metrics else None
    for sid in cfg.builtin_strategies:
        strategy: RecoveryStrategy
        if sid == "database":
            strategy = DatabaseRecoveryStrategy(actions, store=store)
        elif sid == "system":
            strategy = SystemRecoveryStrategy(actions, sampler=sampler)
        else:
            strategy = BUILTIN_CLASSES[sid](actions)  # type: ignore[call-arg]
        recovery.add_strategy(sid, strategy)
    for sid, path in cfg.strategies.items():
        custom_cls = resolve_dotted(f"strategies.{sid}", path)
        recovery.add_custom_strategy(sid, custom_cls(actions))
    for key, paths in cfg.hooks.items():
        for path in paths:
            handler.register_error_hook(key, resolve_dotted(f"hooks.{key}", path))
    return Parts(
        actions=actions,
        rng=rng,
        store=store,
        error_handler=handler,
        performance_recovery=perf,
        policy=policy,
        timeouts=timeouts,
        budget=budget,
        sampler=sampler,
        recovery_manager=recovery,
        fleet=fleet,
        metrics=metrics,
        explainer=Explainer(recovery, perf, policy, timeouts, budget, cfg.max_recovery_level),
        diagnostics=Diagnostics(store, handler, recovery, budget, policy, timeouts, sampler, actions, fleet,
                                cfg.coordinator_id),
    )
