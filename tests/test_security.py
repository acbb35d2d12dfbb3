"""Issue 12, security (SPEC 8): the coordinator's token on every mutating route, workers that
carry it (launched ones without it on their command line), protected mode, protect_reads and
allowed_commands. Real servers, real worker processes; nothing mocked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import farm_config, wait_for
from coordinator_plugins.httpio import TOKEN_ENV
from coordinator_plugins.reference import build_app, serve
from coordinator_plugins.reference.security import CommandPolicy, check_listen, is_loopback, security_from_config

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COORDINATOR_POSTS = [
    ("/api/workers/register", {"worker_id": "rogue", "max_tasks": 1}),
    ("/api/workers/worker-1/heartbeat", {}),
    ("/api/workers/worker-1/poll", {"wait": 0}),
    ("/api/tasks", {"kind": "command", "argv": ["/usr/bin/id"]}),
    ("/api/tasks/t-1/result", {"worker_id": "worker-1", "attempt": 1, "status": "completed"}),
]
PLUGIN_POSTS = [
    ("/api/errors", {"message": "m", "component": "c"}),
    ("/api/errors/0123/resolve", {}),
    ("/api/recovery/reset", {}),
]


async def test_without_the_token_no_command_runs_and_no_worker_registers(make_farm) -> None:
    """The issue's two findings: a command task ran as root, a rogue worker was accepted."""
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"api_token": TOKEN}, workers=1)
    before_workers = set(farm.coord.workers)
    for path, body in COORDINATOR_POSTS + PLUGIN_POSTS:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
            status, answer = await farm.post(path, body, headers=headers)
            assert status == 401 and answer["code"] == "unauthorized", (path, headers, status, answer)
    assert farm.coord.tasks == {}  # nothing was queued, so nothing reached a worker
    assert set(farm.coord.workers) == before_workers and "rogue" not in farm.coord.workers
    # With the token the same command runs, on the worker the coordinator launched with it.
    status, task = await farm.post("/api/tasks", {"kind": "command", "argv": ["/usr/bin/id"]}, headers=AUTH)
    assert status == 201
    done = await wait_for(lambda: farm.coord.tasks[task["task_id"]].status == "completed" and
                          farm.coord.tasks[task["task_id"]], 30, "the command task ran")
    assert "uid=" in done.result["output"]
    status, _ = await farm.post("/api/workers/register", {"worker_id": "known"}, headers=AUTH)
    assert status == 200 and "known" in farm.coord.workers


async def test_reads_stay_open_without_protect_reads(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"api_token": TOKEN})
    for path in ("/api/status", "/api/errors", "/api/diagnostics", "/metrics", "/api/openapi.json",
                 "/dashboard/errors"):
        async with farm.session.get(farm.url + path) as r:
            assert r.status == 200, path


def proc_file(pid: int | None, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


async def test_launched_workers_get_the_token_but_not_on_their_command_line(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"api_token": TOKEN}, workers=2)
    for wid in ("worker-1", "worker-2"):
        pid = farm.coord.launcher.pid(wid)
        assert pid is not None and farm.coord.workers[wid].status == "active"  # it authenticated
        cmdline = proc_file(pid, "cmdline")
        assert b"worker" in cmdline and TOKEN.encode() not in cmdline
        environ = proc_file(pid, "environ").split(b"\0")
        assert f"{TOKEN_ENV}={TOKEN}".encode() in environ
    # A restarted worker (recovery does that) gets it again.
    assert await farm.coord.restart_worker("worker-1")
    pid = farm.coord.launcher.pid("worker-1")
    assert TOKEN.encode() not in proc_file(pid, "cmdline")


