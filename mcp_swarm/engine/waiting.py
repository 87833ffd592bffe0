"""`wait`: blocking until workers end, a worker asks the Mayor for help, or time is up.

A worker of this server wakes the waiter the moment its verdict is recorded (an event). What
else is written (a worker's report through a worker endpoint, this server's or another's; the
workers of another Mayor's server) is seen through SQLite's `data_version` on the store's reader
connection, looked at every CROSS_PROCESS_LOOK seconds, so the database is read again only when
something was written.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.mail import Mailbox, Message
from mcp_swarm.models import Worker, now, worker_name, worker_number
from mcp_swarm.placement.processes import supervisor_alive
from mcp_swarm.store import Store

ProgressCallback = Callable[[float, float | None, str], Awaitable[None]]
CROSS_PROCESS_LOOK = 0.1


@dataclass
class WaitResult:
    done: list[Worker]
    running: list[str]
    timed_out: bool
    help_requests: list[Message] = field(default_factory=list[Message])


class Changes:
    """Tells waiters that this server's workers changed something."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    @property
    def current(self) -> anyio.Event:
        """The event the next change sets: take it before reading, so no change is missed."""
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()


async def wait_for_workers(
    store: Store,
    mail: Mailbox,
    changes: Changes,
    worker_ids: Sequence[str] | None,
    *,
    mode: str,
    timeout: float,  # noqa: ASYNC109 - a bound of the tool contract, not a cancellation hook
    progress: ProgressCallback | None,
    supervisor: str,
    mayor: str | None = None,
) -> WaitResult:
    """Without `worker_ids`: this Mayor's ended workers whose results it has not been given, each
    returned once (they are marked as reported); with them, those workers, whatever was reported.
    `mode` "any" returns at the first end, "all" when none is running.

    This Mayor's workers are those it spawned (`mayor`, the name its session goes by; None for a
    stdio server's Mayor and the command line's) that its server (`supervisor`) runs or adopted,
    or that a server now gone left. Another live Mayor's workers are its own: with two sessions
    on one file, or two on one HTTP server, each hears of the workers it started, not whichever
    ended while it happened to wait. Help requests likewise come from this Mayor's workers only,
    with `worker_ids` or without.
    """
    if mode not in ("all", "any"):
        raise InvalidInput("mode must be 'all' or 'any'")
    if timeout < 0:
        raise InvalidInput("timeoutSeconds must not be negative")
    numbers = None if worker_ids is None else [worker_number(w) for w in dict.fromkeys(worker_ids)]
    if numbers is not None:
        async with store.read() as tx:
            known = {w.number for w in await tx.workers.many(numbers)}
        missing = [worker_name(n) for n in numbers if n not in known]
        if missing:
            raise InvalidInput(f"no worker {', '.join(missing)}; spawn returns the worker ids")
    deadline = time.monotonic() + timeout
    while True:
        changed = changes.current
        version = await store.data_version()
        done, running = await _status(store, numbers, supervisor, mayor)
        help_requests = await mail.take_help_requests(mayor=mayor)
        enough = (done and mode == "any") or not running or bool(help_requests)
        remaining = deadline - time.monotonic()
        if enough or remaining <= 0:
            if numbers is None and done:
                async with store.write(one_statement=True) as tx:
                    mine = await tx.workers.mark_reported([worker_number(w.id) for w in done], now())
                done = [w for w in done if worker_number(w.id) in mine]
                if not done and mode == "any" and running and not help_requests and remaining > 0:
                    continue  # another wait was handed these first: ours is still to come
            return WaitResult(done, running, timed_out=not enough, help_requests=help_requests)
        if progress is not None:
            await progress(float(len(done)), float(len(done) + len(running)), f"{len(running)} running")
        await _until_changed(store, changed, version, deadline)


async def _until_changed(store: Store, changed: anyio.Event, version: int, deadline: float) -> None:
    """Until our own workers change something, another process commits, or the deadline."""
    while (remaining := deadline - time.monotonic()) > 0:
        with anyio.move_on_after(min(remaining, CROSS_PROCESS_LOOK)):
            await changed.wait()
            return
        if await store.data_version() != version:
            return


async def _status(
    store: Store, numbers: list[int] | None, supervisor: str, mayor: str | None
) -> tuple[list[Worker], list[str]]:
    async with store.read(snapshot=False) as tx:  # one statement either way
        if numbers is None:
            unreported, live = await tx.workers.unreported_and_live(mayor)
            others = {w.supervisor for w in (*unreported, *live)} - {supervisor}
            gone = {other for other in others if not supervisor_alive(other)}
            done = [w for w in unreported if w.supervisor == supervisor or w.supervisor in gone]
            # A gone server's live workers are about to be adopted (engine/recovery.py): waited
            # for, so that a wait begun before the adoption sees them end. Each is handed over
            # once all the same: only the wait whose mark_reported marks it returns it.
            running = [w.id for w in live if w.supervisor == supervisor or w.supervisor in gone]
        else:
            workers = await tx.workers.many(numbers)
            done = [w for w in workers if w.ended_at is not None]
            running = [w.id for w in workers if w.ended_at is None]
    return done, running
