"""Several Mayors on one engine (the sessions of one HTTP server): each Mayor's plain `wait` hears
of the workers it spawned, once, and of its own workers' help requests only. A Mayor without a
name (a stdio server's, the command line's) is a Mayor of its own, as it always was.

Real worker processes through the command runtime, held at gates so that each test decides
when they end; tmux for the adoption, as a worker that outlives its server lives there.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.ledger.mail import Mailbox, MessageType
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask, TaskStatus, WorkerState
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes import CommandProfile, CommandRuntime
from mcp_swarm.store import Store
from tests.support.gated_workers import GATED_WORKER, go, started_pid
from tests.support.helpers import DEADLINE, running, tmux_socket
from tests.support.resumable_workers import RESUMABLE_WORKER, Resumable

pytestmark = pytest.mark.anyio
__all__ = ["tmux_socket"]


@asynccontextmanager
async def _engine(
    store: Store,
    tmp_path: Path,
    *,
    mode: str = "local",
    socket: str | None = None,
    supervisor: str | None = None,
) -> AsyncGenerator[Swarm]:
    """A running engine whose default runtime, `gated`, runs GATED_WORKER with tmp_path/gates;
    `resumable` is there too."""
    gates = tmp_path / "gates"
    gates.mkdir(exist_ok=True)
    (tmp_path / "project").mkdir(exist_ok=True)
    script = tmp_path / "gated.py"
    script.write_text(GATED_WORKER)
    (tmp_path / "resumable.py").write_text(RESUMABLE_WORKER)
    gated = CommandRuntime(CommandProfile([sys.executable, str(script), str(gates)]), name="gated")
    resumable = Resumable(tmp_path / "resumable.py", gates / "resume")
    limits = WorkerLimits(max_workers=6, stop_grace_seconds=1.0, idle_seconds=60, linger_seconds=0.2)
    places = placements() if socket is None else placements(tmux_socket=socket)
    swarm = Swarm(
        store, {"gated": gated, "resumable": resumable}, default_runtime="gated",
        state_dir=tmp_path / "state", project_dir=tmp_path / "project", limits=limits, mode=mode,
        placements=places,
    )  # fmt: skip
    async with running(swarm, supervisor=supervisor):
        yield swarm


async def _started(gates: Path, *worker_ids: str) -> None:
    with anyio.fail_after(DEADLINE):
        # Another process's doing, with no event to wait on: looked at until it is so.
        while any(started_pid(gates, worker_id) is None for worker_id in worker_ids):  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def _ended(swarm: Swarm, *worker_ids: str) -> None:
    """Until these workers' verdicts are recorded; by ids, so that nothing is marked reported."""
    result = await swarm.wait(list(worker_ids), timeout=DEADLINE)
    assert not result.timed_out


