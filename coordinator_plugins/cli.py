"""The ``coordinator-plugins`` command: serve, worker, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys


def _serve(args: argparse.Namespace) -> int:
    from coordinator_plugins.plugins import load_config
    from coordinator_plugins.reference.app import COORDINATOR_KEY, SECURITY_KEY, build_app, serve
    from coordinator_plugins.reference.security import check_listen

    try:
        config = load_config(args.config)
        if args.port is not None:
            config.setdefault("coordinator", {})["port"] = args.port
        app = build_app(config)  # validate everything (plugins included) before binding anything
        check_listen(app[COORDINATOR_KEY].settings.host, app[SECURITY_KEY])  # protected mode
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop)

    from coordinator_plugins.error_handling.storage.duckdb_store import StoreUnavailable

    try:
        asyncio.run(run())
    except (StoreUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _worker(args: argparse.Namespace) -> int:
    import os

    from coordinator_plugins.httpio import TOKEN_ENV, token_problem
    from coordinator_plugins.reference.worker import main as worker_main

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    problem = token_problem(token)
    if problem:
        print(f"error: --token: {problem}", file=sys.stderr)
        return 2
    return worker_main(args.url, args.worker_id, args.max_tasks, args.parent_pid, token)


def _demo(args: argparse.Namespace) -> int:
    from coordinator_plugins.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coordinator-plugins", description=__doc__)
    p.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the reference coordinator with the plugins its config enables")
    s.add_argument("--config", required=True, help="TOML config file")
    s.add_argument("--port", type=int, default=None, help="override [coordinator] port (0 = any free port)")
    s.set_defaults(func=_serve)
    w = sub.add_parser("worker", help="run a worker process")
    w.add_argument("--url", required=True, help="coordinator base url, e.g. http://127.0.0.1:8080")
    w.add_argument("--worker-id", default=None)
    w.add_argument("--max-tasks", type=int, default=1)
    w.add_argument("--parent-pid", type=int, default=None, help="exit when this parent process is gone")
    w.add_argument(
        "--token",
        default=None,
        help="the coordinator's api_token, sent as a bearer token (default: the environment variable "
        "COORDINATOR_PLUGINS_API_TOKEN, which keeps it out of the process list)",
    )
    w.set_defaults(func=_worker)
    d = sub.add_parser("demo", help="a fault-injected farm: coordinator, workers, faults, recovery, report")
    d.add_argument("--workers", type=int, default=3)
    d.add_argument("--duration", type=float, default=30.0)
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--database", default="demo.duckdb")
    d.add_argument("--port", type=int, default=0)
    d.add_argument("--report", default="demo-report.html")
    d.add_argument("--fault-rate", type=float, default=0.5, help="faults injected per second")
    d.add_argument(
        "--faults", default="kill,hang,network,database,scheduler,burst", help="comma-separated fault kinds to inject"
    )
    d.add_argument("--task-rate", type=float, default=10.0, help="tasks submitted per second")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130
