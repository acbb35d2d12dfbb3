"""POST /errors with and without an idempotency key (issue 26.7), the server in a process of its
own (the plugin with ``auto_recover = false``), the load from an aiohttp client in this process
(C connections, N requests per mode). Modes, each on a fresh server:

- ``plain``: no key (each request one occurrence);
- ``keyed``: a new ``Idempotency-Key`` per request (a lookup, then the key written with its
  occurrence in the same commit);
- ``replay``: N requests of one key already stored (each answered from the table).

Prints requests per second of each mode and the ratio of ``keyed`` and ``replay`` to ``plain``.
A Python client caps what it can measure: compare the ratios, not the absolute figures.
Run: python benchmarks/bench_idempotency.py [--requests N] [--connections C] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator_plugins.reference import build_app  # noqa: E402


async def serve() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app({"coordinator": {"port": 0, "database": str(Path(tmp) / "coord.duckdb")},
                         "plugins": {"enabled": ["error_handling"],
                                     "error_handling": {"database": str(Path(tmp) / "eh.duckdb"),
                                                        "auto_recover": False}}})
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()


async def load(url: str, mode: str, n: int, connections: int) -> float:
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as s:
        body = {"message": "worker lost connection to 10.0.0.7:5432", "component": "worker-3"}
        if mode == "replay":
            async with s.post(url, json=body, headers={"Idempotency-Key": "the-one"}) as r:
                assert r.status == 202
        todo = iter(range(n))

        async def client() -> None:
            for i in todo:
                headers = {"keyed": {"Idempotency-Key": f"key-{i}"}, "replay": {"Idempotency-Key": "the-one"},
                           "plain": {}}[mode]
                async with s.post(url, json=body, headers=headers) as r:
                    assert r.status == 202, await r.text()

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        return n / (time.perf_counter() - t0)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(serve())
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"plain": [], "keyed": [], "replay": []}
    for _ in range(args.rounds):
        for mode in rates:
            proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                assert proc.stdout is not None
                port = json.loads(proc.stdout.readline())["port"]
                url = f"http://127.0.0.1:{port}/api/errors"
                rates[mode].append(asyncio.run(load(url, mode, args.requests, args.connections)))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    med = {m: statistics.median(v) for m, v in rates.items()}
    for mode, v in rates.items():
        print(f"{mode:7s} {med[mode]:8.0f} req/s (median of {', '.join(f'{x:.0f}' for x in v)})")
    print(f"keyed/plain {med['keyed'] / med['plain']:.2f}  replay/plain {med['replay'] / med['plain']:.2f}")


if __name__ == "__main__":
    main()
