"""EnhancedErrorHandlingIntegration: the plugin's public object (SPEC section 3).

A report flows classify -> group -> persist -> hooks -> recovery manager -> strategy -> verify
-> record -> learn; each step lives in its own module, :mod:`.assemble` builds and wires them,
and this facade offers them under the seed's names: the parts (``error_handler``,
``recovery_manager``, ``performance_recovery`` ...), the lifecycle, and the operations users,
the HTTP routes and ``integration.blocking`` call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.assemble import assemble
from coordinator_plugins.error_handling.blocking import BlockingIntegration
from coordinator_plugins.error_handling.config import ErrorHandlingConfig, validate_config
from coordinator_plugins.error_handling.intake.handler import parse_enum
from coordinator_plugins.error_handling.intake.hooks import Hook, HookKey
from coordinator_plugins.error_handling.model import ErrorReport, ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.observe.metrics import plugin_state
from coordinator_plugins.error_handling.plugin import NOT_ATTACHED, attach
from coordinator_plugins.error_handling.recovery.outcome import Listener, Settled
from coordinator_plugins.error_handling.runtime import SWITCH_INTERVAL
from coordinator_plugins.error_handling.storage import StoreClosed
from coordinator_plugins.error_handling.storage.records import IdempotencyRecord, StoredState
from coordinator_plugins.error_handling.strategies import RecoveryStrategy
from coordinator_plugins.error_handling.text import storable, storable_value

logger = logging.getLogger(__name__)


class EnhancedErrorHandlingIntegration:
    def __init__(
        self, coordinator: Any = None, config: Mapping[str, Any] | ErrorHandlingConfig | None = None
    ) -> None:
        self.config = cfg = validate_config(config)
        self.coordinator = coordinator
        self.started = False
        self.closed = False
        self.app: web.Application | None = None  # set by attach()
        self._said_unattached = False  # the first report that arrives never attached says so
        self.loop: asyncio.AbstractEventLoop | None = None  # the app's, once started
        self._blocking: BlockingIntegration | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.restore_skipped = 0  # stored rows that could not be restored at the last start
        parts = assemble(coordinator, cfg, on_store_error=self._store_failed)
        self.actions = parts.actions
        self.rng = parts.rng
        self.store = parts.store
        self.error_handler = parts.error_handler
        self.performance_recovery = parts.performance_recovery
        self.policy = parts.policy
        self.timeouts = parts.timeouts
        self.budget = parts.budget
        self.sampler = parts.sampler
        self.recovery_manager = parts.recovery_manager
        self.fleet = parts.fleet
        self.metrics = parts.metrics
        self._explainer = parts.explainer
        self._diagnostics = parts.diagnostics

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, restore its state, start the background work. A start that fails
        part way closes what it opened (the store's connection and writer, the sampler)."""
        self.loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            state = await self.store.load_state(self.config.regression_window, self.config.max_groups_in_memory)
            self._restore(state)
            self.sampler.start()
            stack.push_async_callback(self.sampler.stop)
            self._spawn(self._retention_loop())
            if self.fleet is not None:
                await self.fleet.start()
                stack.push_async_callback(self.fleet.stop)
            stack.pop_all()  # started: stop() closes them from now on
        SWITCH_INTERVAL.hold(self, self.config.thread_switch_interval)  # see runtime.py
        self.started = True
        logger.info(
            "error handling started: %d open group(s) restored from %s%s",
            self.error_handler.groups.open_total,
            self.config.database,
            f" ({self.restore_skipped} damaged row(s) skipped)" if self.restore_skipped else "",
        )

    def _restore(self, state: StoredState) -> None:
        self.error_handler.restore(state)
        self.recovery_manager.restore(state.levels, state.stopped, self.error_handler.groups)
        self.performance_recovery.load(state.scores)
        self.timeouts.load(state.timeouts)
        self.policy.load(state.learner)
        self.restore_skipped = state.skipped + self.performance_recovery.skipped

    async def stop(self) -> None:
        self.closed = True
        await self.recovery_manager.close()
        if self.fleet is not None:
            await self.fleet.stop()
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        await self.error_handler.hooks.drain()
        await self.sampler.stop()
        await self.store.close()
        SWITCH_INTERVAL.release(self)

    @property
    def blocking(self) -> BlockingIntegration:
        """The getters as blocking calls, for threads that are not the event loop's (see blocking.py)."""
        if self._blocking is None:
            self._blocking = BlockingIntegration(self)
        return self._blocking

    def attach(self, app: web.Application) -> EnhancedErrorHandlingIntegration:
        """Mount the routes, middleware and lifetime on ``app`` (before it starts). ``setup`` does
        it; call it yourself after ``install_enhanced_error_handling`` on a coordinator that had no
        app yet and never assigns one to ``coordinator.app``. Again on the same app, it returns
        the integration; on another app it raises RuntimeError."""
        return attach(self, app)

    @property
    def attached(self) -> bool:
        """Whether it was ever attached to an app (its routes mounted, its lifetime the app's).
        ``started``: whether it started (the app started, or ``await start()``)."""
        return self.app is not None

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.stop()

    async def _flushed(self) -> None:
        """Flush the store before a read; a read of a plugin that is not running says why and how
        to fix it (StoreClosed, as the store itself would raise, with the fix in its message)."""
        if not self.started:
            why = NOT_ATTACHED if self.app is None else "error handling is not running (its app has not started)"
            raise StoreClosed(f"its store is not open: {why}; or await integration.start() yourself")
        await self.store.flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _retention_loop(self) -> None:
        while True:
            self.store.apply_retention(self.config.retention_days)
            await asyncio.sleep(3600)

    def _store_failed(self, exc: BaseException) -> None:
        """The store's writer failed: report it like any database error, so recovery reconnects."""
        if self.closed:
            return
        self._spawn(self.report_error(exc, {"component": "store", "operation": "write"}))

    # -- registration ------------------------------------------------------------------------------
    def register_error_hook(self, key: HookKey, hook: Hook) -> None:
        self.error_handler.register_error_hook(key, hook)

    def add_custom_strategy(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        self.recovery_manager.add_custom_strategy(strategy_id, strategy)

    def add_recovery_listener(self, listener: Listener) -> None:
        """Call ``listener(recovery_info)`` each time a recovery ends (in the event loop)."""
        self.recovery_manager.add_listener(listener)

    def remove_recovery_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; ValueError when it was not added."""
        self.recovery_manager.remove_listener(listener)

    def add_verification_listener(self, listener: Settled) -> None:
        """Call ``listener(history_entry, held)`` when a success's ``verify_window`` ends: ``held``
        True when the fault stayed away, False when it came back (the entry then says
        ``"success": False, "verification": "recurred"``)."""
        self.recovery_manager.add_verification_listener(listener)

    # -- reporting ------------------------------------------------------------------------------------
    async def ingest(
        self,
        error: BaseException | str,
        context: dict[str, Any] | None,
        recover: bool | None = None,
        idempotency: Callable[[ErrorReport], IdempotencyRecord] | None = None,
    ) -> tuple[ErrorReport, int, str]:
        """Report one occurrence; returns (group, write sequence number, recovery status).
        ``idempotency``: the record of the report's idempotency key, written with its occurrence."""
        if self.closed:
            raise RuntimeError("error handling is shut down")
        if not self.started and self.app is None and not self._said_unattached:
            self._said_unattached = True
            logger.warning("a report arrived, but %s", NOT_ATTACHED)
        ctx = context or {}
        report, seq = await self.error_handler.report(error, ctx, idempotency)
        if callable(ctx.get("callable")):
            report.recovery_details["_operation"] = (ctx["callable"], ctx.get("args") or (), ctx.get("kwargs") or {})
        if self.metrics is not None:
            self.metrics.on_error(report)
        self.recovery_manager.observe(report, ctx.get("worker_id"), ctx.get("task_id"))
        recovery = "off"
        want = self.config.auto_recover if recover is None else recover
        if want and report.is_open:
            recovery = self.recovery_manager.schedule(report)
        return report, seq, recovery

    async def report_error(self, error: BaseException | str, context: dict[str, Any] | None = None) -> ErrorReport:
        report, _, _ = await self.ingest(error, context)
        return report

    async def flush(self) -> None:
        await self._flushed()

    async def handle_error(
        self, error: BaseException | str, context: dict[str, Any] | None = None
    ) -> tuple[bool, dict[str, Any]]:
        report, _, _ = await self.ingest(error, context, recover=False)
        return await self.recovery_manager.recover(report, self.config.handle_error_wait)

    async def retry_operation(
        self, operation: Callable[..., Any], args: Any = None, kwargs: Any = None, context: dict[str, Any] | None = None
    ) -> tuple[Any, ErrorReport | None]:
        return await self.error_handler.retry_operation(operation, args, kwargs, context)

    # -- queries ---------------------------------------------------------------------------------------
    async def get_unresolved_errors(
        self, component: str | None = None, severity: str | ErrorSeverity | None = None
    ) -> list[dict[str, Any]]:
        sev = parse_enum(ErrorSeverity, "severity", severity)
        await self._flushed()
        groups = await self.store.unresolved_groups(component, sev.rank if sev else None)
        return [g.to_api() for g in groups]

    async def resolve_error(
        self, error_id: str, resolution: str = "manual", details: dict[str, Any] | None = None
    ) -> bool:
        return (await self.resolve(error_id, resolution, details)) is not None

    async def group_id(self, error_id: str) -> str:
        """The id of the group ``error_id`` names: itself, or the group a seed error was folded
        into on migration (its alias); unknown ids come back as they are."""
        if self.error_handler.groups.get(error_id) is not None or error_id in self.recovery_manager.levels:
            return error_id
        alias = await self.store.alias(error_id)
        return alias.error_id if alias is not None else error_id

    async def resolve(
        self, error_id: str, resolution: str = "manual", details: dict[str, Any] | None = None
    ) -> bool | None:
        """None: unknown id; True: was already resolved; False: resolved now."""
        report = self.error_handler.groups.get(error_id)
        if report is None:
            await self._flushed()
            error_id = await self.group_id(error_id)
            report = self.error_handler.groups.get(error_id)
        if report is None:
            record = await self.store.get_group(error_id)
            if record is None:
                return None
            report = self.error_handler.groups.get(error_id)  # loaded meanwhile?
            if report is None:
                report = record.to_report()
                self.error_handler.groups.add(report, counted=True)
        if not report.is_open:
            return True
        self._unstop(error_id)
        resolution = storable(resolution or "manual")  # storable text, as every report's (text.py)
        report.resolve(resolution)
        report.recovery_details["manual_resolution"] = {"resolution": resolution,
                                                        "details": storable_value(details or {})}
        self.recovery_manager.reset_level(error_id)
        await self.store.wait_durable(self.error_handler.persist(report))
        if self.fleet is not None:  # every member sees it within 2 s (SPEC 10)
            await self.fleet.publish("resolve", error_id, {"resolution": resolution or "manual"})
        return False

    async def get_error_metrics(self) -> dict[str, Any]:
        return self.error_handler.metrics()

    async def get_performance_metrics(
        self, error_type: str | None = None, strategy_id: str | None = None, days: int = 30
    ) -> dict[str, Any]:
        await self._flushed()
        return await self.store.strategy_performance(error_type, strategy_id, days)

    async def get_recovery_history(self, error_id: str | None = None, limit: int = 100) -> dict[str, Any] | None:
        if error_id is None:
            await self._flushed()
            out = await self.store.recovery_summary(limit)
            rm = self.recovery_manager
            out["summary"].update(
                recoveries=rm.recoveries,
                successes=rm.successes,
                outcomes=dict(rm.counts),
                in_flight=len(rm.inflight),
                deferred=len(rm.deferred),
                shed=rm.shed,
            )
            return out
        st = self.recovery_manager.levels.get(error_id)
        if st is not None:
            return {"error_id": error_id, "current_level": st.level, "history": list(st.history)}
        await self._flushed()
        if (group_id := await self.group_id(error_id)) != error_id:
            of_group = await self.get_recovery_history(group_id, limit)
            return None if of_group is None else {**of_group, "requested_error_id": error_id}
        level = await self.store.recovery_level(error_id)
        if level is not None:
            return {"error_id": error_id, "current_level": level.level, "history": [dict(h) for h in level.history]}
        known = self.error_handler.groups.get(error_id) is not None
        known = known or await self.store.get_group(error_id) is not None
        return {"error_id": error_id, "current_level": 1, "history": []} if known else None

    async def get_occurrence_series(
        self, error_id: str, buckets: int = 60, window: float | None = None
    ) -> dict[str, Any] | None:
        """One group's occurrences per time bucket (at most ``buckets``), over its whole life or
        the last ``window`` seconds; None when the id is unknown. Read from the database, so a
        group restored after a restart shows its whole history."""
        await self._flushed()
        return await self.store.occurrence_series(error_id, buckets, window)

    async def get_strategy_recommendations(self, error_type: str | ErrorType) -> list[dict[str, Any]]:
        et = parse_enum(ErrorType, "error_type", error_type).value
        return self._explainer.recommendations(et)

    def explain_strategies(self, error_type: str | None = None) -> dict[str, Any]:
        """For each error type (or ``error_type`` alone): each strategy, its evidence, and why it
        would or would not be chosen now (``GET /recovery/strategies``)."""
        return self._explainer.explain(error_type)

    async def reset_recovery_level(self, error_id: str) -> bool:
        error_id = await self.group_id(error_id)
        self._unstop(error_id)
        done = self.recovery_manager.reset_level(error_id)
        if self.fleet is not None:
            await self._flushed()
            await self.fleet.publish("reset", error_id)
        return done

    async def reset_all_recovery_levels(self) -> int:
        for error_id in self.recovery_manager.stopped_groups():
            self._unstop(error_id)
        n = sum(self.recovery_manager.reset_level(e) for e in list(self.recovery_manager.levels))
        if self.fleet is not None:
            await self._flushed()
            await self.fleet.publish("reset_all", None)
        return n

    async def fleet_members(self) -> list[dict[str, Any]]:
        """The live coordinators sharing this database, this one first (just this one on DuckDB)."""
        return await self._diagnostics.members()

    def _unstop(self, error_id: str) -> None:
        """A reset or a resolution ends a stopped recovery: the group may recover again."""
        report = self.error_handler.groups.get(error_id)
        if report is not None and report.recovery_details.pop("stopped", None) is not None:
            report.recovery_details.pop("failure_reason", None)
            self.error_handler.persist(report)

    async def run_diagnostics(self) -> dict[str, Any]:
        out = await self._diagnostics.run(self.restore_skipped)
        out["integration"] = {"attached": self.attached, "started": self.started}
        if not self.started and self.app is None:
            out["issues"] = [NOT_ATTACHED, *out.get("issues", [])]
            out["status"] = "critical"
        return out

    def stats_for_metrics(self) -> dict[str, Any]:
        return plugin_state(self.error_handler.groups, self.budget, self.store, self.recovery_manager)
