"""A plan's run as its views show it: a row per task, and the run as a whole.

Apart from the runner, so that a view (and `status`) can be loaded without the engine.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class TaskRow:
    """One task of the run, as the views show it."""

    task_id: str
    key: str
    subject: str
    wave: int
    runtime: str
    # waiting, running, completed, failed, blocked (by a failed task), stopped (interrupted)
    state: str = "waiting"
    worker: str | None = None
    log: Path | None = None
    started: float | None = None  # time.monotonic()
    seconds: float | None = None  # how long its worker ran, once it ended
    note: str = ""  # the worker's summary, or why the task failed or is blocked
    cost_usd: float | None = None
    checks: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    def elapsed(self) -> float | None:
        if self.seconds is not None:
            return self.seconds
        return None if self.started is None else time.monotonic() - self.started


@dataclass
class RunState:
    title: str
    db_path: Path
    rows: list[TaskRow] = field(default_factory=list[TaskRow])
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    stopped_by: signal.Signals | None = None  # SIGINT (Ctrl-C) or SIGTERM ended the run early

    def count(self, state: str) -> int:
        return sum(row.state == state for row in self.rows)

    @property
    def succeeded(self) -> bool:
        return self.stopped_by is None and bool(self.rows) and self.count("completed") == len(self.rows)

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None

    @property
    def exit_status(self) -> int:
        """0 when every task completed, 1 when not, 128 + the signal when stopped by one."""
        if self.stopped_by is not None:
            return 128 + self.stopped_by.value
        return 0 if self.succeeded else 1

    @property
    def waves_taken(self) -> int:
        """How many waves of the plan had workers: the depth the run reached."""
        return len({row.wave for row in self.rows if row.worker is not None})

    @property
    def wall_seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


class RunObserver(Protocol):
    def begin(self, state: RunState) -> None: ...
    def changed(self, row: TaskRow) -> None: ...
    def message(self, text: str) -> None: ...
    async def tick(self, state: RunState) -> None: ...
    def end(self, state: RunState) -> None: ...
