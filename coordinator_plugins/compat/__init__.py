"""The seed framework's module names, so that a seed user's imports change by one prefix:

``from distributed_error_handler import RetryPolicy`` becomes
``from coordinator_plugins.compat.distributed_error_handler import RetryPolicy``.

Each module re-exports this plugin's real classes under the seed's names; none is a copy of the
seed's code, and what has no counterpart here is not offered (docs/migrating.md says
what replaces it). The plugin runs on asyncio: every coroutine here must be awaited on an
asyncio event loop (AnyIO's asyncio backend is fine; trio is not supported).
"""
