"""Issue 12: schemathesis, every check, over the whole OpenAPI document (the plugin's routes,
the reference coordinator's own, /metrics and the dashboard) of a real server with a token,
protect_reads and allowed_commands; then once more without the token, where every mutating
route must answer a JSON 401.

The run is bounded (a fixed number of examples per operation, a fixed seed): about 40 s for
the first under contention on this 2-core machine, 15-20 s for the second. The databases are
in memory: this is the HTTP contract, durability is tested elsewhere. Two statuses are
widened from schemathesis' defaults, each for a reason: a schema-valid request may meet 410
(a worker the server has since marked lost) or 422 (an Idempotency-Key or event_id that an
earlier request used with another body: issue 26.7), and a schema-violating one may be refused with
413 (an argv longer than the body limit); 5xx is removed from both, so that a server error
fails the run twice over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import farm_config
from tests.live_server import ServerThread

pytest.importorskip("schemathesis")

TOKEN = "schemathesis-token"
EXAMPLES = 8
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "410", "422"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    config = farm_config(
        tmp,
        # Recovery on (the default), but only the retry strategy: the worker strategy would start a
        # replacement process for each made-up worker id, which is its job but costs seconds each.
        {"hook_timeout": 0.5, "builtin_strategies": ["retry"], "database": ":memory:"},
        {"api_token": TOKEN, "protect_reads": True, "allowed_commands": ["/bin/true", "echo"],
         "database": ":memory:"},
    )
    s = ServerThread(config).start()
    yield s
    s.stop()


def fetch_document(server: ServerThread, path: Path) -> dict:
    req = urllib.request.Request(server.url + "/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        doc = json.loads(r.read())
    path.write_text(json.dumps(doc))
    return doc


def run_schemathesis(server: ServerThread, tmp: Path, *args: str, examples: int = EXAMPLES
                     ) -> subprocess.CompletedProcess[str]:
    (tmp / "schemathesis.toml").write_text(CONFIG)
    cmd = [sys.executable, "-m", "schemathesis.cli"]  # the interpreter the tests run on
    env = {k: v for k, v in os.environ.items() if k != "COORDINATOR_PLUGINS_API_TOKEN"}
    return subprocess.run(
        [*cmd, "--config-file", str(tmp / "schemathesis.toml"), "--no-color", "run", str(tmp / "openapi.json"),
         "--url", server.url, "--checks", "all", "--max-examples", str(examples), "--seed", "12",
         "--generation-database", "none", "--request-timeout", "30", "--workers", "1", *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=300,
    )


def test_schemathesis_finds_nothing(server: ServerThread, tmp_path: Path) -> None:
    doc = fetch_document(server, tmp_path / "openapi.json")
    assert {"/api/tasks", "/api/workers/register", "/api/errors", "/metrics"} <= set(doc["paths"])
    result = run_schemathesis(server, tmp_path, "-H", f"Authorization: Bearer {TOKEN}")
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
    assert "No issues found" in result.stdout or " passed" in result.stdout, result.stdout[-3000:]


def test_without_the_token_every_mutating_route_is_a_json_401(server: ServerThread, tmp_path: Path) -> None:
    doc = fetch_document(server, tmp_path / "openapi.json")
    # Without the token every answer is the same 401, so the generated fuzzing phase is enough.
    result = run_schemathesis(server, tmp_path, "--include-method", "POST", "--phases", "fuzzing", examples=3)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
    mutating = [(p, m) for p, ops in doc["paths"].items() for m in ops if m not in ("get", "head", "options")]
    assert len(mutating) >= 8
    for path, method in mutating:
        url = server.url + path.replace("{error_id}", "e1").replace("{worker_id}", "w1").replace("{task_id}", "t1")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            req = urllib.request.Request(url, data=b"{}", method=method.upper(),
                                         headers={"Content-Type": "application/json", **headers})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)
            assert err.value.code == 401, (method, path, headers)
            assert err.value.headers["Content-Type"].startswith("application/json")
            assert json.loads(err.value.read())["code"] == "unauthorized"
