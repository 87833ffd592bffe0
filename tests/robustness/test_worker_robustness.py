"""Workers under stress: racing servers, floods of output, lingering, silence, late reports.

Real processes throughout (no mocks). Nothing here sleeps to synchronise: the tests wait on
conditions (a worker's end through `wait`, a file the test itself creates) under deadlines, and
look at the OS through /proc. The few sleeps are inside worker scripts: they are what a worker does.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.engine.verdicts import Verdict
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, Task, TaskStatus, Worker, WorkerState, now
from mcp_swarm.placement.processes import group_members
from mcp_swarm.runtimes import CommandProfile, CommandRuntime, Outcome, OutputReader, Runtime, WorkerRequest
from mcp_swarm.runtimes.base import json_event
from mcp_swarm.store import Store
from tests.support.mcp_client import call, connect, stdio_parameters

pytestmark = pytest.mark.anyio

MIB = 1 << 20

# -- helpers ------------------------------------------------------------------------------------


def write_project(directory: Path, argv: list[str]) -> Path:
    """A project whose mcp-swarm.toml makes `argv` the default (command) runtime, "scripted"."""
    directory.mkdir(parents=True, exist_ok=True)
    quoted = ", ".join(json.dumps(arg) for arg in argv)  # a JSON string is a TOML basic string
    (directory / "mcp-swarm.toml").write_text(
        f'default_runtime = "scripted"\n\n[runtimes.scripted]\ntype = "command"\nargv = [{quoted}]\n'
    )
    return directory


def serve(project: Path, db: Path) -> Client:
    """`mcp-swarm serve --db DB` started in `project`, over real stdio."""
    return Client(stdio_parameters(db, cwd=project), mode="legacy")


def server_pid(db: Path) -> int:
    """The pid of the one `mcp-swarm serve` child of this process that serves `db`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 1 :].split()[1])
        if ppid == os.getpid() and b"serve" in argv and str(db).encode() in argv:
            found.append(int(entry.name))
    assert len(found) == 1, f"expected one server for {db}, found {found}"
    return found[0]


def memory_kib(pid: int, field: str) -> int:
    """A field of /proc/PID/status in KiB: VmRSS (resident now) or VmHWM (resident at peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def ends_of(path: Path, head: int, tail: int) -> tuple[bytes, bytes]:
    """The first `head` and the last `tail` bytes of a file."""
    with path.open("rb") as handle:
        start = handle.read(head)
        handle.seek(-tail, os.SEEK_END)
        return start, handle.read()


def seconds(worker: Worker) -> float:
    assert worker.ended_at is not None
    return (
        datetime.fromisoformat(worker.ended_at) - datetime.fromisoformat(worker.started_at)
    ).total_seconds()


@asynccontextmanager
async def running_engine(tmp_path: Path, runtime: Runtime, limits: WorkerLimits) -> AsyncGenerator[Swarm]:
    """The engine on a fresh database, supervising until the block ends (then it stops every worker)."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    async with await Store.open(tmp_path / "state" / "swarm.db") as store:
        engine = Swarm(
            store,
            {runtime.name: runtime},
            default_runtime=runtime.name,
            state_dir=tmp_path / "state",
            project_dir=project,
            limits=limits,
        )
        async with anyio.create_task_group() as group:
            await group.start(engine.run)
            yield engine
            group.cancel_scope.cancel()


async def snapshot(store: Store, task_ids: list[str]) -> tuple[list[Worker], list[Task], int]:
    """Every worker and task row of these tasks, and the length of the history: to compare."""
    tasks: list[Task] = []
    async with store.read() as tx:
        workers = [w for task_id in task_ids for w in await tx.workers.for_task(int(task_id))]
        for task_id in task_ids:
            task = await tx.tasks.get(int(task_id))
            assert task is not None
            tasks.append(task)
    history = await Ledger(store).history(limit=100_000)
    return workers, tasks, len(history)


