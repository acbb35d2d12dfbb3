"""Issue 12, finding 1: one client's content never costs another client its report.

A value the database cannot store (a lone surrogate) is made storable at intake (U+FFFD), over
HTTP and in process; and should the database still refuse a row, the writer isolates it: the
rows that shared its batch are committed and only the refused write's own waiter fails.
Real servers, real DuckDB files; nothing is mocked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.intake.handler import ErrorHandler
from coordinator_plugins.error_handling.storage.base import WriteRefused
from coordinator_plugins.error_handling.storage.duckdb import DuckDBStore
from coordinator_plugins.error_handling.storage.duckdb.batch import APPEND_PART, CHUNK
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord
from coordinator_plugins.error_handling.text import storable, storable_value

JSON = {"Content-Type": "application/json"}
HOSTILE = [  # valid JSON, each string with a lone surrogate somewhere
    b'{"message": "bad \\ud800 one", "component": "c"}',
    b'{"message": "m", "component": "c\\udfff"}',
    b'{"message": "m2", "component": "c", "metadata": {"k\\ud83d": "v\\udc00", "deep": [{"x": "\\ud801"}]}}',
    b'{"message": "m3", "component": "c", "stack_trace": "line \\udfff", "operation": "op\\ud800"}',
    b'{"message": "m4", "component": "c", "worker_id": "w\\ud800", "task_id": "t\\udc01", "hardware_id": "h\\ud800"}',
    b'{"message": "m5", "component": "c", "exception_type": "E\\ud800rror"}',
    b'{"message": "a\\u0000b", "component": "c\\u0000"}',
]


def strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_storable_replaces_lone_surrogates_only() -> None:
    assert storable("plain") == "plain"
    assert storable("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"
    assert storable("a\ud800b") == "a\ufffdb"
    assert storable("\ud83d\ude00 \udfff") == "\U0001f600 \ufffd"  # a pair is its character
    md = {"ok": "v", "n": 1}
    assert storable_value(md) is md  # nothing to change: no copy
    out = storable_value({"k\ud800": ["x\udc00", {"y": float("nan")}], "z": float("-inf"), "t": (1.5, "\ud801")})
    assert out == {"k\ufffd": ["x\ufffd", {"y": None}], "z": None, "t": (1.5, "\ufffd")}


async def test_hostile_clients_cost_no_other_client_its_report(make_farm) -> None:
    """8 well-behaved clients and 2 hostile ones at once: every report is acknowledged only once
    stored, every acknowledged report (the hostile ones' included) reads back through the API,
    and the occurrences counted are exactly the acknowledged ones."""
    farm = await make_farm(plugin={"auto_recover": False})
    acked: dict[str, int] = {}
    statuses: list[int] = []

    def ack(doc: dict[str, Any]) -> None:
        acked[doc["error_id"]] = acked.get(doc["error_id"], 0) + 1

    async def normal(k: int) -> None:
        for i in range(30):
            async with farm.session.post(farm.url + "/api/errors", json={
                    "message": f"disk slow on shelf {'abcdefgh'[i % 8]}", "component": f"svc{'pqrstuvw'[k]}",
                    "metadata": {"k": k}}) as r:
                assert r.status == 202, await r.text()
                ack(strict(await r.text()))

    async def hostile() -> None:
        for _ in range(3):
            for body in HOSTILE:
                async with farm.session.post(farm.url + "/api/errors", data=body, headers=JSON) as r:
                    text = await r.text()
                    statuses.append(r.status)
                    doc = strict(text)
                    assert r.status == 202, (body, r.status, doc)  # made storable, not refused
                    ack(doc)
                await asyncio.sleep(0)

    await asyncio.gather(*[normal(k) for k in range(8)], hostile(), hostile())
    assert farm.integ is not None
    await asyncio.wait_for(farm.integ.flush(), 30)
    for eid, n in acked.items():
        status, row = await farm.get(f"/api/errors/{eid}")
        assert status == 200, (eid, row)
        assert row["aggregated_count"] == n, (eid, row["aggregated_count"], n)
    assert farm.integ.store.status().dropped_writes == 0
    # what the hostile strings became: U+FFFD where the surrogate was
    _, page = await farm.get("/api/errors?status=all&limit=1000")
    by_message = {e["message"]: e for e in page["errors"]}
    assert "bad \ufffd one" in by_message
    assert any(e["component"] == "c\ufffd" for e in page["errors"])
    m2 = by_message["m2"]
    status, row = await farm.get(f"/api/errors/{m2['error_id']}")
    assert row["metadata"] == {"k\ufffd": "v\ufffd", "deep": [{"x": "\ufffd"}]}, row
    totals = await farm.integ.store.totals()
    assert totals.occurrences == sum(acked.values())


async def test_report_error_in_process_makes_values_storable(tmp_path: Path) -> None:
    """report_error with lone surrogates (e.g. a file name decoded with surrogateescape) and a
    NaN in metadata: stored, read back as strict JSON with U+FFFD and null."""
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    await integ.start()
    try:
        good = await integ.report_error("an ordinary failure", {"component": "svc"})
        bad = await integ.report_error(
            OSError("cannot open /data/\udcff\udcfe.bin"),
            {"component": "io\ud800", "operation": "read", "worker_id": "w\udc00",
             "metadata": {"path\ud800": "x\udfff", "ratio": float("nan"), "inf": float("inf")},
             "stack_trace": "Traceback \ud800"},
        )
        await integ.flush()
        rows = {r["error_id"]: r for r in await integ.get_unresolved_errors()}
        assert good.error_id in rows and bad.error_id in rows
        row = rows[bad.error_id]
        assert row["message"] == "cannot open /data/\ufffd\ufffd.bin"
        assert row["component"] == "io\ufffd"
        text = json.dumps(row, default=str, allow_nan=False)  # strict JSON: no NaN left anywhere
        assert "\\ufffd" in text
        assert row["metadata"] == {"path\ufffd": "x\ufffd", "ratio": None, "inf": None}
        assert integ.store.status().dropped_writes == 0
    finally:
        await integ.stop()


async def test_the_writer_isolates_a_refused_row_and_fails_only_its_waiter(tmp_path: Path) -> None:
    """Past intake (the store used directly): one occurrence the database refuses, in a batch
    shared with 40 others. The others are committed and their waits succeed; only the refused
    write's wait fails (WriteRefused), also for a wait that starts after the commit."""
    store = DuckDBStore(str(tmp_path / "eh.duckdb"), gather=0.05)
    await store.open()
    try:
        handler = ErrorHandler(store)
        seqs: list[tuple[str, int]] = []
        bad_seq = 0
        for i in range(41):
            report, message, md = handler.build(f"failure {'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP'[i]}",
                                                {"component": f"c{i % 5}"})
            if i == 20:  # the one row DuckDB refuses: cannot encode str as UTF-8
                bad_seq = store.record_occurrence(OccurrenceRecord.of(report, "bad \ud800 row", md), GroupRecord.of(report))
            else:
                seqs.append((report.error_id, store.record_occurrence(OccurrenceRecord.of(report, message, md), GroupRecord.of(report))))
        results = await asyncio.gather(*(store.wait_durable(s, 30) for _, s in seqs), store.wait_durable(bad_seq, 30),
                                       return_exceptions=True)
        assert all(r is None for r in results[:-1]), results
        assert isinstance(results[-1], WriteRefused), results[-1]
        with pytest.raises(WriteRefused):
            await store.wait_durable(bad_seq, 5)
        await store.flush()
        for eid, _ in seqs:
            assert [o.error_id for o in await store.occurrences(eid)] == [eid]
        totals = await store.totals()
        assert totals.groups == 40 and totals.occurrences == 40
        assert store.status().dropped_writes >= 1
        # the writer goes on: a later write commits as usual
        report, message, md = handler.build("after the refusal", {"component": "c"})
        await store.wait_durable(store.record_occurrence(OccurrenceRecord.of(report, message, md), GroupRecord.of(report)), 30)
    finally:
        await store.close()


async def test_batches_larger_than_one_call_are_written_whole_and_a_refused_row_costs_only_itself(
    tmp_path: Path,
) -> None:
    """The writer converts at most APPEND_PART occurrence rows (CHUNK group rows) per DuckDB call,
    so that the event loop never waits long for the GIL. A batch several times that size, of new
    groups and then of occurrences of known groups only (the appender's path), with one row the
    database refuses in the middle: every other row is committed exactly once."""
    store = DuckDBStore(str(tmp_path / "eh.duckdb"))
    await store.open()
    try:
        handler = ErrorHandler(store)
        n = 3 * APPEND_PART + 17
        assert n > 3 * CHUNK
        reports = []
        seqs = []
        for i in range(n):
            tag = "".join(chr(97 + (i // 26**k) % 26) for k in range(3))  # letters: not masked as a number
            report, message, md = handler.build(f"failure kind {tag}", {"component": f"c{i % 9}"})
            reports.append(report)
            seqs.append(store.record_occurrence(OccurrenceRecord.of(report, message, md), GroupRecord.of(report)))
        await asyncio.gather(*(store.wait_durable(s, 30) for s in seqs))
        for r in reports:
            r.persisted = True
        # one batch of occurrences of known groups only, the refused one in its second part
        seqs = []
        bad_seq = 0
        for i, r in enumerate(reports):
            if i == APPEND_PART + 5:
                bad_seq = store.record_occurrence(OccurrenceRecord.of(r, "bad \ud800 row", None))
            else:
                seqs.append(store.record_occurrence(OccurrenceRecord.of(r, f"again {i}", None)))
        results = await asyncio.gather(*(store.wait_durable(s, 30) for s in seqs), store.wait_durable(bad_seq, 30),
                                       return_exceptions=True)
        assert all(x is None for x in results[:-1]), [x for x in results if x is not None][:3]
        assert isinstance(results[-1], WriteRefused), results[-1]
        await store.flush()
        totals = await store.totals()
        assert totals.groups == n
        assert totals.occurrences == 2 * n - 1  # every row once: none lost, none written twice
    finally:
        await store.close()


async def test_a_refused_write_fails_only_its_own_wait_on_a_live_farm(make_farm) -> None:
    """Should the database refuse a report's own row all the same (here: metadata whose str()
    is no text, which intake cannot see into), the client gets a JSON 400, never a 202, and the
    clients around it get their 202s."""
    farm = await make_farm(plugin={"auto_recover": False, "commit_window": 0.05})
    assert farm.integ is not None

    class Opaque:
        def __str__(self) -> str:
            return "opaque \ud800"

    async def bad() -> tuple[int, Any]:
        # in process, through the same path as HTTP, waiting for durability as POST does
        report, seq, _ = await farm.integ.ingest("unstorable metadata", {"component": "c",
                                                                         "metadata": {"o": Opaque()}})
        try:
            await farm.integ.store.wait_durable(seq, 30)
        except WriteRefused:
            return 400, report.error_id
        return 202, report.error_id

    async def good(i: int) -> tuple[int, Any]:
        return await farm.post("/api/errors", {"message": f"fine {'abcdefghij'[i]}", "component": "c"})

    results = await asyncio.gather(bad(), *(good(i) for i in range(10)))
    assert results[0][0] == 400
    for status, body in results[1:]:
        assert status == 202
        assert (await farm.get(f"/api/errors/{body['error_id']}"))[0] == 200
    async with aiohttp.ClientSession() as s, s.get(farm.url + "/api/diagnostics") as r:
        assert r.status == 200
