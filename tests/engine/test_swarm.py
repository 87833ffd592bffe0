"""The worker engine with real processes through the command runtime (no MCP, no LLM)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_swarm.engine.supervision import CompletionHook
from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.errors import InvalidInput, RuntimeNotCapable
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, PlanTask, TaskStatus, WorkerState
from mcp_swarm.placement.builtin import placements
from mcp_swarm.placement.processes import group_members
from mcp_swarm.runtimes import CommandProfile, CommandRuntime, OutputReader, Runtime, WorkerRequest
from mcp_swarm.store import Store
from tests.support.helpers import names_in
from tests.support.resumable_workers import LastLine

pytestmark = pytest.mark.anyio

# A scripted worker: it acts on the words of its prompt file, so each test picks its behaviour
# through the task's description.
WORKER = r"""
import json, os, subprocess, sys, time
prompt = open(sys.argv[1]).read()
if "@write-file" in prompt:
    open("out-" + os.environ["SWARM_TASK_ID"] + ".txt", "w").write("made by " + os.environ["SWARM_WORKER_ID"])
if "@grandchildren" in prompt:
    for _ in range(2):
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("started grandchildren", flush=True)
    time.sleep(600)
if "@hang" in prompt:
    time.sleep(600)
if "@fail" in prompt:
    print("it broke", flush=True)
    sys.exit(3)
json.dump({"status": "done", "summary": "did task " + os.environ["SWARM_TASK_ID"]},
          open(os.environ["SWARM_RESULT_FILE"], "w"))