async def _run_worker(url: str, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator_plugins", "worker", "--url", url, *args,
        env={**{k: v for k, v in os.environ.items() if k != TOKEN_ENV}, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def test_worker_command_sends_the_token_from_its_option_or_the_environment(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"api_token": TOKEN})
    procs = []
    try:
        p1 = await _run_worker(farm.url, "--worker-id", "by-option", "--token", TOKEN)
        p2 = await _run_worker(farm.url, "--worker-id", "by-env", env={TOKEN_ENV: TOKEN})
        procs += [p1, p2]
        await wait_for(lambda: {"by-option", "by-env"} <= set(farm.coord.workers), 30, "both workers registered")
        # A wrong token ends the worker with exit status 2 and says why; it never registers.
        p3 = await _run_worker(farm.url, "--worker-id", "wrong", "--token", "nope")
        procs.append(p3)
        async with asyncio.timeout(60):
            _, err = await p3.communicate()
        assert p3.returncode == 2 and b"refused its token" in err and "wrong" not in farm.coord.workers
        p4 = await _run_worker(farm.url, "--worker-id", "none")
        procs.append(p4)
        async with asyncio.timeout(60):
            _, err = await p4.communicate()
        assert p4.returncode == 2 and "none" not in farm.coord.workers
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
                await p.wait()


async def test_plugin_token_defaults_to_the_coordinators(make_farm, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"api_token": TOKEN})
    assert farm.integ.config.api_token == TOKEN
    assert (await farm.post("/api/errors", {"message": "m", "component": "c"}))[0] == 401
    assert (await farm.post("/api/errors", {"message": "m", "component": "c"}, headers=AUTH))[0] == 202
    # The environment variable sets both when neither table does.
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    app = build_app(farm_config(tmp_path_factory.mktemp("env")))
    from coordinator_plugins.error_handling import ERROR_HANDLING_KEY
    from coordinator_plugins.reference.app import SECURITY_KEY
    assert app[SECURITY_KEY].api_token == "from-env" and app[ERROR_HANDLING_KEY].config.api_token == "from-env"


def test_security_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = [
        ({"allowed_commands": "echo"}, "coordinator.allowed_commands"),
        ({"allowed_commands": ["bin/echo"]}, "coordinator.allowed_commands"),
        ({"allowed_commands": [""]}, "coordinator.allowed_commands"),
        ({"allow_unauthenticated": "yes"}, "coordinator.allow_unauthenticated"),
        ({"protect_reads": True}, "coordinator.protect_reads: needs coordinator.api_token"),
        ({"api_token": "has space"}, "coordinator.api_token"),
        ({"api_token": 5}, "coordinator.api_token"),
        ({"body_timeout": 0}, "coordinator.body_timeout"),
    ]
    for table, message in bad:
        with pytest.raises(ValueError, match=message):
            build_app({"coordinator": {"database": ":memory:", **table}})
    with pytest.raises(ValueError, match=r"plugins\.error_handling\.api_token") as err:
        build_app(farm_config(tmp_path, {"api_token": "my secret"}))
    assert "my secret" not in str(err.value)  # a token is never echoed
    with pytest.raises(ValueError) as err:
        build_app({"coordinator": {"database": ":memory:", "api_token": "my secret"}})
    assert "my secret" not in str(err.value)


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "no-such-host.invalid"):
        assert not is_loopback(host), host


def test_protected_mode_refuses_a_public_address_without_a_token() -> None:
    with pytest.raises(ValueError) as err:
        check_listen("0.0.0.0", security_from_config({}))
    text = str(err.value)
    assert "api_token" in text and TOKEN_ENV in text and "allow_unauthenticated = true" in text
    check_listen("0.0.0.0", security_from_config({"api_token": TOKEN}))
    check_listen("0.0.0.0", security_from_config({"allow_unauthenticated": True}))
    check_listen("127.0.0.1", security_from_config({}))


async def test_serve_refuses_before_it_binds(tmp_path: Path) -> None:
    config = {"coordinator": {"host": "0.0.0.0", "port": 0, "database": str(tmp_path / "c.duckdb")}}
    with pytest.raises(ValueError, match="refusing to listen"):
        await serve(config)
    assert not (tmp_path / "c.duckdb").exists()  # nothing was started