# A scripted worker: it acts on the words of its prompt file, as in tests/engine/test_swarm.py.
WORKER = r"""
import json, os, subprocess, sys, time
prompt = open(sys.argv[1]).read()
task = os.environ["SWARM_TASK_ID"]
def grandchild():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
if "@final-then-linger" in prompt:
    grandchild()
    print("working on", task, flush=True)
    print(json.dumps({"final": True, "ok": True, "summary": "final word on " + task}), flush=True)
    time.sleep(600)
if "@silent" in prompt:
    grandchild()
    time.sleep(600)
if "@chatty" in prompt:
    # Five times the idle limit in all, never more than a tenth of it without a line.
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        print("still working", flush=True)
        time.sleep(0.05)
if "@hang" in prompt:
    time.sleep(600)
if "@fail" in prompt:
    print("it broke", flush=True)
    sys.exit(3)
if "@stream-without-newline" in prompt:
    # A progress bar that only ever returns the carriage: 32 MiB without a newline, then the end.
    for _ in range(32):
        sys.stdout.buffer.write(b"\r" + b"#" * (1024 * 1024 - 1))
        sys.stdout.buffer.flush()
        time.sleep(0.02)
    # A JSON-lines protocol puts each event on a line of its own, after the bar too.
    print()
    print(json.dumps({"final": True, "ok": True, "summary": "streamed"}), flush=True)
if "@flood-then-last-line" in prompt:
    for _ in range(32):
        sys.stdout.buffer.write((b"x" * 63 + b"\n") * 16384)
    sys.stdout.buffer.write(b"the last line\n")
    sys.stdout.buffer.flush()
"""


def command_runtime(tmp_path: Path) -> CommandRuntime:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return CommandRuntime(CommandProfile([sys.executable, str(script), "{prompt_file}"]), name="scripted")


class FinalEventReader(OutputReader):
    """A runtime whose last word is a line {"final": true, "ok": ..., "summary": ...}."""

    def __init__(self) -> None:
        self.finished = False
        self.final: dict[str, Any] | None = None

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is not None and event.get("final") is True:
            self.final = event
            self.finished = True

    def outcome(self, exit_code: int | None) -> Outcome:
        # The verdict is the final event's, whatever the exit code of a process stopped after it.
        if self.final is None:
            return Outcome(succeeded=False, error=f"no final event; exit code {exit_code}")
        summary = self.final.get("summary")
        return Outcome(
            succeeded=self.final.get("ok") is True, summary=summary if isinstance(summary, str) else None
        )


class FinalEventRuntime(Runtime):
    name = "final-event"

    def __init__(self, script: Path) -> None:
        self.script = script

    def argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, str(self.script), str(request.prompt_file)]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return FinalEventReader()


# -- 1. two servers racing spawn ----------------------------------------------------------------

TASKS = 200
CHAINS = 40  # task n waits for task n - CHAINS: five waves, each released one task at a time
CALLERS_PER_SERVER = 2
BATCH = 12


async def test_two_servers_racing_spawn_never_assign_one_task_twice(tmp_path: Path) -> None:
    ran = tmp_path / "ran.txt"
    # Each worker appends "task worker" to one shared file; O_APPEND (>>) keeps each line whole.
    script = 'echo "$SWARM_TASK_ID $SWARM_WORKER_ID" >> "$1"'
    project = write_project(tmp_path / "project", ["/bin/sh", "-c", script, "worker", str(ran)])
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


# -- 2. a flood of output -----------------------------------------------------------------------

FLOOD_MIB = 300
FLOOD = r"""
import sys
prompt = open(sys.argv[1]).read()
if "@flood" in prompt:
    block = (b"y" * 63 + b"\n") * 16384  # 1 MiB of 64-byte lines
    for _ in range(int(sys.argv[2])):
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.write(b"flood over\n")
else:
    print("warming up")
"""


