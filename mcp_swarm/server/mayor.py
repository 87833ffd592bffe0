"""The MCP surface: thin tools that check their input, call the engine and shape the answer.

Parameter and result keys are camelCase, as in Claude Code's own task tools, so a skill written
for those tools works here unchanged. Answers are compact JSON, sent both as structured content
and as text; fields that are empty, null or false are left out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult
from pydantic import Field

from mcp_swarm import __version__
from mcp_swarm.app import build_engine
from mcp_swarm.config import Settings
from mcp_swarm.engine.assignment import SkippedTask, SpawnedWorker
from mcp_swarm.engine.integration import Integration, change_records
from mcp_swarm.engine.swarm import Swarm
from mcp_swarm.errors import TaskNotFound
from mcp_swarm.ledger.mail import Mailbox
from mcp_swarm.ledger.reservations import Reservations
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import (
    ActiveForm,
    Description,
    Metadata,
    NewTask,
    Owner,
    PlanTask,
    Subject,
    TaskChanges,
    TaskId,
    TaskIds,
    TaskStatus,
    Worker,
    WorkerState,
)
from mcp_swarm.placement.logtail import last_lines
from mcp_swarm.server import answers
from mcp_swarm.server.import_tools import build_import_tools
from mcp_swarm.server.mail_tools import build_mail_tools
from mcp_swarm.server.mayor_scope import mayor_of
from mcp_swarm.server.stdio_wire import BoundedStdioServer
from mcp_swarm.server.tool_support import READ_ONLY, UPDATES, WRITES, answer, guarded, strict_tool
from mcp_swarm.server.worker_endpoint import worker_endpoint
from mcp_swarm.store import Store

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

INSTRUCTIONS = """\
mcp-swarm makes you the Mayor of a swarm of worker agents. The loop:
1. Plan: TaskCreate for each piece of work (or TaskCreatePlan for a whole plan in one call), with
   dependencies via blockedBy / TaskUpdate(addBlockedBy=[...]).
