"""Idempotent reports: ``POST /errors`` with an ``Idempotency-Key`` header (or, as Sentry's
clients send it, an ``event_id`` field) is counted once however often it is sent.

The key, a SHA-256 of the body and the answer the report got are written in the same commit as
the report's occurrence (table ``idempotency_keys``, kept ``idempotency_ttl`` seconds), so:

- a retry of a report that is stored gets the first answer again (202, ``Idempotent-Replayed:
  true``), across restarts and SIGKILL: the key is stored exactly when the report is;
- a retry of a report still queued (its first attempt answered 503 ``may_be_stored: true``)
  waits for that same write, never queues a second one;
- the same key with a different body is a 422 ``idempotency_key_reused``;
- in a PostgreSQL fleet a member claims the key in the database before it counts the report:
  the same key at another member gets the first answer once it is stored, and a 409
  ``idempotency_key_in_use`` (Retry-After) while it is not. A claim whose report never got
  stored (its member died first) is taken over after ``CLAIM_LEASE`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.base import Store, WriteRefused
from coordinator_plugins.error_handling.storage.records import IdempotencyRecord
from coordinator_plugins.error_handling.text import storable
from coordinator_plugins.httpio import ApiError, bad, json_response

logger = logging.getLogger(__name__)
HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 200
CLAIM_LEASE = 120.0  # s: a fleet member's claim whose report was never stored is taken over after it

Ingest = Callable[[Callable[[ErrorReport], IdempotencyRecord]], Awaitable[tuple[ErrorReport, int, str]]]


def key_of(request: web.Request, body: Mapping[str, Any]) -> str | None:
    """The request's idempotency key: the header, else the body's ``event_id``; None without."""
    raw = request.headers.get(HEADER)
    where = HEADER
    if raw is None and "event_id" in body:
        raw, where = body["event_id"], "event_id"
        if not isinstance(raw, str):
            raise bad(f"event_id: expected a string, got {type(raw).__name__}")
    if raw is None:
        return None
    if not raw.strip() or len(raw) > MAX_KEY:
        raise bad(f"{where}: expected 1 to {MAX_KEY} characters, not only blanks", "invalid_idempotency_key")
    return storable(raw)


def body_hash(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def answer_of(report: ErrorReport) -> dict[str, Any]:
    """The 202's fields but ``recovery`` (what this request started)."""
    return {
        "error_id": report.error_id,
        "error_type": report.error_type._value_,
        "error_severity": report.error_severity._value_,
        "category": report.category._value_,
        "aggregated_count": report.aggregated_count,
        "new_group": report.new_group,
        "regression": report.is_regression,
    }


def not_acknowledged(may_be_stored: bool) -> ApiError:
    return ApiError(
        503, "the error store is not writing; the report was not acknowledged", "store_unavailable",
        headers={"Retry-After": "5"}, extra={"may_be_stored": may_be_stored},
    )


class _Pending:
    """A key this process is answering: its body's hash, and once queued its answer and write."""

    __slots__ = ("answer", "digest", "failed", "ready", "seq")

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.answer: dict[str, Any] | None = None
        self.seq = 0
        self.failed = False  # gave up before its report was queued: the next request starts over
        self.ready = asyncio.Event()