def test_serve_command_exits_2_saying_how_to_set_a_token(tmp_path: Path) -> None:
    cfg = tmp_path / "public.toml"
    cfg.write_text(f'[coordinator]\nhost = "0.0.0.0"\nport = 0\ndatabase = "{tmp_path / "c.duckdb"}"\n')
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    result = subprocess.run([sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert "api_token" in result.stderr and TOKEN_ENV in result.stderr and "Traceback" not in result.stderr


async def test_protect_reads_covers_every_get_metrics_and_the_dashboard(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "protect_reads": True}, coordinator={"api_token": TOKEN})
    status, body = await farm.post("/api/errors", {"message": "m", "component": "c"}, headers=AUTH)
    assert status == 202
    gets = ["/api/errors", f"/api/errors/{body['error_id']}", "/api/recovery/metrics", "/api/recovery/history",
            "/api/recovery/strategies", "/api/diagnostics", "/api/openapi.json", "/metrics", "/api/status",
            "/api/tasks/none", "/dashboard/errors"]
    for path in gets:
        async with farm.session.get(farm.url + path) as r:
            assert r.status == 401 and r.content_type == "application/json", path
            assert (await r.json())["code"] == "unauthorized"
        async with farm.session.get(farm.url + path, headers=AUTH) as r:
            assert r.status == (404 if path == "/api/tasks/none" else 200), path
    # A browser (no way to send a bearer header on navigation) gets the page that asks for it.
    async with farm.session.get(farm.url + "/dashboard/errors", headers={"Accept": "text/html"}) as r:
        page = await r.text()
        assert r.status == 401 and r.content_type == "text/html"
    assert 'id="token-panel"' in page and '"protectReads": true' in page  # the page asks for the token


async def test_coordinator_protect_reads_extends_to_the_plugin(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"api_token": TOKEN, "protect_reads": True})
    assert farm.integ.config.protect_reads
    for path in ("/api/errors", "/api/status", "/metrics"):
        assert (await farm.get(path))[0] == 401, path


@pytest.mark.parametrize(("coordinator", "argv", "expect"), [
    ({"allowed_commands": ["echo", "/bin/true"]}, ["echo", "hi"], 201),
    ({"allowed_commands": ["echo", "/bin/true"]}, ["/bin/true"], 201),
    ({"allowed_commands": ["echo", "/bin/true"]}, ["/bin/echo", "hi"], (400, "command_not_allowed")),
    ({"allowed_commands": ["echo", "/bin/true"]}, ["/usr/bin/id"], (400, "command_not_allowed")),
    ({"allowed_commands": ["echo", "/bin/true"]}, ["true"], (400, "command_not_allowed")),
    ({"allowed_commands": ["echo", "/bin/true"]}, ["/bin/../bin/true"], (400, "command_not_allowed")),
    ({"allowed_commands": []}, ["echo", "hi"], (400, "command_forbidden")),
    ({"api_token": TOKEN}, ["/usr/bin/id"], 201),  # unset, a token, on loopback: any program
    ({}, ["/usr/bin/id"], (403, "commands_disabled")),  # unset and no token: none (issue 26)
])
async def test_allowed_commands(make_farm, coordinator: dict[str, Any], argv: list[str], expect: Any) -> None:
    farm = await make_farm(enabled=False, coordinator=coordinator)
    for body in ({"kind": "command", "argv": argv}, {"spec": {"kind": "command", "argv": argv}}):
        status, answer = await farm.post("/api/tasks", body, headers=AUTH)
        if expect == 201:
            assert status == 201, answer
        else:
            assert (status, answer["code"]) == expect, answer
    if expect != 201:
        assert farm.coord.tasks == {}  # refused before it was queued: no worker ever saw it
    assert (await farm.post("/api/tasks", {"kind": "sim", "duration": 0}, headers=AUTH))[0] == 201  # sim tasks run


async def test_without_a_token_or_a_list_command_tasks_are_refused_saying_how_to_allow_them(make_farm) -> None:
    """Issue 26, item 1: an open coordinator (the shipped example: no token) ran any command it
    was sent; now it refuses them with a 403 that names both ways to allow them."""
    farm = await make_farm(enabled=False)
    status, answer = await farm.post("/api/tasks", {"kind": "command", "argv": ["/usr/bin/id"]})
    assert status == 403 and answer["code"] == "commands_disabled"
    assert "api_token" in answer["error"] and TOKEN_ENV in answer["error"] and "allowed_commands" in answer["error"]
    assert farm.coord.tasks == {}
    doc = (await farm.get("/api/openapi.json"))[1]["paths"]["/api/tasks"]["post"]
    assert doc["requestBody"]["content"]["application/json"]["schema"]["properties"]["kind"]["enum"] == ["sim"]
    assert "allowed_commands" in doc["description"] and "403" in doc["responses"]


