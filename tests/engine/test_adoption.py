"""A server adopting a continued attempt (send_input) reads that attempt's output, not the last.

The attempt runs in a tmux session, which outlives the engine that started it; that engine names
itself as a server that is gone, so the next engine on the database adopts the worker as it
would after a crash. Both attempts write to one log, and the first ended with a final event: an
adopter that read the log from its start would take that event for the second attempt's own,
stop the worker after its linger time, and judge it by the first attempt's words.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskStatus, WorkerState
from mcp_swarm.placement.builtin import placements
from mcp_swarm.store import Store
from tests.support.helpers import running, tmux_socket
from tests.support.resumable_workers import FIRST_SESSION, RESUMABLE_WORKER, Resumable

pytestmark = [pytest.mark.anyio, pytest.mark.tmux]
__all__ = ["tmux_socket"]


@asynccontextmanager
async def engine(
    store: Store, tmp_path: Path, socket: str, *, supervisor: str | None = None
) -> AsyncGenerator[Swarm]:
    runtime = Resumable(tmp_path / "worker.py", tmp_path / "gate")
    swarm = Swarm(
        store, {runtime.name: runtime}, default_runtime=runtime.name, state_dir=tmp_path / "state",
        project_dir=tmp_path / "project", mode="distributed",
        limits=WorkerLimits(linger_seconds=0.2, stop_grace_seconds=1.0),
        placements=placements(tmux_socket=socket),
    )  # fmt: skip
    async with running(swarm, supervisor=supervisor):
        yield swarm


async def test_an_adopted_continued_attempt_is_judged_by_its_own_output(
    tmp_path: Path, tmux_socket: str
) -> None:
    (tmp_path / "worker.py").write_text(RESUMABLE_WORKER)
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
            assert failed.session_id == FIRST_SESSION
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
