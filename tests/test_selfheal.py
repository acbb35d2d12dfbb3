"""Issue 26 item 3: the DuckDB store heals itself. A database DuckDB invalidated (a checkpoint that
failed) is reopened as a new instance from its file; a full disk or a read-only data directory ends
by itself once the cause is gone; a client hears 503 (``may_be_stored``) meanwhile, not a 30 s hang;
big metadata is capped; a start that cannot write says so in one line."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import string
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest

from conftest import wait_for
from coordinator_plugins.error_handling import DuckDBStore, EnhancedErrorHandlingIntegration, validate_config
from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
)
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord
from tests.test_reliability import serve_config, start_serve


def _poison(cur: duckdb.DuckDBPyConnection) -> None:
    """Make DuckDB invalidate the instance: its memory_limit lowered under what a checkpoint of
    big strings must pin (what 70 reports of 1 MB metadata did under the default 64 MB)."""
    cur.execute("CREATE TABLE ballast (s VARCHAR)")  # sql-allowed: ballast that makes a checkpoint fail
    for _ in range(16):
        cur.execute("INSERT INTO ballast VALUES (?)", [os.urandom(500_000).hex()])  # sql-allowed: fault injection
    cur.execute("SET memory_limit = '8MB'")
    with pytest.raises(duckdb.Error, match=r"(?i)checkpoint|pin"):
        cur.execute("CHECKPOINT")


async def test_an_invalidated_database_is_reopened_from_its_file(tmp_path: Path) -> None:
    # no timed reconnect: only the store's own reaction to the invalidation can bring it back
    cfg = validate_config({"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    integ = EnhancedErrorHandlingIntegration(None, cfg)
    await integ.start()
    store = integ.store
    assert isinstance(store, DuckDBStore)
    store.auto_reconnect_after = 3600
    try:
        before, seq, _ = await integ.ingest("disk controller reset on shelf 3", {"component": "storage"})
        await store.wait_durable(seq, 10)
        await store.read(_poison)
        with pytest.raises(duckdb.Error, match="invalidated"):  # the instance is dead for every connection
            await store.read(lambda cur: cur.execute("SELECT 1").fetchall())  # sql-allowed: any query
        after, seq, _ = await integ.ingest("fan failure on rack 9", {"component": "cooling"})
        await store.wait_durable(seq, 60)  # before the fix: "database has been invalidated" until a restart
        await wait_for(lambda: store.status().ok, 30, "the store healthy again")
        assert store.status().reconnects >= 1
        for report in (before, after):  # what was acknowledged is readable from the new instance
            group = await store.get_group(report.error_id)
            assert group is not None and group.aggregated_count == 1
    finally:
        await integ.stop()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(60):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_reports_with_1mb_metadata_keep_the_store_alive(tmp_path: Path) -> None:
    """75 distinct reports, 1 MB of incompressible metadata each, under the default
    database_memory_mb: before the cap, the 70th made a checkpoint fail and the store died."""
    proc, url = await start_serve(serve_config(tmp_path))
    acked: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(75):
                md = {"run": i, "blob": os.urandom(500_000).hex()}  # 1,000,000 characters
                body = {"message": f"distinct failure {i}", "component": f"shelf{i}", "metadata": md}
                async with s.post(url + "/api/errors", json=body) as r:
                    assert r.status == 202, (i, await r.text())
                    acked[(await r.json())["error_id"]] = i
            async with s.get(url + "/api/diagnostics") as r:
                diag = await r.json()
            assert diag["database"]["ok"] is True, diag
            for error_id, i in acked.items():  # each acknowledged report readable, its small keys kept
                async with s.get(url + f"/api/errors/{error_id}") as r:
                    assert r.status == 200
                    md = (await r.json())["metadata"]
                assert md["run"] == i and "blob" not in md
                assert md["metadata_truncated"]["dropped_keys"] == ["blob"]
                assert md["metadata_truncated"]["cap_bytes"] == 16_384
    finally:
        await _stop(proc)
    assert proc.returncode == 0
    proc, url = await start_serve(serve_config(tmp_path))  # and a restart reads them all
    try:
        async with aiohttp.ClientSession() as s:
            for error_id in acked:
                async with s.get(url + f"/api/errors/{error_id}") as r:
                    assert r.status == 200
    finally:
        await _stop(proc)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 24 MB file system (tmpfs) to fill up; unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({done.stderr.strip()}): run as root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    with open(path, "wb") as f:
        chunk = b"\0" * 65_536
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


async def _post(s: aiohttp.ClientSession, url: str, i: int, pad: int = 0) -> tuple[int, dict[str, Any]]:
    md: dict[str, Any] = {"i": i, "pad": os.urandom(pad).hex()} if pad else {"i": i}
    body = {"message": f"shelf {i} lost its controller", "component": f"shelf{i}", "metadata": md}
    # well under the 30 s a POST once waited for its 503 while the store could not write
    async with s.post(url + "/api/errors", json=body, timeout=aiohttp.ClientTimeout(total=20)) as r:
        return r.status, await r.json()


async def _store_ok(s: aiohttp.ClientSession, url: str) -> bool:
    async with s.get(url + "/api/diagnostics") as r:
        return bool((await r.json())["database"]["ok"])


async def _heals(s: aiohttp.ClientSession, url: str, acked: dict[str, int], start: int) -> None:
    """The store serves again by itself: diagnostics says so, new reports are acknowledged, and
    every report acknowledged before, during and after is readable."""
    deadline = asyncio.get_running_loop().time() + 120
    while not await _store_ok(s, url):
        assert asyncio.get_running_loop().time() < deadline, "the store did not come back by itself"
        await asyncio.sleep(0.2)
    for i in range(start, start + 5):
        status, body = await _post(s, url, i)
        assert status == 202, body
        acked[body["error_id"]] = i
    for error_id, i in acked.items():
        async with s.get(url + f"/api/errors/{error_id}") as r:
            assert r.status == 200, f"acknowledged report {i} ({error_id}) is not readable"
            assert (await r.json())["metadata"]["i"] == i


async def test_a_full_disk_ends_by_itself_once_space_is_freed(tmp_path: Path, small_disk: Path) -> None:
    proc, url = await start_serve(serve_config(tmp_path, db=str(small_disk / "eh.duckdb")))
    acked: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(20):
                status, body = await _post(s, url, i)
                assert status == 202, body
                acked[body["error_id"]] = i
            _fill(small_disk / "ballast")
            refused = None
            for i in range(20, 60):  # the write-ahead log grows until it cannot
                status, body = await _post(s, url, i)
                if status == 202:
                    acked[body["error_id"]] = i
                    continue
                refused = (status, body)
                break
            assert refused is not None, "a full disk never refused a write"
            status, body = refused
            assert status == 503 and body["code"] == "store_unavailable" and body["may_be_stored"] is True, refused
            assert not await _store_ok(s, url)
            async with s.get(url + "/api/diagnostics") as r:  # what is wrong, and the fix
                issues = " ".join((await r.json())["issues"])
            assert "No space left on device" in issues and "fix: free space" in issues, issues
            (small_disk / "ballast").unlink()  # the cause is gone: no restart, no operator action
            await _heals(s, url, acked, 100)
    finally:
        await _stop(proc)
    assert proc.returncode == 0


# Root's permission checks are skipped by two capabilities; without them root obeys the mode bits
# of what it owns like any user (a 0555 directory refuses it a new file), while it can still read
# the checkout and its virtual environment wherever they are (a uid of its own could not, under a
# 0700 temporary directory).
_NO_DAC = "-dac_override,-dac_read_search"


def _serve_argv(cfg: Path, confined: bool) -> list[str]:
    prefix = ["setpriv", f"--bounding-set={_NO_DAC}", f"--inh-caps={_NO_DAC}"] if confined else []
    return [*prefix, sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(cfg)]


def _serve_once(cfg: Path, confined: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_serve_argv(cfg, confined), capture_output=True, text=True, timeout=60)


def _one_line_naming(done: subprocess.CompletedProcess[str], path: Path, fix: str) -> None:
    assert done.returncode != 0, done.stdout
    err = done.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(path) in err and fix in err, err


@pytest.fixture
def server_dir(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """(a directory for a server's files, whether the server runs confined). Root writes
    anywhere, so as root the server runs without the capabilities that skip permission checks
    (``setpriv``, as root only)."""
    yield tmp_path, os.geteuid() == 0


def test_a_start_on_a_full_disk_is_one_line_naming_the_path_and_the_fix(tmp_path: Path, small_disk: Path) -> None:
    db = small_disk / "eh.duckdb"
    con = duckdb.connect(str(db))  # a database with a write-ahead log to replay, as after a crash
    con.execute("SET checkpoint_threshold = '1GB'")
    con.execute("CREATE TABLE filler (s VARCHAR)")  # sql-allowed: a log to replay
    con.execute("INSERT INTO filler SELECT repeat('x', 1000) || i FROM range(2000) t(i)")  # sql-allowed: replayed
    con.close()
    _fill(small_disk / "ballast")
    _one_line_naming(_serve_once(serve_config(tmp_path, db=str(db))), small_disk, "fix: free space")


def test_a_start_on_a_read_only_directory_is_one_line_naming_the_path_and_the_fix(
    server_dir: tuple[Path, bool],
) -> None:
    where, confined = server_dir
    data = where / "data"
    data.mkdir(mode=0o555)
    done = _serve_once(serve_config(where, db=str(data / "eh.duckdb")), confined=confined)
    _one_line_naming(done, data, "writable")


@pytest.mark.parametrize("mode", [0o555, 0o000], ids=["read-only", "no-access"])
async def test_a_read_only_data_directory_ends_by_itself_once_restored(server_dir: tuple[Path, bool],
                                                                       mode: int) -> None:
    """The directory and its files made read-only under a running server: the next checkpoint
    cannot remove the write-ahead log, DuckDB invalidates the database, and reopening it fails
    until the permissions are back; then the store serves again by itself. A directory that
    cannot even be searched once killed the writer thread (its look at the file raised)."""
    tmp_path, confined = server_dir
    data = tmp_path / "data"
    data.mkdir()
    proc = await asyncio.create_subprocess_exec(
        *_serve_argv(serve_config(tmp_path, db=str(data / "eh.duckdb")), confined),
        stdout=asyncio.subprocess.PIPE, stderr=(tmp_path / "serve.log").open("wb"))
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    assert "listening on" in line, line
    url = line.strip().rsplit(" ", 1)[-1]
    acked: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(10):
                status, body = await _post(s, url, i)
                assert status == 202, body
                acked[body["error_id"]] = i
            for f in (*data.iterdir(), data):
                os.chmod(f, mode if f == data else 0o444)
            refused = None
            for i in range(10, 5_000):  # 14 KB of metadata each: a checkpoint comes within 16 MB of log
                status, body = await _post(s, url, i, pad=7_000)
                if status == 202:
                    acked[body["error_id"]] = i
                    continue
                refused = (status, body)
                break
            assert refused is not None, "a read-only directory never refused a write"
            status, body = refused
            assert status == 503 and body["may_be_stored"] is True, refused
            assert not await _store_ok(s, url)
            for f in (data, *data.iterdir()):  # restored: no restart, nothing else
                os.chmod(f, 0o755 if f == data else 0o644)
            await _heals(s, url, acked, 10_000)
    finally:
        await _stop(proc)
    assert proc.returncode == 0
    log = (tmp_path / "serve.log").read_text()
    # each retry failed alike: said once (with the fix), not at every retry
    assert log.count("reconnect failed") <= 1 and log.count("cannot look at") <= 1, log[-3000:]
    assert "reconnect failed" not in log or "fix: make" in log, log[-3000:]


async def test_a_flood_of_200k_groups_then_sigkill_then_restart_serves_every_report(tmp_path: Path) -> None:
    """200,000 groups in the file (loaded in bulk, as a flood leaves them), a flood of new
    reports against a real ``serve``, SIGKILL in the middle of it, and ``serve`` again on the same
    files: it starts, lists, reports healthy, and every acknowledged report is readable (on the
    issue's commit the restart exited 1 with OutOfMemoryException, or GET /api/errors answered 500)."""
    cfg = validate_config({"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    loader = EnhancedErrorHandlingIntegration(None, cfg)
    await loader.store.open()
    start = datetime.now(UTC) - timedelta(hours=1)
    groups, occurrences = [], []
    for g in range(200_000):
        t = start + timedelta(milliseconds=g)
        report = ErrorReport(
            error_id=f"{g:032x}", error_type=ErrorType.SYSTEM, error_severity=ErrorSeverity.MEDIUM,
            message=f"flooded failure {g}", context=ErrorContext(component=f"c{g % 40}", timestamp=t,
                                                                  metadata={"note": "x" * 64}),
            category=ErrorCategory.COORDINATOR_ERROR, fingerprint=f"{g:032x}", first_seen=t, last_seen=t)
        groups.append(GroupRecord.of(report))
        occurrences.append(OccurrenceRecord(report.error_id, t, report.message, "w0"))
    await loader.store.bulk_load(groups, occurrences)  # type: ignore[attr-defined]  # DuckDB's bulk path
    await loader.store.close()
    del groups, occurrences

    config = serve_config(tmp_path)
    proc, url = await start_serve(config)
    acked: set[str] = set()
    enough = asyncio.Event()
    stop = asyncio.Event()
    rng = random.Random(26)

    async def client(k: int, s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            word = "".join(rng.choices(string.ascii_lowercase, k=16))  # no digits: a new group each
            body = {"message": f"new failure {word} after the flood", "component": f"c{k}"}
            try:
                async with s.post(url + "/api/errors", json=body) as r:
                    if r.status == 202:
                        acked.add((await r.json())["error_id"])
                        if len(acked) > 2_000:
                            enough.set()
            except (aiohttp.ClientError, asyncio.CancelledError):
                return

    async with aiohttp.ClientSession() as s:
        tasks = [asyncio.create_task(client(k, s)) for k in range(16)]
        async with asyncio.timeout(300):
            await enough.wait()
        proc.send_signal(signal.SIGKILL)  # mid-flood: no shutdown, no flush
        await proc.wait()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    proc, url = await start_serve(config)  # before the fix: exit 1, OutOfMemoryException in load_state
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(5):
                async with s.get(url + "/api/errors?status=all&limit=100") as r:
                    assert r.status == 200, await r.text()
            assert await _store_ok(s, url)
            for error_id in acked:
                async with s.get(url + f"/api/errors/{error_id}") as r:
                    assert r.status == 200, f"acknowledged report {error_id} lost"
            async with s.get(url + f"/api/errors/{0:032x}") as r:  # and the oldest of the flood
                assert r.status == 200
    finally:
        await _stop(proc)
    assert proc.returncode == 0
