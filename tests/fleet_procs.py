"""Real ``coordinator-plugins serve`` processes (and workers) for the fleet tests: each member
its own OS process on an ephemeral port, all on one PostgreSQL database. Nothing is mocked;
every process is killed at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(config: dict[str, Any], prefix: str = "") -> str:
    """Tables of scalars and lists (and nested tables), enough for a coordinator config."""
    lines, tables = [], []
    for k, v in config.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{k}" if prefix else k
        out += f"\n[{name}]\n" + to_toml(v, name)
    return out


class Member:
    """One fleet member: a ``serve`` process with the plugin on ``pg_url``."""

    def __init__(self, tmp: Path, name: str, pg_url: str, plugin: dict[str, Any] | None = None,
                 coordinator: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        self.name = name
        coord = {"host": "127.0.0.1", "port": 0, "database": pg_url, "coordinator_id": name, "lease_ttl": 3.0,
                 "heartbeat_interval": 0.3, "heartbeat_timeout": 2.0, "scheduler_interval": 0.1}
        coord.update(coordinator or {})
        eh = {"database": pg_url, "escalation_backoff": 0.0, "default_timeout": 10.0, "verify_window": 0,
              "dashboard_path": ""}
        eh.update(plugin or {})
        self.config = {"coordinator": coord, "plugins": {"enabled": ["error_handling"], "error_handling": eh}}
        self.path = tmp / f"{name}.toml"
        self.path.write_text(to_toml(self.config))
        self.log = tmp / f"{name}.log"
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> Member:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator_plugins", "--log-level", "INFO", "serve", "--config", str(self.path),
             "--port", "0"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"{self.name} exited ({self.proc.poll()}): {self.log.read_text()[-3000:]}")
            if "listening on" in line:
                self.url = line.strip().rsplit(" ", 1)[1]
                return self
        raise AssertionError(f"{self.name} did not start within {timeout} s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup, its leases and heartbeats just stop."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str) -> Any:
        status, data = self.request("GET", path)
        assert status == 200, (status, data)
        return data


def start_worker(urls: list[str], worker_id: str, log: Path, failover_after: float = 1.0) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "coordinator_plugins", "worker", "--worker-id", worker_id,
            "--failover-after", str(failover_after)]
    for u in urls:
        args += ["--url", u]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("a"), text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def poll(pred: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
