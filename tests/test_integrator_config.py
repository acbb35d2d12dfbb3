"""Issue 28 item 6: ``serve --config`` lists every problem of the config at once, a line each,
and exits 2: the ``[coordinator]`` keys, the rules between keys, the security keys, protected
mode, the ``[plugins]`` list and each plugin's own table."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coordinator_plugins.reference import build_app

BAD = """
[coordinator]
host = "127.0.0.1"
port = 0
databse = "x.duckdb"
heartbeat_interval = 5.0
heartbeat_timeout = 2.0
api_token = "has space"

[plugins]
enabled = ["error_handling", "nope"]

[plugins.error_handling]
max_recovery_level = 9
escalation_backoff = 10
escalation_backoff_max = 1
databse = "y"

[plugins.unknown_plugin]
x = 1
"""

EXPECTED = [
    "error: coordinator.databse: unknown key; accepted: ",
    "error: coordinator.heartbeat_timeout: must be greater than heartbeat_interval (5), got 2",
    "error: coordinator.api_token: must be printable ASCII without spaces",
    "error: plugins.unknown_plugin: unknown plugin table; accepted: error_handling",
    "error: plugins.error_handling.max_recovery_level: expected an integer from 1 to 5, got 9",
    "error: plugins.error_handling.databse: unknown key; accepted: ",
    "error: plugins.error_handling.escalation_backoff_max: expected a number >= escalation_backoff (10.0), got 1.0",
    "error: plugins.enabled: unknown plugin 'nope'; accepted: error_handling",
]


def _serve(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "coordinator.toml"
    path.write_text(textwrap.dedent(text))
    return subprocess.run([sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_serve_lists_every_problem_at_once(tmp_path: Path) -> None:
    out = _serve(tmp_path, BAD)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == len(EXPECTED), out.stderr
    for line, start in zip(lines, EXPECTED, strict=True):
        assert line.startswith(start), (line, start)
    assert "did you mean 'database'?" in lines[0] and "did you mean 'database'?" in lines[5]
    assert "Traceback" not in out.stderr


def test_protected_mode_is_listed_with_the_rest(tmp_path: Path) -> None:
    out = _serve(tmp_path, """
        [coordinator]
        host = "0.0.0.0"
        workers = 3
        max_local_workers = 1

        [plugins]
        enabled = ["error_handling"]

        [plugins.error_handling]
        selection = "greedy"
    """)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert [line.split(":", 2)[1].strip() for line in lines] == [
        "coordinator.max_local_workers", "coordinator.host", "plugins.error_handling.selection"], out.stderr


def test_the_plugins_database_may_not_be_the_coordinators_file(tmp_path: Path) -> None:
    out = _serve(tmp_path, f"""
        [coordinator]
        database = "{tmp_path / 'farm.duckdb'}"

        [plugins]
        enabled = ["error_handling"]

        [plugins.error_handling]
        database = "{tmp_path / 'farm.duckdb'}"
    """)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: plugins.error_handling.database: ") and "a file of its own" in out.stderr


def test_a_cross_key_rule_is_not_judged_on_a_bad_value(tmp_path: Path) -> None:
    # heartbeat_timeout is itself bad: no second line comparing it with heartbeat_interval
    out = _serve(tmp_path, """
        [coordinator]
        heartbeat_interval = 2.0
        heartbeat_timeout = "soon"
    """)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr


def test_build_app_raises_every_problem_as_one_value_error(tmp_path: Path) -> None:
    import tomllib

    with pytest.raises(ValueError) as err:
        build_app(tomllib.loads(BAD))
    assert len(str(err.value).splitlines()) == len(EXPECTED)
