"""The reference coordinator's own database: task state in DuckDB, off the event loop.

Writes are buffered in memory (latest row per task) and flushed by one thread. When the
connection breaks, rows stay buffered until :meth:`reconnect` succeeds; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id VARCHAR PRIMARY KEY,
    spec JSON,
    status VARCHAR,
    worker_id VARCHAR,
    attempt INTEGER,
    result JSON,
    updated_at TIMESTAMPTZ
);
"""
_UPSERT = (
    "INSERT INTO tasks SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::JSON[]), unnest(?::VARCHAR[]), "
    "unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::JSON[]), now()) "
    "ON CONFLICT (task_id) DO UPDATE SET spec = excluded.spec, status = excluded.status, "
    "worker_id = excluded.worker_id, attempt = excluded.attempt, result = excluded.result, updated_at = now()"
)



def task_of(task_id: str, spec: str | None, status: str, worker_id: str | None, attempt: int,
            result: str | None) -> dict[str, Any]:
    """A stored task row (``spec`` and ``result`` as JSON text) as the coordinator holds it; the
    PostgreSQL database (``db_pg``) reads its rows through this too."""
    return {"task_id": task_id, "spec": json.loads(spec) if spec else {}, "status": status, "worker_id": worker_id,
            "attempt": attempt, "result": json.loads(result) if result else None}

class CoordinatorDB:
    def __init__(self, path: str) -> None:
        self.path = path
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coord-db")
        self._dirty: dict[str, tuple[Any, ...]] = {}
        self._lock = threading.Lock()
        self.ok = False
        self.last_error: str | None = None
        self.writes = 0

    def _open_sync(self) -> None:
        con = duckdb.connect(
            self.path, config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        )
        con.execute(_SCHEMA)
        con.execute("SELECT 1").fetchall()
        old, self._con = self._con, con
        if old is not None:
            try:
                old.close()
            except Exception:
                pass

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._run(self._open_sync)
        self.ok = True

    async def close(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            logger.error("coordinator db: final flush failed, %d rows unwritten: %s", len(self._dirty), exc)

        def _close() -> None:
            if self._con is not None:
                try:
                    self._con.close()
                except Exception:
                    pass
                self._con = None

        await self._run(_close)
        self._pool.shutdown(wait=True)

    def mark(
        self,
        task_id: str,
        spec: dict[str, Any],
        status: str,
        worker_id: str | None,
        attempt: int,
        result: dict[str, Any] | None,
        final: bool = False,  # kept by the PostgreSQL variant (db_pg.py), implied here by status and result
    ) -> None:
        row = (
            task_id,
            json.dumps(spec),
            status,
            worker_id,
            attempt,
            json.dumps(result) if result is not None else None,
        )
        with self._lock:
            self._dirty[task_id] = row

    @property
    def pending_rows(self) -> int:
        return len(self._dirty)

    def _flush_sync(self) -> int:
        with self._lock:
            rows, self._dirty = self._dirty, {}
        if not rows:
            return 0
        try:
            if self._con is None:
                raise duckdb.ConnectionException("coordinator database is not connected")
            cols = [list(c) for c in zip(*rows.values(), strict=True)]
            self._con.execute("BEGIN TRANSACTION")
            self._con.execute(_UPSERT, cols)
            self._con.execute("COMMIT")
        except Exception:
            with self._lock:  # keep newer rows written meanwhile; restore the rest
                for k, v in rows.items():
                    self._dirty.setdefault(k, v)
            try:
                if self._con is not None:
                    self._con.execute("ROLLBACK")
            except Exception:
                pass
            raise
        self.writes += len(rows)
        return len(rows)

    async def flush(self) -> int:
        """Write buffered rows; raises the database's error when it cannot."""
        try:
            n = await self._run(self._flush_sync)
        except Exception as exc:
            self.ok = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.ok = True
        return n

    async def reconnect(self) -> bool:
        try:
            await self._run(self._open_sync)
            await self.flush()
        except Exception as exc:
            self.ok = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("coordinator db: reconnect failed: %s", self.last_error)
            return False
        self.ok = True
        self.last_error = None
        return True

    async def ping(self) -> bool:
        def _ping() -> bool:
            if self._con is None:
                return False
            self._con.execute("SELECT 1").fetchall()
            return True

        try:
            return bool(await self._run(_ping))
        except Exception:
            return False

    async def load_tasks(self) -> list[dict[str, Any]]:
        def _load() -> list[dict[str, Any]]:
            if self._con is None:
                raise duckdb.ConnectionException("coordinator database is not connected")
            cur = self._con.execute("SELECT task_id, spec, status, worker_id, attempt, result FROM tasks")
            return [task_of(*r) for r in cur.fetchall()]

        return list(await self._run(_load))

    def break_connection(self) -> None:
        """Fault injection: the connection dies as a crashed database link would."""

        def _break() -> None:
            if self._con is not None:
                self._con.close()

        self._pool.submit(_break).result()
