"""The dashboard's screenshot of the docs (``docs/dashboard.png``), taken from a real demo run.

Runs ``coordinator-plugins demo`` (3 worker processes, seed 1, 40 s) in a temporary directory,
waits until the plugin has finished 15 recoveries (read from ``GET /api/timeline``), opens the
dashboard in Debian's Chromium through Playwright (the helper of ``tests/browser.py``: no browser
download) and saves the page as a PNG; then stops the demo and waits for it to exit.

    python scripts/screenshot.py                 # writes docs/dashboard.png
    python scripts/screenshot.py --out shot.png  # elsewhere
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _recoveries(url: str) -> int:
    """Finished recoveries the dashboard's timeline shows, or -1 while the demo is not up."""
    try:
        with urllib.request.urlopen(f"{url}/api/timeline?window=300", timeout=5) as answer:
            timeline = json.load(answer)
    except OSError:
        return -1
    outcomes = timeline.get("recoveries") or {}
    return sum(sum(v for v in series if isinstance(v, int | float)) for series in outcomes.values()
               if isinstance(series, list))


async def _shoot(url: str, out: Path) -> None:
    from tests.browser import chromium

    async with chromium(viewport=(1400, 1000)) as ctx:
        page = await ctx.new_page()
        await page.goto(f"{url}/dashboard/errors")
        await page.wait_for_selector("table tbody tr", timeout=30_000)
        await page.select_option("#window", "300")  # the charts' shortest window: the run fills more of it
        await page.wait_for_timeout(2_500)  # one more refresh of the charts (every 2 s)
        await page.screenshot(path=str(out), full_page=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--min-recoveries", type=int, default=15, help="finished recoveries to wait for")
    args = parser.parse_args(argv)
    from tests.browser import skip_reason

    reason = skip_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="screenshot-") as tmp:
        demo = subprocess.Popen(
            [sys.executable, "-m", "coordinator_plugins", "demo", "--workers", "3", "--duration", "40",
             "--seed", "1", "--port", str(port), "--fault-rate", "1", "--report", str(Path(tmp) / "r.html")],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while (found := _recoveries(url)) < args.min_recoveries:
                if demo.poll() is not None:
                    print(f"error: the demo exited ({demo.returncode}) before {args.min_recoveries} recoveries:\n"
                          f"{demo.stderr.read() if demo.stderr else ''}", file=sys.stderr)
                    return 1
                if time.monotonic() > deadline:
                    print(f"error: {found} recoveries after 120 s; try --min-recoveries lower", file=sys.stderr)
                    return 1
                time.sleep(1)
            asyncio.run(_shoot(url, args.out))
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGINT)
                try:
                    demo.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(demo.pid, signal.SIGKILL)
                    demo.wait()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
