"""Issue 26, item 7: a retried report is counted once. ``Idempotency-Key`` (or a client
``event_id``) on POST /api/errors: the key is stored with the report's occurrence, in one
commit, so a retry after a 503, after SIGKILL and a restart, or at another member of a
PostgreSQL fleet gets the first answer and is never counted again; the same key with another
body is a 422; every 503 says ``may_be_stored``. Real DuckDB files, real PostgreSQL databases
(created and dropped by the test), real servers and a real ``serve`` subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from conftest import wait_for
from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config
from coordinator_plugins.httpio import json_error_from

HEADER = "Idempotency-Key"


async def post(farm: Any, body: dict[str, Any], key: str | None = None) -> tuple[int, Any, Any]:
    headers = {HEADER: key} if key is not None else {}
    async with farm.session.post(farm.url + "/api/errors", json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers


async def test_the_same_key_is_counted_once_and_another_body_is_a_422(make_farm: Any) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    body = {"message": "disk /dev/sdb gone", "component": "storage"}
    status, first, headers = await post(farm, body, "k-1")
    assert status == 202 and first["aggregated_count"] == 1 and "Idempotent-Replayed" not in headers, first
    # a burst of retries of the same report, at once
    results = await asyncio.gather(*(post(farm, body, "k-1") for _ in range(10)))
    assert all(s == 202 and a["error_id"] == first["error_id"] and a["aggregated_count"] == 1
               and h["Idempotent-Replayed"] == "true" for s, a, h in results), results
    # a new key for the same text is a new occurrence of the same group
    status, second, _ = await post(farm, body, "k-2")
    assert status == 202 and second["error_id"] == first["error_id"] and second["aggregated_count"] == 2
    # Sentry's way: event_id in the body
    ev = {**body, "event_id": "9f2c54b4d1a94b8f8e6ab0f3a2d3c4e5"}
    assert (await post(farm, ev))[1]["aggregated_count"] == 3
    status, again, headers = await post(farm, ev)
    assert status == 202 and again["aggregated_count"] == 3 and headers["Idempotent-Replayed"] == "true"
    # the same key for another report: refused, never counted
    status, err, _ = await post(farm, {**body, "message": "another report"}, "k-1")
    assert status == 422 and err["code"] == "idempotency_key_reused", err
    status, err, _ = await post(farm, body, " ")
    assert status == 400 and err["code"] == "invalid_idempotency_key", err
    status, group = await farm.get(f"/api/errors/{first['error_id']}")
    assert status == 200 and group["aggregated_count"] == 3
    assert (await farm.integ.store.totals()).occurrences == 3


async def test_a_key_the_store_cannot_check_is_a_503_that_stores_nothing(make_farm: Any) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "durable_timeout": 0.3})
    store = farm.integ.store
    store.auto_reconnect_after = 3600  # down until the test brings it back
    body = {"message": "link to rack 7 flapping", "component": "net"}
    assert (await post(farm, {"message": "before", "component": "net"}))[0] == 202
    store.break_connection()
    for _ in range(3):  # the client retries while the store is down
        status, err, headers = await post(farm, body, "retry-1")
        assert status == 503 and err["may_be_stored"] is False and headers["Retry-After"], err
    status, err, _ = await post(farm, {"message": "no key", "component": "net"})  # queued: it may be stored
    assert status == 503 and err["may_be_stored"] is True and err["code"] == "store_unavailable", err
    assert await store.reconnect()
    status, answer, headers = await post(farm, body, "retry-1")
    assert status == 202 and answer["aggregated_count"] == 1 and "Idempotent-Replayed" not in headers, answer
    status, answer, headers = await post(farm, body, "retry-1")
    assert status == 202 and answer["aggregated_count"] == 1 and headers["Idempotent-Replayed"] == "true"
    await farm.integ.flush()
    assert len(await store.occurrences(answer["error_id"], 100)) == 1


async def test_a_report_answered_503_and_stored_later_is_counted_once(make_farm: Any, tmp_path: Path,
                                                                      pg_url: str) -> None:
    """The issue's case: the commit is late (a lock holds the occurrences table), the report is
    answered 503 may_be_stored=true, and stored once the lock goes. The retries wait for that
    same write at the same member, are told 409 at another, and get the first answer after."""
    a, b = [await make_farm(plugin={"database": pg_url, "coordinator_id": n, "auto_recover": False,
                                    "durable_timeout": 0.5},
                            coordinator={"database": str(tmp_path / f"{n}.duckdb")}) for n in ("a", "b")]
    body = {"message": "switch 12 port 4 down", "component": "net"}
    assert (await post(a, {"message": "warm up", "component": "net"}))[0] == 202
    blocker = await asyncpg.connect(pg_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE error_occurrences IN ACCESS EXCLUSIVE MODE")
        for _ in range(2):
            status, err, _ = await post(a, body, "late-1")
            assert status == 503 and err["may_be_stored"] is True, err
        status, err, headers = await post(b, body, "late-1")
        assert status == 409 and err["code"] == "idempotency_key_in_use" and headers["Retry-After"], err
        await tx.rollback()
    finally:
        await blocker.close()
    await a.integ.flush()
    for m in (a, b, a):
        status, answer, headers = await post(m, body, "late-1")
        assert status == 202 and answer["aggregated_count"] == 1 and headers["Idempotent-Replayed"] == "true"
    group = await a.integ.store.get_group(answer["error_id"])
    assert group is not None and group.aggregated_count == 1
    assert len(await a.integ.store.occurrences(answer["error_id"], 100)) == 1


async def _serve(tmp: Path) -> tuple[asyncio.subprocess.Process, str]:
    cfg = tmp / "serve.toml"
    cfg.write_text(
        '[coordinator]\nhost = "127.0.0.1"\nport = 0\n'
        f'database = "{tmp / "coord.duckdb"}"\n[plugins]\nenabled = ["error_handling"]\n'
        f'[plugins.error_handling]\ndatabase = "{tmp / "eh.duckdb"}"\nauto_recover = false\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    async with asyncio.timeout(60):
        line = (await proc.stdout.readline()).decode()
    assert "listening on" in line, line + (await proc.stderr.read()).decode()
    return proc, line.strip().rsplit(" ", 1)[-1]


async def test_retries_after_sigkill_and_a_restart_count_once(tmp_path: Path) -> None:
    """16 clients send keyed reports; the server is killed mid-stream; after
    a restart every key is sent again: each report is stored exactly once, acknowledged or not."""
    proc, url = await _serve(tmp_path)
    acked: dict[str, str] = {}
    sent: list[str] = []
    stop = asyncio.Event()

    def body(key: str) -> dict[str, Any]:
        return {"message": f"report {key} failed", "component": "c", "error_type": "validation"}

    async def client(k: int, s: aiohttp.ClientSession) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            key = f"c{k}-{i}"
            sent.append(key)
            try:
                async with s.post(url + "/api/errors", json=body(key), headers={HEADER: key}) as r:
                    if r.status == 202:
                        acked[key] = (await r.json())["error_id"]
            except (aiohttp.ClientError, asyncio.CancelledError):
                return

    try:
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(client(k, s)) for k in range(16)]
            await wait_for(lambda: len(acked) > 100, 120, "100 keyed reports acknowledged")
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        proc, url = await _serve(tmp_path)
        answers: dict[str, str] = {}
        replayed: set[str] = set()
        async with aiohttp.ClientSession() as s:
            for key in sent:  # every report again, acknowledged or not
                async with s.post(url + "/api/errors", json=body(key), headers={HEADER: key}) as r:
                    assert r.status == 202, await r.text()
                    answers[key] = (await r.json())["error_id"]
                    if r.headers.get("Idempotent-Replayed") == "true":
                        replayed.add(key)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    assert set(acked) <= replayed  # every acknowledged report was stored: its first answer, replayed
    assert all(answers[k] == eid for k, eid in acked.items())
    integ = EnhancedErrorHandlingIntegration(None, validate_config(
        {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False}))
    await integ.start()
    try:
        assert (await integ.store.totals()).occurrences == len(sent)  # each report once, no more
        counted = 0
        for eid in set(answers.values()):
            group = await integ.store.get_group(eid)
            assert group is not None
            counted += group.aggregated_count
        assert counted == len(sent)
    finally:
        await integ.stop()


async def test_the_same_key_at_two_fleet_members_is_counted_once(make_farm: Any, tmp_path: Path,
                                                                  pg_url: str) -> None:
    """409 while the first member's write is not committed, the first answer replayed after."""
    members = [await make_farm(plugin={"database": pg_url, "coordinator_id": name, "auto_recover": False},
                               coordinator={"database": str(tmp_path / f"{name}.duckdb")})
               for name in ("a", "b")]
    a, b = members
    body = {"message": "gpu 3 fell off the bus", "component": "gpu"}
    results = await asyncio.gather(*(post(m, body, f"fleet-{i}") for i in range(20) for m in (a, b)))
    by_key: dict[str, list[int]] = {}
    for i, (status, doc, _) in enumerate(results):
        assert status in (202, 409), doc
        if status == 409:
            assert doc["code"] == "idempotency_key_in_use"
        by_key.setdefault(f"fleet-{i // 2}", []).append(status)
    for key in by_key:  # a retry at either member, once stored: the first answer
        for m in (a, b):
            status, doc, _ = await post(m, body, key)
            assert status == 202, doc
    status, err, _ = await post(b, {**body, "message": "other"}, "fleet-0")
    assert status == 422 and err["code"] == "idempotency_key_reused"
    await a.integ.flush()
    await b.integ.flush()
    totals = await a.integ.store.totals()
    assert totals.occurrences == 20, totals