async def test_each_mayor_waits_for_its_own_workers_and_gets_each_result_once(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    async with await Store.open(tmp_path / "state" / "swarm.db") as store, _engine(store, tmp_path) as swarm:
        await Ledger(store).create_plan([PlanTask(subject=f"task {n}") for n in range(1, 6)])
        [a1, a2] = (await swarm.spawn(["1", "2"], mayor="alice")).workers
        [b3] = (await swarm.spawn(["3"], mayor="bob")).workers
        [n4, n5] = (await swarm.spawn(["4", "5"])).workers  # no name: a stdio server's Mayor
        await _started(gates, *(w.worker_id for w in (a1, a2, b3, n4, n5)))

        # While they run, each Mayor's wait lists its own running workers, and only those.
        alice = await swarm.wait(timeout=0.2, mayor="alice")
        assert (alice.done, alice.running, alice.timed_out) == ([], [a1.worker_id, a2.worker_id], True)
        bob = await swarm.wait(timeout=0.2, mayor="bob")
        assert (bob.done, bob.running) == ([], [b3.worker_id])
        nameless = await swarm.wait(timeout=0.2)
        assert nameless.running == [n4.worker_id, n5.worker_id]

        # Bob's and the nameless Mayor's workers end: alice's wait is not woken by them.
        go(gates, b3.worker_id, n4.worker_id, n5.worker_id)
        await _ended(swarm, b3.worker_id, n4.worker_id, n5.worker_id)
        alice = await swarm.wait(mode="any", timeout=0.3, mayor="alice")
        assert (alice.done, alice.timed_out) == ([], True)
        go(gates, a1.worker_id, a2.worker_id)
        alice = await swarm.wait(timeout=DEADLINE, mayor="alice")
        assert [w.id for w in alice.done] == [a1.worker_id, a2.worker_id]
        assert {w.mayor for w in alice.done} == {"alice"}
        assert (alice.running, alice.timed_out) == ([], False)

        bob = await swarm.wait(timeout=DEADLINE, mayor="bob")
        assert [w.id for w in bob.done] == [b3.worker_id]
        nameless = await swarm.wait(timeout=DEADLINE)
        assert [w.id for w in nameless.done] == [n4.worker_id, n5.worker_id]
        # Once: a second plain wait of each has nothing left, and returns at once (none running).
        for mayor in ("alice", "bob", None):
            again = await swarm.wait(timeout=DEADLINE, mayor=mayor)
            assert (again.done, again.running, again.timed_out) == ([], [], False)
        # With ids a Mayor may still ask about any worker, reported or not, its own or another's.
        by_id = await swarm.wait([a1.worker_id, b3.worker_id], timeout=1, mayor="bob")
        assert [w.id for w in by_id.done] == [a1.worker_id, b3.worker_id]


async def test_a_mayor_gets_its_workers_help_requests_and_no_one_elses(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    async with await Store.open(tmp_path / "state" / "swarm.db") as store, _engine(store, tmp_path) as swarm:
        await Ledger(store).create_plan([PlanTask(subject=f"task {n}") for n in range(1, 3)])
        [alices] = (await swarm.spawn(["1"], mayor="alice")).workers
        [bobs] = (await swarm.spawn(["2"], mayor="bob")).workers
        mail = Mailbox(store)
        asked = await mail.send(alices.worker_id, "mayor", "stuck", type=MessageType.HELP_REQUEST)

        # Bob, waiting by ids for alice's worker too, is not handed her worker's question.
        bob = await swarm.wait([alices.worker_id, bobs.worker_id], timeout=0.3, mayor="bob")
        assert (bob.help_requests, bob.timed_out) == ([], True)
        nameless = await swarm.wait(timeout=0.3)
        assert nameless.help_requests == []
        alice = await swarm.wait(timeout=DEADLINE, mayor="alice")
        assert [m.id for m in alice.help_requests] == [asked.id]
        assert alice.running == [alices.worker_id]
        # Handed over once.
        alice = await swarm.wait(timeout=0.2, mayor="alice")
        assert alice.help_requests == []
        go(gates, alices.worker_id, bobs.worker_id)
        await _ended(swarm, alices.worker_id, bobs.worker_id)


async def test_a_continued_attempt_reports_to_the_mayor_that_spawned_the_worker(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "state" / "swarm.db") as store, _engine(store, tmp_path) as swarm:
        ledger = Ledger(store)
        await ledger.create_plan(
            [PlanTask(subject="needs a retry", metadata={"validation": {"files_exist": ["fixed.txt"]}})]
        )
        [worker] = (await swarm.spawn(runtime="resumable", mayor="alice")).workers
        [first] = (await swarm.wait(timeout=DEADLINE, mayor="alice")).done
        assert first.task_status is TaskStatus.FAILED
        continued = await swarm.send_input(worker.worker_id, "please fix it")
        assert (continued.attempt, continued.mayor) == (2, "alice")
        (tmp_path / "gates" / "resume").touch()
        await _ended(swarm, worker.worker_id)
        assert (await swarm.wait(timeout=0.2, mayor="bob")).done == []
        assert (await swarm.wait(timeout=0.2)).done == []
        [second] = (await swarm.wait(timeout=DEADLINE, mayor="alice")).done
        assert (second.id, second.attempt, second.task_status) == (worker.worker_id, 2, TaskStatus.COMPLETED)


@pytest.mark.tmux
async def test_an_adopted_worker_reports_to_the_mayor_that_spawned_it(
    tmp_path: Path, tmux_socket: str
) -> None:
    gates = tmp_path / "gates"
    async with await Store.open(tmp_path / "state" / "swarm.db") as store:
        await Ledger(store).create_plan([PlanTask(subject="outlives its server")])
        # A server identity no process has: once this engine is gone, its workers are orphans.
        async with _engine(
            store, tmp_path, mode="distributed", socket=tmux_socket, supervisor="4194304:1"
        ) as first:
            [spawned] = (await first.spawn(mayor="alice")).workers
            await _started(gates, spawned.worker_id)
        async with _engine(store, tmp_path, mode="distributed", socket=tmux_socket) as second:
            # Adopted as the engine started (recovery runs before `run` reports itself started).
            [adopted] = await second.workers_of("1")
            assert (adopted.supervisor, adopted.state) == (second.supervisor, WorkerState.RUNNING)
            assert adopted.mayor == "alice"
            go(gates, spawned.worker_id)
            await _ended(second, spawned.worker_id)
            assert (await second.wait(timeout=0.2, mayor="bob")).done == []
            assert (await second.wait(timeout=0.2)).done == []
            [done] = (await second.wait(timeout=DEADLINE, mayor="alice")).done
    assert (done.id, done.state) == (spawned.worker_id, WorkerState.SUCCEEDED)
    assert done.task_status is TaskStatus.COMPLETED
