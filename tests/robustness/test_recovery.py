"""The server is SIGKILLed mid-wave and started again: its workers are adopted or declared lost.

Real `mcp-swarm serve` processes over stdio, real workers, real SIGKILLs. After every restart the
database must pass integrity_check, no task may have two live workers, and in the end every task
is completed exactly once, by workers whose runs of one task never overlapped.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_swarm.placement.processes import group_members
from tests.support.gated_workers import gated_project, rows, started, until_group_gone
from tests.support.mcp_client import call, project_session, serving

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEADLINE = 60.0


def project(tmp_path: Path, *extra: str) -> Path:
    gated_project(tmp_path, *extra, max_workers=6)
    return tmp_path


def server_pids(tmp_path: Path) -> set[int]:
    return {int(s.split(":")[0]) for (s,) in rows(tmp_path, "SELECT DISTINCT supervisor FROM workers")}


def completed_tasks(tmp_path: Path) -> int:
    return int(rows(tmp_path, "SELECT count(*) FROM tasks WHERE status = 'completed'")[0][0])


def check_invariants(tmp_path: Path) -> None:
    assert rows(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    assert rows(tmp_path, "PRAGMA foreign_key_check") == []
    doubled = rows(
        tmp_path,
        "SELECT task_id FROM workers WHERE state IN ('starting', 'running') "
        "GROUP BY task_id HAVING count(*) > 1",
    )
    assert doubled == [], f"tasks with two live workers: {doubled}"


async def test_after_a_sigkill_running_workers_are_adopted_and_dead_ones_are_lost(tmp_path: Path) -> None:
    gates = project(tmp_path) / "gates"
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreatePlan", tasks=[{"subject": f"task {n}"} for n in range(1, 4)])
        workers = (await call(client, "spawn"))["workers"]
        assert [w["workerId"] for w in workers] == ["worker-1", "worker-2", "worker-3"]
        pids = {w["workerId"]: await started(gates, w["workerId"]) for w in workers}
        [server] = server_pids(tmp_path)
        os.kill(server, signal.SIGKILL)
    # While no server runs, worker-3 dies too, wrapper and all, so that no exit status is left;
    # worker-1 and worker-2 go on. (A worker that dies under a live wrapper has its end recorded:
    # see test_ended_unwatched.py.) The wrapper's pid is the worker's, and leads its group.
    assert pids["worker-3"] in group_members(workers[2]["pid"])
    os.killpg(workers[2]["pid"], signal.SIGKILL)
    await until_group_gone(workers[2]["pid"])
    check_invariants(tmp_path)

    async with project_session(tmp_path) as client:
        task3 = await call(client, "TaskGet", taskId="3")
        assert task3["status"] == "pending"
        assert "owner" not in task3
        lost = next(w for w in task3["workers"] if w["workerId"] == "worker-3")
        assert lost["state"] == "lost"
        for worker_id in ("worker-1", "worker-2"):
            (gates / f"go-{worker_id}").write_text("")
        result = await call(client, "wait", timeoutSeconds=30)
        done = {d["workerId"]: d for d in result["done"]}
        assert done["worker-1"]["state"] == "succeeded"
        assert done["worker-1"]["taskStatus"] == "completed"
        assert done["worker-1"]["summary"] == "worker-1 finished"
        assert done["worker-2"]["taskStatus"] == "completed"
        assert done["worker-3"]["state"] == "lost"
        # The lost task runs again, as a new worker.
        [again] = (await call(client, "spawn"))["workers"]
        assert again["taskId"] == "3"
        (gates / f"go-{again['workerId']}").write_text("")
        result = await call(client, "wait", timeoutSeconds=30)
        assert [d["taskStatus"] for d in result["done"]] == ["completed"]
    check_invariants(tmp_path)
    # Each task was completed once, by one worker's verdict.
    completions = rows(
        tmp_path,
        "SELECT task_id, count(*) FROM task_events WHERE field = 'status' AND new = '\"completed\"' "
        "GROUP BY task_id ORDER BY task_id",
    )
    assert completions == [(1, 1), (2, 1), (3, 1)]


async def test_sigkill_at_random_points_loses_no_task_and_runs_none_twice_at_once(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    project(tmp_path, "0.2")
    total = 40
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreatePlan", tasks=[{"subject": f"task {n}"} for n in range(total)])
    kills = 0
    while kills < 5 and completed_tasks(tmp_path) < total:
        async with project_session(tmp_path) as client, anyio.create_task_group() as group:
            spawned = anyio.Event()

            async def mayor_loop(client: Client = client, spawned: anyio.Event = spawned) -> None:
                while True:
                    await call(client, "spawn")
                    spawned.set()
                    await call(client, "wait", mode="any", timeoutSeconds=5)

            group.start_soon(mayor_loop)
            with anyio.fail_after(DEADLINE):
                await spawned.wait()
            await anyio.sleep(rng.uniform(0.0, 0.5))  # a random point in the wave: the point of the test
            # Every server of the project dies: the one just started, and one still on its way out.
            for server in serving(tmp_path):
                os.kill(server, signal.SIGKILL)
            kills += 1
            group.cancel_scope.cancel()
        check_invariants(tmp_path)
    assert kills >= 2, f"the plan ended before the server was killed twice (seed {seed})"

    # One last server runs the plan to the end.
    async with project_session(tmp_path) as client:
        with anyio.fail_after(DEADLINE):
            while completed_tasks(tmp_path) < total:
                await call(client, "spawn")
                await call(client, "wait", mode="any", timeoutSeconds=5)
    check_invariants(tmp_path)
    completed = rows(
        tmp_path,
        "SELECT task_id, count(*) FROM task_events WHERE field = 'status' AND new = '\"completed\"' "
        "GROUP BY task_id",
    )
    assert sorted(completed) == [(n, 1) for n in range(1, total + 1)], f"seed {seed}"
    runs = rows(tmp_path, "SELECT task_id, started_at, ended_at FROM workers ORDER BY task_id, started_at")
    for (task, _, end), (next_task, next_start, _) in itertools.pairwise(runs):
        if task == next_task:
            assert end is not None, f"task {task} has a live worker and a later one (seed {seed})"
            assert end <= next_start, f"runs of task {task} overlapped (seed {seed})"


async def test_a_second_server_sees_the_first_ones_workers_and_leaves_them_alone(tmp_path: Path) -> None:
    gates = project(tmp_path) / "gates"
    async with project_session(tmp_path) as first:
        await call(first, "TaskCreatePlan", tasks=[{"subject": "one"}, {"subject": "two"}])
        [one] = (await call(first, "spawn", taskIds=["1"]))["workers"]
        await started(gates, one["workerId"])
        [first_server] = serving(tmp_path)
        async with project_session(tmp_path) as second:
            # The first server runs: its worker is not adopted, and the second one sees it running
            # when it asks for it; a plain wait is about the second Mayor's own workers.
            asked = await call(second, "wait", workerIds=[one["workerId"]], timeoutSeconds=0)
            assert asked["running"] == [one["workerId"]]
            assert (await call(second, "wait", timeoutSeconds=0)).get("running", []) == []
            assert server_pids(tmp_path) == {first_server}
            # A spawn of the second server never takes the first one's task.
            spawned = await call(second, "spawn")
            assert [w["taskId"] for w in spawned["workers"]] == ["2"]
            [two] = spawned["workers"]
            await started(gates, two["workerId"])
            # The first server's worker ends: the second server's wait notices it, through the file.
            (gates / f"go-{one['workerId']}").write_text("")
            result = await call(second, "wait", workerIds=[one["workerId"]], timeoutSeconds=20)
            [done] = result["done"]
            assert (done["workerId"], done["taskStatus"]) == (one["workerId"], "completed")
            (gates / f"go-{two['workerId']}").write_text("")
            # Each Mayor's plain wait hands it its own worker's result, and only that one.
            theirs = await call(second, "wait", timeoutSeconds=20)
            assert [w["workerId"] for w in theirs["done"]] == [two["workerId"]]
            ours = await call(first, "wait", timeoutSeconds=20)
            assert [w["workerId"] for w in ours["done"]] == [one["workerId"]]
    check_invariants(tmp_path)
    assert rows(tmp_path, "SELECT id, state FROM workers ORDER BY id") == [(1, "succeeded"), (2, "succeeded")]
