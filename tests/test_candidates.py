"""The check made on every report (``Candidates.may_act``) gives a strategy's ``is_applicable``
only the keys of error_info that the strategy declares it reads (``applicable_reads``); every
other check gets the whole error_info. These tests hold the built-ins to their declarations and
show that an undeclared check still sees everything."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import (
    EnhancedErrorHandlingIntegration,
    RecoveryLevel,
    RecoveryStrategy,
    RetryStrategy,
    WorkerRecoveryStrategy,
    validate_config,
)
from coordinator_plugins.error_handling.recovery.state import Targets, strategy_info
from coordinator_plugins.error_handling.strategies import declared_pure, declared_reads

# Contexts that reach every branch of the built-ins' checks: each category they act on, with and
# without workers, tasks and an operation to re-run.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("connection reset by peer", {"component": "worker-1", "exception_type": "ConnectionResetError"}),
    ("worker heartbeat lost", {"component": "worker", "worker_id": "w1"}),
    ("task failed with exit code 1", {"component": "runner", "task_id": "t1", "worker_id": "w2"}),
    ("task timed out after 30s", {"component": "runner", "task_id": "t2"}),
    ("database is locked", {"component": "db", "error_type": "database"}),
    ("could not connect to database server", {"component": "db"}),
    ("scheduler stalled: no tick for 30s", {"component": "scheduler", "error_type": "coordination"}),
    ("inconsistent state: task table out of sync", {"component": "state", "error_type": "state"}),
    ("cpu overloaded: 99%", {"component": "system", "error_type": "resource"}),
    ("out of memory", {"component": "worker", "worker_id": "w3", "error_type": "resource"}),
    ("operation failed", {"component": "api", "callable": print, "args": [1], "kwargs": {"sep": ","}}),
    ("validation failed: bad input", {"component": "api", "error_type": "validation"}),
]


class Recording(dict[str, Any]):
    """error_info that remembers every key a check looked at."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


