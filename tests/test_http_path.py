"""Issue 18 (the POST /errors path under load): the route deadlines without a timer per request,
and the writer woken once per turn of the loop instead of once per write.

Real aiohttp servers and real DuckDB files in temp dirs.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling.intake.handler import ErrorHandler
from coordinator_plugins.error_handling.storage.duckdb import DuckDBStore
from coordinator_plugins.error_handling.storage.duckdb.queue import Wake
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord
from coordinator_plugins.error_handling.web.deadline import Deadlines


async def _serve(routes: dict[str, web.RequestHandler]) -> TestServer:  # type: ignore[type-arg]
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_a_request_past_its_deadline_answers_503_and_the_others_do_not() -> None:
    """One queue and one timer serve every request of a route: the slow one is cancelled and
    answers the JSON 503 store_busy with Retry-After; quick ones around it answer 200; a
    TimeoutError inside the handler is the same 503; the timer stops once nothing is in flight."""
    deadlines = Deadlines(0.4, tick=0.05)
    cancelled = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="never")

    async def quick(request: web.Request) -> web.Response:
        await asyncio.sleep(0.01)
        return web.json_response({"ok": True})

    async def gives_up(request: web.Request) -> web.Response:
        raise TimeoutError("a wait inside the handler")

    server = await _serve({"/slow": deadlines.wrap(slow), "/quick": deadlines.wrap(quick),
                           "/gives-up": deadlines.wrap(gives_up)})
    try:
        async with aiohttp.ClientSession() as s:
            async def get(path: str) -> tuple[int, dict[str, str], object]:
                async with s.get(server.make_url(path)) as r:
                    return r.status, dict(r.headers), await r.json()

            slow_task = asyncio.ensure_future(get("/slow"))
            quick_results = [await get("/quick") for _ in range(5)]
            status, headers, body = await slow_task
            assert status == 503 and headers["Retry-After"] == "5"
            assert body == {"error": "the error store did not answer within 0.4 s; retry later", "code": "store_busy",
                            "may_be_stored": False}  # a read route: nothing it asked is written (issue 26.7)
            assert cancelled.is_set()
            assert all(st == 200 for st, _, _ in quick_results)
            status, headers, body = await get("/gives-up")
            assert status == 503 and headers["Retry-After"] == "5"
        assert deadlines.expired == 1
        for _ in range(100):  # every request is done: the queue empties and the timer stops
            if deadlines.idle:
                break
            await asyncio.sleep(0.05)
        assert deadlines.idle
    finally:
        await server.close()


async def test_a_request_cancelled_by_someone_else_stays_cancelled() -> None:
    """The deadline converts only its own cancellation into a 503: a cancellation from outside
    (here: the task of the request cancelled directly) is not answered for."""
    deadlines = Deadlines(30)
    started = asyncio.Event()
    outcome: list[str] = []

    async def waits(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(60)
        return web.Response(text="never")

    handler = deadlines.wrap(waits)

    async def call() -> None:
        try:
            await handler(None)  # type: ignore[arg-type]  # the handler never reads it
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        except web.HTTPException as exc:
            outcome.append(f"http {exc.status}")

    task = asyncio.ensure_future(call())
    await started.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert outcome == ["cancelled"] and deadlines.expired == 0


def test_the_wake_signal_is_consumed_by_the_wait() -> None:
    wake = Wake()
    assert not wake.is_set() and not wake.wait(0)
    wake.set()
    wake.set()  # twice is once
    assert wake.is_set()
    assert wake.wait(0) and not wake.is_set() and not wake.wait(0)
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(wake.wait(30)))
    t.start()
    wake.set()  # from another thread
    t.join(30)
    assert got == [True]


async def test_the_writes_of_one_turn_of_the_loop_are_one_commit(tmp_path: Path) -> None:
    """An idle writer is woken once per turn of the loop: 1000 reports queued in one step are
    committed together (each used to wake it, and it took the GIL to commit a part of them every
    few ms), and each of them is durable and counted. Writes from a thread that is not the loop's
    still wake it. (Two commits at most: the writer also looks for writes every 0.5 s.)"""
    store = DuckDBStore(str(tmp_path / "eh.duckdb"), gather=0)
    await store.open()
    try:
        handler = ErrorHandler(store)
        await asyncio.sleep(0.05)
        commits = store.status().commits
        seqs = []
        for i in range(1000):
            report, message, md = handler.build(f"failure number {i} of a burst", {"component": "c"})
            seqs.append(store.record_occurrence(OccurrenceRecord.of(report, message, md), GroupRecord.of(report)))
        assert not store.queue.wake.is_set()  # not yet: the wake runs after this turn of the loop
        await asyncio.gather(*(store.wait_durable(s, 30) for s in seqs))
        assert store.status().commits - commits <= 2
        report, message, md = handler.build("from another thread", {"component": "c"})
        seq = await asyncio.to_thread(store.record_occurrence, OccurrenceRecord.of(report, message, md),
                                      GroupRecord.of(report))
        await store.wait_durable(seq, 30)
        await store.flush()
        totals = await store.totals()
        assert totals.occurrences == 1001
    finally:
        await store.close()


async def test_a_write_someone_waits_for_wakes_the_writer_at_once(tmp_path: Path) -> None:
    """A write nobody waits for wakes an idle writer at the end of the loop's turn; a write that
    is awaited (a POST answered only once its report is durable) wakes it at once, so that its
    commit runs while the loop is still busy with the rest of the turn."""
    store = DuckDBStore(str(tmp_path / "eh.duckdb"))
    await store.open()
    try:
        handler = ErrorHandler(store)
        await asyncio.sleep(0.05)
        assert store.queue.writer_idle
        report, message, md = handler.build("a report nobody waits for", {"component": "c"})
        store.record_occurrence(OccurrenceRecord.of(report, message, md), GroupRecord.of(report))
        assert not store.queue.wake.is_set()  # its wake is queued for the end of this turn
        report, message, md = handler.build("a report a client waits for", {"component": "c"})
        seq = store.record_occurrence(OccurrenceRecord.of(report, message, md), GroupRecord.of(report))
        assert store.durability.committed < seq, "committed before anyone waited"
        waiting = store.wait_durable(seq, 30)  # queues its wait at once, inside this turn
        assert store.queue.wake.is_set() or not store.queue.writer_idle, "the wait did not wake the writer"
        await waiting
        assert store.durability.committed >= seq
    finally:
        await store.close()
