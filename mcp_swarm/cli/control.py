"""`mcp-swarm retry`, `stop` and `clean`: a person's hands on a swarm that may be running elsewhere.

Each works on the database alone, so it reaches workers supervised by another process (a
`serve` or a `run`): `retry` sets failed tasks back to pending (a live run picks them up, as it
spawns every ready task of its plan); `stop` stops workers through the engine's own close (the
verdict recorded first, then the process group stopped by its record); `clean` removes what ended
workers left on disk. Every id is checked before anything changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio

from mcp_swarm.app import build_engine
from mcp_swarm.config import Settings
from mcp_swarm.engine.cleanup import EndedWork
from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import LIVE_WORKER_STATES, Task, TaskStatus, Worker, worker_name
from mcp_swarm.store import Store

ACTOR = "cli"


def _existing(settings: Settings) -> None:
    """Refuse a database that is not there rather than create an empty one."""
    if not settings.db_path.is_file():
        raise InvalidInput(
            f"no swarm database at {settings.db_path}; run this in the project (or a directory of it), "
            "or name it with --db PATH"
        )


async def retry_tasks(settings: Settings, task_ids: list[str]) -> list[Task]:
    _existing(settings)
    async with await Store.open(settings.db_path) as store:
        return await Ledger(store, actor=ACTOR).retry(task_ids)


async def stop_workers(settings: Settings, targets: list[str], *, fail: bool) -> list[Worker]:
    """Stop each named worker (`worker-3`), or the live worker of each named task (`3`)."""
    _existing(settings)
    status = TaskStatus.FAILED if fail else TaskStatus.PENDING
    async with await Store.open(settings.db_path) as store:
        chosen = await _live_workers(store, targets)
        swarm = build_engine(settings, store)
        reason = "stopped with `mcp-swarm stop`"
        return [await swarm.close(worker.id, status, reason=reason) for worker in chosen]


async def _live_workers(store: Store, targets: list[str]) -> list[Worker]:
    """The live worker each target names; InvalidInput naming every target that names none."""
    found: dict[str, Worker] = {}
    problems: list[str] = []
    async with store.read() as tx:
        for target in dict.fromkeys(targets):
            if target.isascii() and target.isdigit() and len(target) <= 18:
                holder = (await tx.workers.live_for_tasks([int(target)])).get(int(target))
                task = await tx.tasks.get(int(target))
                if task is None:
                    problems.append(f"no task {target}")
                elif holder is None:
                    problems.append(f"task {target} has no running worker (it is {task.status.value})")
                else:
                    worker = await tx.workers.get(int(holder.removeprefix("worker-")))
                    if worker is not None:
                        found[worker.id] = worker
                continue
            number = _worker_number(target)
            worker = None if number is None else await tx.workers.get(number)
            if worker is None:
                problems.append(f"no worker {target!r}")
            elif worker.state not in LIVE_WORKER_STATES:
                problems.append(f"{worker.id} is not running (it {worker.state.value})")
            else:
                found[worker.id] = worker
    if problems:
        raise InvalidInput(
            "; ".join(problems) + ". Name running workers (worker-3) or tasks (3); `mcp-swarm status` "
            "lists them; nothing was stopped"
        )
    return list(found.values())


def _worker_number(text: str) -> int | None:
    prefix, _, digits = text.partition("-")
    if prefix != "worker" or not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    number = int(digits)
    return number if number >= 1 and worker_name(number) == text else None


@dataclass(frozen=True)
class Cleaned:
    work: EndedWork
    removed: bool


async def clean(settings: Settings, confirm: Callable[[EndedWork], bool]) -> Cleaned:
    """Remove what ended workers left, once `confirm` (shown what goes) agrees; refused while any
    worker runs, since a live run or server may still read what its workers wrote."""
    _existing(settings)
    async with await Store.open(settings.db_path) as store:
        swarm = build_engine(settings, store)
        work = await swarm.ended_work()
        if work.live:
            raise InvalidInput(
                f"{', '.join(work.live)} still running; wait for them or stop them "
                "(`mcp-swarm stop WORKER`), then clean; nothing was removed"
            )
        if work.empty or not await anyio.to_thread.run_sync(confirm, work):
            return Cleaned(work, removed=False)
        await swarm.remove_ended(work)
        return Cleaned(work, removed=True)