async def test_a_worker_flooding_its_output_costs_the_server_no_memory(tmp_path: Path) -> None:
    (tmp_path / "flood.py").write_text(FLOOD)
    argv = [sys.executable, str(tmp_path / "flood.py"), "{prompt_file}", str(FLOOD_MIB)]
    project = write_project(tmp_path / "project", argv)
    # All of the flood in one log, unrotated: rotation is test_host_limits.py's.
    config = project / "mcp-swarm.toml"
    config.write_text(f"max_log_bytes = {2 * FLOOD_MIB * MIB}\n" + config.read_text())
    db = tmp_path / "state" / "flood.db"
    log: Path | None = None
    try:
        with anyio.fail_after(60):
            async with serve(project, db) as client:
                await call(client, "TaskCreate", subject="warm up", description="")
                await call(client, "TaskCreate", subject="flood", description="@flood")
                # One worker through spawn, supervision and judgement first: what that costs once
                # (imports, buffers) is not growth.
                await call(client, "spawn", taskIds=["1"])
                [warm] = (await call(client, "wait", timeoutSeconds=30))["done"]
                assert warm["state"] == "succeeded"
                pid = server_pid(db)
                rss_before = memory_kib(pid, "VmRSS")
                peak_before = memory_kib(pid, "VmHWM")

                [worker] = (await call(client, "spawn", taskIds=["2"]))["workers"]
                [done] = (await call(client, "wait", timeoutSeconds=50))["done"]
                log = Path(worker["log"])

                rss_growth = memory_kib(pid, "VmRSS") - rss_before
                peak_growth = memory_kib(pid, "VmHWM") - peak_before
                assert (done["workerId"], done["state"], done["taskStatus"]) == (
                    worker["workerId"],
                    "succeeded",
                    "completed",
                )
        # The whole output went to the log, not through the server.
        assert (await anyio.Path(log).stat()).st_size == FLOOD_MIB * MIB + len(b"flood over\n")
        head, tail = ends_of(log, 64, 64 + len(b"flood over\n"))
        assert head == b"y" * 63 + b"\n"
        assert tail == b"y" * 63 + b"\nflood over\n"
        assert rss_growth < 20 * 1024, f"the server's RSS grew by {rss_growth} KiB"
        assert peak_growth < 20 * 1024, f"the server's peak RSS grew by {peak_growth} KiB"
    finally:
        if log is not None:
            log.unlink(missing_ok=True)  # 300 MiB: not worth keeping in pytest's temporary dirs


async def test_the_reader_sees_the_last_line_of_a_flood(tmp_path: Path) -> None:
    async with running_engine(tmp_path, command_runtime(tmp_path), WorkerLimits()) as swarm:
        await Ledger(swarm.store).create(NewTask(subject="floods", description="@flood-then-last-line"))
        [worker] = (await swarm.spawn()).workers
        [done] = (await swarm.wait(timeout=30)).done
        assert (await anyio.Path(worker["log"]).stat()).st_size == 32 * MIB + len(b"the last line\n")
        # The command runtime's summary is the last line of output when there is no result file.
        assert done.summary == "the last line"


