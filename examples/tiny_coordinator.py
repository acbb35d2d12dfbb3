"""A coordinator of your own with the error-handling plugin (docs/integrating.md).

Workers are asyncio tasks taking test tasks from a queue. The coordinator implements the part of
CoordinatorProtocol that the built-in `worker` strategy needs, reports its errors, registers a
hook, and brings a strategy of its own (`ClearCache`, registered from the config). `run()` injects
a worker crash and a corrupted cache, and returns once both recoveries ended.
Run it: python examples/tiny_coordinator.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, web

from coordinator_plugins.error_handling import ErrorReport, NotApplicable, RecoveryLevel, RecoveryStrategy, setup


class CacheCorrupted(Exception):
    pass


class TinyCoordinator:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.tasks: dict[str, dict[str, Any]] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.polls: dict[str, int] = {}  # asks for work since the worker (re)started: it serves
        self.drained: set[str] = set()
        self.cache_ok = True
        self.crash: set[str] = set()  # fault injection: these workers crash on their next poll
        self.eh: Any = None  # the integration, once set up

    def spawn(self, wid: str) -> None:
        self.polls[wid] = 0
        self.workers[wid] = task = asyncio.create_task(self.work(wid))
        task.add_done_callback(lambda t: t.cancelled() or asyncio.create_task(self.lost(wid, t.exception())))

    async def lost(self, wid: str, exc: BaseException | None) -> None:
        await self.eh.report_error(exc or RuntimeError(f"worker {wid} exited"),
                                   {"component": "worker", "operation": "run", "worker_id": wid})

    async def work(self, wid: str) -> None:
        while True:
            if wid in self.crash:
                self.crash.discard(wid)
                raise RuntimeError(f"worker {wid} crashed")
            self.polls[wid] += 1
            if wid in self.drained or self.queue.empty():
                await asyncio.sleep(0.02)
                continue
            task = self.tasks[self.queue.get_nowait()]
            task.update(status="running", worker_id=wid)
            await asyncio.sleep(0.01)
            if task["needs_cache"] and not self.cache_ok:
                task["status"] = "failed"
                await self.eh.report_error(CacheCorrupted(f"cache entry for task {task['id']} is corrupted"), {
                    "component": "cache", "operation": "read", "task_id": task["id"],
                    "error_type": "test_environment"})  # overrides classification: a task error
            else:
                task["status"] = "completed"

    def submit(self, needs_cache: bool = False) -> str:
        tid = str(len(self.tasks) + 1)
        self.tasks[tid] = {"id": tid, "status": "pending", "worker_id": None, "needs_cache": needs_cache}
        self.queue.put_nowait(tid)
        return tid

    # -- the part of CoordinatorProtocol the built-in `worker` strategy acts through --------------
    async def worker_info(self, wid: str) -> dict[str, Any] | None:
        return {"worker_id": wid, "restartable": True} if wid in self.workers else None

    async def drain_worker(self, wid: str) -> bool:
        self.drained.add(wid)
        return wid in self.workers

    async def undrain_worker(self, wid: str) -> bool:
        self.drained.discard(wid)
        return wid in self.workers

    async def requeue_worker_tasks(self, wid: str) -> list[str]:
        moved = [t["id"] for t in self.tasks.values() if t["worker_id"] == wid and t["status"] == "running"]
        for tid in moved:
            self.tasks[tid].update(status="pending", worker_id=None)
            self.queue.put_nowait(tid)
        return moved

    async def restart_worker(self, wid: str, timeout: float = 30.0) -> str | None:
        self.workers[wid].cancel()
        self.spawn(wid)
        return wid

    async def worker_alive(self, wid: str) -> bool:
        return wid in self.workers and not self.workers[wid].done()

    async def wait_worker_serving(self, wid: str, timeout: float) -> bool:
        for _ in range(int(timeout / 0.02) + 1):
            if await self.worker_alive(wid) and self.polls[wid] > 0:
                return True
            await asyncio.sleep(0.02)
        return False

    async def task_info(self, tid: str) -> dict[str, Any] | None:
        task = self.tasks.get(tid)
        return None if task is None else {**task, "task_id": tid, "final": task["status"] == "completed"}


class ClearCache(RecoveryStrategy):
    """LOW: clear the coordinator's cache; a success once the tasks that failed now complete."""

    categories = frozenset({"task_error"})
    applicable_reads = frozenset({"message"})  # is_applicable reads only these keys of error_info

    def __init__(self, coordinator: TinyCoordinator) -> None:  # the config constructs Class(coordinator)
        super().__init__(coordinator, "Clear the cache", RecoveryLevel.LOW)

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        return "cache" in error_info["message"]

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        coord = self.coordinator
        failed = [t for t in error_info["task_ids"] if coord.tasks[t]["status"] == "failed"]
        if not failed:
            raise NotApplicable("no failed task to verify the cache with")
        coord.cache_ok = True
        for tid in failed:  # verify: the tasks that failed run again, and must complete
            coord.tasks[tid]["status"] = "pending"
            coord.queue.put_nowait(tid)
        for _ in range(100):
            if all(coord.tasks[t]["status"] in ("completed", "failed") for t in failed):
                break
            await asyncio.sleep(0.02)
        error_info["recovered_tasks"] += [t for t in failed if coord.tasks[t]["status"] == "completed"]
        return all(coord.tasks[t]["status"] == "completed" for t in failed)