def test_commands_are_off_by_default_off_loopback() -> None:
    policy = CommandPolicy.for_host("0.0.0.0", security_from_config({"api_token": TOKEN}))
    assert policy.allowed == () and "not loopback" in (policy.refusal("echo") or "")
    listed = CommandPolicy.for_host("0.0.0.0", security_from_config({"api_token": TOKEN, "allowed_commands": ["echo"]}))
    assert listed.refusal("echo") is None and listed.refusal("id")


async def test_a_public_coordinator_refuses_command_tasks_unless_listed(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestServer

    app = build_app({"coordinator": {"host": "0.0.0.0", "port": 0, "database": ":memory:", "api_token": TOKEN}})
    server = TestServer(app, host="127.0.0.1")  # bound to loopback for the test; the policy follows the config
    await server.start_server()
    try:
        async with aiohttp.ClientSession(headers=AUTH) as s:
            async with s.post(server.make_url("/api/tasks"), json={"kind": "command", "argv": ["echo"]}) as r:
                assert r.status == 400 and (await r.json())["code"] == "command_forbidden"
    finally:
        await server.close()


async def test_a_command_task_runs_its_argv_without_a_shell(make_farm, tmp_path: Path) -> None:
    farm = await make_farm(enabled=False, workers=1, coordinator={"allowed_commands": ["/bin/echo"]})
    marker = tmp_path / "shell-ran"
    argv = ["/bin/echo", "$(touch " + str(marker) + ")", "a;b", "`id`", "*", "x|y"]
    tid = (await farm.post("/api/tasks", {"kind": "command", "argv": argv}))[1]["task_id"]
    task = await wait_for(lambda: farm.coord.tasks[tid].status == "completed" and farm.coord.tasks[tid], 30,
                          "the command ran")
    assert task.result["output"] == " ".join(argv[1:]) + "\n"
    assert not marker.exists()


async def test_the_document_says_which_programs_may_run(make_farm) -> None:
    """The OpenAPI document follows allowed_commands, so that it and the server agree."""
    listed = await make_farm(enabled=False, coordinator={"allowed_commands": ["echo"]})
    spec = (await listed.get("/api/openapi.json"))[1]["paths"]["/api/tasks"]["post"]["requestBody"]
    schema = spec["content"]["application/json"]["schema"]
    assert schema["properties"]["argv"]["prefixItems"][0]["enum"] == ["echo"]
    assert schema["properties"]["kind"]["enum"] == ["sim", "command"]
    none = await make_farm(enabled=False, coordinator={"allowed_commands": [], "database": ":memory:"})
    schema = (await none.get("/api/openapi.json"))[1]["paths"]["/api/tasks"]["post"]["requestBody"]
    schema = schema["content"]["application/json"]["schema"]
    assert schema["properties"]["kind"]["enum"] == ["sim"] and "argv" not in schema["properties"]
    # Where no command may run, an argv on a sim task is inert data, as the document implies.
    assert (await none.post("/api/tasks", {"kind": "sim", "duration": 0, "argv": ["/usr/bin/id"]}))[0] == 201


async def test_a_token_set_for_the_plugin_alone_guards_the_coordinator_too(make_farm) -> None:
    """Issue 26, item 4: api_token and protect_reads in [plugins.error_handling] only used to leave the
    coordinator's routes open (POST /api/tasks ran a command; task outputs were readable)."""
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN, "protect_reads": True}, workers=1)
    c = farm.coord
    assert c.workers["worker-1"].status == "active"  # the launched worker got the token and registered
    for path, body in [("/api/tasks", {"kind": "command", "argv": ["/bin/true"]}),
                       ("/api/workers/register", {"worker_id": "rogue"})]:
        status, answer = await farm.post(path, body)
        assert status == 401 and answer["code"] == "unauthorized", (path, answer)
    status, task = await farm.post("/api/tasks", {"kind": "command", "argv": ["/bin/true"]}, headers=AUTH)
    assert status == 201  # a token guards the coordinator, so command tasks may run on loopback
    for path in ("/api/status", f"/api/tasks/{task['task_id']}", "/api/errors"):
        assert (await farm.get(path))[0] == 401, path
        assert (await farm.get(path, headers=AUTH))[0] == 200, path
    assert "rogue" not in c.workers
    # (the other way round, the plugin taking the coordinator's, is tested above)