async def test_output_without_newlines_costs_the_server_no_memory(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    limits = WorkerLimits(tail_interval=0.01)  # the reader keeps up with the worker
    async with running_engine(tmp_path, FinalEventRuntime(script), limits) as swarm:
        await Ledger(swarm.store).create(NewTask(subject="streams", description="@stream-without-newline"))
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            await swarm.spawn()
            [done] = (await swarm.wait(timeout=30)).done
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (done.state, done.summary) == (WorkerState.SUCCEEDED, "streamed")
        assert peak - before < 20 * MIB, f"the engine held {(peak - before) / MIB:.0f} MiB at its peak"


# -- 3. linger after the final event ------------------------------------------------------------


async def test_a_worker_lingering_after_its_final_event_is_stopped_and_judged_by_it(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    limits = WorkerLimits(linger_seconds=0.5, idle_seconds=60, stop_grace_seconds=1.0, tail_interval=0.05)
    async with running_engine(tmp_path, FinalEventRuntime(script), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="lingers", description="@final-then-linger"))
        [worker] = (await swarm.spawn()).workers
        result = await swarm.wait(timeout=30)  # the worker itself would sleep for ten minutes
        assert not result.timed_out
        [done] = result.done
        assert done.state is WorkerState.SUCCEEDED
        assert done.task_status is TaskStatus.COMPLETED
        assert done.summary == "final word on 1"
        assert done.error is None
        assert done.exit_code == -signal.SIGTERM  # stopped by the engine, not ended by itself
        assert seconds(done) >= limits.linger_seconds
        # The worker and the grandchild it started are gone.
        assert group_members(worker["pid"]) == []
        task = await ledger.get("1")
        assert (task.status, task.owner) == (TaskStatus.COMPLETED, worker["workerId"])


# -- 4. the idle limit --------------------------------------------------------------------------


async def test_a_silent_worker_times_out_and_a_chatty_one_does_not(tmp_path: Path) -> None:
    limits = WorkerLimits(idle_seconds=0.5, stop_grace_seconds=1.0, tail_interval=0.05)
    async with running_engine(tmp_path, command_runtime(tmp_path), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="says nothing", description="@silent"))
        await ledger.create(NewTask(subject="keeps talking", description="@chatty"))
        silent, chatty = (await swarm.spawn()).workers
        result = await swarm.wait(timeout=30)
        assert not result.timed_out
        by_task = {w.task_id: w for w in result.done}

        quiet = by_task["1"]
        assert quiet.state is WorkerState.TIMED_OUT
        assert quiet.error == "no output for 0.5 s"
        assert quiet.task_status is TaskStatus.FAILED
        assert seconds(quiet) >= limits.idle_seconds
        assert group_members(silent["pid"]) == []  # its grandchild too
        assert (await ledger.get("1")).status is TaskStatus.FAILED

        talker = by_task["2"]
        assert talker.state is WorkerState.SUCCEEDED
        assert talker.exit_code == 0
        assert talker.task_status is TaskStatus.COMPLETED
        assert seconds(talker) >= 2.5  # five idle limits, never silent for one
        assert group_members(chatty["pid"]) == []
        assert (await ledger.get("2")).status is TaskStatus.COMPLETED


# -- 5. a late report of an old attempt ---------------------------------------------------------

RESUMABLE = r"""
import json, os, sys, time
if sys.argv[1] == "--resume":
    session, message, go = sys.argv[2:5]
    # The second attempt runs until the test lets it end.
    while not os.path.exists(go):
        time.sleep(0.01)
    print(json.dumps({"session": session, "ok": True, "summary": "second attempt: " + message}), flush=True)
else:
    print(json.dumps({"session": "session-7", "ok": False, "summary": "first attempt"}), flush=True)
    sys.exit(1)
"""


class SessionReader(OutputReader):
    def __init__(self) -> None:
        self.finished = False
        self.last: dict[str, Any] = {}

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is not None:
            self.last = event
            self.finished = True

    def outcome(self, exit_code: int | None) -> Outcome:
        summary = self.last.get("summary")
        session = self.last.get("session")
        return Outcome(
            succeeded=exit_code == 0 and self.last.get("ok") is True,
            summary=summary if isinstance(summary, str) else None,
            session_id=session if isinstance(session, str) else None,
        )


class Resumable(Runtime):
    """A runtime with sessions, as claude and codex have."""

    name = "resumable"

    def __init__(self, script: Path, go: Path) -> None:
        self.script = script
        self.go = go

    def argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, str(self.script), request.prompt]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        return [sys.executable, str(self.script), "--resume", session_id, message, str(self.go)]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return SessionReader()


async def late_report(store: Store, number: int, attempt: int) -> tuple[bool, Worker | None, Worker | None]:
    """What an old supervisor would write, arriving now: the worker before and after it."""
    async with store.write() as tx:
        before = await tx.workers.get(number)
        report = Verdict(
            number,
            attempt,
            WorkerState.FAILED,
            TaskStatus.FAILED,
            exit_code=9,
            summary="a late report",
            error="reported late",
            session_id="another-session",
        )
        recorded = await tx.workers.finish_many([report], now())
        after = await tx.workers.get(number)
    return number in recorded, before, after


