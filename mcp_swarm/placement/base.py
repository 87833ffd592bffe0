"""What the engine asks of a placement: where a worker's process lives.

A placement starts a worker's attempts and hands back a process to watch (its end wakes the
watcher: an event, not a poll) and to stop; after a restart it takes back the workers a server
now gone left running; it stops a worker by its record; and it says how the worker's log is
followed. The engine picks a placement by the worker's mode and knows nothing else of it, so a
new placement is one more module (and one more entry in `builtin.py`).

What a worker is to run, its files and its environment are the engine's: a placement only asks
for them to be made (`Start.prepare`), at the moment that suits it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from mcp_swarm.errors import SwarmError
from mcp_swarm.models import LIVE_WORKER_STATES, Worker
from mcp_swarm.placement.logtail import FileId, LogTail
from mcp_swarm.placement.processes import ProcessIdentity, WorkerProcess, stop_group


@dataclass(frozen=True, slots=True)
class Start:
    """One attempt of a worker to start."""

    worker_id: str
    attempt: int
    argv: Sequence[str]
    cwd: Path
    # Its stdout and stderr are appended here.
    log: Path
    # The worker's own directory, where a placement keeps its files of it (tmux: the exit status).
    files: Path
    # Makes the attempt's files, and the placement's own files given (their directories made, a
    # link refused), and returns the attempt's environment; ProcessStartError if it cannot. It may
    # run in any thread, and must run before the process starts.
    prepare: Callable[[Sequence[Path]], dict[str, str]]


@dataclass(frozen=True, slots=True)
class Placed:
    """A worker's process, just started or adopted: what the engine watches and stops."""

    process: WorkerProcess
    # The placement's name for where the worker lives, recorded with it (a tmux session); None for
    # a child of the server.
    session: str | None = None
    # The command a user types to watch the worker live, where there is one.
    attach: str | None = None


class LogFollower(Protocol):
    """Reads a worker's log as it grows, handing each line to the runtime's reader (see LogTail)."""

    def read_some(self) -> bool: ...

    def over_limit(self) -> bool: ...

    async def rotate(self) -> bool: ...

    async def settle(self) -> None: ...

    def finish(self) -> None: ...


class Placement(ABC):
    """Where workers of one mode live."""

    # Whether its workers go on when the server stops (a tmux session does, a child does not): the
    # server then leaves them running, for the next one on the database to adopt.
    outlives_server: ClassVar[bool] = False

    @abstractmethod
    async def start(self, starts: Sequence[Start]) -> list[Placed | SwarmError]:
        """Start each attempt: for each, its process, or why it could not start."""

    @abstractmethod
    async def adopt(self, worker: Worker, files: Path, grace: float, *, keep: bool) -> Placed | str:
        """A live worker that a server now gone started: its process, to supervise as if this server
        had started it. If it is gone, or not to be kept (nothing here can judge its output: its
        runtime is no longer configured), what is left of it is stopped and the reason it is lost
        is returned. `files` is the worker's own directory (`Start.files`)."""

    @abstractmethod
    async def stop(self, worker: Worker, files: Path, grace: float) -> None:
        """Stop a worker by its record, whichever server supervises it, and remove what the
        placement keeps of it (a tmux session kept for inspection)."""

    @abstractmethod
    async def finished(self, session: str | None, *, completed: bool) -> None:
        """The verdict on a worker this server supervised is recorded: what is left of where it
        lived may go (`session` is `Placed.session`)."""

    def follow_log(
        self,
        log: Path,
        feed: Callable[[str], None],
        *,
        offset: int,
        file_id: FileId | None,
        max_bytes: int,
    ) -> LogFollower:
        """A follower of the worker's log from `offset` in the file `file_id`, bounding it to
        `max_bytes` (see logtail.py). By default the worker appends through a descriptor of its
        own, so only the follower can rotate its log."""
        return LogTail(log, feed, offset=offset, file_id=file_id, max_bytes=max_bytes)

    def attach_hint(self, worker: Worker) -> str | None:
        """How a user watches the worker live, if the placement offers a way."""
        return None


def recorded_identity(worker: Worker) -> ProcessIdentity | None:
    """The worker's process as recorded when it started; None if its pid was never written."""
    if worker.pid is None or worker.pid_start_time is None:
        return None
    return ProcessIdentity(worker.pid, worker.pid_start_time)


async def stop_recorded(worker: Worker, grace: float) -> None:
    """Stop a live worker's process group by its record: supervised by another server (another
    Mayor's session), it is stopped all the same."""
    if worker.state in LIVE_WORKER_STATES and worker.pid and worker.pid_start_time:
        await stop_group(ProcessIdentity(worker.pid, worker.pid_start_time), worker.pid, grace)
