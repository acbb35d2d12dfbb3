"""Issue 26, item 8: text PostgreSQL's UTF8 refuses (NUL) never breaks the fleet's budget query,
an insert or a read, and intake normalizes text to NFC so that the composed and decomposed
spellings of the same text are one group. Real PostgreSQL databases (created and dropped by
the test), real DuckDB files, real HTTP servers."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.text import storable, storable_value

NUL_BODY = {"message": "boom\x00here", "component": "svc\x00x", "operation": "op\x00", "worker_id": "w\x00",
            "task_id": "t\x00", "hardware_id": "h\x00", "exception_type": "E\x00", "stack_trace": "line\x00",
            "metadata": {"k\x00": "v\x00", "deep": ["\x00"]}}


def test_storable_replaces_nul_and_composes() -> None:
    assert storable("a\x00b") == "a\ufffdb"
    assert storable("caf\u00e9\x00") == "caf\u00e9\ufffd"
    nfd = unicodedata.normalize("NFD", "caf\u00e9 \u00c5ngstr\u00f6m")
    assert nfd != "caf\u00e9 \u00c5ngstr\u00f6m"
    assert storable(nfd) == "caf\u00e9 \u00c5ngstr\u00f6m"
    assert storable_value({"k\x00": [nfd]}) == {"k\ufffd": ["caf\u00e9 \u00c5ngstr\u00f6m"]}


async def test_a_nul_in_any_field_never_breaks_the_postgres_fleet(make_farm: Any, pg_url: str) -> None:
    farm = await make_farm(plugin={"database": pg_url, "auto_recover": False})
    async with farm.session.post(farm.url + "/api/errors", json=NUL_BODY) as resp:
        doc = await resp.json()
        assert resp.status == 202, doc
    status, row = await farm.get(f"/api/errors/{doc['error_id']}")
    assert status == 200, row
    assert row["component"] == "svc\ufffdx" and row["message"] == "boom\ufffdhere"
    # the component as recovery passes it to the fleet's budget query (before the fix: a query error)
    group = await farm.integ.store.get_group(doc["error_id"])
    assert group is not None
    action, wait = await farm.integ.store.budget_acquire(group.component, 60, 3, 0)
    assert action is not None and wait == 0
    # and the query itself never fails, whatever a caller passes
    action, _ = await farm.integ.store.budget_acquire("raw\x00component", 60, 3, 0)
    assert action is not None
    # reads taking text from the client: an answer, never a 500
    status, page = await farm.get("/api/errors?status=all&component=svc%00x")
    assert status == 200 and [e["error_id"] for e in page["errors"]] == [doc["error_id"]], page
    status, missing = await farm.get("/api/errors/abc%00def")
    assert status == 404, missing
    assert farm.integ.store.status().dropped_writes == 0


async def test_nfc_and_nfd_forms_are_one_group(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    await integ.start()
    try:
        text = "r\u00e9seau coup\u00e9 \u00e0 Z\u00fcrich"
        nfd = unicodedata.normalize("NFD", text)
        a = await integ.report_error(text, {"component": "n\u00f8de-\u00e9"})
        b = await integ.report_error(nfd, {"component": unicodedata.normalize("NFD", "n\u00f8de-\u00e9")})
        assert a.error_id == b.error_id and b.aggregated_count == 2
        await integ.flush()
        rows = await integ.get_unresolved_errors()
        assert [(r["message"], r["component"]) for r in rows] == [(text, "n\u00f8de-\u00e9")]
    finally:
        await integ.stop()