async def test_a_late_report_of_an_old_attempt_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE)
    go = tmp_path / "go"
    limits = WorkerLimits(stop_grace_seconds=1.0, idle_seconds=60)
    async with running_engine(tmp_path, Resumable(script, go), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="needs a second go"))
        [worker] = (await swarm.spawn()).workers
        [first] = (await swarm.wait(timeout=30)).done
        assert (first.state, first.attempt, first.session_id) == (WorkerState.FAILED, 1, "session-7")
        assert (await ledger.get("1")).status is TaskStatus.FAILED

        second = await swarm.send_input(worker["workerId"], "try again")
        assert second.attempt == 2
        assert second.state in (WorkerState.STARTING, WorkerState.RUNNING)
        task_before = await ledger.get("1")
        assert (task_before.status, task_before.owner) == (TaskStatus.IN_PROGRESS, worker["workerId"])

        # While attempt 2 runs, attempt 1's report is refused and changes nothing.
        recorded, before, after = await late_report(swarm.store, 1, attempt=1)
        assert recorded is False
        assert after == before
        assert await ledger.get("1") == task_before
        assert (await swarm.wait([worker["workerId"]], timeout=0)).running == [worker["workerId"]]

        await anyio.Path(go).touch()
        [done] = (await swarm.wait([worker["workerId"]], timeout=30)).done
        assert (done.state, done.attempt, done.task_status) == (
            WorkerState.SUCCEEDED,
            2,
            TaskStatus.COMPLETED,
        )
        assert done.summary == "second attempt: try again"
        completed = await ledger.get("1")
        assert completed.status is TaskStatus.COMPLETED

        # After attempt 2 ended: neither attempt 1's report nor a second one of attempt 2 counts.
        for attempt in (1, 2):
            recorded, before, after = await late_report(swarm.store, 1, attempt=attempt)
            assert recorded is False
            assert before == done
            assert after == done
        assert await ledger.get("1") == completed


# -- 6. close_agent on a worker that has ended --------------------------------------------------


async def test_closing_an_ended_worker_returns_its_record_and_changes_nothing(tmp_path: Path) -> None:
    limits = WorkerLimits(stop_grace_seconds=1.0, idle_seconds=60)
    async with running_engine(tmp_path, command_runtime(tmp_path), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="quick"))
        await ledger.create(NewTask(subject="breaks", description="@fail"))
        await ledger.create(NewTask(subject="hangs", description="@hang"))
        quick, broken, hung = (await swarm.spawn()).workers
        await swarm.wait([quick["workerId"], broken["workerId"]], timeout=30)
        cancelled = await swarm.close(hung["workerId"])
        assert cancelled.state is WorkerState.CANCELLED
        assert group_members(hung["pid"]) == []
        assert (await swarm.wait(timeout=0)).running == []  # every result has been handed over

        ids = ["1", "2", "3"]
        workers, tasks, history = await snapshot(swarm.store, ids)
        assert [w.state for w in workers] == [
            WorkerState.SUCCEEDED,
            WorkerState.FAILED,
            WorkerState.CANCELLED,
        ]
        assert [t.status for t in tasks] == [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.PENDING]

        for worker in workers:
            for task_status in (TaskStatus.PENDING, TaskStatus.FAILED):
                assert await swarm.close(worker.id, task_status) == worker

        assert await snapshot(swarm.store, ids) == (workers, tasks, history)
        # Nothing is handed over again as a new result.
        assert (await swarm.wait(timeout=0)).done == []


async def test_close_agent_on_an_ended_worker_answers_the_recorded_task_status(tmp_path: Path) -> None:
    write_project(tmp_path, [sys.executable, "-c", "print('done')"])
    async with connect("memory", tmp_path / "swarm.db") as client:
        await call(client, "TaskCreate", subject="quick", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        [done] = (await call(client, "wait", timeoutSeconds=30))["done"]
        assert done["taskStatus"] == "completed"
        closed = await call(client, "close_agent", workerId=worker["workerId"])
        assert (await call(client, "TaskGet", taskId="1"))["status"] == "completed"
        assert closed == {"workerId": worker["workerId"], "state": "succeeded", "taskStatus": "completed"}
