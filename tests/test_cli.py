"""Issue 16, points 7 and 8: the command line a newcomer reads, and config errors all at once."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import coordinator_plugins
from coordinator_plugins.cli import build_parser
from coordinator_plugins.demo.kinds import FAULT_KINDS
from coordinator_plugins.reference import build_app


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # help lines unwrapped, so that phrases can be matched
    return subprocess.run([sys.executable, "-m", "coordinator_plugins", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    out = {"": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


@pytest.mark.parametrize("command", ["", "serve", "worker", "demo"])
def test_every_option_says_its_default_or_that_it_is_required(command: str) -> None:
    parser = _parsers()[command]
    options = [a for a in parser._actions
               if a.option_strings and not isinstance(a, argparse._HelpAction | argparse._VersionAction)]
    assert options
    for action in options:
        assert action.help, f"{command} {action.option_strings} has no help"
        text = action.help % {"default": action.default}
        assert "default" in text or action.required, f"{command} {action.option_strings}: {text}"
        if action.required:
            assert "required" in text


def test_help_lists_fault_kinds_values_and_describes_worker_options() -> None:
    demo = run_cli("demo", "--help").stdout
    for kind in FAULT_KINDS:
        assert f"{kind}:" in demo, kind
    assert "(default: 3)" in demo and "(default: 0.5)" in demo and "demo-report.html" in demo
    worker = run_cli("worker", "--help").stdout
    assert "--worker-id ID" in worker and "unique in the farm" in worker
    assert "--max-tasks N" in worker and "at the same time, 1 to 1000 (default: 1)" in worker
    top = run_cli("--help").stdout
    assert "``" not in top and ":func:" not in top
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in top and "examples:" in top


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"coordinator-plugins {coordinator_plugins.__version__}"


def test_log_level_is_validated_and_any_case_is_accepted() -> None:
    bad = run_cli("--log-level", "nonsense", "worker", "--help")
    assert bad.returncode == 2 and "--log-level: expected one of DEBUG, INFO" in bad.stderr
    assert build_parser().parse_args(["--log-level", "info", "worker", "--url", "http://x"]).log_level == "INFO"


@pytest.mark.parametrize(("args", "message"), [
    (["--faults", "bogus,kill"], "--faults: unknown fault kind(s) bogus; accepted: kill, hang, network"),
    (["--workers", "0"], "--workers: expected an integer from 1 to 64, got 0"),
    (["--duration", "0"], "--duration: expected a number above 0"),
    (["--duration", "nan"], "--duration: expected a number above 0"),
    (["--port", "70000"], "--port: expected an integer from 0 to 65535, got 70000"),
    (["--fault-rate", "-1"], "--fault-rate: expected a number from 0 to 100"),
    (["--report", "no/such/dir/report.html"], "--report: directory no/such/dir does not exist"),
    (["--database", "no/such/dir/x.duckdb"], "--database: directory no/such/dir does not exist"),
])
def test_bad_demo_options_fail_before_anything_starts_and_leave_nothing_behind(
        tmp_path: Path, args: list[str], message: str) -> None:
    out = run_cli("demo", *args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr, out.stderr
    assert out.stdout == ""  # no URL, no banner
    assert list(tmp_path.iterdir()) == []  # no database, no report


def test_coordinator_config_reports_every_problem_at_once_with_suggestions(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        build_app({"coordinator": {"databse": "x.duckdb", "port": "80", "heartbeat_interval": -1,
                                   "worker_max_tasks": 0}, "plugin": {}})
    lines = str(err.value).splitlines()
    assert len(lines) == 5, lines
    assert lines[0] == "plugin: unknown config table; accepted: coordinator, plugins; did you mean 'plugins'?"
    assert lines[1].startswith("coordinator.databse: unknown key; accepted: ")
    assert ", database, " in lines[1] and ", api_token, " in lines[1]  # the security keys are known too
    assert lines[1].endswith("did you mean 'database'?")
    assert lines[2] == "coordinator.port: expected an integer from 0 to 65535, got '80'"
    assert lines[3] == "coordinator.heartbeat_interval: expected a number from 0.05 to 3600, got -1"
    assert lines[4] == "coordinator.worker_max_tasks: expected an integer from 1 to 1000, got 0"
    config = tmp_path / "bad.toml"
    config.write_text('[coordinator]\ndatabse = "x"\nport = "80"\n')
    out = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[0].startswith("error: coordinator.databse: unknown key")
    assert out.stderr.splitlines()[1] == "error: coordinator.port: expected an integer from 0 to 65535, got '80'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def _test_command(doc: str) -> str:
    section = doc[doc.index("## Running the tests"):]
    return section[section.index("```sh\n") + 6:section.index("\n```", section.index("```sh\n"))]


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = _test_command(readme)
    ci = (root / ".ci" / "run").read_text()
    start, end = "# --- the README's test command ---\n", "# --- end of the README's test command"
    between = ci[ci.index(start) + len(start):ci.index(end)]
    assert between.strip() == block.strip()
    # the docs' Getting started page gives the same command
    assert _test_command((root / "docs" / "getting-started.md").read_text()).strip() == block.strip()
    assert "python3 -m venv .venv" in block and 'pip install -e ".[test,docs]"' in block
    quick = readme[readme.index("## Quick start"):readme.index("## Running the tests")]
    assert "python3 -m venv .venv" in quick and ". .venv/bin/activate" in quick and "pip install -e ." in quick


def test_a_taken_port_fails_before_anything_is_written(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("demo", "--port", str(port), "--duration", "1", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"error: --port {port}: cannot listen on 127.0.0.1:{port}" in out.stderr
    assert out.stdout == "" and list(tmp_path.iterdir()) == []
