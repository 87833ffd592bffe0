"""`mcp-swarm status` and `mcp-swarm logs`: the swarm as its database has it, read-only.

`status` shows every task with its wave (its depth in the dependency graph), status and owner,
and every worker with its state, duration and cost; `--watch` redraws it as the file changes.
`logs` prints a worker's log, and `--follow` goes on printing as it grows until the worker's
row says it has ended.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mcp_swarm.cli.run_view import seconds
from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.plan_file import task_waves
from mcp_swarm.models import LIVE_WORKER_STATES, TaskStatus, Worker, WorkerState, worker_number
from mcp_swarm.store.snapshot import ReadOnlyDatabase, Snapshot, open_read_only

_TASK_STYLE = {"pending": "", "in_progress": "yellow", "completed": "green", "failed": "red"}
_WORKER_STYLE = {"starting": "yellow", "running": "yellow", "succeeded": "green", "failed": "red",
                 "timed_out": "red", "cancelled": "magenta", "lost": "magenta"}  # fmt: skip
_WATCH_INTERVAL = 0.5


def _duration(worker: Worker) -> float:
    started = datetime.fromisoformat(worker.started_at)
    ended = datetime.fromisoformat(worker.ended_at) if worker.ended_at else datetime.now(UTC)
    return max(0.0, (ended - started).total_seconds())


def _worker_state(worker: Worker) -> Text:
    # A worker can succeed and its task still fail (a validation check did not pass): say both.
    if worker.state is WorkerState.SUCCEEDED and worker.task_status is TaskStatus.FAILED:
        return Text("succeeded, task failed", style="red")
    return Text(worker.state.value, style=_WORKER_STYLE.get(worker.state.value, ""))


def render(snapshot: Snapshot, db_path: Path) -> Group:
    tasks = Table(title=f"Tasks in {db_path}", title_justify="left")
    for name, justify in (("wave", "right"), ("id", "right"), ("subject", "left"), ("status", "left"),
                          ("owner", "left"), ("blocked by", "left")):  # fmt: skip
        tasks.add_column(name, justify=justify)  # type: ignore[arg-type]
    waves = task_waves(snapshot.tasks)
    for task in snapshot.tasks:
        status = task.status.value + (" (ready)" if task.ready else "")
        tasks.add_row(
            str(waves.get(task.id, "")),
            task.id,
            task.subject,
            Text(status, style=_TASK_STYLE.get(task.status.value, "")),
            task.owner or "",
            ", ".join(task.blocked_by),
        )
    workers = Table(title="Workers", title_justify="left")
    for name in ("worker", "task", "runtime", "state", "attempt", "duration", "cost", "summary or error"):
        workers.add_column(
            name, justify="right" if name in ("task", "attempt", "duration", "cost") else "left"
        )
    for worker in snapshot.workers:
        note = worker.error or worker.summary or ""
        workers.add_row(
            worker.id,
            worker.task_id,
            worker.runtime,
            _worker_state(worker),
            str(worker.attempt),
            seconds(_duration(worker)),
            "" if worker.cost_usd is None else f"${worker.cost_usd:.2f}",
            Text(note.splitlines()[0] if note else "", overflow="ellipsis", no_wrap=True),
        )
    counts = " · ".join(f"{n} {status.replace('_', ' ')}" for status, n in snapshot.counts.items() if n)
    parts: list[Table | Text] = [tasks]
    if snapshot.workers:
        parts.append(workers)
    parts.append(Text(counts or "no tasks yet", style="bold"))
    return Group(*parts)


async def show_status(console: Console, db_path: Path, *, watch: bool) -> None:
    async with open_read_only(db_path) as db:
        snapshot = await db.snapshot()
        if not watch:
            console.print(render(snapshot, db_path))
            return
        if not console.is_terminal:
            await _watch_plain(console, db, snapshot)
            return
        with Live(render(snapshot, db_path), console=console, auto_refresh=False) as live:
            while True:
                await anyio.sleep(_WATCH_INTERVAL)
                # Redrawn every time: durations of running workers move even when the file does not.
                snapshot = await db.snapshot()
                live.update(render(snapshot, db_path), refresh=True)


async def _watch_plain(console: Console, db: ReadOnlyDatabase, snapshot: Snapshot) -> None:
    """Not a terminal: print the status again each time the file changes, nothing in between."""
    console.print(render(snapshot, db.path))
    version = snapshot.version
    while True:
        await anyio.sleep(_WATCH_INTERVAL)
        if await db.data_version() != version:
            snapshot = await db.snapshot()
            version = snapshot.version
            console.print(f"--- {datetime.now().strftime('%H:%M:%S')}", highlight=False)
            console.print(render(snapshot, db.path))


def parse_worker(text: str) -> int:
    """`worker-3` or `3`."""
    try:
        return worker_number(text if text.startswith("worker-") else f"worker-{text}")
    except InvalidInput:
        raise InvalidInput(
            f"no worker {text!r}; workers are named like worker-3 (`mcp-swarm status` lists them)"
        ) from None


async def show_log(db_path: Path, worker_name: str, *, follow: bool, poll: float = 0.2) -> None:
    number = parse_worker(worker_name)
    async with open_read_only(db_path) as db:
        worker = await db.worker(number)
        if worker is None:
            raise InvalidInput(f"no worker-{number} in {db_path}; `mcp-swarm status` lists the workers")
        log = Path(worker.log)
        if not follow and not await anyio.Path(log).is_file():
            raise InvalidInput(f"{worker.id} has no log at {log} (it never printed, or it was removed)")
        at = LogPosition()
        last_look = 0.0
        while True:
            copy_new(log, at)
            if not follow:
                return
            # The row, not the file, says when to stop: a worker may be silent for minutes.
            if time.monotonic() - last_look >= 1.0 or poll == 0:
                last_look = time.monotonic()
                worker = await db.worker(number)
                if worker is None or worker.state not in LIVE_WORKER_STATES:
                    copy_new(log, at)
                    return
            await anyio.sleep(poll)


@dataclass
class LogPosition:
    offset: int = 0
    inode: int | None = None


def copy_new(log: Path, at: LogPosition) -> None:
    """Copy what the log has past `at` to stdout, in chunks, and move `at` on.

    A log past its size limit is rotated (see placement/logtail.py): cut in place, or renamed and started
    anew. Either way it is then shorter than what was copied, or another file: copying starts
    over at its beginning, which may show again a few lines shown before, but loses none.
    """
    try:
        handle = log.open("rb")
    except FileNotFoundError:
        return  # not written yet: the worker has not started, or printed nothing
    with handle:
        stat = os.fstat(handle.fileno())
        if at.inode is not None and (stat.st_ino != at.inode or stat.st_size < at.offset):
            sys.stdout.buffer.write(f"[log rotated: older output is in {log}.1]\n".encode())
            at.offset = 0
        at.inode = stat.st_ino
        handle.seek(at.offset)
        while chunk := handle.read(1 << 16):
            sys.stdout.buffer.write(chunk)
            at.offset += len(chunk)
    sys.stdout.buffer.flush()