class Idempotency:
    def __init__(self, store: Store, ttl: float, durable_timeout: float) -> None:
        self.store = store
        self.ttl = ttl
        self.durable_timeout = durable_timeout
        self._pending: dict[str, _Pending] = {}
        self._forgetting: set[asyncio.Task[None]] = set()
        self._lookups = Lookups(store)
        self.replays = 0  # answers given again (a retry counted once)

    async def durable(self, seq: int, may_be_stored: bool = True) -> None:
        """Wait for write ``seq``: 503 ``may_be_stored`` when it does not come in time."""
        try:
            await self.store.wait_durable(seq, self.durable_timeout)
        except WriteRefused as exc:  # its own rows only: the reports that shared its batch are stored
            raise bad(f"the report could not be stored and was not acknowledged ({exc})", "unstorable") from None
        except (TimeoutError, ConnectionError):
            raise not_acknowledged(may_be_stored) from None

    async def post(self, key: str, digest: str, ingest: Ingest) -> web.Response:
        while True:
            p = self._pending.get(key)
            if p is None:
                break
            if p.digest != digest:
                raise reused(key)
            await p.ready.wait()
            if p.failed or p.answer is None:
                continue  # the first attempt ended before its report was queued: start over
            await self.durable(p.seq)
            self._pending.pop(key, None)  # stored: the table answers from now on
            return self.replay(p.answer)
        p = self._pending[key] = _Pending(digest)
        try:
            stored = await self._held(key, digest)
            if stored is not None:
                p.answer = dict(stored)
                p.ready.set()
                self._pending.pop(key, None)
                return self.replay(stored)

            def make(report: ErrorReport) -> IdempotencyRecord:
                p.answer = answer_of(report)
                now = datetime.now(UTC)
                return IdempotencyRecord(key, digest, p.answer, now, now + timedelta(seconds=self.ttl))

            report, seq, recovery = await ingest(make)
            if p.answer is None:  # (the store was not asked to write it: nothing to replay)
                p.answer = answer_of(report)
            p.seq = seq
        except BaseException:
            p.failed = True
            self._pending.pop(key, None)
            p.ready.set()
            raise
        p.ready.set()
        try:
            await self.durable(seq)
        except ApiError as exc:
            if exc.status_code != 503:  # refused for good: a retry may be stored afresh
                self._pending.pop(key, None)
            else:  # still queued: retries wait for this write; forgotten once it is committed
                self._forget_when_stored(key, p)
            raise
        except BaseException:  # cancelled (the route's deadline): the write stays queued all the same
            self._forget_when_stored(key, p)
            raise
        self._pending.pop(key, None)
        return json_response({**p.answer, "recovery": recovery}, status=202)

    def _forget_when_stored(self, key: str, p: _Pending) -> None:
        task = asyncio.ensure_future(self._forget(key, p))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget(self, key: str, p: _Pending) -> None:
        try:
            await self.store.wait_durable(p.seq, None)
        except Exception:  # refused or closed: a retry starts over
            pass
        if self._pending.get(key) is p:
            self._pending.pop(key, None)

    async def _held(self, key: str, digest: str) -> Mapping[str, Any] | None:
        """The stored answer of ``key`` (a replay), None when this request is to store it; 422
        for another body, 409 while another fleet member holds the key without an answer."""
        try:
            found = await self._lookups.get(key)
            if found is None or found.answer is None:  # a claim: maybe stale, or this member's own
                now = datetime.now(UTC)
                claim = IdempotencyRecord(key, digest, None, now, now + timedelta(seconds=self.ttl))
                found = await self.store.claim_idempotency_key(claim, CLAIM_LEASE)
                if found is None:
                    return None
        except Exception as exc:  # the store cannot say whether the key was stored: count nothing
            logger.warning("idempotency key %r: the store cannot be read (%s: %s); answered 503", key[:64],
                           type(exc).__name__, exc)
            raise ApiError(
                503, f"the error store cannot be read to check {HEADER}; the report was not stored, retry later",
                "store_unavailable", headers={"Retry-After": "5"}, extra={"may_be_stored": False},
            ) from None
        if found.body_hash != digest:
            raise reused(key)
        if found.answer is None:
            raise ApiError(409, f"a report with {HEADER} {key[:64]!r} is being stored by fleet member "
                                f"{found.member!r}; retry after Retry-After to get its answer",
                           "idempotency_key_in_use", headers={"Retry-After": "2"})
        return found.answer

    def replay(self, answer: Mapping[str, Any]) -> web.Response:
        self.replays += 1
        resp = json_response({**answer, "recovery": "off"}, status=202)
        resp.headers[REPLAYED] = "true"
        return resp


class Lookups:
    """Keys looked up in the store together: the keys asked for while a query runs go in the
    next one (one query per batch, not per request)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, list[asyncio.Future[IdempotencyRecord | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: str) -> IdempotencyRecord | None:
        future: asyncio.Future[IdempotencyRecord | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    found = await self.store.idempotency_keys(list(batch))
                except Exception as exc:
                    for futures in batch.values():
                        for f in futures:
                            if not f.done():
                                f.set_exception(exc)
                    continue
                for key, futures in batch.items():
                    for f in futures:
                        if not f.done():
                            f.set_result(found.get(key))
        finally:
            self._task = None


def reused(key: str) -> ApiError:
    return ApiError(422, f"{HEADER} {key[:64]!r} was used before for a different report; a retry must send the "
                         "same body (use a new key for a new report)", "idempotency_key_reused")
