"""The worker-side MCP server: `mcp-swarm serve --worker <workerId>`.

It exposes to one worker only what a worker may do: read its own task, report to the Mayor, read
its own inbox, and reserve files. The worker id is fixed by the command line and no tool takes a
worker or task id, so a worker can neither act as another nor write about another's task; an
argument a tool's schema does not name (a `taskId`, say) is refused.

The claude and codex runtimes register this server for each worker they start, on the swarm's
database; the Mayor's server reads what it writes (the Mayor's `wait` wakes for a help request).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from mcp_swarm import __version__
from mcp_swarm.config import Settings
from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.mail import (
    MAX_BODY_CHARS,
    MAX_FETCH,
    MAX_MESSAGE_ID,
    MAX_SUBJECT_CHARS,
    MAYOR,
    Mailbox,
    Message,
    MessageType,
    party_number,
)
from mcp_swarm.ledger.patterns import MAX_PATTERN_CHARS
from mcp_swarm.ledger.reservations import MAX_PATTERNS, MAX_REASON_CHARS, MAX_TTL_SECONDS, Reservations
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import Worker
from mcp_swarm.server import answers
from mcp_swarm.server.stdio_wire import BoundedStdioServer
from mcp_swarm.server.tool_support import READ_ONLY, UPDATES, WRITES, answer, guarded, strict_tool
from mcp_swarm.store import Store

logger = logging.getLogger(__name__)

# The names of the tools, as a client lists them; the runtimes allow them by server name.
WORKER_TOOLS = (
    "my_task",
    "report_progress",
    "ask_for_help",
    "report_result",
    "send_message",
    "fetch_inbox",
    "reserve_files",
    "release_files",
    "list_reservations",
)

# The name the runtimes register this server under: its tools reach the agent as mcp__swarm__<tool>.
# What a worker may send; `instruction` is the Mayor's.
WorkerMessageType = Literal["progress", "help_request", "done", "failed", "blocked", "info"]
Subject = Annotated[str, Field(min_length=1, max_length=MAX_SUBJECT_CHARS)]
Body = Annotated[str, Field(max_length=MAX_BODY_CHARS)]
Pattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]


def instructions(worker_id: str) -> str:
    return f"""\
You are {worker_id}, one worker of a swarm of agents run by the Mayor (another agent), and this
server is your line to the Mayor. Call my_task first: it is your one task (subject, description,
validation checks). On long work, report_progress now and then. When you are stuck or need a
decision, ask_for_help and carry on with what you can. Before editing shared files, reserve_files
(list_reservations shows who edits what) and release them when done. At the end, report_result
(done, blocked or failed) with a short summary of what you did and how to check it."""


class WorkerNotFound(InvalidInput):
    """The worker id is well formed, but the swarm's database has no such worker."""

    def __init__(self, worker_id: str, db_path: Path) -> None:
        super().__init__(
            f"{worker_id} is no worker of the swarm in {db_path}; worker ids come from the Mayor's spawn"
        )


class WorkerState:
    """What the tools use while the server runs: the store's services and the worker's task."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.task_id: str | None = None
        self.ledger: Ledger | None = None
        self.mailbox: Mailbox | None = None
        self.reservations: Reservations | None = None

    def _ready(self) -> tuple[str, Ledger, Mailbox, Reservations]:
        if self.task_id is None or self.ledger is None or self.mailbox is None or self.reservations is None:
            raise ToolError("the server is starting or stopping; try again")
        return self.task_id, self.ledger, self.mailbox, self.reservations

    def task(self) -> tuple[str, Ledger]:
        task_id, ledger, _, _ = self._ready()
        return task_id, ledger

    def mail(self) -> Mailbox:
        return self._ready()[2]

    def files(self) -> Reservations:
        return self._ready()[3]

    async def send(self, kind: MessageType, subject: str, body: str = "") -> CallToolResult:
        """A message to the Mayor about this worker's own task."""
        task_id, _, mailbox, _ = self._ready()
        message = await mailbox.send(self.worker_id, MAYOR, subject, body, task_id=task_id, type=kind)
        return answer(_sent(message))


def _sent(message: Message) -> dict[str, Any]:
    shaped = answers.message(message)
    return {key: shaped[key] for key in ("id", "to", "taskId", "type", "subject") if key in shaped}