2. Find the wave: TaskList(ready=true) lists pending tasks whose blockers are all completed.
3. spawn() starts a fresh worker agent for each ready task (or spawn(taskIds=[...])).
4. wait() blocks until workers end; each result says whether its task completed (the worker
   succeeded and the task's metadata.validation checks passed) or failed, and why.
5. Repeat until TaskList shows every task completed; close_agent stops a worker.
wait also returns at once when a worker asks for help (helpRequests): answer with send_message.
Workers report progress to your inbox (fetch_inbox) and reserve the files they edit
(list_reservations shows who edits what). A failed task keeps blocking its dependents; a
deleted one no longer blocks. State is kept in SQLite, so it survives restarts (running workers
are adopted) and can be shared by several sessions."""


class _Ledger:
    """Holds the engine while the server runs; tools look it up at call time."""

    ledger: Ledger | None = None
    swarm: Swarm | None = None
    # The Mayor's Agent Mail and file reservations, ready with the engine.
    mailbox: Mailbox | None = None
    reservations: Reservations | None = None
    settings: Settings | None = None

    def get(self) -> Ledger:
        return _ready(self.ledger)

    def workers(self) -> Swarm:
        return _ready(self.swarm)

    def mail(self) -> Mailbox:
        return _ready(self.mailbox)

    def reserved(self) -> Reservations:
        return _ready(self.reservations)


def _ready(part: T | None) -> T:
    if part is None:
        raise ToolError("the server is starting or stopping; try again")
    return part


def build_tools(state: _Ledger) -> list[Tool]:
    @guarded
    async def TaskCreate(
        subject: Annotated[
            Subject, Field(description="A brief title, in the imperative: 'Add login endpoint'")
        ],
        description: Annotated[Description, Field(description="What needs to be done, in full")],
        activeForm: Annotated[
            ActiveForm | None,
            Field(description="Present continuous form for spinners: 'Adding login endpoint'"),
        ] = None,
        metadata: Annotated[
            Metadata | None, Field(description="Arbitrary JSON object kept with the task")
        ] = None,
        blockedBy: Annotated[
            TaskIds | None, Field(description="Ids of tasks that must be completed before this one can start")
        ] = None,
    ) -> CallToolResult:
        """Create one task (status pending). Returns {id, subject, status, blockedBy}.

        For several tasks that depend on each other, TaskCreatePlan does it in one call."""
        new = NewTask(
            subject=subject,
            description=description,
            active_form=activeForm,
            metadata=metadata or {},
            blocked_by=blockedBy or [],
        )
        task = await state.get().create(new)
        return answer(task, include={"id", "subject", "status", "blocked_by"})

    @guarded
    async def TaskCreatePlan(
        tasks: Annotated[
            list[PlanTask],
            Field(
                min_length=1,
                description=(
                    "The tasks, each {key?, subject, description?, activeForm?, metadata?, blockedBy?}. "
                    "blockedBy may name the key of another task of this plan or the id of an existing task."
                ),
            ),
        ],
    ) -> CallToolResult:
        """Create a whole plan in one call: all of it, or nothing if a reference dangles or the
        dependencies form a cycle. Returns {ids: [id per task, in order], keys: {key: id}}.

        Example: tasks=[{"key": "model", "subject": "Create User model"},
        {"key": "login", "subject": "Create login endpoint", "blockedBy": ["model"]}]"""
        return answer(await state.get().create_plan(tasks))

    @guarded
    async def TaskUpdate(
        taskId: Annotated[TaskId, Field(description="The id of the task to update")],
        status: Annotated[
            TaskStatus | None,
            Field(
                description="pending (clears the owner: retry a failed task), in_progress, completed, "
                "failed, or deleted (removes it from lists)"
            ),
        ] = None,
        subject: Annotated[Subject | None, Field(description="New subject")] = None,
        description: Annotated[Description | None, Field(description="New description")] = None,
        activeForm: Annotated[ActiveForm | None, Field(description="New present continuous form")] = None,
        owner: Annotated[
            Owner | None, Field(description="New owner (an agent or worker id); '' clears it")
        ] = None,
        metadata: Annotated[
            Metadata | None,
            Field(description="Keys to merge into the metadata; a key set to null is removed"),
        ] = None,
        addBlocks: Annotated[
            TaskIds | None, Field(description="Ids of tasks that must wait for this one")
        ] = None,
        addBlockedBy: Annotated[
            TaskIds | None, Field(description="Ids of tasks this one must wait for")
        ] = None,
    ) -> CallToolResult:
        """Change a task: status, fields, owner, metadata (merged), dependencies. All or nothing.
        Refused: a dependency that closes a cycle (the message names it); in_progress or completed
        while blockers are open. Returns the task as TaskGet shows it."""
        changes = TaskChanges(
            status=status,
            subject=subject,
            description=description,
            active_form=activeForm,
            owner=owner,
            metadata=metadata,
            add_blocks=addBlocks or [],
            add_blocked_by=addBlockedBy or [],
        )
        return answer(await state.get().update(taskId, changes))

    @guarded
    async def TaskGet(
        taskId: Annotated[TaskId, Field(description="The id of the task")],
    ) -> CallToolResult:
        """Everything about one task: description, status, owner, blockedBy (open blockers only),
        blocks, ready, metadata, and the workers that ran it."""
        task = await state.get().get(taskId)
        payload = task.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        workers = await state.workers().workers_of(task.id)
        if workers:
            swarm = state.workers()
            payload["workers"] = [
                {"workerId": w.id, "state": w.state.value, "attempt": w.attempt, "log": w.log}
                | ({"attach": hint} if (hint := swarm.attach_hint(w)) else {})
                for w in workers
            ]
        return answer(payload)

    @guarded
    async def TaskList(
        status: Annotated[TaskStatus | None, Field(description="Only tasks with this status")] = None,
        ready: Annotated[
            bool | None, Field(description="true: only the ready wave (pending, every blocker completed)")
        ] = None,
        owner: Annotated[Owner | None, Field(description="Only tasks with this owner")] = None,
    ) -> CallToolResult:
        """List tasks compactly: {tasks: [{id, subject, status, owner?, blockedBy?, ready?}], counts}.
        blockedBy lists open blockers only; ready appears only when true; counts are by status
        over the whole ledger, plus how many tasks are ready."""
        listing = await state.get().list(status=status, ready=ready, owner=owner)
        return answer(answers.task_listing(listing))

    @guarded
    async def spawn(
        ctx: Context,
        taskIds: Annotated[
            TaskIds | None, Field(description="Tasks to start; default: the ready wave (TaskList ready=true)")
        ] = None,
        runtime: Annotated[
            str | None,
            Field(max_length=100, description="A configured runtime: claude, codex, a command"),
        ] = None,
        maxWorkers: Annotated[
            int | None,
            Field(
                ge=1,
                le=256,
                description="At most this many running at once on the database; may lower the "
                "configured max_workers (default 5), never raise it",
            ),
        ] = None,
        isolation: Annotated[
            Literal["shared", "worktree"] | None,
            Field(
                description="shared (default): workers run in the project directory; worktree: each in "
                "its own git worktree on its own branch from HEAD, integrated later with integrate"
            ),
        ] = None,
        model: Annotated[str | None, Field(max_length=200, description="Model for the runtime")] = None,
        instructions: Annotated[
            str | None,
            Field(max_length=20_000, description="Added to every worker's prompt"),
        ] = None,
        timeoutSeconds: Annotated[
            float | None, Field(gt=0, le=86_400, description="Wall-clock limit per worker (default 1800)")
        ] = None,
        mode: Annotated[
            Literal["local", "distributed"] | None,
            Field(
                description="local: workers are this server's children; distributed: each in a tmux "
                "session of its own that outlives the server (default: the configured mode)"
            ),
        ] = None,
    ) -> CallToolResult:
        """Start a fresh worker agent for each task of the wave, in parallel, and return at once.
        Each task is assigned (owner worker-N, in_progress) before its worker starts; a task that
        cannot start is listed in skipped with the reason, and retry=true when the reason passes on
        its own (no free slot, a blocker or an overlapping task still running). When nothing
        starts, note says why (which tasks block the rest) and what to do. Then call wait."""
        client = ctx.session.client_params
        mayor = mayor_of(ctx)
        swarm = state.workers()
        name = runtime or swarm.default_runtime_for(client.client_info.name if client is not None else None)
        result = await swarm.spawn(
            taskIds,
            runtime=name,
            max_workers=maxWorkers,
            model=model,
            instructions=instructions,
            timeout_seconds=timeoutSeconds,
            mode=mode,
            isolation=isolation,
            mayor=mayor,
        )
        payload: dict[str, Any] = {
            "workers": [_spawned(w) for w in result.workers],
            "skipped": [_skipped(s) for s in result.skipped],
        }
        if not result.workers and not result.skipped:
            payload["note"] = await _why_nothing_started(state)
        return answer(payload)

    @guarded
    async def wait(
        ctx: Context,
        workerIds: Annotated[
            list[Annotated[str, Field(max_length=40)]] | None,
            Field(max_length=1000, description="Workers to wait for; default: every result not yet returned"),
        ] = None,
        mode: Annotated[
            Literal["all", "any"], Field(description="all: until every one ends; any: the first")
        ] = "all",
        timeoutSeconds: Annotated[
            float, Field(ge=0, le=600, description="Return after this long at the latest (default 30)")
        ] = 30,
    ) -> CallToolResult:
        """Block until workers finish (wakes the moment one ends), at most timeoutSeconds. Returns
        {done: [{workerId, taskId, state, taskStatus, exitCode, summary, durationSeconds, costUsd,
        log, validation, error}], running, helpRequests, timedOut}. Without workerIds: the workers
        you spawned (on a shared server you are known by your X-Swarm-Mayor header), each result
        returned once. It also returns at once when one of your workers asks for help
        (helpRequests): answer with send_message, or close_agent."""
        mayor = mayor_of(ctx)

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        result = await state.workers().wait(
            workerIds, mode=mode, timeout=timeoutSeconds, progress=progress, mayor=mayor
        )
        payload: dict[str, Any] = {
            "done": [_worker_result(w, state.workers().attach_hint(w)) for w in result.done],
            "running": result.running,
        }
        if result.help_requests:
            payload["helpRequests"] = [answers.message(message) for message in result.help_requests]
        if result.timed_out:
            payload["timedOut"] = True
        return answer(payload)

    @guarded
    async def send_input(
        workerId: Annotated[str, Field(max_length=40, description="The worker to continue, e.g. worker-3")],
        message: Annotated[
            str, Field(min_length=1, max_length=50_000, description="What the worker should do next")
        ],
        timeoutSeconds: Annotated[
            float | None,
            Field(gt=0, le=86_400, description="Wall-clock limit of this attempt (default 1800)"),
        ] = None,
    ) -> CallToolResult:
        """Continue an ended worker's own session (claude --resume, codex exec resume) with a
        message, as its next attempt at the same task: the retry after a failed validation. Then
        call wait again. A runtime without sessions (command) says so."""
        worker = await state.workers().send_input(workerId, message, timeout_seconds=timeoutSeconds)
        return answer({"workerId": worker.id, "state": worker.state.value, "attempt": worker.attempt})

    @guarded
    async def close_agent(
        workerId: Annotated[str, Field(max_length=40, description="The worker to stop, e.g. worker-3")],
        taskStatus: Annotated[
            Literal["pending", "failed"], Field(description="What its task becomes (default pending)")
        ] = "pending",
    ) -> CallToolResult:
        """Stop a worker and every process it started; its task returns to pending (or failed)."""
        worker = await state.workers().close(workerId, TaskStatus(taskStatus))
        # The task's real status: closing a worker that had already ended changes nothing.
        try:
            status = (await state.get().get(worker.task_id)).status.value
        except TaskNotFound:
            status = TaskStatus.DELETED.value
        return answer({"workerId": worker.id, "state": worker.state.value, "taskStatus": status})

    @guarded
    async def integrate(
        workerIds: Annotated[
            list[Annotated[str, Field(max_length=40)]] | None,
            Field(description="Only these workers (default: every completed one not yet integrated)"),
        ] = None,
    ) -> CallToolResult:
        """Bring the changes of completed worktree workers (spawn isolation=worktree) into the main
        working tree, in dependency order, as ONE commit listing the tasks (workers never commit).
        A conflict stops at that worker with a report and changes nothing for it; integrated
        workers' worktrees are removed. Returns {integrated: [{taskId, workerId, files}], commit,
        conflicts, notAttempted}."""
        return answer(_integration(await state.workers().integrate(workerIds)))

    return [
        strict_tool(spawn, WRITES),
        strict_tool(wait, WRITES),  # it marks results as handed over
        strict_tool(send_input, WRITES),
        strict_tool(close_agent, UPDATES),
        strict_tool(TaskCreate, WRITES),
        strict_tool(TaskCreatePlan, WRITES),
        strict_tool(TaskUpdate, UPDATES),
        strict_tool(TaskGet, READ_ONLY),
        strict_tool(TaskList, READ_ONLY),
        *build_mail_tools(state.mail, state.reserved),
        strict_tool(integrate, WRITES),
        *build_import_tools(state.get, lambda: state.settings.project_dir if state.settings else Path.cwd()),
    ]


# A failure's reason, as a spawn note quotes it: a pointer, the worker's log has the rest.
MAX_REASON_CHARS = 120


async def _why_nothing_started(state: _Ledger) -> str:
    """Which tasks hold the rest up, which failed and why, and what to do."""
    listing = await state.get().list()
    failures: dict[str, str] = {}
    for task_id in answers.failed_holders(listing):
        workers = await state.workers().workers_of(task_id)
        if workers:
            last = workers[-1]
            reason = last.error or last.summary or last.state.value
            if len(reason) > MAX_REASON_CHARS:
                reason = reason[: MAX_REASON_CHARS - 1] + "…"
            failures[task_id] = f"{last.id}: {reason}"
    return answers.spawn_note(listing, failures)


def _spawned(worker: SpawnedWorker) -> dict[str, Any]:
    started: dict[str, Any] = {
        "workerId": worker.worker_id,
        "taskId": worker.task_id,
        "runtime": worker.runtime,
        "pid": worker.pid,
        "log": worker.log,
    }
    if worker.attach is not None:
        started["attach"] = worker.attach
    return started


def _skipped(task: SkippedTask) -> dict[str, Any]:
    """`retry` appears only when true."""
    return {"taskId": task.task_id, "reason": task.reason, **({"retry": True} if task.retry else {})}


def _integration(done: Integration) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "integrated": [
            {"taskId": worker.task_id, "workerId": worker.worker_id, "files": change_records(worker.files)}
            for worker in done.integrated
        ]
    }
    if done.note:
        shaped["message"] = done.note
    if done.commit:
        shaped["commit"] = done.commit
    if done.conflicts:
        shaped["conflicts"] = [
            {"taskId": c.task_id, "workerId": c.worker_id, "reason": c.reason, "files": c.files,
             "message": c.message}
            for c in done.conflicts
        ]  # fmt: skip
    if done.not_attempted:
        shaped["notAttempted"] = done.not_attempted
    return shaped


def _worker_result(worker: Worker, attach: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "workerId": worker.id,
        "taskId": worker.task_id,
        "state": worker.state.value,
        "taskStatus": None if worker.task_status is None else worker.task_status.value,
        "exitCode": worker.exit_code,
        "summary": worker.summary,
        "error": worker.error,
        "durationSeconds": _duration(worker),
        "costUsd": worker.cost_usd,
        "log": worker.log,
        "validation": worker.validation,
        "changes": worker.changes,
        "attach": attach,
        "tail": _failure_tail(worker),
    }
    return {key: value for key, value in result.items() if value is not None}


# A failed worker's last lines in its wait result: the reason is usually there.
_TAIL_LINES = 5
_FAILED_STATES = frozenset({WorkerState.FAILED, WorkerState.TIMED_OUT, WorkerState.LOST})


def _failure_tail(worker: Worker) -> str | None:
    """The last lines of a failed worker's output, for its wait result; None for any other."""
    if worker.task_status is not TaskStatus.FAILED and worker.state not in _FAILED_STATES:
        return None
    return "\n".join(last_lines(Path(worker.log), _TAIL_LINES)) or None


