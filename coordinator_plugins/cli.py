"""The ``coordinator-plugins`` command: serve, worker, demo, evaluate.

Every option is checked while the command line is parsed, so a bad value fails (exit 2, with
the option, what it accepts and what it got) before anything is started or written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordinator_plugins import __version__
from coordinator_plugins.demo.kinds import FAULT_KINDS, parse_kinds

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DESCRIPTION = """\
Run the reference test-farm coordinator with its plugins, a worker process, or the demo: a farm
with real worker processes and injected faults that the error-handling plugin recovers by itself.
"""

EPILOG = """\
examples:
  coordinator-plugins demo --workers 3 --duration 30 --seed 1
  coordinator-plugins serve --config examples/coordinator.toml
  coordinator-plugins worker --url http://127.0.0.1:8080
  coordinator-plugins evaluate --database farm.duckdb --policy ladder

Run "coordinator-plugins COMMAND --help" for the options of a command.
"""


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {value}")
        return value

    return parse


def _number_in(lo: float, hi: float, above: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (or (lo, hi] when ``above``)."""
    accepted = f"a number {'above' if above else 'from'} {lo:g} {'and at most' if above else 'to'} {hi:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (above and value == lo):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text}")
        return value

    return parse


def _fault_list(text: str) -> list[str]:
    try:
        return parse_kinds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


def _writable_file(what: str) -> Callable[[str], str]:
    """A path whose directory exists and can be written (checked before the run, not after it)."""

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"expected a {what} path, got ''")
        path = Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; expected a {what} path")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise argparse.ArgumentTypeError(f"directory {parent} is not writable")
        return text

    return parse


def _database_arg(text: str) -> str:
    """A DuckDB file path (as ``_writable_file``) or a ``postgresql://`` URL (a fleet's database)."""
    if text.startswith(("postgresql://", "postgres://")):
        return text
    return _writable_file("database")(text)


def _print_errors(exc: BaseException) -> None:
    for line in str(exc).splitlines() or [repr(exc)]:
        print(f"error: {line}", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    from coordinator_plugins.plugins import load_config
    from coordinator_plugins.reference.app import COORDINATOR_KEY, SECURITY_KEY, build_app
    from coordinator_plugins.reference.checks import config_problems
    from coordinator_plugins.reference.security import check_listen
    from coordinator_plugins.reference.serving import serve

    try:
        config = load_config(args.config)
        if args.port is not None and isinstance(config.get("coordinator", {}), dict):
            config.setdefault("coordinator", {})["port"] = args.port
        # every problem at once, a line each: [coordinator], protected mode, [plugins] (issue 28.6)
        problems = config_problems(config, listening=True)
        if problems:
            raise ValueError("\n".join(problems))
        app = build_app(config)  # what only installing finds (a database the process holds, ...)
        check_listen(app[COORDINATOR_KEY].settings.host, app[SECURITY_KEY])  # protected mode
    except ValueError as exc:
        _print_errors(exc)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop)

    from coordinator_plugins.error_handling.storage.base import StoreUnavailable

    try:
        asyncio.run(run())
    except (StoreUnavailable, OSError) as exc:
        _print_errors(exc)
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
    return worker_main(args.url, args.worker_id, args.max_tasks, args.parent_pid, token, args.failover_after)