def split_text(text: str) -> tuple[str, str]:
    """A subject (the first line, cut to fit) and a body (the whole text, unless the subject is it)."""
    text = text.strip()
    first = text.splitlines()[0].strip() if text else ""
    subject = first if len(first) <= MAX_SUBJECT_CHARS else first[: MAX_SUBJECT_CHARS - 1].rstrip() + "…"
    return subject, "" if text == subject else text


def build_worker_tools(state: WorkerState) -> list[Tool]:
    @guarded
    async def my_task() -> CallToolResult:
        """Your own task, as the Mayor sees it: subject, description, status, metadata (its
        `validation` checks decide whether your work passes), blockedBy. Call this first."""
        task_id, ledger = state.task()
        task = await ledger.get(task_id)
        return answer(task)

    @guarded
    async def report_progress(
        message: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_BODY_CHARS,
                description="What you have done and what comes next; the first line is the subject",
            ),
        ],
    ) -> CallToolResult:
        """Tell the Mayor how your task is going. Use it on long work, at milestones, so the Mayor
        knows you are alive and where you stand; it needs no answer and you carry on."""
        subject, body = split_text(message)
        return await state.send(MessageType.PROGRESS, subject, body)

    @guarded
    async def ask_for_help(
        subject: Annotated[Subject, Field(description="One line: what you need")],
        body: Annotated[
            Body | None, Field(description="The details: what you tried, what blocks you, the options")
        ] = None,
    ) -> CallToolResult:
        """Ask the Mayor for help or a decision when you are stuck (missing information, a conflict
        with another worker, a choice beyond your task). The Mayor is woken for it; its answer
        comes to your inbox (fetch_inbox). Carry on with what you can meanwhile."""
        return await state.send(MessageType.HELP_REQUEST, subject, body or "")

    @guarded
    async def report_result(
        status: Annotated[
            Literal["done", "blocked", "failed"],
            Field(description="done: the task is finished; blocked: it cannot go on; failed: it went wrong"),
        ],
        summary: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_BODY_CHARS,
                description="What you did, what changed (files) and how to check it; the first line "
                "is the subject",
            ),
        ],
    ) -> CallToolResult:
        """Report the outcome of your task to the Mayor, once, at the end. It does not itself
        change the task's status: the Mayor decides from your work and the task's validation."""
        subject, body = split_text(summary)
        return await state.send(MessageType(status), subject, body)

    @guarded
    async def send_message(
        subject: Annotated[Subject, Field(description="One line: what the message is about")],
        body: Annotated[Body | None, Field(description="The message itself")] = None,
        type: Annotated[
            WorkerMessageType,
            Field(description="progress, help_request, done, failed, blocked or info (default)"),
        ] = "info",
    ) -> CallToolResult:
        """Send a message to the Mayor (workers write only to the Mayor, never to each other), about
        your own task. report_progress, ask_for_help and report_result are the usual shortcuts."""
        return await state.send(MessageType(type), subject, body or "")

    @guarded
    async def fetch_inbox(
        sinceId: Annotated[
            int | None,
            Field(ge=0, le=MAX_MESSAGE_ID, description="Only messages with a larger id (default: all)"),
        ] = None,
        limit: Annotated[
            int | None, Field(ge=1, le=MAX_FETCH, description="At most this many, oldest first (default 50)")
        ] = None,
        unreadOnly: Annotated[bool | None, Field(description="true: only messages not read before")] = None,
    ) -> CallToolResult:
        """Your inbox: the Mayor's messages to you (instructions, answers to your help requests),
        oldest first. Messages unread until now come with read=false and are marked read."""
        messages = await state.mail().fetch_inbox(
            state.worker_id, since_id=sinceId or 0, limit=limit or 50, unread_only=bool(unreadOnly)
        )
        return answer({"messages": [answers.message(message) for message in messages]})

    @guarded
    async def reserve_files(
        patterns: Annotated[
            list[Pattern],
            Field(
                min_length=1,
                max_length=MAX_PATTERNS,
                description="Paths or globs relative to the project: 'src/auth.py', 'src/api/*.py', 'docs'",
            ),
        ],
        exclusive: Annotated[
            bool, Field(description="true (default): nobody else may reserve them; false: shared")
        ] = True,
        ttlSeconds: Annotated[
            float | None,
            Field(ge=1, le=MAX_TTL_SECONDS, description="How long the reservation lasts (default 3600)"),
        ] = None,
        reason: Annotated[
            str | None, Field(max_length=MAX_REASON_CHARS, description="Why: what you will change")
        ] = None,
    ) -> CallToolResult:
        """Reserve files before editing them, so other workers see who edits what. All or nothing:
        if another worker holds an overlapping reservation, nothing is reserved and the message
        names the holder; then choose other files or ask_for_help. Reserving again renews."""
        reserved = await state.files().reserve(
            state.worker_id, patterns, exclusive=exclusive, ttl_seconds=ttlSeconds or 3600, reason=reason
        )
        return answer({"reservations": [answers.reservation(reservation) for reservation in reserved]})

    @guarded
    async def release_files(
        patterns: Annotated[
            list[Pattern] | None,
            Field(max_length=MAX_PATTERNS, description="The patterns to release; default: all of yours"),
        ] = None,
    ) -> CallToolResult:
        """Release your reservations (all of them, or these patterns) when you are done with the
        files. Returns how many were released."""
        return answer({"released": await state.files().release(state.worker_id, patterns)})

    @guarded
    async def list_reservations() -> CallToolResult:
        """Everyone's open file reservations (holder, pattern, exclusive, expiresAt), oldest first:
        who is editing what."""
        reservations = await state.files().active()
        return answer({"reservations": [answers.reservation(reservation) for reservation in reservations]})

    return [
        _tool(my_task, READ_ONLY),
        _tool(report_progress, WRITES),
        _tool(ask_for_help, WRITES),
        _tool(report_result, WRITES),
        _tool(send_message, WRITES),
        _tool(fetch_inbox, UPDATES),  # it marks messages read
        _tool(reserve_files, UPDATES),
        _tool(release_files, UPDATES),
        _tool(list_reservations, READ_ONLY),
    ]