def _duration(worker: Worker) -> float | None:
    if worker.ended_at is None:
        return None
    started = datetime.fromisoformat(worker.started_at)
    ended = datetime.fromisoformat(worker.ended_at)
    return round((ended - started).total_seconds(), 3)


def build_server(settings: Settings) -> BoundedStdioServer[_Ledger]:
    state = _Ledger()
    state.settings = settings

    @asynccontextmanager
    async def lifespan(_: MCPServer[_Ledger]) -> AsyncGenerator[_Ledger]:
        # The worker endpoint outlives the engine: workers stopped on the way out may still report.
        async with await Store.open(settings.db_path) as store, worker_endpoint(store, settings) as endpoint:
            state.ledger = Ledger(store, actor="mayor")
            swarm = build_engine(settings, store)
            swarm.worker_url = endpoint.url
            logger.info("mcp-swarm %s serving %s", __version__, settings.db_path)
            async with anyio.create_task_group() as group:
                await group.start(swarm.run)
                state.swarm = swarm
                state.mailbox, state.reservations = Mailbox(store), Reservations(store)
                try:
                    yield state
                finally:
                    # The client went away: stop our workers and free their tasks, then the store.
                    state.swarm = state.mailbox = state.reservations = None
                    state.ledger = None
                    group.cancel_scope.cancel()

    async def check() -> None:
        # The state file is opened (and brought up to date) before the transport starts, so
        # that a file that cannot serve ends `serve` with its reason instead of a silent server.
        async with await Store.open(settings.db_path):
            pass

    return BoundedStdioServer(
        "mcp-swarm",
        preflight=check,
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=build_tools(state),
        lifespan=lifespan,
        log_level=settings.log_level,
    )