def _demo(args: argparse.Namespace) -> int:
    from coordinator_plugins.demo import run_demo

    if args.coordinators > 1:
        if not (args.database or "").startswith(("postgresql://", "postgres://")):
            print("error: --coordinators N (N > 1) needs --database postgresql://user@host:port/dbname, the "
                  "database the fleet shares", file=sys.stderr)
            return 2
        from coordinator_plugins.demo.fleet import run_fleet_demo

        return run_fleet_demo(args)

    return int(run_demo(args))


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from coordinator_plugins.evaluate import EvaluationError, evaluate_database, format_report

    policies = [args.policy] if args.policy else ["ladder", "score", "adaptive"]
    try:
        report = evaluate_database(args.database, policies, limit=args.limit, resamples=args.resamples,
                                   seed=args.seed, max_level=args.max_level)
    except EvaluationError as exc:
        _print_errors(exc)
        return 1
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; option help wrapped without breaking words at hyphens."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _command(sub: Any, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=description, formatter_class=_HelpFormatter
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coordinator-plugins",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--log-level",
        type=_log_level,
        default="WARNING",
        metavar="LEVEL",
        help=f"log messages at this level and above to stderr: {', '.join(LOG_LEVELS)} "
        "(any case; default: %(default)s)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = _command(
        sub,
        "serve",
        "run the reference coordinator with the plugins its config enables",
        "Run the reference coordinator: the HTTP API for workers and tasks, the worker processes its config\n"
        "asks for, and the plugins named in [plugins] enabled. Stops on Ctrl-C or SIGTERM.",
    )
    s.add_argument("--config", required=True, metavar="FILE",
                   help="TOML config file (required); see docs/configuration.md")
    s.add_argument(
        "--port",
        type=_int_in(0, 65535),
        default=None,
        metavar="N",
        help="listen on this port instead of [coordinator] port; 0 = any free port (default: the config's port)",
    )
    s.set_defaults(func=_serve)

    w = _command(
        sub,
        "worker",
        "run a worker process",
        "Run one worker: it registers with the coordinator, heartbeats, pulls tasks, runs them and reports\n"
        "their results. It re-registers when the coordinator forgets it. Stops on Ctrl-C or SIGTERM.",
    )
    w.add_argument(
        "--url",
        required=True,
        action="append",
        metavar="URL",
        help="a coordinator's base URL, e.g. http://127.0.0.1:8080 (required); repeat it for a fleet: the worker "
        "moves to the next one when its coordinator stops answering",
    )
    w.add_argument(
        "--failover-after",
        type=_number_in(0.5, 3600),
        default=3.0,
        metavar="SECONDS",
        help="with several --url: seconds without an answer before moving to the next coordinator, 0.5 to 3600 "
        "(default: %(default)s)",
    )
    w.add_argument(
        "--worker-id",
        default=None,
        metavar="ID",
        help="this worker's id, unique in the farm (default: w- and 8 random hex digits)",
    )
    w.add_argument(
        "--max-tasks",
        type=_int_in(1, 1000),
        default=1,
        metavar="N",
        help="tasks this worker runs at the same time, 1 to 1000 (default: %(default)s)",
    )
    w.add_argument(
        "--parent-pid",
        type=_int_in(1, 2**31 - 1),
        default=None,
        metavar="PID",
        help="exit when this process is gone; the coordinator passes its own pid (default: none)",
    )
    w.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="the coordinator's api_token, sent as a bearer token (default: the environment variable "
        "COORDINATOR_PLUGINS_API_TOKEN, which keeps it out of the process list)",
    )
    w.set_defaults(func=_worker)

    kinds = "; ".join(f"{k}: {v}" for k, v in FAULT_KINDS.items())
    d = _command(
        sub,
        "demo",
        "a fault-injected farm: coordinator, workers, faults, recovery, report",
        "Run the reference coordinator with error handling, real worker processes and a stream of test tasks,\n"
        "inject real faults, and let the plugin recover them. Shows progress and serves the dashboard while it\n"
        "runs; ends with a summary and an HTML report. Exits 0 when no task was lost, 1 when one was, 130 on\n"
        "Ctrl-C.",
    )
    d.add_argument(
        "--workers", type=_int_in(1, 64), default=3, metavar="N",
        help="worker processes, 1 to 64 (default: %(default)s)",
    )
    d.add_argument(
        "--duration", type=_number_in(0, 86_400, above=True), default=30.0, metavar="SECONDS",
        help="how long tasks are submitted; faults stop after the first 80%% (default: %(default)g)",
    )
    d.add_argument(
        "--seed", type=_int_in(-(2**63), 2**63 - 1), default=None, metavar="N",
        help="seed for the tasks, the faults and every recovery choice; the same seed replays the same "
        "run as far as timing allows (default: a random seed, printed at the start)",
    )
    d.add_argument(
        "--database", type=_database_arg, default=None, metavar="PATH_OR_URL",
        help="the plugin's DuckDB file, kept after the run; an existing one is reused with what earlier runs "
        "left in it; with --coordinators, the postgresql:// URL the fleet shares (default: a new database in a "
        "temporary directory, removed at the end)",
    )
    d.add_argument(
        "--coordinators", type=_int_in(1, 16), default=1, metavar="N",
        help="coordinators sharing one PostgreSQL database (needs --database postgresql://...), 1 to 16; one is "
        "killed with SIGKILL mid-run and the survivors take over (default: %(default)s)",
    )
    d.add_argument(
        "--port", type=_int_in(0, 65535), default=0, metavar="N",
        help="port of the coordinator and its dashboard, 0 = any free port (default: %(default)s)",
    )
    d.add_argument(
        "--report", type=_writable_file("report"), default="demo-report.html", metavar="PATH",
        help="where the HTML report is written (default: %(default)s)",
    )
    d.add_argument(
        "--fault-rate", type=_number_in(0, 100), default=0.5, metavar="PER_SECOND",
        help="faults injected per second on average, 0 to 100; 0 = none (default: %(default)g)",
    )
    d.add_argument(
        "--faults", type=_fault_list, default=list(FAULT_KINDS), metavar="KIND,KIND",
        help=f"comma-separated kinds of fault to inject, from: {kinds} (default: all six)",
    )
    d.add_argument(
        "--task-rate", type=_number_in(0, 1000), default=10.0, metavar="PER_SECOND",
        help="test tasks submitted per second, 0 to 1000 (default: %(default)g)",
    )
    d.set_defaults(func=_demo)

    e = _command(
        sub, "evaluate", "estimate from a farm's database what another selection policy would have done",
        "Off-policy evaluation: each selection policy's first-try success and strategy runs per recovery, "
        "estimated from the runs the plugin logged with their choice probabilities (IPS, SNIPS, DR; 95% bootstrap "
        "intervals), saying when the log cannot support an estimate. Exit 1 when there is nothing to evaluate.",
    )
    e.add_argument(
        "--database", required=True, metavar="PATH_OR_URL",
        help="the plugin's DuckDB file, or a postgresql:// URL (read only through the store)",
    )
    e.add_argument("--policy", choices=("ladder", "score", "adaptive"), default=None,
                   help="the policy to estimate (default: all three)")
    e.add_argument(
        "--limit", type=_int_in(1, 10_000_000), default=100_000, metavar="N",
        help="read the newest N strategy runs at most (default: %(default)s)",
    )
    e.add_argument(
        "--resamples", type=_int_in(10, 100_000), default=400, metavar="N",
        help="bootstrap resamples per interval (default: %(default)s)",
    )
    e.add_argument(
        "--seed", type=_int_in(0, 2**31 - 1), default=0, metavar="N",
        help="seed of the bootstrap (default: %(default)s)",
    )
    e.add_argument(
        "--max-level", type=_int_in(1, 5), default=5, metavar="N",
        help="the farm's max_recovery_level, 1 to 5 (default: %(default)s)",
    )
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.set_defaults(func=_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130
