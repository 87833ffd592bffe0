"""A server adopting a continued attempt (send_input) reads that attempt's output, not the last.

The attempt runs in a tmux session, which outlives the engine that started it; that engine names
itself as a server that is gone, so the next engine on the database adopts the worker as it
would after a crash. Both attempts write to one log, and the first ended with a final event: an
adopter that read the log from its start would take that event for the second attempt's own,
stop the worker after its linger time, and judge it by the first attempt's words.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskStatus, WorkerState
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes import Outcome, OutputReader, Runtime, WorkerRequest
from mcp_swarm.store import Store
from tests.support.helpers import tmux_socket

pytestmark = [pytest.mark.anyio, pytest.mark.tmux]
__all__ = ["tmux_socket"]

# The first attempt ends at once; a continued one waits for the test's gate before it answers.
SCRIPT = r"""
import json, pathlib, sys, time
if sys.argv[1] == "--resume":
    gate = pathlib.Path(sys.argv[4])
    while not gate.exists():
        time.sleep(0.02)
    pathlib.Path("fixed.txt").write_text("fixed")
    print(json.dumps({"session": sys.argv[2], "summary": "resumed: " + sys.argv[3]}), flush=True)
else:
    print(json.dumps({"session": "session-7", "summary": "first attempt"}), flush=True)
"""


class _LastLine(OutputReader):
    def __init__(self) -> None:
        self.finished = False
        self.last: dict[str, str] = {}

    def feed(self, line: str) -> None:
        if line.startswith("{"):
            self.last, self.finished = json.loads(line), True

    def outcome(self, exit_code: int | None) -> Outcome:
        return Outcome(
            succeeded=exit_code == 0, summary=self.last.get("summary"), session_id=self.last.get("session")
        )


class _Resumable(Runtime):
    name = "resumable"

    def __init__(self, script: Path, gate: Path) -> None:
        self.script, self.gate = script, gate

    def argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, str(self.script), request.prompt]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        return [sys.executable, str(self.script), "--resume", session_id, message, str(self.gate)]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return _LastLine()


@asynccontextmanager
async def engine(
    store: Store, tmp_path: Path, socket: str, *, supervisor: str | None = None
) -> AsyncGenerator[Swarm]:
    runtime = _Resumable(tmp_path / "worker.py", tmp_path / "gate")
    swarm = Swarm(
        store, {runtime.name: runtime}, default_runtime=runtime.name, state_dir=tmp_path / "state",
        project_dir=tmp_path / "project", mode="distributed",
        limits=WorkerLimits(linger_seconds=0.2, stop_grace_seconds=1.0),
        placements=placements(tmux_socket=socket),
    )  # fmt: skip
    if supervisor is not None:
        swarm.supervisor = supervisor
    async with anyio.create_task_group() as group:
        await group.start(swarm.run)
        yield swarm
        group.cancel_scope.cancel()


async def test_an_adopted_continued_attempt_is_judged_by_its_own_output(
    tmp_path: Path, tmux_socket: str
) -> None:
    (tmp_path / "worker.py").write_text(SCRIPT)
    (tmp_path / "project").mkdir()
    async with await Store.open(tmp_path / "state" / "swarm.db") as store:
        ledger = Ledger(store)
        await ledger.create(
            NewTask(subject="fix it", metadata={"validation": {"files_exist": ["fixed.txt"]}})
        )
        # A server identity no process has: once this engine is gone, its workers are orphans.
        async with engine(store, tmp_path, tmux_socket, supervisor="4194304:1") as first:
            [spawned] = (await first.spawn()).workers
            [failed] = (await first.wait(timeout=30)).done
            assert failed.task_status is TaskStatus.FAILED
            assert failed.session_id == "session-7"
            continued = await first.send_input(spawned.worker_id, "please fix it")
            assert continued.attempt == 2
        async with engine(store, tmp_path, tmux_socket) as second:
            # Adopted as the engine started (recovery runs before `run` reports itself started).
            [adopted] = await second.workers_of("1")
            assert adopted.supervisor == second.supervisor
            assert adopted.state is WorkerState.RUNNING
            # Nothing may stop it meanwhile: a window longer than linger_seconds, as what is checked
            # is that something does not happen.
            await anyio.sleep(0.5)
            (tmp_path / "gate").touch()
            [done] = (await second.wait([spawned.worker_id], timeout=30)).done
    assert done.attempt == 2
    assert done.state is WorkerState.SUCCEEDED
    assert done.summary == "resumed: please fix it"
    assert done.task_status is TaskStatus.COMPLETED