"""


def _engine(
    store: Store,
    tmp_path: Path,
    runtimes: Mapping[str, Runtime],
    *,
    limits: WorkerLimits | None = None,
    hooks: Sequence[CompletionHook] = (),
) -> Swarm:
    """An engine over `store` whose state is in tmp_path/state, for the project tmp_path/project;
    its default runtime is the first of `runtimes`."""
    return Swarm(
        store, dict(runtimes), default_runtime=next(iter(runtimes)), state_dir=tmp_path / "state",
        project_dir=tmp_path / "project", limits=limits, hooks=hooks,
        placements=placements(max_log_bytes=(limits or WorkerLimits()).max_log_bytes),
    )  # fmt: skip


@pytest.fixture
async def swarm(tmp_path: Path) -> AsyncGenerator[Swarm]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    project = tmp_path / "project"
    project.mkdir()
    runtime = CommandRuntime(CommandProfile([sys.executable, str(script), "{prompt_file}"]), name="scripted")
    async with await Store.open(tmp_path / "state" / "swarm.db") as store:
        limits = WorkerLimits(max_workers=3, stop_grace_seconds=1.0, idle_seconds=60)
        engine = _engine(store, tmp_path, {"scripted": runtime}, limits=limits)
        async with anyio.create_task_group() as group:
            await group.start(engine.run)
            yield engine
            group.cancel_scope.cancel()


async def test_the_seed_plan_runs_in_the_waves_its_dependencies_allow(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    shape = {
        "model": [],
        "hash": ["model"],
        "login": ["model"],
        "jwt": ["login"],
        "tests": ["hash", "login", "jwt"],
    }
    plan = [
        PlanTask(key=key, subject=key, description="@write-file", blocked_by=deps)
        for key, deps in shape.items()
    ]
    await ledger.create_plan(plan)
    waves: list[list[str]] = []
    while True:
        spawned = await swarm.spawn()
        if not spawned.workers:
            break
        waves.append(sorted(worker.task_id for worker in spawned.workers))
        result = await swarm.wait(timeout=60)
        assert not result.timed_out
        assert {w.state for w in result.done} == {WorkerState.SUCCEEDED}
    assert waves == [["1"], ["2", "3"], ["4"], ["5"]]
    listing = await ledger.list()
    assert listing.counts == {"completed": 5, "ready": 0}
    for task_id in "12345":
        assert (swarm.project_dir / f"out-{task_id}.txt").read_text().startswith("made by worker-")


async def test_a_failed_worker_fails_its_task_and_keeps_dependents_blocked(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    await ledger.create(NewTask(subject="breaks", description="@fail"))
    await ledger.create(NewTask(subject="after", blocked_by=["1"]))
    spawned = await swarm.spawn()
    assert [w.task_id for w in spawned.workers] == ["1"]
    assert spawned.skipped == []
    result = await swarm.wait(timeout=60)
    [done] = result.done
    assert done.state is WorkerState.FAILED
    assert done.exit_code == 3
    assert done.error is not None
    assert "status 3" in done.error
    assert (await ledger.get("1")).status is TaskStatus.FAILED
    assert (await ledger.get("2")).blocked_by == ["1"]
    assert (await swarm.spawn()).workers == []


async def test_validation_decides_completion(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    checks = {"files_exist": ["out-1.txt"], "content_check": [{"file": "out-1.txt", "pattern": "^made by"}]}
    await ledger.create(NewTask(subject="good", description="@write-file", metadata={"validation": checks}))
    failing = {"argv": [sys.executable, "-c", "raise SystemExit(1)"]}
    missing = {"files_exist": ["nowhere.txt"], "command": failing}
    await ledger.create(NewTask(subject="claims done", description="", metadata={"validation": missing}))
    await swarm.spawn()
    result = await swarm.wait(timeout=60)
    by_task = {w.task_id: w for w in result.done}
    assert by_task["1"].task_status is TaskStatus.COMPLETED
    assert by_task["1"].validation == {"passed": True, "checks": [
        {"check": "files_exist out-1.txt", "passed": True},
        {"check": "content_check out-1.txt", "passed": True},
    ]}  # fmt: skip
    assert by_task["2"].task_status is TaskStatus.FAILED
    assert by_task["2"].error is not None
    assert "files_exist nowhere.txt" in by_task["2"].error
    assert (await ledger.get("2")).status is TaskStatus.FAILED


async def test_max_workers_and_double_spawn_are_refused_with_reasons(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    for index in range(5):
        await ledger.create(NewTask(subject=f"t{index}", description="@hang"))
    first = await swarm.spawn()
    assert len(first.workers) == 3
    assert {s.task_id for s in first.skipped} == {"4", "5"}
    # The limit of the configuration (WorkerLimits.max_workers), named as such.
    assert all("the configured ceiling max_workers = 3 is reached" in s.reason for s in first.skipped)
    again = await swarm.spawn(["1"])
    assert again.workers == []
    assert "already being run by worker-1" in again.skipped[0].reason
    for worker in first.workers:
        await swarm.close(worker.worker_id)


async def test_close_stops_the_worker_and_every_grandchild(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    await ledger.create(NewTask(subject="spawns", description="@grandchildren"))
    [worker] = (await swarm.spawn()).workers
    log = Path(worker.log)
    with anyio.fail_after(30):
        # Watching the log from outside: the worker has no other way to say it is ready.
        while "started grandchildren" not in await _text(log):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    assert len(group_members(worker.pid)) >= 3
    closed = await swarm.close(worker.worker_id)
    assert closed.state is WorkerState.CANCELLED
    assert group_members(worker.pid) == []
    task = await ledger.get("1")
    assert task.status is TaskStatus.PENDING
    assert task.owner is None


async def _text(path: Path) -> str:
    apath = anyio.Path(path)
    return await apath.read_text() if await apath.exists() else ""


async def test_wall_clock_limit_times_the_worker_out(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    await ledger.create(NewTask(subject="hangs", description="@hang"))
    [worker] = (await swarm.spawn(timeout_seconds=0.5)).workers
    result = await swarm.wait([worker.worker_id], timeout=30)
    [done] = result.done
    assert done.state is WorkerState.TIMED_OUT
    assert group_members(worker.pid) == []
    assert (await ledger.get("1")).status is TaskStatus.FAILED


async def test_wait_returns_each_result_once_and_times_out_with_what_runs(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    await ledger.create(NewTask(subject="quick", description=""))
    await ledger.create(NewTask(subject="slow", description="@hang"))
    spawned = await swarm.spawn()
    first = await swarm.wait(mode="any", timeout=30)
    assert [w.task_id for w in first.done] == ["1"]
    assert first.running == [spawned.workers[1].worker_id]
    assert not first.timed_out
    second = await swarm.wait(timeout=0.3)
    assert second.done == []
    assert second.timed_out
    # With ids, wait always answers for them, reported or not.
    again = await swarm.wait([spawned.workers[0].worker_id], timeout=1)
    assert [w.summary for w in again.done] == ["did task 1"]
    await swarm.close(spawned.workers[1].worker_id, TaskStatus.FAILED)
    assert (await ledger.get("2")).status is TaskStatus.FAILED
    assert json.dumps(again.done[0].model_dump(mode="json"))  # serialisable for the MCP layer


async def test_two_waits_at_once_hand_each_result_to_one_of_them(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    await ledger.create_plan([PlanTask(subject=f"task {n}", description="") for n in range(3)])
    spawned = await swarm.spawn()
    handed: list[list[str]] = []

    async def waiter() -> None:
        result = await swarm.wait(mode="all", timeout=30)
        handed.append([w.id for w in result.done])

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        group.start_soon(waiter)
    given = [worker for result in handed for worker in result]
    assert sorted(given) == sorted(w.worker_id for w in spawned.workers)


RESUMABLE = r"""
import json, pathlib, sys
if sys.argv[1] == "--resume":
    session, message = sys.argv[2], sys.argv[3]
    if "fix" in message:
        pathlib.Path("fixed.txt").write_text("fixed")
    print(json.dumps({"session": session, "summary": "resumed: " + message}))
else:
    pathlib.Path("first.txt").write_text("first")
    print(json.dumps({"session": "session-42", "summary": "first attempt"}))
