"""The PostgreSQL store's connections: one asyncpg pool, shared by its writer, its reads and its
fleet calls. It opens, renews and closes the pool; nobody else holds the pool past a call.

The password comes from the URL or ``PGPASSWORD`` (asyncpg reads both); it is never logged: logs
and diagnostics show the URL through :func:`redact`."""

from __future__ import annotations

import asyncio

import asyncpg

from coordinator_plugins.error_handling.storage.base import StoreClosed

TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


def redact(url: str) -> str:
    """The URL without its password, for logs and diagnostics."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{head}://{user}{'' if ':' not in creds else ':***'}@{host}"


class Pool:
    """``url``'s pool of up to ``size`` connections, each in UTC."""

    def __init__(self, url: str, size: int = 8) -> None:
        self.url = url
        self.size = size
        self._pool: asyncpg.Pool | None = None

    @property
    def path(self) -> str:
        """The URL without its password."""
        return redact(self.url)

    @property
    def opened(self) -> bool:
        """A pool exists (it may have been closed under the store since)."""
        return self._pool is not None

    @property
    def usable(self) -> bool:
        return self._pool is not None and not self._pool.is_closing()

    @property
    def gone(self) -> bool:
        """The pool was closed or terminated under the store (not merely never opened)."""
        return self._pool is not None and self._pool.is_closing()

    def get(self) -> asyncpg.Pool:
        """The pool; StoreClosed when the store is not open."""
        if self._pool is None:
            raise StoreClosed("store is not open")
        return self._pool

    async def _init_connection(self, con: asyncpg.Connection) -> None:
        await con.execute("SET TIME ZONE 'UTC'")

    async def _create(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.size, init=self._init_connection, timeout=10, command_timeout=60,
        )

    async def open(self) -> None:
        self._pool = await self._create()

    async def renew(self) -> None:
        """A new pool in place of the current one (terminated)."""
        old, self._pool = self._pool, await self._create()
        if old is not None:
            old.terminate()

    async def expire(self) -> None:
        """Renew the pool's connections (one in a broken state is replaced)."""
        await self.get().expire_connections()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(10):
                    await pool.close()
            except (TimeoutError, *TRANSIENT):
                pool.terminate()

    def terminate(self) -> None:
        """Every connection dies at once, as a crashed database link would (fault injection)."""
        if self._pool is not None:
            self._pool.terminate()

    async def ping(self) -> bool:
        """True when a trivial query succeeds now."""
        if not self.usable:
            return False
        try:
            async with asyncio.timeout(5):
                async with self.get().acquire() as con:
                    await con.fetchval("SELECT 1")
            return True
        except (*TRANSIENT, asyncpg.PostgresError):
            return False
