"""The engine's worker half: spawn a wave, supervise each worker, judge its result, wait.

No MCP and no SQL here. Assignment is one compare-and-set transaction, so two spawns (from one
server or two) never hand one task to two workers. Each local worker is supervised by a task in
the engine's task group: it wakes the moment the process exits, tails the log for the runtime's
final event and for silence, and records the verdict once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from mcp_swarm.config import DEFAULT_ENV_ALLOW, DEFAULT_TMUX_SOCKET, MODES, Mode
from mcp_swarm.engine.integration import changes_of, worktree_of, worktree_record
from mcp_swarm.engine.launcher import Attempt, Launcher
from mcp_swarm.engine.recovery import recover
from mcp_swarm.engine.supervision import (
    CompletionHook,
    Launch,
    MetadataReader,
    WorkerLimits,
    judge,
    watch_until_end,
)
from mcp_swarm.engine.verdicts import Verdict, VerdictRecorder
from mcp_swarm.engine.waiting import Changes, ProgressCallback, WaitResult, wait_for_workers
from mcp_swarm.engine.worker_io import build_prompt
from mcp_swarm.errors import BlockedTask, InvalidInput, RuntimeNotCapable, SwarmError
from mcp_swarm.ledger.mail import Mailbox
from mcp_swarm.ledger.reservations import Reservations
from mcp_swarm.ledger.scopes import clash, scope_of
from mcp_swarm.models import (
    LIVE_WORKER_STATES,
    Task,
    TaskStatus,
    Worker,
    WorkerState,
    now,
    parse_task_id,
    worker_name,
    worker_number,
)
from mcp_swarm.placement.processes import (
    ProcessIdentity,
    WorkerProcess,
    stop_group,
    this_process,
)
from mcp_swarm.placement.tmux import Tmux
from mcp_swarm.runtimes.base import Runtime
from mcp_swarm.store import Store, Transaction
from mcp_swarm.store.tasks import EventRow
from mcp_swarm.workspace.worktrees import Worktree
from mcp_swarm.workspace.worktrees import create as create_worktree
from mcp_swarm.workspace.worktrees import remove as remove_worktree

logger = logging.getLogger(__name__)


@dataclass
class SpawnResult:
    workers: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    skipped: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    def skip(self, task_id: str, reason: str, *, retry: bool) -> None:
        """A task not started, and why. `retry`: the reason passes on its own (no free slot, a
        blocker or an overlapping task still running), so a later spawn may start it."""
        self.skipped.append({"taskId": task_id, "reason": reason, **({"retry": True} if retry else {})})


class Swarm:
    def __init__(
        self,
        store: Store,
        runtimes: Mapping[str, Runtime],
        *,
        default_runtime: str | None,
        state_dir: Path,
        project_dir: Path,
        limits: WorkerLimits | None = None,
        env_allow: Sequence[str] = DEFAULT_ENV_ALLOW,
        actor: str = "mayor",
        mode: Mode = "local",
        tmux_socket: str = DEFAULT_TMUX_SOCKET,
        hooks: Sequence[CompletionHook] = (),
    ) -> None:
        self.store = store
        self.runtimes = dict(runtimes)
        self.default_runtime = default_runtime
        self.state_dir = state_dir
        self.project_dir = project_dir
        self.limits = limits or WorkerLimits()
        self.env_allow = tuple(env_allow)
        self.actor = actor
        self._processes: dict[int, WorkerProcess] = {}
        # How this server names itself as the supervisor of its workers: no other server adopts
        # them while this process runs (see engine/recovery.py).
        me = this_process()
        self.supervisor = f"{me.pid}:{me.start_time}"
        self._changes = Changes()
        self._group: TaskGroup | None = None
        self._verdicts = VerdictRecorder(store, self._notify)
        self._metadata = MetadataReader(store)
        self.mail = Mailbox(store)
        self.hooks = tuple(hooks)
        # One integration at a time: each reads and commits the main tree.
        self.integration_lock = anyio.Lock()
        self.mode: Mode = mode
        self.tmux = Tmux(tmux_socket)
        self.launcher = Launcher(
            state_dir=state_dir,
            project_dir=project_dir,
            db_path=store.path,
            env_allow=env_allow,
            tmux=self.tmux,
            max_log_bytes=self.limits.max_log_bytes,
        )
        # Workers of this server that run in tmux sessions: they outlive it, so it never stops them
        # on its way out.
        self._sessions: dict[int, str] = {}
        self.reservations = Reservations(store)

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Supervise workers until cancelled; then stop every local worker and free its task."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                await recover(self)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._group = None
            with anyio.CancelScope(shield=True):
                await self.stop_all()

    async def stop_all(self) -> None:
        """Stop every local worker this process started, returning their tasks to pending.

        Workers in tmux sessions go on; the next server on the database adopts them.
        """
        numbers = [number for number in self._processes if number not in self._sessions]
        async with anyio.create_task_group() as group:
            for number in numbers:
                group.start_soon(
                    self._close, number, TaskStatus.PENDING, WorkerState.CANCELLED, "the server stopped"
                )

    def _notify(self) -> None:
        self._changes.notify()

    # -- spawn ------------------------------------------------------------------------------

    def _runtime(self, name: str | None) -> Runtime:
        chosen = name or self.default_runtime
        if chosen is None:
            raise InvalidInput(
                "no runtime is configured and none of codex or claude is on PATH; install one, or "
                'configure a command runtime in mcp-swarm.toml ([runtimes.NAME] type = "command")'
            )
        if chosen not in self.runtimes:
            known = ", ".join(sorted(self.runtimes)) or "none"
            raise InvalidInput(f"unknown runtime {chosen!r}; configured runtimes: {known}")
        return self.runtimes[chosen]

    async def spawn(
        self,
        task_ids: Sequence[str] | None = None,
        *,
        runtime: str | None = None,
        max_workers: int | None = None,
        model: str | None = None,
        instructions: str | None = None,
        timeout_seconds: float | None = None,
        mode: str | None = None,
        isolation: str | None = None,
    ) -> SpawnResult:
        if self._group is None:
            raise SwarmError("the engine is not running; try again")
        chosen = self._runtime(runtime)
        if isolation not in (None, "shared", "worktree"):
            raise InvalidInput(f"unknown isolation {isolation!r}; use shared or worktree")
        in_worktrees = isolation == "worktree"
        if mode not in (None, *MODES):
            raise InvalidInput(f"unknown mode {mode!r}; use local or distributed")
        chosen_mode: Mode = self.mode if mode is None else mode  # type: ignore[assignment]
        limit = self.limits.max_workers if max_workers is None else max_workers
        if limit < 1:
            raise InvalidInput("maxWorkers must be at least 1")
        result = SpawnResult()
        at = now()
        async with self.store.write() as tx:
            free = max(0, limit - await tx.workers.live_count())
            chosen_tasks, left_over = await self._choose(tx, task_ids, free, result, scopes=not in_worktrees)
            assigned = await self._assign(tx, chosen_tasks, chosen, at, chosen_mode)
        full = f"maxWorkers ({limit}) reached; spawn again after wait"
        for task_id in left_over:
            result.skip(task_id, full, retry=True)
        # Once tasks are assigned, their workers start and are supervised even if the caller gives up.
        with anyio.CancelScope(shield=True):
            attempts: list[Attempt] = []
            worktrees: dict[int, Worktree] = {}
            for number, task in assigned:
                worktree = await self._worktree_for(number) if in_worktrees else None
                if isinstance(worktree, str):
                    result.skip(task.id, worktree, retry=False)
                    continue
                cwd = None if worktree is None else worktree.workdir
                request = self.launcher.request(number, task.id, build_prompt(task, instructions), model, cwd)
                attempts.append(Attempt(number, 1, chosen.argv(request), request))
                if worktree is not None:
                    worktrees[number] = worktree
            launches: list[Launch] = []
            outcomes = await self._launch(attempts, chosen, chosen_mode)
            for attempt, launch in zip(attempts, outcomes, strict=True):
                worktree, task_id = worktrees.get(attempt.number), attempt.request.task_id
                if isinstance(launch, str):
                    if worktree is not None:
                        await remove_worktree(self.project_dir, worktree)
                    result.skip(task_id, launch, retry=False)
                    continue
                launch = replace(launch, worktree=worktree)
                launches.append(launch)
                pid, log = launch.process.identity.pid, str(self.launcher.log(attempt.number))
                started = {"workerId": worker_name(attempt.number), "taskId": task_id, "runtime": chosen.name,
                           "pid": pid, "log": log}  # fmt: skip
                if launch.tmux_session is not None:
                    started["attach"] = self.tmux.attach_command(launch.tmux_session)
                result.workers.append(started)
            await self._supervise_all(launches, timeout_seconds)
        return result

    async def send_input(
        self, worker_id: str, message: str, *, timeout_seconds: float | None = None
    ) -> Worker:
        """Continue an ended worker's own session with a message, as its next attempt."""
        number = worker_number(worker_id)
        if not message.strip():
            raise InvalidInput("the message must not be empty")
        at = now()
        async with self.store.write() as tx:
            worker = await tx.workers.get(number)
            if worker is None:
                raise InvalidInput(f"no worker {worker_id}; spawn returns the worker ids")
            if worker.state in LIVE_WORKER_STATES:
                raise InvalidInput(f"{worker_id} is still running; wait for it (or close_agent) first")
            runtime = self._runtime(worker.runtime)
            if worker.session_id is None:
                raise RuntimeNotCapable(f"{worker_id} left no session to continue; spawn its task again")
            task = await tx.tasks.get(int(worker.task_id))
            if task is None or task.status is TaskStatus.DELETED:
                raise InvalidInput(f"the task of {worker_id} was deleted")
            holder = (await tx.workers.live_for_tasks([int(task.id)])).get(int(task.id))
            if holder is not None:
                raise InvalidInput(f"task {task.id} is being run by {holder}")
            if task.blocked_by:
                raise BlockedTask(task.id, TaskStatus.IN_PROGRESS.value, task.blocked_by)
            request = self.launcher.request(number, task.id, message, None, Path(worker.cwd))
            argv = runtime.resume_argv(request, worker.session_id, message)
            await tx.workers.restart(number, attempt=worker.attempt, now=at, supervisor=self.supervisor)
            await tx.tasks.update(
                int(task.id), {"owner": worker.id, "status": TaskStatus.IN_PROGRESS.value}, at
            )
            await tx.tasks.record_events(
                [
                    (int(task.id), at, self.actor, "owner", task.owner, worker.id),
                    (int(task.id), at, self.actor, "status", task.status.value, TaskStatus.IN_PROGRESS.value),
                ]
            )
        with anyio.CancelScope(shield=True):
            mode: Mode = "distributed" if worker.mode == "distributed" else "local"
            [launch] = await self._launch([Attempt(number, worker.attempt + 1, argv, request)], runtime, mode)
            if not isinstance(launch, str):
                launch = replace(launch, worktree=worktree_of(worker))
                await self._supervise_all([launch], timeout_seconds)
        async with self.store.read() as tx:
            restarted = await tx.workers.get(number)
        assert restarted is not None  # noqa: S101 - a worker's row is never deleted
        return restarted

    async def _worktree_for(self, number: int) -> Worktree | str:
        """A fresh worktree for the worker; or the reason there is none, its task back to pending."""
        try:
            return await create_worktree(self.project_dir, worker_name(number))
        except SwarmError as exc:
            return await self._not_started(number, 1, exc)

    async def _choose(
        self, tx: Transaction, task_ids: Sequence[str] | None, free: int, result: SpawnResult, *, scopes: bool
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

    async def _assign(
        self, tx: Transaction, tasks: list[Task], runtime: Runtime, at: str, mode: Mode
    ) -> list[tuple[int, Task]]:
        """A worker for each task, and the task marked in_progress and owned by it."""
        if not tasks:
            return []
        numbers = await tx.workers.insert_many(
            [int(task.id) for task in tasks],
            runtime=runtime.name,
            cwd=str(self.project_dir),
            now=at,
            supervisor=self.supervisor,
            mode=mode,
        )
        await tx.workers.set_logs({number: str(self.launcher.log(number)) for number in numbers.values()})
        await tx.tasks.assign({task_id: worker_name(number) for task_id, number in numbers.items()}, at)
        in_progress = TaskStatus.IN_PROGRESS.value
        events: list[EventRow] = []
        for task in tasks:
            owner = worker_name(numbers[int(task.id)])
            events.append((int(task.id), at, self.actor, "owner", task.owner, owner))
            events.append((int(task.id), at, self.actor, "status", task.status.value, in_progress))
        await tx.tasks.record_events(events)
        return [(numbers[int(task.id)], task) for task in tasks]

    async def _launch(self, attempts: list[Attempt], runtime: Runtime, mode: Mode) -> list[Launch | str]:
        """Start the attempts' processes. For each, its Launch; or, if it could not start, the reason,
        recorded (its task back to pending). Pids are recorded by `_supervise_all`."""
        if not attempts:
            return []
        shared_env = self.launcher.shared_environment()
        launches: list[Launch | str] = []
        for attempt, launch in zip(
            attempts, await self.launcher.start(attempts, runtime, shared_env, mode), strict=True
        ):
            if not isinstance(launch, Launch):
                launch = await self._not_started(attempt.number, attempt.attempt, launch)
            launches.append(launch)
        return launches

    async def _not_started(self, number: int, attempt: int, exc: Exception) -> str:
        """Record that an attempt never started, its task back to pending; the reason, for spawn."""
        await self._finish(
            Verdict(number, attempt, WorkerState.FAILED, TaskStatus.PENDING, error=str(exc), report=False)
        )
        return str(exc)

    async def _supervise_all(self, launches: list[Launch], timeout_seconds: float | None) -> None:
        """Record the processes just started, all in one transaction, and supervise each."""
        if not launches:
            return
        # Plain local workers take one statement; tmux sessions and worktrees are recorded too.
        plain = all(launch.tmux_session is None and launch.worktree is None for launch in launches)
        try:
            async with self.store.write(one_statement=plain) as tx:
                await tx.workers.started(
                    (launch.number, launch.process.identity.pid, launch.process.identity.start_time)
                    for launch in launches
                )
                for launch in launches:
                    if launch.tmux_session is not None:
                        await tx.workers.set_tmux_session(launch.number, launch.tmux_session)
                    if launch.worktree is not None:
                        record, cwd = worktree_record(launch.worktree), str(launch.worktree.workdir)
                        await tx.workers.set_worktree(launch.number, record, cwd)
        except BaseException:
            # Unrecorded, they could never be found again: stop them rather than leave them running.
            for launch in launches:
                await launch.process.stop(self.limits.stop_grace_seconds)
            raise
        limit = self.limits.timeout_seconds if timeout_seconds is None else timeout_seconds
        for launch in launches:
            self._watch(launch, limit)

    def _watch(self, launch: Launch, limit: float) -> None:
        assert self._group is not None  # noqa: S101 - callers checked that the engine runs
        self._processes[launch.number] = launch.process
        if launch.tmux_session is not None:
            self._sessions[launch.number] = launch.tmux_session
        self._group.start_soon(self._supervise, launch, limit)

    async def adopt(self, worker: Worker, process: WorkerProcess, *, record_pid: bool) -> None:
        """Supervise a live worker that another server (now gone) started, as if we had started it.

        Its output is read from the start of its log; its time limit counts from its start.
        """
        number = worker_number(worker.id)
        runtime = self.runtimes[worker.runtime]
        if record_pid:
            async with self.store.write() as tx:
                await tx.workers.started([(number, process.identity.pid, process.identity.start_time)])
        request = self.launcher.request(number, worker.task_id, "", None, Path(worker.cwd))
        elapsed = time.time() - datetime.fromisoformat(worker.started_at).timestamp()
        reader = runtime.reader(request)
        launch = Launch(
            number, worker.attempt, process, reader, request, offset=0, tmux_session=worker.tmux_session
        )
        self._watch(launch, max(0.0, self.limits.timeout_seconds - elapsed))

    async def record(self, verdict: Verdict) -> bool:
        """Record a worker's end (see engine/verdicts.py); False if that attempt already had one."""
        return await self._verdicts.record(verdict)

    # -- supervision ------------------------------------------------------------------------

    async def _supervise(self, launch: Launch, limit: float) -> None:
        exit_code, ended_by = await watch_until_end(
            launch, self.launcher.log(launch.number), limit, self.limits
        )
        self._processes.pop(launch.number, None)
        with anyio.CancelScope(shield=True):
            # The checks' environment is built only for a task that has checks: off the common path.
            checks_env = self.launcher.checks_environment
            files = self.launcher.files(launch.number)
            verdict = await judge(launch, exit_code, ended_by, self._metadata, checks_env, files, self.hooks)
            if launch.worktree is not None:
                verdict = replace(verdict, changes=await changes_of(launch.worktree))
            await self._finish(verdict)
            self._sessions.pop(launch.number, None)
            # A completed worker's session has nothing more to show; a failed one is kept for
            # inspection (tmux attach) until close_agent.
            if launch.tmux_session is not None and verdict.task_status is TaskStatus.COMPLETED:
                await self.tmux.kill_session(launch.tmux_session)

    async def _finish(self, verdict: Verdict) -> bool:
        """Record a worker's end and its task's new status, once; False if it was already recorded."""
        return await self._verdicts.record(verdict)

    # -- wait and close ---------------------------------------------------------------------

    async def wait(
        self,
        worker_ids: Sequence[str] | None = None,
        *,
        mode: str = "all",
        timeout: float = 30.0,  # noqa: ASYNC109 - a bound of the tool contract, not a cancellation hook
        progress: ProgressCallback | None = None,
    ) -> WaitResult:
        """See waiting.wait_for_workers."""
        return await wait_for_workers(
            self.store,
            self.mail,
            self._changes,
            worker_ids,
            mode=mode,
            timeout=timeout,
            progress=progress,
            supervisor=self.supervisor,
        )

    async def workers_of(self, task_id: str) -> list[Worker]:
        async with self.store.read() as tx:
            return await tx.workers.for_task(parse_task_id(task_id))

    async def close(self, worker_id: str, task_status: TaskStatus = TaskStatus.PENDING) -> Worker:
        if task_status not in (TaskStatus.PENDING, TaskStatus.FAILED):
            raise InvalidInput("taskStatus must be 'pending' or 'failed'")
        number = worker_number(worker_id)
        async with self.store.read() as tx:
            worker = await tx.workers.get(number)
        if worker is None:
            raise InvalidInput(f"no worker {worker_id!r}; spawn returns the worker ids")
        await self._close(number, task_status, WorkerState.CANCELLED, "closed by the Mayor")
        with anyio.CancelScope(shield=True):
            if worker.state in LIVE_WORKER_STATES and worker.pid and worker.pid_start_time:
                # Supervised by another server (another Mayor's session): stopped all the same.
                await stop_group(
                    ProcessIdentity(worker.pid, worker.pid_start_time),
                    worker.pid,
                    self.limits.stop_grace_seconds,
                )
            if worker.tmux_session is not None:
                # Running, or kept after a failure for inspection: closing removes it.
                await self.tmux.kill_session(worker.tmux_session)
            worktree = worktree_of(worker)
            if worktree is not None and worker.integrated_commit is None:
                await remove_worktree(self.project_dir, worktree)
        async with self.store.read() as tx:
            closed = await tx.workers.get(number)
        assert closed is not None  # noqa: S101 - a worker's row is never deleted
        return closed

    async def _close(self, number: int, task_status: TaskStatus, state: WorkerState, error: str) -> None:
        # Shielded: a close that was begun is finished, so no recorded end is left with a live process.
        with anyio.CancelScope(shield=True):
            # Record first, so the supervisor's own verdict, arriving after the kill, is refused.
            await self._finish(Verdict(number, None, state, task_status, error=error))
            process = self._processes.pop(number, None)
            if process is not None:
                await process.stop(self.limits.stop_grace_seconds)


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
