"""`mcp-swarm status` and `mcp-swarm logs`: the swarm as its database has it, read-only.

`status` shows every task with its wave (its depth in the dependency graph), status and owner,
and every worker with its state, duration and cost; `--watch` redraws it as the file changes.
`logs` prints a worker's log, and `--follow` goes on printing as it grows until the worker's
row says it has ended.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mcp_swarm.cli.run_view import TAIL_LINES, seconds
from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.plan_file import task_waves
from mcp_swarm.models import LIVE_WORKER_STATES, Task, TaskStatus, Worker, WorkerState, worker_number
from mcp_swarm.placement.logtail import last_lines
from mcp_swarm.placement.logtimes import NO_TIMES, LineTimes, line_times
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
    latest = latest_workers(snapshot)
    for task in snapshot.tasks:
        last = latest.get(task.id)
        if task.status is TaskStatus.FAILED and last is not None:
            lines = failure_tail(last)
            parts.append(Text(f"task {task.id} {task.subject!r} failed ({last.id}):\n" + "\n".join(lines)))
    parts.append(Text(counts or "no tasks yet", style="bold"))
    return Group(*parts)


def latest_workers(snapshot: Snapshot) -> dict[str, Worker]:
    """Each task's latest worker."""
    return {worker.task_id: worker for worker in snapshot.workers}


def failure_tail(worker: Worker, count: int = TAIL_LINES) -> list[str]:
    """What a person needs to see of a failed worker: its last lines, and how to read the rest."""
    lines = [f"  | {line}" for line in last_lines(Path(worker.log), count)] or ["  (it printed nothing)"]
    return [*lines, f"  `mcp-swarm logs {worker.id}` shows the rest"]


def status_document(snapshot: Snapshot) -> dict[str, Any]:
    """`status --json`: the tasks and the workers, with names a script can rely on."""
    waves = task_waves(snapshot.tasks)
    tasks = [
        {
            "id": task.id,
            "key": plan_key(task),
            "subject": task.subject,
            "status": task.status.value,
            "ready": task.ready,
            "owner": task.owner,
            "wave": waves.get(task.id),
            "blockers": task.blocked_by,
        }
        for task in snapshot.tasks
    ]
    workers = [
        {
            "id": worker.id,
            "task": worker.task_id,
            "state": worker.state.value,
            "taskStatus": None if worker.task_status is None else worker.task_status.value,
            "runtime": worker.runtime,
            "attempt": worker.attempt,
            "startedAt": worker.started_at,
            "endedAt": worker.ended_at,
            "durationSeconds": round(_duration(worker), 3),
            "costUsd": worker.cost_usd,
            "exitCode": worker.exit_code,
            "error": worker.error,
            "log": worker.log,
        }
        for worker in snapshot.workers
    ]
    return {"tasks": tasks, "workers": workers, "counts": snapshot.counts}


def plan_key(task: Task) -> str | None:
    """The key a plan file gave the task, if it came from one (`metadata.plan.key`)."""
    plan = task.metadata.get("plan")
    key = cast(dict[str, Any], plan).get("key") if isinstance(plan, dict) else None
    return key if isinstance(key, str) else None


async def show_status(console: Console, db_path: Path, *, watch: bool, as_json: bool = False) -> None:
    async with open_read_only(db_path) as db:
        snapshot = await db.snapshot()
        if as_json:
            sys.stdout.write(json.dumps(status_document(snapshot), ensure_ascii=False) + "\n")
            return
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
    """The worker's log, then a closing line with its end (time, exit status, verdict).

    Each line is stamped with when it was written, give or take a fraction of a second: with
    --follow, the time it was read here; else the time the server following the worker first
    read it (placement/logtimes.py), blank where no server did.
    """
    number = parse_worker(worker_name)
    async with open_read_only(db_path) as db:
        worker = await db.worker(number)
        if worker is None:
            raise InvalidInput(f"no worker-{number} in {db_path}; `mcp-swarm status` lists the workers")
        log = Path(worker.log)
        if not follow and not await anyio.Path(log).is_file():
            raise InvalidInput(f"{worker.id} has no log at {log} (it never printed, or it was removed)")
        at = LogPosition(stamp="read" if follow else "seen")
        last_look = 0.0
        while True:
            copy_new(log, at)
            if not follow:
                break
            # The row, not the file, says when to stop: a worker may be silent for minutes.
            if time.monotonic() - last_look >= 1.0 or poll == 0:
                last_look = time.monotonic()
                worker = await db.worker(number)
                if worker is None or worker.state not in LIVE_WORKER_STATES:
                    copy_new(log, at)
                    break
            await anyio.sleep(poll)
        if worker is not None:
            if at.in_line:
                sys.stdout.buffer.write(b"\n")
            sys.stdout.buffer.write((closing_line(worker) + "\n").encode())
            sys.stdout.buffer.flush()


def _clock(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def closing_line(worker: Worker) -> str:
    """How the worker ended, for the end of its log: when, after how long, its exit status and the
    verdict on its task."""
    head = f"[mcp-swarm] {worker.id}"
    if worker.ended_at is None:
        return (
            f"{head} is still {worker.state.value} (started {_clock(worker.started_at)}); --follow prints on"
        )
    status = "no exit status" if worker.exit_code is None else f"exit status {worker.exit_code}"
    task = "" if worker.task_status is None else f"; task {worker.task_id} {worker.task_status.value}"
    why = f": {worker.error.splitlines()[0]}" if worker.error else ""
    return (
        f"{head} ended {_clock(worker.ended_at)} after {seconds(_duration(worker))}: "
        f"{status}, {worker.state.value}{task}{why}"
    )


@dataclass
class LogPosition:
    offset: int = 0
    inode: int | None = None
    # Each line begins with the time it was read here, or the time the server first saw it.
    stamp: Literal["read", "seen"] | None = None
    in_line: bool = False  # what was copied last ended inside a line
    times: LineTimes = NO_TIMES  # when the follower of the worker first saw each stretch


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
        if at.stamp == "seen":
            at.times = line_times(log, (stat.st_dev, stat.st_ino))
        handle.seek(at.offset)
        while chunk := handle.read(1 << 16):
            sys.stdout.buffer.write(_stamped(chunk, at) if at.stamp else chunk)
            at.offset += len(chunk)
            at.in_line = not chunk.endswith(b"\n")
    sys.stdout.buffer.flush()


_NO_STAMP = b" " * len("00:00:00 ")


def _stamped(chunk: bytes, at: LogPosition) -> bytes:
    """The chunk with a time before each line that begins in it (see `show_log`)."""
    now = datetime.now().strftime("%H:%M:%S ").encode()

    def stamp(offset: int) -> bytes:
        if at.stamp == "read":
            return now
        seen = at.times.at(offset)
        return _NO_STAMP if seen is None else datetime.fromtimestamp(seen).strftime("%H:%M:%S ").encode()

    lines = chunk.split(b"\n")
    out = [lines[0] if at.in_line or not lines[0] else stamp(at.offset) + lines[0]]
    offset = at.offset + len(lines[0]) + 1
    for line in lines[1:]:
        out.append(stamp(offset) + line if line else line)
        offset += len(line) + 1
    return b"\n".join(out)
