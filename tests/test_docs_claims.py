"""Claims of the documentation that its Python blocks cannot show (issue: what a new user had to
guess): the classification tables' examples land where docs/integrating.md says, through a real
integration; and docs/migrating.md's account of a seed-shaped coordinator under SIGTERM (without
a handler the process dies without stop(), and nothing acknowledged is lost: the group is
restored on restart; with the handler main()'s finally runs stop()) and of its log lines on the
happy path (the WARNING at install, then INFO lines on attach and on start)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coordinator_plugins.error_handling import ErrorCategory, ErrorType, setup
from tests import docs_harness as H

sys.path.insert(0, str(H.ROOT / "scripts"))
import classify_md
import docs_tables


async def test_every_example_of_the_category_table_lands_there(tmp_path: Path) -> None:
    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False})
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        wrong = []
        for category, (exc, message, context) in classify_md.EXAMPLES.items():
            report = await integ.report_error(exc if exc is not None else message, dict(context))
            if report.category.value != category:
                wrong.append(f"{category}: classified {report.category.value}")
    finally:
        await runner.cleanup()
    assert wrong == []


def test_a_wrong_example_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = dict(classify_md.EXAMPLES, disk_full=(None, "scratch disk /scratch/job13 full", {"component": "worker"}))
    monkeypatch.setattr(classify_md, "EXAMPLES", examples)
    with pytest.raises(ValueError, match=r"EXAMPLES\['disk_full'\] is classified worker_resource"):
        classify_md.categories_table()
    del examples["disk_full"]
    with pytest.raises(ValueError, match=r"no example of .*disk_full"):
        classify_md.check_examples()


def test_the_classify_tables_have_every_type_and_category() -> None:
    page = (H.ROOT / "docs" / "integrating.md").read_text(encoding="utf-8")
    types = docs_tables.page_table(page, "classify-types") or ""
    cats = docs_tables.page_table(page, "classify-categories") or ""
    assert [ln.split("`")[1] for ln in types.splitlines()[2:] if ln.startswith("| `")] == [t.value for t in ErrorType]
    assert [ln.split("`")[1] for ln in cats.splitlines()[2:]] == [c.value for c in ErrorCategory]
    # the page's worked example: rule 3 of the worker type, as the page says
    assert "3. the message matches `memory\\|resource\\|disk\\|gpu`: `worker_resource`" in types


# -- a seed-shaped coordinator's main() under SIGTERM (docs/migrating.md) ------------------------------
SEED_MAIN = '''
import logging, signal, sys, time
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from tests.seedlike import SeedLikeCoordinator

def main(database, with_handler):
    coordinator = SeedLikeCoordinator({"database": database}, "self.app")
    if with_handler:  # what docs/migrating.md says to add
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        coordinator.start()
        print("ready", coordinator.url, flush=True)
        while True:  # the seed's main(): sleep until Ctrl-C
            try:
                time.sleep(1)
            except KeyboardInterrupt:
                break
    finally:
        coordinator.stop()
        print("stopped", flush=True)

main(sys.argv[1], sys.argv[2] == "handler")
'''


def _run_and_term(database: Path, mode: str) -> tuple[int, str, str, dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, "-c", SEED_MAIN, str(database), mode], cwd=H.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("ready "), first + (proc.stderr.read() if proc.stderr else "")
        url = first.split()[1]
        body = json.dumps({"message": "worker w3 lost heartbeat", "component": "worker", "worker_id": "w3"})
        request = urllib.request.Request(f"{url}/api/errors", data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 202
            acknowledged = json.loads(answer.read())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, first + out, err, acknowledged


def test_a_seed_main_under_sigterm_and_with_the_handler(tmp_path: Path) -> None:
    database = tmp_path / "error_handling.duckdb"
    code, out, err, first = _run_and_term(database, "none")
    # without a handler: killed by the signal, main()'s finally (stop()) never ran
    assert code == -signal.SIGTERM and "stopped" not in out
    lines = [ln for ln in err.splitlines() if "coordinator_plugins" in ln]
    assert lines[0].startswith("WARNING coordinator_plugins.error_handling.install: installed without an app")
    assert lines[1] == ("INFO coordinator_plugins.error_handling.install: "
                        "error handling attached to the coordinator's new app")
    assert lines[2].startswith("INFO coordinator_plugins.error_handling.integration: error handling started: "
                               f"0 open group(s) restored from {database}")
    assert not any("at exit" in ln or "a report arrived" in ln for ln in lines)
    # restarted (with the handler): the acknowledged occurrence's group is restored and continues
    code, out, err, again = _run_and_term(database, "handler")
    assert f"error handling started: 1 open group(s) restored from {database}" in err
    assert again["error_id"] == first["error_id"] and again["aggregated_count"] == 2
    assert code == 0 and out.splitlines()[-1] == "stopped"
