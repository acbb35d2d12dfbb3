"""Debian's Chromium driven by Playwright, for the dashboard's browser tests.

Never a browser download: Playwright's Python package drives ``/usr/bin/chromium`` (``bash .ci/run``
installs Debian's ``chromium``). Without either, the tests using :func:`chromium` skip and say why.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does it)"
    return None


needs_chromium = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@asynccontextmanager
async def chromium(viewport: tuple[int, int] = (1400, 1000), args: tuple[str, ...] = ()) -> AsyncIterator[Any]:
    """A fresh headless browser context with a new empty profile; closed (and its processes gone)
    after. ``args``: more command-line flags for Chromium."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with async_playwright() as pw:
            # --headless and --user-data-dir are passed by Playwright from these arguments
            ctx = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=[*FLAGS, *args],
                viewport={"width": viewport[0], "height": viewport[1]})
            try:
                yield ctx
            finally:
                await ctx.close()
