"""Workers' ends, recorded by the group-committing VerdictRecorder on a real database."""

from __future__ import annotations

import anyio
import pytest

from mcp_swarm.engine.verdicts import Verdict, VerdictRecorder
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import TaskStatus, WorkerState, now
from mcp_swarm.store import Store
from tests.support.helpers import assigned_workers

pytestmark = pytest.mark.anyio


async def test_workers_ending_together_are_each_recorded_once_with_their_task(store: Store) -> None:
    numbers = await assigned_workers(store, 30)
    notified: list[None] = []
    recorder = VerdictRecorder(store, lambda: notified.append(None))
    outcomes: dict[int, bool] = {}

    async def end(number: int) -> None:
        status = TaskStatus.COMPLETED if number % 2 else TaskStatus.FAILED
        verdict = Verdict(number, 1, WorkerState.SUCCEEDED, status, exit_code=0, summary=f"w{number}")
        outcomes[number] = await recorder.record(verdict)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for number in numbers:
                group.start_soon(end, number)
    assert outcomes == {number: True for number in numbers}
    # Written together: fewer transactions than verdicts (each transaction notifies once).
    assert 1 <= len(notified) < len(numbers)
    async with store.read() as tx:
        workers = await tx.workers.many(numbers)
        tasks = {task.id: task for task in await tx.tasks.many([int(w.task_id) for w in workers])}
    for worker in workers:
        number = int(worker.id.split("-")[1])
        expected = TaskStatus.COMPLETED if number % 2 else TaskStatus.FAILED
        assert (worker.state, worker.summary, worker.task_status) == (
            WorkerState.SUCCEEDED,
            f"w{number}",
            expected,
        )
        assert tasks[worker.task_id].status is expected
    history = await Ledger(store).history(limit=10_000)
    status_events = [
        event for event in history if event.field == "status" and event.actor.startswith("worker-")
    ]
    assert len(status_events) == len(numbers)


async def test_verdicts_written_in_one_batch_keep_their_order_and_their_text(store: Store) -> None:
    """Two verdicts on one worker in one batch (a close, then its supervisor's): the first stands.
    What a verdict says is stored as given, a NUL and what follows it included."""
    closed, failed, opener = await assigned_workers(store, 3)
    recorder = VerdictRecorder(store, lambda: None)
    outcomes: dict[str, bool] = {}

    async def record(key: str, verdict: Verdict) -> None:
        outcomes[key] = await recorder.record(verdict)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group, store.write():
            # The opener's batch waits for the database; the three after it queue meanwhile, in
            # this order, and are written together in the next batch.
            for key, verdict in [
                ("opener", Verdict(opener, 1, WorkerState.SUCCEEDED, TaskStatus.COMPLETED)),
                (
                    "close",
                    Verdict(closed, None, WorkerState.CANCELLED, TaskStatus.PENDING, error="x\x00y"),
                ),
                ("late", Verdict(closed, 1, WorkerState.SUCCEEDED, TaskStatus.COMPLETED, summary="late")),
                ("failed", Verdict(failed, 1, WorkerState.FAILED, TaskStatus.FAILED, error="a\x00b")),
            ]:
                group.start_soon(record, key, verdict)
                await anyio.wait_all_tasks_blocked()
    assert outcomes == {"opener": True, "close": True, "late": False, "failed": True}
    async with store.read() as tx:
        first, second = await tx.workers.many([closed, failed])
        task = await tx.tasks.get(int(first.task_id))
    assert (first.state, first.error, first.summary) == (WorkerState.CANCELLED, "x\x00y", None)
    assert (second.state, second.error) == (WorkerState.FAILED, "a\x00b")
    assert task is not None
    assert (task.status, task.owner) == (TaskStatus.PENDING, None)


async def test_a_second_verdict_for_the_same_attempt_is_refused_and_changes_nothing(store: Store) -> None:
    [number] = await assigned_workers(store, 1)
    recorder = VerdictRecorder(store, lambda: None)
    assert await recorder.record(
        Verdict(number, 1, WorkerState.CANCELLED, TaskStatus.PENDING, error="closed")
    )
    late = Verdict(number, 1, WorkerState.SUCCEEDED, TaskStatus.COMPLETED, summary="too late")
    assert await recorder.record(late) is False
    async with store.read() as tx:
        worker = await tx.workers.get(number)
        task = await tx.tasks.get(1)
    assert worker is not None
    assert task is not None
    assert (worker.state, worker.error, worker.summary) == (WorkerState.CANCELLED, "closed", None)
    # Back to pending, the task lost its owner, so that any worker may take it.
    assert (task.status, task.owner) == (TaskStatus.PENDING, None)


async def test_a_task_reassigned_meanwhile_is_not_moved_by_the_old_worker(store: Store) -> None:
    [number] = await assigned_workers(store, 1)
    async with store.write() as tx:
        await tx.tasks.update(1, {"owner": "worker-99"}, now())
    recorder = VerdictRecorder(store, lambda: None)
    assert await recorder.record(Verdict(number, 1, WorkerState.FAILED, TaskStatus.FAILED, error="boom"))
    task = await Ledger(store).get("1")
    assert (task.status, task.owner) == (TaskStatus.IN_PROGRESS, "worker-99")


async def test_a_verdict_cancelled_before_its_turn_is_withdrawn(store: Store) -> None:
    first, second, third = await assigned_workers(store, 3)
    recorder = VerdictRecorder(store, lambda: None)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group, store.write():
            # The database is busy: the first verdict's batch waits for it, the second waits its turn,
            # and the second's caller gives up.
            group.start_soon(recorder.record, Verdict(first, 1, WorkerState.SUCCEEDED, TaskStatus.COMPLETED))
            await anyio.wait_all_tasks_blocked()
            with anyio.CancelScope() as scope:
                scope.cancel()
                await recorder.record(Verdict(second, 1, WorkerState.SUCCEEDED, TaskStatus.COMPLETED))
        # A later verdict's batch would carry the withdrawn one along, had it stayed queued.
        assert await recorder.record(Verdict(third, 1, WorkerState.SUCCEEDED, TaskStatus.COMPLETED))
    async with store.read() as tx:
        one, two = await tx.workers.many([first, second])
    assert one.state is WorkerState.SUCCEEDED
    assert two.state is WorkerState.STARTING
    assert two.ended_at is None
