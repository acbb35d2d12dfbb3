"""Fuzzing every documented route with hypothesis: no 500, and no answer the OpenAPI document
does not allow (status codes, required fields). A real server runs in a background thread."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import farm_config
from coordinator_plugins.error_handling.web.openapi import document
from tests.live_server import ServerThread

DOC = document("/api", token=True)  # the plugin's routes, as documented with a token configured
TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("fuzz")
    s = ServerThread(farm_config(tmp, {"auto_recover": True, "api_token": TOKEN, "builtin_strategies": ["retry"],
                                       "hook_timeout": 0.5})).start()
    yield s
    s.stop()


def request(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(raw) if "json" in ctype and raw else raw)
    finally:
        conn.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
enum_or_junk = lambda values: st.sampled_from(values) | st.text(max_size=12)  # noqa: E731
REPORT_FIELDS = {
    "message": st.text(max_size=200), "component": st.text(max_size=40), "operation": st.text(max_size=40),
    "error_type": enum_or_junk(DOC["paths"]["/api/errors"]["post"]["requestBody"]["content"]["application/json"]
                               ["schema"]["properties"]["error_type"]["enum"]),
    "severity": enum_or_junk(["info", "low", "medium", "high", "critical"]),
    "exception_type": enum_or_junk(["ConnectionResetError", "ConnectionException", "OSError", "TimeoutError"]),
    "worker_id": st.text(max_size=20), "task_id": st.text(max_size=20), "hardware_id": st.text(max_size=20),
    "stack_trace": st.text(max_size=100), "metadata": json_values,
}
OPTIONAL = {k: v for k, v in REPORT_FIELDS.items() if k not in ("message", "component")}
bodies = st.one_of(
    st.fixed_dictionaries(  # valid reports, so that the 202 path is fuzzed too
        {"message": st.text(min_size=1, max_size=200).filter(str.strip),
         "component": st.text(min_size=1, max_size=40).filter(str.strip)},
        optional={"operation": st.text(max_size=40),
                  "severity": st.sampled_from(["info", "low", "medium", "high", "critical"]),
                  "error_type": st.sampled_from(["network", "database", "worker", "timeout", "state"]),
                  "exception_type": st.text(max_size=30), "worker_id": st.text(max_size=20),
                  "metadata": st.dictionaries(st.text(max_size=10), json_values, max_size=3)}),
    st.fixed_dictionaries(
        {"message": st.text(min_size=1, max_size=200).filter(str.strip),
         "component": st.text(min_size=1, max_size=40).filter(str.strip)},
        optional=OPTIONAL),
    st.fixed_dictionaries({}, optional={k: v | json_values for k, v in REPORT_FIELDS.items()}),
    json_values,
    st.binary(max_size=64),
)
queries = st.dictionaries(
    st.sampled_from(["status", "resolved", "component", "severity", "error_type", "limit", "cursor", "days",
                     "strategy_id", "error_id", "window", "buckets"]),
    st.one_of(st.text(max_size=20), st.integers(-5, 5000).map(str),
              st.sampled_from(["open", "all", "resolved", "true", "high", "network", "7"])),
    max_size=4,
)
OPERATIONS = [(path, method) for path, ops in DOC["paths"].items() for method in ops]
path_ids = st.one_of(st.text(max_size=70), st.just("0" * 32))


def concrete(path: str, error_id: str) -> str:
    return path.replace("{error_id}", urllib.parse.quote(error_id, safe="") or "x")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(OPERATIONS) | st.just(("/api/errors", "post")), body=bodies, query=queries,
       error_id=path_ids, auth=st.booleans())
def test_no_route_answers_500_or_off_document(server: ServerThread, op: tuple[str, str], body: Any,
                                               query: dict[str, str], error_id: str, auth: bool) -> None:
    path, method = op
    spec = DOC["paths"][path][method]
    url = concrete(path, error_id) + ("?" + urllib.parse.urlencode(query) if query else "")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {TOKEN}"
    status, answer = request(server.port, method.upper(), url, raw if method == "post" else None, headers)
    assert status != 500, (method, url, raw, answer)
    assert str(status) in spec["responses"], (method, url, raw, status, answer)
    content = spec["responses"][str(status)]["content"]
    if "application/json" not in content:  # /metrics, the dashboard
        return
    schema = content["application/json"]["schema"]
    if "$ref" in schema:
        assert set(answer) >= {"error", "code"}
    for key in schema.get("required", []):
        assert key in answer, (method, url, status, answer, key)


def test_fuzzer_reaches_the_success_paths(server: ServerThread) -> None:
    """The fuzz above must be able to get 2xx answers too, or it would prove little."""
    status, body = request(server.port, "POST", "/api/errors",
                           json.dumps({"message": "m", "component": "c"}).encode(),
                           {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    assert status == 202