def _tool(fn: Callable[..., Any], annotations: ToolAnnotations) -> Tool:
    tool = strict_tool(fn, annotations)
    # The docstring without its source indentation: the agent reads it as the tool's description.
    tool.description = inspect.cleandoc(tool.description)
    return tool


def _worker_number(worker_id: str) -> int:
    try:
        number = party_number(worker_id, "--worker")
    except InvalidInput:
        number = None
    if number is None:
        raise InvalidInput(
            f"--worker takes a worker id such as 'worker-3', not {worker_id!r}; "
            "the Mayor's own server is `mcp-swarm serve` without --worker"
        )
    return number


def build_worker_server(settings: Settings, worker_id: str) -> BoundedStdioServer[WorkerState]:
    """The server of one worker. A malformed id or a missing database is refused here; a worker
    the database does not know is refused when the server starts (`WorkerNotFound`)."""
    number = _worker_number(worker_id)
    db_path = settings.db_path
    if not db_path.is_file():
        # Opening it would create an empty swarm, in which no worker exists.
        raise InvalidInput(f"no swarm database at {db_path}; give the Mayor's with --db")
    state = WorkerState(worker_id)

    async def find_worker(store: Store) -> Worker:
        async with store.read(snapshot=False) as tx:
            worker = await tx.workers.get(number)
        if worker is None:
            raise WorkerNotFound(worker_id, db_path)
        return worker

    async def check() -> None:
        async with await Store.open(db_path) as store:
            await find_worker(store)

    @asynccontextmanager
    async def lifespan(_: MCPServer[WorkerState]) -> AsyncGenerator[WorkerState]:
        async with await Store.open(db_path) as store:
            worker = await find_worker(store)
            state.task_id = worker.task_id
            state.ledger = Ledger(store, actor=worker_id)
            state.mailbox = Mailbox(store)
            state.reservations = Reservations(store)
            logger.info(
                "mcp-swarm %s serving %s (task %s) on %s", __version__, worker_id, worker.task_id, db_path
            )
            try:
                yield state
            finally:
                state.task_id = None
                state.ledger = state.mailbox = state.reservations = None

    return BoundedStdioServer(
        "mcp-swarm-worker",
        preflight=check,
        version=__version__,
        instructions=instructions(worker_id),
        tools=build_worker_tools(state),
        lifespan=lifespan,
        log_level=settings.log_level,
    )
