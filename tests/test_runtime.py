"""The thread switch interval (runtime.py): lowered while an integration runs, only when the
host left CPython's default, and put back by the last integration that stops."""

from __future__ import annotations

import sys
from pathlib import Path

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config
from coordinator_plugins.error_handling.runtime import CPYTHON_DEFAULT, SwitchInterval


class Interpreter:
    """Stands in for sys's getter and setter, so that these cases do not touch the real one."""

    def __init__(self, value: float = CPYTHON_DEFAULT) -> None:
        self.value = value
        self.sets: list[float] = []

    def get(self) -> float:
        return self.value

    def set(self, value: float) -> None:
        self.value = value
        self.sets.append(value)


def test_the_last_holder_restores_the_default() -> None:
    it = Interpreter()
    s = SwitchInterval(it.get, it.set)
    a, b = object(), object()
    assert s.hold(a, 0.001) and it.value == 0.001
    assert s.hold(b, 0.001) and it.sets == [0.001]  # one change for both
    s.release(a)
    assert it.value == 0.001  # b still runs
    s.release(b)
    assert it.value == CPYTHON_DEFAULT
    s.release(b)  # twice: nothing more
    assert it.sets == [0.001, CPYTHON_DEFAULT]


def test_a_host_that_chose_its_own_interval_keeps_it() -> None:
    it = Interpreter(0.002)
    s = SwitchInterval(it.get, it.set)
    assert not s.hold(object(), 0.001)
    assert it.sets == [] and it.value == 0.002


def test_zero_leaves_it_alone_and_a_later_change_is_not_undone() -> None:
    it = Interpreter()
    s = SwitchInterval(it.get, it.set)
    assert not s.hold(object(), 0)
    assert it.sets == []
    holder = object()
    s.hold(holder, 0.001)
    it.value = 0.003  # someone else changed it while we held it
    s.release(holder)
    assert it.value == 0.003  # not ours to restore any more


async def test_an_integration_lowers_it_while_it_runs(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    assert abs(before - CPYTHON_DEFAULT) < 1e-9, "another test left the interval changed"
    integ = EnhancedErrorHandlingIntegration(None, validate_config({"database": str(tmp_path / "a.duckdb")}))
    off = EnhancedErrorHandlingIntegration(None, validate_config(
        {"database": str(tmp_path / "b.duckdb"), "thread_switch_interval": 0}))
    await integ.start()
    try:
        assert abs(sys.getswitchinterval() - 0.001) < 1e-9
        await off.start()
        await off.stop()
        assert abs(sys.getswitchinterval() - 0.001) < 1e-9  # the other one still runs
    finally:
        await integ.stop()
    assert abs(sys.getswitchinterval() - before) < 1e-9