async def test_builtin_checks_read_only_the_keys_they_declare(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    integ = farm.integ
    assert integ is not None
    strategies = integ.recovery_manager.candidates.strategies
    assert set(strategies) == {"retry", "worker", "database", "coordinator", "system"}
    answers: dict[str, set[bool]] = {sid: set() for sid in strategies}
    for message, ctx in CASES:
        report, _, _ = await integ.ingest(message, dict(ctx), recover=False)
        if callable(ctx.get("callable")):
            assert report.recovery_details.get("_operation")
        full = strategy_info(report, 1, 0.0, Targets.peek(report))
        for sid, s in strategies.items():
            reads = declared_reads(s)
            assert reads is not None, sid
            seen = Recording(full)
            answer = bool(s.is_applicable(seen))
            assert seen.read <= reads, (sid, message, seen.read - reads)
            # given just the declared keys, the same answer
            assert bool(s.is_applicable(strategy_info(report, 1, 0.0, Targets.peek(report), reads))) is answer
            answers[sid].add(answer)
    # the cases reach both answers of every check (else the test would prove little)
    assert all(a == {True, False} for a in answers.values()), answers


def test_a_declaration_counts_only_on_the_class_that_defines_the_check() -> None:
    class Plain(RecoveryStrategy):  # the base's check (always True) reads nothing
        async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
            return False

    class Overrides(RetryStrategy):  # inherits retry's declaration, but reads a key it does not declare
        def is_applicable(self, error_info: dict[str, Any]) -> bool:
            return "disk" in str(error_info.get("message"))

    class Declares(Overrides):
        applicable_reads = frozenset({"message"})

    assert declared_reads(RetryStrategy(None)) == {"callable", "task_ids", "task_id"}
    assert declared_reads(Plain(None, "plain", RecoveryLevel.LOW)) == frozenset()
    assert declared_reads(Overrides(None)) is None
    assert declared_reads(Declares(None)) == {"message"}
    own = WorkerRecoveryStrategy(None)
    own.is_applicable = lambda info: True  # type: ignore[method-assign]
    assert declared_reads(own) is None


def test_a_partial_error_info_holds_the_same_values_as_the_whole() -> None:
    from coordinator_plugins.error_handling.model import ErrorContext, ErrorReport, ErrorSeverity, ErrorType

    report = ErrorReport(error_id="e1", error_type=ErrorType.NETWORK, error_severity=ErrorSeverity.HIGH,
                         message="m", context=ErrorContext(component="c", metadata={"a": 1}))
    report.target_workers[:] = ["w1", "w2"]
    report.target_tasks[:] = ["t1"]
    report.task_failures["t1"] = ["w2"]
    report.recovery_details["_operation"] = (print, (1,), {"sep": ","})
    full = strategy_info(report, 3, 7.5, Targets.peek(report))
    assert {"callable", "args", "kwargs", "level", "timeout", "worker_ids", "task_failures"} <= set(full)
    for n in (1, 2, 3):
        for keys in itertools.combinations([*sorted(full), "not_a_key"], n):
            part = strategy_info(report, 3, 7.5, Targets.peek(report), frozenset(keys))
            assert part == {k: full[k] for k in keys if k in full}, keys


async def test_an_undeclared_check_sees_the_whole_error_info(tmp_path: Path) -> None:
    """A custom check beside the built-ins for the same category reads ``message``, which no
    built-in declares: it must get it, so the report is actionable and recovery is scheduled."""

    class DiskCheck(RecoveryStrategy):
        def __init__(self) -> None:
            super().__init__(None, "disk", RecoveryLevel.LOW, categories=["connection"])

        def is_applicable(self, error_info: dict[str, Any]) -> bool:
            return "peer 7" in str(error_info.get("message")) and error_info.get("aggregated_count", 0) >= 1

        async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
            return False

    integ = EnhancedErrorHandlingIntegration(None, validate_config({
        "database": str(tmp_path / "eh.duckdb"), "builtin_strategies": ["retry", "worker"]}))
    integ.add_custom_strategy("disk", DiskCheck())
    await integ.start()
    try:
        candidates = integ.recovery_manager.candidates
        plain, _, _ = await integ.ingest("connection reset by peer", {"component": "c"}, recover=False)
        disk, _, _ = await integ.ingest("connection reset by peer 7", {"component": "c"}, recover=False)
        assert plain.category.value == disk.category.value == "connection"
        assert not candidates.may_act(plain, 5)  # retry and worker: no task, no worker, no operation
        assert candidates.may_act(disk, 5)  # only the custom check says yes, from the message
        # registering another strategy re-plans what each category asks
        integ.recovery_manager.add_strategy("worker2", WorkerRecoveryStrategy(None))
        assert candidates.may_act(disk, 5)
    finally:
        await integ.stop()


async def test_the_kept_answer_for_untargeted_reports_is_the_answer_asking_gives(make_farm) -> None:
    """For every case, with the built-ins (all pure, declared), ``may_act`` answers as asking each
    check does (``ask``), whether the answer was kept or not; a kept answer is kept only for
    reports that name no worker, task or operation, and a report that names one is asked."""
    farm = await make_farm(plugin={"auto_recover": False})
    integ = farm.integ
    assert integ is not None
    candidates = integ.recovery_manager.candidates
    assert all(declared_pure(s) for sid, s in candidates.strategies.items() if sid != "coordinator")
    assert not declared_pure(candidates.strategies["coordinator"])  # asks the coordinator's live components
    answers = set()
    for _ in range(2):  # the second pass answers from what the first kept
        for message, ctx in CASES:
            report, _, _ = await integ.ingest(message, dict(ctx), recover=False)
            for level in (1, 3, 5):
                asked = candidates.ask(report, level)
                assert candidates.may_act(report, level) is asked, (message, level)
                answers.add(asked)
    assert answers == {True, False}
    kept = candidates.kept_answers()
    assert kept, "no untargeted report's answer was kept"
    # every kept answer is for an untargeted report's (category, level, type): the targeted cases
    # (a worker, a task, an operation) are never answered from memory
    for message, ctx in CASES:
        report, _, _ = await integ.ingest(message, dict(ctx), recover=False)
        if report.target_workers or report.target_tasks or "_operation" in report.recovery_details:
            before = candidates.kept_answers()
            candidates.may_act(report, 5)
            assert candidates.kept_answers() == before


async def test_an_impure_check_is_asked_on_every_report(tmp_path: Path) -> None:
    """A check that reads live state (not declared pure) is asked every time: its answer changes
    between two reports of the same group, and so does ``may_act``'s; registering a strategy
    forgets every kept answer."""
    live = {"ready": False}

    class WhenReady(RecoveryStrategy):
        applicable_reads = frozenset({"category"})  # declared reads, but not pure: reads ``live``

        def __init__(self) -> None:
            super().__init__(None, "when ready", RecoveryLevel.LOW, categories=["connection"])

        def is_applicable(self, error_info: dict[str, Any]) -> bool:
            return live["ready"]

        async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
            return False

    class PureNo(WhenReady):
        applicable_pure = True

        def is_applicable(self, error_info: dict[str, Any]) -> bool:
            return False

    assert not declared_pure(WhenReady()) and declared_pure(PureNo())
    integ = EnhancedErrorHandlingIntegration(None, validate_config({
        "database": str(tmp_path / "eh.duckdb"), "builtin_strategies": ["retry", "worker"]}))
    await integ.start()
    try:
        candidates = integ.recovery_manager.candidates
        report, _, _ = await integ.ingest("connection reset by peer", {"component": "c"}, recover=False)
        assert not candidates.may_act(report, 5)
        assert candidates.kept_answers()  # retry and worker only: pure, the answer is kept
        integ.add_custom_strategy("pure-no", PureNo())
        assert not candidates.kept_answers()  # a new strategy: every kept answer forgotten
        assert not candidates.may_act(report, 5)
        integ.add_custom_strategy("when-ready", WhenReady())
        assert not candidates.may_act(report, 5)
        live["ready"] = True
        assert candidates.may_act(report, 5)  # asked again: the live answer
        live["ready"] = False
        assert not candidates.may_act(report, 5)
        assert not candidates.kept_answers()  # an impure candidate: nothing kept for the category
    finally:
        await integ.stop()
