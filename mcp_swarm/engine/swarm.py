"""The engine's worker half: spawn a wave, supervise each worker, judge its result, wait.

No MCP and no SQL here. Assignment is one compare-and-set transaction, so two spawns (from one
server or two) never hand one task to two workers. Each local worker is supervised by a task in
the engine's task group: it wakes the moment the process exits, tails the log for the runtime's
final event and for silence, and records the verdict once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from mcp_swarm.config import DEFAULT_ENV_ALLOW
from mcp_swarm.engine.assignment import SpawnedWorker, SpawnResult, choose, free_slots, record_demand
from mcp_swarm.engine.cleanup import EndedWork, ended_work, remove_ended
from mcp_swarm.engine.integration import (
    Integration,
    changes_of,
    integrate_completed,
    worktree_of,
    worktree_record,
)
from mcp_swarm.engine.launcher import Attempt, Launcher
from mcp_swarm.engine.recovery import Recovered, recover, watch_peers
from mcp_swarm.engine.supervision import (
    CompletionHook,
    Launch,
    MetadataReader,
    WorkerLimits,
    judge,
    watch_until_end,
)
from mcp_swarm.engine.tokens import mint_token
from mcp_swarm.engine.verdicts import Verdict, VerdictRecorder
from mcp_swarm.engine.waiting import Changes, ProgressCallback, WaitResult, wait_for_workers
from mcp_swarm.engine.worker_io import build_prompt
from mcp_swarm.errors import BlockedTask, InvalidInput, RuntimeNotCapable, SwarmError
from mcp_swarm.ledger.mail import Mailbox
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
from mcp_swarm.placement.base import Placed, Placement
from mcp_swarm.placement.processes import WorkerProcess, this_process
from mcp_swarm.runtimes.base import Runtime
from mcp_swarm.runtimes.registry import default_runtime
from mcp_swarm.store import Store, Transaction
from mcp_swarm.store.tasks import EventRow
from mcp_swarm.workspace.worktrees import Worktree
from mcp_swarm.workspace.worktrees import create as create_worktree
from mcp_swarm.workspace.worktrees import remove as remove_worktree

logger = logging.getLogger(__name__)


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
        placements: Mapping[str, Placement],
        mode: str = "local",
        hooks: Sequence[CompletionHook] = (),
    ) -> None:
        """`placements`: where a worker of each mode lives (app.py passes placement/builtin.py's);
        `mode` is the one a spawn uses unless told otherwise."""
        self.store = store
        self.runtimes = dict(runtimes)
        self.default_runtime = default_runtime
        self.state_dir = state_dir
        self.project_dir = project_dir
        self.limits = limits or WorkerLimits()
        self.env_allow = tuple(env_allow)
        self.actor = actor
        self._processes: dict[int, WorkerProcess] = {}
        # Those of them whose placement outlives this server: it never stops them on its way out.
        self._outliving: set[int] = set()
        # How this server names itself as the supervisor of its workers: no other server adopts
        # them while this process runs (see engine/recovery.py).
        me = this_process()
        self.supervisor = f"{me.pid}:{me.start_time}"
        self._changes = Changes()
        self._group: TaskGroup | None = None
        self._verdicts = VerdictRecorder(store, self._notify)
        self._metadata = MetadataReader(store)
        self._mail = Mailbox(store)
        self.hooks = tuple(hooks)
        # One integration at a time: each reads and commits the main tree.
        self._integration_lock = anyio.Lock()
        self.mode = mode
        self._placements = dict(placements)
        self._launcher = Launcher(
            state_dir=state_dir, project_dir=project_dir, db_path=store.path, env_allow=env_allow
        )

    @property
    def worker_url(self) -> str | None:
        """The server's worker endpoint, where workers started from now on reach the swarm with
        their attempt's token (`SWARM_URL`, `SWARM_TOKEN`); None: they get neither."""
        return self._launcher.worker_url

    @worker_url.setter
    def worker_url(self, url: str | None) -> None:
        self._launcher.worker_url = url

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Supervise workers until cancelled; then stop every local worker and free its task."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                await self._recover(at_start=True)
                # A server that dies while this one runs (another Mayor's session on the same
                # file) has its workers taken over within seconds: they hold slots meanwhile.
                group.start_soon(watch_peers, self.store, partial(self._recover, at_start=False))
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    # A verdict waiting for the database gets one last try instead of holding up
                    # the group's end (its supervisor is shielded).
                    self._verdicts.stop()
        finally:
            self._group = None
            with anyio.CancelScope(shield=True):
                await self.stop_all()

    async def _recover(self, *, at_start: bool) -> Recovered:
        """Adopt or declare lost the live workers of servers that are gone (engine/recovery.py)."""
        return await recover(
            self.store,
            self.supervisor,
            placements=self._placements,
            files=self._launcher.files,
            runtimes=self.runtimes,
            grace=self.limits.stop_grace_seconds,
            adopt=self._adopt,
            record=self._finish,
            at_start=at_start,
        )

    async def stop_all(self) -> None:
        """Stop every local worker this process started, returning their tasks to pending.

        Workers whose placement outlives the server (tmux sessions) go on; the next server on the
        database adopts them.
        """
        numbers = [number for number in self._processes if number not in self._outliving]
        async with anyio.create_task_group() as group:
            for number in numbers:
                group.start_soon(
                    self._close, number, TaskStatus.PENDING, WorkerState.CANCELLED, "the server stopped"
                )

    def _notify(self) -> None:
        self._changes.notify()

    def _placement(self, mode: str) -> Placement:
        try:
            return self._placements[mode]
        except KeyError:
            raise SwarmError(
                f"no placement for mode {mode!r}; this server has {', '.join(self._placements)}"
            ) from None

    # -- what the server asks ---------------------------------------------------------------

    def default_runtime_for(self, client: str | None) -> str | None:
        """The runtime a spawn that names none uses for a client (an MCP clientInfo name): the
        configured default; else the client's own CLI, if installed; else codex or claude on PATH."""
        return default_runtime(self.runtimes, self.default_runtime, client)

    def attach_hint(self, worker: Worker) -> str | None:
        """How a user watches a worker live, while its placement offers a way (a tmux session)."""
        return self._placement(worker.mode).attach_hint(worker)

    async def integrate(self, worker_ids: Sequence[str] | None = None) -> Integration:
        """Bring completed worktree workers' changes into the main tree: see integration.py."""
        return await integrate_completed(self.store, self.project_dir, self._integration_lock, worker_ids)

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
        mayor: str | None = None,
    ) -> SpawnResult:
        """Start a worker for each chosen task (the ready wave by default). `mayor`: the name of
        the Mayor session spawning, whose plain `wait` gets the results (None: a stdio server's or
        the command line's Mayor)."""
        if self._group is None:
            raise SwarmError("the engine is not running; try again")
        chosen = self._runtime(runtime)
        if isolation not in (None, "shared", "worktree"):
            raise InvalidInput(f"unknown isolation {isolation!r}; use shared or worktree")
        in_worktrees = isolation == "worktree"
        if mode is not None and mode not in self._placements:
            raise InvalidInput(f"unknown mode {mode!r}; use {' or '.join(self._placements)}")
        chosen_mode = self.mode if mode is None else mode
        placement = self._placement(chosen_mode)
        if max_workers is not None and max_workers < 1:
            raise InvalidInput("maxWorkers must be at least 1")
        result = SpawnResult()
        at = now()
        async with self.store.write() as tx:
            slots = await free_slots(tx, self.supervisor, self.limits.max_workers, max_workers)
            chosen_tasks, left_over = await choose(tx, task_ids, slots.free, result, scopes=not in_worktrees)
            assigned = await self._assign(tx, chosen_tasks, chosen, at, chosen_mode, mayor)
            await record_demand(tx, self.supervisor, unmet=bool(left_over))
        for task_id in left_over:
            result.skip(task_id, slots.full, retry=True)
        # Once tasks are assigned, their workers start and are supervised even if the caller gives up.
        with anyio.CancelScope(shield=True):
            attempts: list[Attempt] = []
            worktrees: dict[int, Worktree] = {}
            # Every worktree of the spawn first: each worker's request closes the others' to it
            # (Launcher.state_paths), its siblings' included.
            starting: list[tuple[int, Task, str]] = []
            for number, task, token in assigned:
                worktree = await self._worktree_for(number) if in_worktrees else None
                if isinstance(worktree, str):
                    result.skip(task.id, worktree, retry=False)
                    continue
                if worktree is not None:
                    worktrees[number] = worktree
                starting.append((number, task, token))
            for number, task, token in starting:
                worktree = worktrees.get(number)
                cwd = None if worktree is None else worktree.workdir
                request = self._launcher.request(
                    number, task.id, build_prompt(task, instructions), model, cwd
                )
                attempts.append(Attempt(number, 1, chosen.argv(request), request, token))
            launches: list[Launch] = []
            outcomes = await self._launch(attempts, chosen, placement)
            for attempt, launch in zip(attempts, outcomes, strict=True):
                worktree, task_id = worktrees.get(attempt.number), attempt.request.task_id
                if isinstance(launch, str):
                    if worktree is not None:
                        await remove_worktree(self.project_dir, worktree)
                    result.skip(task_id, launch, retry=False)
                    continue
                launch = replace(launch, worktree=worktree)
                launches.append(launch)
                pid, log = launch.process.identity.pid, str(self._launcher.log(attempt.number))
                result.workers.append(
                    SpawnedWorker(worker_name(attempt.number), task_id, chosen.name, pid, log, launch.attach)
                )
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
            request = self._launcher.request(number, task.id, message, None, Path(worker.cwd))
            argv = runtime.resume_argv(request, worker.session_id, message)
            # A new attempt, a new token: the last one's was cleared with its verdict.
            token, hashed = mint_token()
            await tx.workers.restart(
                number, attempt=worker.attempt, now=at, supervisor=self.supervisor, token_hash=hashed
            )
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
            attempt = Attempt(number, worker.attempt + 1, argv, request, token)
            [launch] = await self._launch([attempt], runtime, self._placement(worker.mode))
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

    async def _assign(
        self, tx: Transaction, tasks: list[Task], runtime: Runtime, at: str, mode: str, mayor: str | None
    ) -> list[tuple[int, Task, str]]:
        """A worker for each task, the token of its first attempt (only the hash is stored), and
        the task marked in_progress and owned by it."""
        if not tasks:
            return []
        numbers = await tx.workers.insert_many(
            [int(task.id) for task in tasks],
            runtime=runtime.name,
            cwd=str(self.project_dir),
            now=at,
            supervisor=self.supervisor,
            mode=mode,
            mayor=mayor,
        )
        tokens = {number: mint_token() for number in numbers.values()}
        await tx.workers.set_logs(
            {number: str(self._launcher.log(number)) for number in numbers.values()},
            {number: hashed for number, (_, hashed) in tokens.items()},
        )
        await tx.tasks.assign({task_id: worker_name(number) for task_id, number in numbers.items()}, at)
        in_progress = TaskStatus.IN_PROGRESS.value
        events: list[EventRow] = []
        for task in tasks:
            owner = worker_name(numbers[int(task.id)])
            events.append((int(task.id), at, self.actor, "owner", task.owner, owner))
            events.append((int(task.id), at, self.actor, "status", task.status.value, in_progress))
        await tx.tasks.record_events(events)
        return [(numbers[int(task.id)], task, tokens[numbers[int(task.id)]][0]) for task in tasks]

    async def _launch(
        self, attempts: list[Attempt], runtime: Runtime, placement: Placement
    ) -> list[Launch | str]:
        """Start the attempts' processes. For each, its Launch; or, if it could not start, the reason,
        recorded (its task back to pending). Pids are recorded by `_supervise_all`."""
        if not attempts:
            return []
        launches: list[Launch | str] = []
        for attempt, launch in zip(
            attempts, await self._launcher.start(attempts, runtime, placement), strict=True
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
        plain = all(launch.session is None and launch.worktree is None for launch in launches)
        try:
            async with self.store.write(one_statement=plain) as tx:
                await tx.workers.started(
                    (launch.number, launch.process.identity.pid, launch.process.identity.start_time)
                    for launch in launches
                )
                for launch in launches:
                    if launch.session is not None:
                        await tx.workers.set_tmux_session(launch.number, launch.session)
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
        if launch.placement.outlives_server:
            self._outliving.add(launch.number)
        self._group.start_soon(self._supervise, launch, limit)

    async def _adopt(self, worker: Worker, placed: Placed) -> None:
        """Supervise a live worker that another server (now gone) started, as if we had started it.

        Its output is read from where its attempt began in the log; its time limit counts from its
        start.
        """
        number, process = worker.number, placed.process
        runtime = self.runtimes[worker.runtime]
        if worker.pid is None:  # found by its environment: the server died before writing its pid
            async with self.store.write() as tx:
                await tx.workers.started([(number, process.identity.pid, process.identity.start_time)])
        request = self._launcher.request(number, worker.task_id, "", None, Path(worker.cwd))
        elapsed = time.time() - datetime.fromisoformat(worker.started_at).timestamp()
        reader = runtime.reader(request)
        placement = self._placement(worker.mode)
        offset, log_id = self._launcher.attempt_start(number, worker.attempt)
        launch = Launch(
            number, worker.attempt, process, reader, request, offset, placement,
            session=placed.session, log_id=log_id,
        )  # fmt: skip
        self._watch(launch, max(0.0, self.limits.timeout_seconds - elapsed))

    # -- supervision ------------------------------------------------------------------------

    async def _supervise(self, launch: Launch, limit: float) -> None:
        exit_code, ended_by = await watch_until_end(
            launch, self._launcher.log(launch.number), limit, self.limits
        )
        self._processes.pop(launch.number, None)
        with anyio.CancelScope(shield=True):
            # The checks' environment is built only for a task that has checks: off the common path.
            checks_env = self._launcher.checks_environment
            files = self._launcher.files(launch.number)
            verdict = await judge(launch, exit_code, ended_by, self._metadata, checks_env, files, self.hooks)
            if launch.worktree is not None:
                verdict = replace(verdict, changes=await changes_of(launch.worktree))
            await self._finish(verdict)
            self._outliving.discard(launch.number)
            completed = verdict.task_status is TaskStatus.COMPLETED
            await launch.placement.finished(launch.session, completed=completed)

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
        mayor: str | None = None,
    ) -> WaitResult:
        """See waiting.wait_for_workers: a plain wait returns `mayor`'s own workers' results."""
        return await wait_for_workers(
            self.store,
            self._mail,
            self._changes,
            worker_ids,
            mode=mode,
            timeout=timeout,
            progress=progress,
            supervisor=self.supervisor,
            mayor=mayor,
        )

    async def workers_of(self, task_id: str) -> list[Worker]:
        async with self.store.read() as tx:
            return await tx.workers.for_task(parse_task_id(task_id))

    async def ended_work(self) -> EndedWork:
        """What ended workers left on disk (engine/cleanup.py)."""
        return await ended_work(self.store, self._launcher)

    async def remove_ended(self, work: EndedWork) -> None:
        await remove_ended(work, self.project_dir)

    async def close(
        self,
        worker_id: str,
        task_status: TaskStatus = TaskStatus.PENDING,
        *,
        reason: str = "closed by the Mayor",
    ) -> Worker:
        if task_status not in (TaskStatus.PENDING, TaskStatus.FAILED):
            raise InvalidInput("taskStatus must be 'pending' or 'failed'")
        number = worker_number(worker_id)
        async with self.store.read() as tx:
            worker = await tx.workers.get(number)
        if worker is None:
            raise InvalidInput(f"no worker {worker_id!r}; spawn returns the worker ids")
        # Impatient: a database that cannot take the close now says why, and the worker runs on.
        await self._close(number, task_status, WorkerState.CANCELLED, reason, patient=False)
        with anyio.CancelScope(shield=True):
            # Supervised by another server (another Mayor's session), it is stopped all the same.
            await self._placement(worker.mode).stop(
                worker, self._launcher.files(worker.number), self.limits.stop_grace_seconds
            )
            worktree = worktree_of(worker)
            if worktree is not None and worker.integrated_commit is None:
                await remove_worktree(self.project_dir, worktree)
        async with self.store.read() as tx:
            closed = await tx.workers.get(number)
        assert closed is not None  # noqa: S101 - a worker's row is never deleted
        return closed

    async def _close(
        self, number: int, task_status: TaskStatus, state: WorkerState, error: str, *, patient: bool = True
    ) -> None:
        # Shielded: a close that was begun is finished, so no recorded end is left with a live process.
        with anyio.CancelScope(shield=True):
            # Record first, so the supervisor's own verdict, arriving after the kill, is refused.
            verdict = Verdict(number, None, state, task_status, error=error)
            await self._verdicts.record(verdict, patient=patient)
            process = self._processes.pop(number, None)
            if process is not None:
                await process.stop(self.limits.stop_grace_seconds)