"""


class _Resumable(Runtime):
    """A runtime with sessions, as claude and codex have, in a dozen lines of Python."""

    name = "resumable"

    def __init__(self, script: Path) -> None:
        self.script = script

    def argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, str(self.script), request.prompt]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        return [sys.executable, str(self.script), "--resume", session_id, message]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return LastLine()


async def test_send_input_continues_the_session_as_the_next_attempt(swarm: Swarm, tmp_path: Path) -> None:
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE)
    swarm.runtimes["resumable"] = _Resumable(script)
    ledger = Ledger(swarm.store)
    await ledger.create(
        NewTask(subject="needs a retry", metadata={"validation": {"files_exist": ["fixed.txt"]}})
    )
    [worker] = (await swarm.spawn(runtime="resumable")).workers
    [first] = (await swarm.wait(timeout=30)).done
    assert first.task_status is TaskStatus.FAILED
    assert first.session_id == "session-42"

    continued = await swarm.send_input(worker.worker_id, "please fix it")
    assert continued.attempt == 2
    assert (await ledger.get("1")).status is TaskStatus.IN_PROGRESS
    [second] = (await swarm.wait(timeout=30)).done
    assert second.id == worker.worker_id
    assert second.attempt == 2
    assert second.summary == "resumed: please fix it"
    assert second.task_status is TaskStatus.COMPLETED
    assert (await ledger.get("1")).status is TaskStatus.COMPLETED


async def test_send_input_is_refused_where_it_cannot_work(swarm: Swarm) -> None:
    ledger = Ledger(swarm.store)
    await ledger.create(NewTask(subject="runs", description="@hang"))
    await ledger.create(NewTask(subject="quick"))
    spawned = await swarm.spawn()
    running, quick = (w.worker_id for w in spawned.workers)
    with pytest.raises(InvalidInput, match="still running"):
        await swarm.send_input(running, "more")
    await swarm.wait([quick], timeout=30)
    # The command runtime has no sessions to continue.
    with pytest.raises(RuntimeNotCapable, match="no session"):
        await swarm.send_input(quick, "more")
    with pytest.raises(InvalidInput, match="no worker"):
        await swarm.send_input("worker-99", "more")
    await swarm.close(running)


class _BrokenHook:
    async def __call__(self, task_id: str, metadata: Mapping[str, Any], cwd: Path) -> dict[str, Any] | None:
        raise RuntimeError("the hook's own bug")


async def test_a_completion_hook_that_raises_fails_its_task_and_the_engine_goes_on(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    runtime = CommandRuntime(CommandProfile(["true"]), name="true")
    async with await Store.open(tmp_path / "state" / "swarm.db") as store:
        engine = _engine(store, tmp_path, {"true": runtime}, hooks=[_BrokenHook()])
        ledger = Ledger(store)
        await ledger.create(NewTask(subject="hooked", description="", metadata={"ol_bead_id": "ol-1.1"}))
        async with anyio.create_task_group() as group:
            await group.start(engine.run)
            await engine.spawn()
            first = await engine.wait(mode="all", timeout=30)
            # Supervision outlived the hook's bug: the engine still starts and judges workers.
            assert (await ledger.get("1")).status is TaskStatus.FAILED
            [failed] = first.done
            assert failed.error == "validation failed: _BrokenHook: it failed: the hook's own bug"
            await ledger.create(NewTask(subject="next", description="", metadata={"k": 1}))
            assert [w.task_id for w in (await engine.spawn()).workers] == ["2"]
            second = await engine.wait(mode="all", timeout=30)
            assert [w.task_id for w in second.done] == ["2"]
            group.cancel_scope.cancel()


async def test_a_prompt_file_is_written_only_for_a_command_line_that_names_it(tmp_path: Path) -> None:
    """The prompt file and a worker's own directory cost every worker an inode each: they are made
    only when its command line names the file. The result file has a directory made once."""
    project = tmp_path / "project"
    project.mkdir()
    state = tmp_path / "state"
    read_prompt = [sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())", "{prompt_file}"]
    runtimes: dict[str, Runtime] = {
        "plain": CommandRuntime(CommandProfile(["true"]), name="plain"),
        "reader": CommandRuntime(CommandProfile(read_prompt), name="reader"),
    }
    async with await Store.open(state / "swarm.db") as store:
        engine = _engine(store, tmp_path, runtimes)
        ledger = Ledger(store)
        await ledger.create(NewTask(subject="no prompt file", description=""))
        await ledger.create(NewTask(subject="reads its prompt", description="the words"))
        async with anyio.create_task_group() as group:
            await group.start(engine.run)
            [plain] = (await engine.spawn(["1"])).workers
            [reader] = (await engine.spawn(["2"], runtime="reader")).workers
            done = (await engine.wait(mode="all", timeout=30)).done
            assert [w.task_status for w in done] == [TaskStatus.COMPLETED, TaskStatus.COMPLETED]
            # Its own directory holds only the exit status its wrapper wrote: no prompt file.
            assert names_in(state / "workers" / plain.worker_id) == ["exit-1.json"]
            prompt = anyio.Path(state / "workers" / reader.worker_id / "prompt.md")
            assert "the words" in await prompt.read_text()
            assert "the words" in await anyio.Path(reader.log).read_text()
            assert await anyio.Path(state / "results").is_dir()
            group.cancel_scope.cancel()
