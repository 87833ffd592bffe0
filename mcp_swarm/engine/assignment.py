"""Which tasks a spawn starts: the ready wave, or the tasks named, up to the free slots; and what
a spawn answers, the workers started and the tasks skipped with the reason.

Write scopes are held here too: one working tree never has two tasks at once whose declared
files overlap.

Slots: `max_workers` of the configuration is a ceiling over the whole database, every live
worker of every server counted; a spawn's `maxWorkers` may lower it, never raise it. Servers
share the ceiling: while another live server wants slots (it has live workers, or its last spawn
found none free), a server takes no more than ceil(ceiling / servers wanting); alone, it may use
the whole ceiling.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.scopes import clash, scope_of
from mcp_swarm.models import Task, TaskStatus, parse_task_id
from mcp_swarm.placement.processes import supervisor_alive
from mcp_swarm.store import Transaction

# How long a server's unmet want of slots holds the others to a share: a Mayor that loops spawn and
# wait asks again well within it (wait answers within 30 s by default).
DEMAND_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class SpawnedWorker:
    """A worker a spawn started."""

    worker_id: str
    task_id: str
    runtime: str
    pid: int
    log: str
    # How a user watches it live (a tmux session), where that can be done.
    attach: str | None = None


@dataclass(frozen=True, slots=True)
class SkippedTask:
    """A task a spawn did not start, and why. `retry`: the reason passes on its own (no free slot,
    a blocker or an overlapping task still running), so a later spawn may start it."""

    task_id: str
    reason: str
    retry: bool = False


@dataclass
class SpawnResult:
    workers: list[SpawnedWorker] = field(default_factory=lambda: list[SpawnedWorker]())
    skipped: list[SkippedTask] = field(default_factory=lambda: list[SkippedTask]())

    def skip(self, task_id: str, reason: str, *, retry: bool) -> None:
        self.skipped.append(SkippedTask(task_id, reason, retry))


@dataclass(frozen=True, slots=True)
class Slots:
    """How many workers a spawn may start now, and the reason it may start no more."""

    free: int
    full: str


async def free_slots(
    tx: Transaction,
    supervisor: str,
    ceiling: int,
    requested: int | None,
    *,
    alive: Callable[[str], bool] = supervisor_alive,
) -> Slots:
    """The slots a spawn by `supervisor` may fill: within the ceiling over every live worker on
    the database, within `requested` (a spawn's maxWorkers), and within this server's fair share
    while other live servers want slots too."""
    limit = ceiling if requested is None else min(ceiling, requested)
    live = await tx.workers.live_by_supervisor()
    total = sum(live.values())
    mine = live.get(supervisor, 0)
    wanting = set(await tx.workers.wanting_slots(time.time() - DEMAND_SECONDS))
    # A server that died wants nothing: its workers still hold slots until adopted or ended.
    others = {s for s in {*live, *wanting} if s is not None and s != supervisor and alive(s)}
    share = math.ceil(ceiling / (1 + len(others)))
    by_limit, by_share = limit - total, share - mine
    # The reason is read once the free slots are filled: the counts are those after this spawn.
    if by_share < by_limit:
        other = "server wants" if len(others) == 1 else "servers want"
        full = (
            f"this server's fair share of max_workers = {ceiling} is reached ({max(mine, share)} "
            f"running while {len(others)} other {other} slots too); spawn again after wait"
        )
    elif limit < ceiling:
        running = max(total, limit)
        full = f"maxWorkers ({limit}) reached ({running} running on this database); spawn again after wait"
    else:
        full = (
            f"the configured ceiling max_workers = {ceiling} is reached ({max(total, limit)} running "
            "on this database); spawn again after wait"
        )
    return Slots(max(0, min(by_limit, by_share)), full)


async def record_demand(tx: Transaction, supervisor: str, *, unmet: bool) -> None:
    """Note whether the spawn left ready tasks waiting for a slot, for the others' fair share."""
    if unmet:
        at = time.time()
        await tx.workers.want_slots(supervisor, at, forget_before=at - DEMAND_SECONDS)
    else:
        await tx.workers.slots_granted(supervisor)


async def choose(
    tx: Transaction, task_ids: Sequence[str] | None, free: int, result: SpawnResult, *, scopes: bool
) -> tuple[list[Task], list[str]]:
    """The tasks to start, at most `free`; the others go to `result.skipped` with the reason,
    except ready tasks left over for want of a slot, whose ids are returned.

    Of the ready wave only as many tasks are read as there are slots to fill, and more only
    when some of those cannot start (a write scope overlapping a running task's, say).
    """
    named: list[Task] | None = None
    if task_ids is None:
        queue = await tx.tasks.ready_ids()
    else:
        queue = [parse_task_id(task_id) for task_id in dict.fromkeys(task_ids)]
        named = await tx.tasks.many(queue)
        found = {int(t.id) for t in named if t.status is not TaskStatus.DELETED}
        if missing := [number for number in queue if number not in found]:
            raise InvalidInput(f"no task with id {missing[0]}; nothing was spawned")
    chosen: list[Task] = []
    left_over: list[str] = []
    # Worktrees share no files: write scopes matter only in the shared tree.
    held: dict[str, list[str]] | None = None
    while queue and (len(chosen) < free or task_ids is not None):
        # Named tasks are all looked at, so that each gets its own reason if it cannot start.
        size = len(queue) if task_ids is not None else free - len(chosen)
        batch, queue = queue[:size], queue[size:]
        # Named tasks were read above, all in one batch; the ready wave is read batch by batch.
        tasks = named if named is not None else await tx.tasks.many(batch)
        running = await tx.workers.live_for_tasks(int(t.id) for t in tasks)
        if scopes and held is None and any("files" in t.metadata for t in tasks):
            # Write scopes of the running tasks, and of those chosen here as they are: one
            # working tree never has two tasks at once whose declared files overlap.
            held = await _live_scopes(tx)
            held.update({t.id: scope_of(t) for t in chosen})
        for task in tasks:
            reason, retry = _refusal(task, running.get(int(task.id)))
            scope: list[str] = []
            if reason is None and held is not None:
                try:
                    scope = scope_of(task)
                except InvalidInput as exc:
                    reason, retry = str(exc), False
                else:
                    reason, retry = (clash(scope, held) if scope else None), True
            if reason is not None:
                result.skip(task.id, reason, retry=retry)
            elif len(chosen) >= free:
                left_over.append(task.id)
            else:
                chosen.append(task)
                if held is not None:
                    held[task.id] = scope
    return chosen, left_over + [str(number) for number in queue]


async def _live_scopes(tx: Transaction) -> dict[str, list[str]]:
    live = [int(worker.task_id) for worker in await tx.workers.live()]
    scopes: dict[str, list[str]] = {}
    for task in await tx.tasks.many(live):
        with contextlib.suppress(InvalidInput):  # a malformed scope was refused when it was spawned
            scopes[task.id] = scope_of(task)
    return scopes


def _refusal(task: Task, live_worker: str | None) -> tuple[str | None, bool]:
    """Why the task cannot start now, if it cannot, and whether that passes on its own."""
    if live_worker is not None:
        return f"already being run by {live_worker}", True
    if task.status is not TaskStatus.PENDING:
        return f"its status is {task.status.value}, not pending", False
    if task.blocked_by:
        return f"blocked by {', '.join(task.blocked_by)}", True
    return None, False