async def test_a_retried_task_submission_queues_one_task(make_farm: Any) -> None:
    """POST /api/tasks with Idempotency-Key: a retry answers the first task, never queues a second
    one; another body with the same key is a 422; a client task_id with a key works the same."""
    farm = await make_farm(plugin={"auto_recover": False})
    spec = {"kind": "sim", "duration": 0.1, "message": "run the suite"}

    async def submit(body: dict[str, Any], key: str) -> tuple[int, Any, Any]:
        async with farm.session.post(farm.url + "/api/tasks", json=body, headers={HEADER: key}) as r:
            return r.status, await r.json(), r.headers

    status, first, headers = await submit(spec, "suite-run-1")
    assert status == 201 and "Idempotent-Replayed" not in headers, first
    results = await asyncio.gather(*(submit(spec, "suite-run-1") for _ in range(5)))
    assert all(s == 201 and a["task_id"] == first["task_id"] and h["Idempotent-Replayed"] == "true"
               for s, a, h in results), results
    status, err, _ = await submit({**spec, "message": "another task"}, "suite-run-1")
    assert status == 422 and err["code"] == "idempotency_key_reused", err
    status, named, _ = await submit({**spec, "task_id": "nightly-42"}, "suite-run-2")
    assert status == 201 and named["task_id"] == "nightly-42"
    status, again, headers = await submit({**spec, "task_id": "nightly-42"}, "suite-run-2")
    assert status == 201 and again["task_id"] == "nightly-42" and headers["Idempotent-Replayed"] == "true"
    status, err, _ = await submit(spec, " ")
    assert status == 400 and err["code"] == "invalid_idempotency_key"
    assert sorted(farm.coord.tasks) == sorted([first["task_id"], "nightly-42"])


def test_a_plain_503_says_may_be_stored_too() -> None:
    """A 503 the host's code raises as aiohttp's own, made JSON by the middleware: not knowing,
    it says the request may have been stored (a retry with the same key is safe either way)."""
    answer = json_error_from(web.HTTPServiceUnavailable())
    assert answer.status == 503 and answer.text is not None
    assert json.loads(answer.text) == {"error": "Service Unavailable", "code": "unavailable", "may_be_stored": True}
