"""Two servers racing spawn on one database: no task is ever handed out or run twice.

Real processes throughout (no mocks). Nothing here sleeps to synchronise: the callers wait on
workers' ends through `wait`, and what ran is read from a file the workers append to.
"""

from __future__ import annotations

import random
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_swarm.models import TaskStatus, WorkerState
from mcp_swarm.store import Store
from tests.support.mcp_client import call
from tests.support.scripted_workers import (
    serve,
    write_project,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TASKS = 200
CHAINS = 40  # task n waits for task n - CHAINS: five waves, each released one task at a time
CALLERS_PER_SERVER = 2
BATCH = 12


async def test_two_servers_racing_spawn_never_assign_one_task_twice(tmp_path: Path) -> None:
    ran = tmp_path / "ran.txt"
    # Each worker appends "task worker" to one shared file; O_APPEND (>>) keeps each line whole.
    script = 'echo "$SWARM_TASK_ID $SWARM_WORKER_ID" >> "$1"'
    project = write_project(tmp_path / "project", ["/bin/sh", "-c", script, "worker", str(ran)])
    # Slots to spare, so that only the race refuses tasks: maxWorkers=256 below lowers nothing.
    config = project / "mcp-swarm.toml"
    config.write_text("max_workers = 256\n" + config.read_text())
    db = tmp_path / "state" / "swarm.db"
    spawned: list[tuple[int, str, str]] = []  # (server, taskId, workerId), from every spawn answer
    refused: list[str] = []
    taken = ("already being run by", "its status is")  # how a spawn says another spawn had the task
    collided: set[int] = set()  # the servers whose spawns found a task taken by another spawn

    async def caller(client: Client, server: int, number: int) -> None:
        rng = random.Random(f"{server}-{number}")
        rounds = 0
        while True:
            pending = (await call(client, "TaskList", status="pending"))["tasks"]
            if not pending:
                break
            ready = [t["id"] for t in pending if t.get("ready")]
            if rounds % 2 == 0:
                # The ready wave, as a Mayor asks for it.
                result = await call(client, "spawn", maxWorkers=256)
            else:
                # Ready tasks picked at random: the other callers are likely to pick them too.
                batch = rng.sample(ready, min(BATCH, len(ready))) or [pending[0]["id"]]
                result = await call(client, "spawn", taskIds=batch, maxWorkers=256)
            spawned.extend((server, w["taskId"], w["workerId"]) for w in result["workers"])
            refused.extend(s["reason"] for s in result["skipped"])
            if any(s["reason"].startswith(taken) for s in result["skipped"]):
                collided.add(server)
            await call(client, "wait", mode="any", timeoutSeconds=0.2)
            rounds += 1
        while (await call(client, "wait", timeoutSeconds=10))["running"]:
            pass

    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(serve(project, db)) for _ in range(2)]
            plan = [
                {
                    "key": f"t{n}",
                    "subject": f"task {n}",
                    "blockedBy": [f"t{n - CHAINS}"] if n >= CHAINS else [],
                }
                for n in range(TASKS)
            ]
            await call(clients[0], "TaskCreatePlan", tasks=plan)
            async with anyio.create_task_group() as group:
                for server, client in enumerate(clients):
                    for number in range(CALLERS_PER_SERVER):
                        group.start_soon(caller, client, server, number)
            assert (await call(clients[1], "TaskList"))["counts"] == {"completed": TASKS, "ready": 0}

    task_ids = [str(n) for n in range(1, TASKS + 1)]
    # Each task was handed out by exactly one spawn answer, and both servers handed some out.
    assert sorted((task_id for _, task_id, _ in spawned), key=int) == task_ids
    # Both servers took part in the race: each handed tasks out, or lost some to the other (which
    # one wins how often is up to the scheduler).
    assert {server for server, _, _ in spawned} | collided == {0, 1}
    # The callers did collide: tasks were refused because another spawn had them first.
    assert collided
    allowed = ("already being run by", "its status is", "blocked by")
    assert [reason for reason in refused if not reason.startswith(allowed)] == []

    # Each task has exactly one worker row, which succeeded on its first attempt.
    by_task: dict[str, str] = {}
    async with await Store.open(db) as store:
        async with store.read() as tx:
            for task_id in task_ids:
                workers = await tx.workers.for_task(int(task_id))
                assert len(workers) == 1, f"task {task_id} has workers {[w.id for w in workers]}"
                [worker] = workers
                assert (worker.state, worker.attempt, worker.task_status) == (
                    WorkerState.SUCCEEDED,
                    1,
                    TaskStatus.COMPLETED,
                )
                task = await tx.tasks.get(int(task_id))
                assert task is not None
                assert (task.status, task.owner) == (TaskStatus.COMPLETED, worker.id)
                by_task[task_id] = worker.id
        assert await store.integrity_check() == []
    assert {worker_id for _, _, worker_id in spawned} == set(by_task.values())

    # And each task was run by one process only: its line is in the shared file exactly once.
    lines = (await anyio.Path(ran).read_text()).splitlines()
    runs = Counter(line.split()[0] for line in lines)
    assert {task_id: n for task_id, n in runs.items() if n != 1} == {}
    assert sorted(runs, key=int) == task_ids
    assert {task_id: worker_id for task_id, worker_id in (line.split() for line in lines)} == by_task
