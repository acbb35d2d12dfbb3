"""Issue 31 (evaluate): ``coordinator-plugins evaluate`` on real databases the plugin wrote."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator_plugins.cli import main
from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config

ROOT = Path(__file__).resolve().parents[1]


async def farm(db: Path | str, incidents: int, builtins: bool = False) -> None:
    """The plugin with one custom strategy that succeeds every other time (with ``builtins``, the
    built-in strategies too: without a coordinator none of them is applicable)."""
    from coordinator_plugins.error_handling import RecoveryStrategy
    from coordinator_plugins.error_handling.strategies import RecoveryLevel

    class Flaky(RecoveryStrategy):
        def __init__(self) -> None:
            super().__init__(None, "flaky", RecoveryLevel.LOW)
            self.n = 0

        async def _execute_impl(self, error_info: dict[str, object]) -> bool:
            self.n += 1
            return self.n % 2 == 0

    integ = EnhancedErrorHandlingIntegration(None, validate_config({
        "database": str(db), "auto_recover": False, "escalation_backoff": 0,
        **({} if builtins else {"builtin_strategies": []}),
        "regression_window": 0, "seed": 3, "verify_window": 0, "recovery_budget": 0}))
    integ.add_custom_strategy("flaky", Flaky())
    await integ.start()
    try:
        for i in range(incidents):
            name = "".join(chr(97 + (i // 26**k) % 26) for k in range(3))
            await integ.handle_error(f"incident {name}", {"component": "c", "error_type": "network"})
    finally:
        await integ.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator_plugins", "evaluate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_evaluate_reads_a_database_the_plugin_wrote(tmp_path: Path) -> None:
    db = tmp_path / "farm.duckdb"
    asyncio.run(farm(db, 40))
    done = run_cli("--database", str(db), "--resamples", "50")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "recoveries evaluated" in out and "logged decisions by policy: adaptive" in out
    for policy in ("ladder", "score", "adaptive"):
        assert f"policy {policy}:" in out
    assert "IPS" in out and "SNIPS" in out and "DR" in out and "effective sample size" in out
    # one strategy: every policy makes the same choices, so each is supported
    assert out.count("verdict: the log supports these estimates") == 3, out


def test_evaluate_json_for_one_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "farm.duckdb"
    asyncio.run(farm(db, 20))
    assert main(["evaluate", "--database", str(db), "--policy", "ladder", "--json", "--resamples", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["targets"]) == ["ladder"]
    assert report["incidents"] > 0 and report["database"] == str(db)
    ladder = report["targets"]["ladder"]
    assert ladder["estimates"]["first_try_success"]["snips"]["value"] == report["measured"]["first_try_success"]


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    done = run_cli("--database", str(tmp_path / "nope.duckdb"))
    assert done.returncode == 1
    assert "nope.duckdb: no such file" in done.stderr
    assert not (tmp_path / "nope.duckdb").exists()  # not created by looking


def test_a_database_without_runs_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    asyncio.run(farm(db, 0))
    done = run_cli("--database", str(db))
    assert done.returncode == 1
    assert "no strategy run is logged in it: nothing to evaluate" in done.stderr


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.duckdb"
    bad.write_text("not a database\n" * 100)
    done = run_cli("--database", str(bad))
    assert done.returncode == 1
    assert "cannot be opened" in done.stderr and "Traceback" not in done.stderr


def test_an_unknown_policy_is_refused_by_the_parser(tmp_path: Path) -> None:
    done = run_cli("--database", str(tmp_path / "x.duckdb"), "--policy", "oracle")
    assert done.returncode == 2 and "--policy" in done.stderr


def test_registered_strategies_that_are_not_applicable_are_accounted_for(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The adaptive start draws among every registered strategy (retry, worker and flaky for a
    connection error) and a drawn built-in that is not applicable leaves the choice to the level's
    candidates: the propensity of the first run sums both paths, so evaluating the policy that
    ran weighs every recovery 1 and reproduces what the log measured."""
    db = tmp_path / "farm.duckdb"
    asyncio.run(farm(db, 60, builtins=True))
    assert main(["evaluate", "--database", str(db), "--policy", "adaptive", "--json", "--resamples", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    adaptive = report["targets"]["adaptive"]
    assert adaptive["effective_sample_size"]["first_choice"] > report["incidents"] - 1
    for metric in ("first_try_success", "runs_per_incident"):
        value = adaptive["estimates"][metric]["ips"]["value"]
        assert abs(value - report["measured"][metric]) < 0.01, (metric, value, report["measured"])


def test_evaluate_reads_a_fleets_postgresql_database(pg_url_sync: str) -> None:
    """The same report from a postgresql:// URL, read through the PostgreSQL store."""
    asyncio.run(farm(pg_url_sync, 20))
    done = run_cli("--database", pg_url_sync, "--policy", "ladder", "--resamples", "20")
    assert done.returncode == 0, done.stderr
    assert "policy ladder:" in done.stdout and "20 recoveries evaluated" in done.stdout
    assert "verdict: the log supports these estimates" in done.stdout


def test_the_strategies_and_their_order_come_from_the_logged_start_draws(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """No built-in is registered here, and `replace` (the better) is registered after `restart`:
    the adaptive start draws' logged options say both, so that the ladder's first choice is
    `restart` even though `replace` ran first in the log, and adaptive weighs every recovery 1."""
    from coordinator_plugins.error_handling import RecoveryStrategy
    from coordinator_plugins.error_handling.strategies import RecoveryLevel

    class Coin(RecoveryStrategy):
        def __init__(self, name: str, chance: float, rng: random.Random) -> None:
            super().__init__(None, name, RecoveryLevel.LOW)
            self.chance, self.rng = chance, rng

        async def _execute_impl(self, error_info: dict[str, object]) -> bool:
            return self.rng.random() < self.chance

    async def run() -> list[str]:
        integ = EnhancedErrorHandlingIntegration(None, validate_config({
            "database": str(tmp_path / "farm.duckdb"), "builtin_strategies": [], "auto_recover": False,
            "escalation_backoff": 0, "verify_window": 0, "seed": 2}))
        rng = random.Random(2)
        integ.add_custom_strategy("restart", Coin("restart", 0.3, rng))
        integ.add_custom_strategy("replace", Coin("replace", 0.8, rng))
        await integ.start()
        firsts = []
        try:
            for i in range(60):
                name = "".join(chr(97 + (i // 26**k) % 26) for k in range(2))
                _, info = await integ.handle_error(f"worker hung: {name}", {"component": "w", "error_type": "timeout"})
                firsts.append(info["attempts"][0]["strategy_id"])
        finally:
            await integ.stop()
        return firsts

    firsts = asyncio.run(run())
    assert main(["evaluate", "--database", str(tmp_path / "farm.duckdb"), "--json", "--resamples", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["replay_check"]["differ"] == 0
    assert report["targets"]["ladder"]["agreement"] == round(firsts.count("restart") / 60, 4)
    adaptive = report["targets"]["adaptive"]
    assert adaptive["effective_sample_size"]["first_choice"] > 59
    assert abs(adaptive["estimates"]["first_try_success"]["ips"]["value"]
               - report["measured"]["first_try_success"]) < 0.01
