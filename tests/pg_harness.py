"""A real PostgreSQL database per test: created with a unique name on the server at
``PGHOST:PGPORT`` (default 127.0.0.1:5432, user ``postgres``) and dropped at the end.

Without a reachable server the tests that need one skip, saying why; under ``CI=true`` they fail
instead, since CI promises a server (``.ci/run`` starts it)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "5432"))
USER = os.environ.get("PGUSER", "postgres")
ADMIN_DB = os.environ.get("PGDATABASE", "postgres")


def server_url(dbname: str) -> str:
    return f"postgresql://{USER}@{HOST}:{PORT}/{dbname}"


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, database=ADMIN_DB, timeout=5)


def unavailable(reason: str) -> None:
    """Skip the test saying why, or fail it under CI, where a server must be reachable."""
    message = f"PostgreSQL at {HOST}:{PORT} is not reachable ({reason})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true requires a server (.ci/run starts one)", pytrace=False)
    pytest.skip(message)


async def create_database() -> str:
    """A new, empty database with a unique name; its URL."""
    try:
        con = await _admin()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable(f"{type(exc).__name__}: {exc}")
    name = f"eh_test_{uuid.uuid4().hex[:12]}"
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return server_url(name)


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    con = await _admin()
    try:
        # Connections a killed process left behind would block the drop.
        await con.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await con.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await con.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The URL of a fresh database, dropped after the test."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
def pg_url_sync() -> object:
    """The same for tests without an event loop of their own."""
    url = asyncio.run(create_database())
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))