async def run(database: str = ":memory:") -> dict[str, Any]:
    coord = TinyCoordinator()
    alerts: list[str] = []
    ended: list[dict[str, Any]] = []  # each recovery's recovery_info, as it ends

    async def submit(request: web.Request) -> web.Response:  # the coordinator's own route
        return web.json_response({"task_id": coord.submit()}, status=201)

    app = web.Application()
    app.router.add_post("/tasks", submit)
    coord.eh = setup(app, coord, {  # before the app starts; every key of [plugins.error_handling] may go here
        "database": database, "builtin_strategies": ["worker"], "escalation_backoff": 0.0,
        "verify_window": 0.5,  # a success counts once its group stayed quiet this long (default 30 s)
        "strategies": {"clear_cache": f"{__name__}:ClearCache"},  # constructed as ClearCache(coord)
    })

    def page_oncall(report: ErrorReport) -> None:  # sync hooks run in a thread; async ones are awaited
        alerts.append(f"{report.category.value} {report.error_id[:8]} x{report.aggregated_count}")

    coord.eh.register_error_hook("worker", page_oncall)  # "worker": the type, or the category's family
    coord.eh.add_recovery_listener(ended.append)
    runner = web.AppRunner(app)
    await runner.setup()  # the app starts: the plugin opens its database and starts
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        for wid in ("w1", "w2"):
            coord.spawn(wid)
        coord.cache_ok = False  # fault: three tasks fail the same way, one group
        for _ in range(3):
            coord.submit(needs_cache=True)
        coord.crash.add("w2")  # fault: a worker crashes
        for _ in range(500):
            if len(ended) >= 2 and not coord.eh.recovery_manager.inflight:
                break
            await asyncio.sleep(0.02)
        async with ClientSession() as http:  # the plugin's routes, on the coordinator's own port
            for _ in range(500):  # until both successes held through verify_window
                async with http.get(f"{site.name}/api/recovery/metrics") as answer:
                    held = (await answer.json())["overall"]
                if held["total_executions"] >= len(ended):
                    break
                await asyncio.sleep(0.02)
            async with http.get(f"{site.name}/api/errors?status=all") as answer:
                groups = (await answer.json())["errors"]
        return {"recoveries": sorted((i["strategy_id"], i["success"]) for i in ended), "alerts": alerts,
                "groups": sorted((g["category"], g["resolution_status"]) for g in groups),
                "held": (held["total_executions"], held["overall_success_rate"]),
                "tasks": sorted(t["status"] for t in coord.tasks.values())}
    finally:
        await runner.cleanup()  # the plugin flushes and closes its database
        for task in coord.workers.values():
            task.cancel()


if __name__ == "__main__":
    print(asyncio.run(run()))
