"""How long ``serve`` takes to exit after SIGTERM (issue 26.6): with no hook, and with a ``"*"``
sync hook stuck in ``time.sleep(3600)`` (``tests/hooks_for_tests.py:hang``) that every one of 6
reports started. Each round a fresh ``serve`` process; prints the seconds from SIGTERM to exit.
Run from the repository root: python benchmarks/bench_shutdown.py [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def once(hook: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "serve.toml"
        hooks = '[plugins.error_handling.hooks]\n"*" = ["tests.hooks_for_tests:hang"]\n' if hook else ""
        cfg.write_text(
            '[coordinator]\nhost = "127.0.0.1"\nport = 0\n'
            f'database = "{Path(tmp) / "coord.duckdb"}"\n[plugins]\nenabled = ["error_handling"]\n'
            f'[plugins.error_handling]\ndatabase = "{Path(tmp) / "eh.duckdb"}"\nauto_recover = false\n{hooks}')
        entered = Path(tmp) / "entered"
        proc = subprocess.Popen([sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                                env={**os.environ, "HOOK_ENTERED": str(entered)})
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
            for i in range(6):
                req = urllib.request.Request(url + "/api/errors", method="POST",
                                             data=json.dumps({"message": f"m{i}", "component": "c"}).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as r:
                    assert r.status == 202
            while hook and not entered.exists():
                time.sleep(0.05)
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            return time.perf_counter() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for hook in (False, True):
        times = [once(hook) for _ in range(args.rounds)]
        label = "hung sync hook" if hook else "no hook"
        print(f"{label:15s} SIGTERM to exit: {', '.join(f'{t:.2f}' for t in times)} s")


if __name__ == "__main__":
    main()
