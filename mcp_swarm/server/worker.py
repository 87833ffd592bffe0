"""The worker tools: what one worker may do, over the server's worker endpoint.

A worker may read its own task, report to the Mayor about it, read its own inbox, and reserve
files. Who calls is never an argument: each call is known by the bearer token of its request,
the token minted for one attempt of one worker (engine/tokens.py), and answers for that
worker's task only while that attempt is live. No tool takes a worker or task id, so a worker
can neither act as another nor write about another's task; an argument a tool's schema does not
name (a `taskId`, say) is refused.

The endpoint that serves these tools is server/worker_endpoint.py; the claude and codex runtimes
register it for each worker they start, and the Mayor's server reads what it writes (the Mayor's
`wait` wakes for a help request).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from mcp_swarm.engine.tokens import MAX_TOKEN_CHARS, token_hash
from mcp_swarm.ledger.mail import (
    MAX_BODY_CHARS,
    MAX_FETCH,
    MAX_MESSAGE_ID,
    MAX_SUBJECT_CHARS,
    MAYOR,
    Mailbox,
    Message,
    MessageType,
)
from mcp_swarm.ledger.patterns import MAX_PATTERN_CHARS
from mcp_swarm.ledger.reservations import MAX_PATTERNS, MAX_REASON_CHARS, MAX_TTL_SECONDS, Reservations
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import Worker
from mcp_swarm.server import answers
from mcp_swarm.server.asgi_serving import bearer_credential
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

# What a worker may send; `instruction` is the Mayor's.
WorkerMessageType = Literal["progress", "help_request", "done", "failed", "blocked", "info"]
Subject = Annotated[str, Field(min_length=1, max_length=MAX_SUBJECT_CHARS)]
Body = Annotated[str, Field(max_length=MAX_BODY_CHARS)]
Pattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]

INSTRUCTIONS = """\
You are one worker of a swarm of agents run by the Mayor (another agent), and this server is
your line to the Mayor. Call my_task first: it is your one task (subject, description,
validation checks). On long work, report_progress now and then. When you are stuck or need a
decision, ask_for_help and carry on with what you can. Before editing shared files, reserve_files
(list_reservations shows who edits what) and release them when done. At the end, report_result
(done, blocked or failed) with a short summary of what you did and how to check it."""

# Said to a request whose token opens nothing: whoever holds a stale token learns no more.
NOT_A_WORKER = (
    "this request carries no token of a running worker attempt (Authorization: Bearer $SWARM_TOKEN); "
    "a token stops working when its attempt ends"
)


def worker_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None for anything else (a
    credential longer than any worker token included)."""
    token = bearer_credential(authorization)
    return token if token is not None and len(token) <= MAX_TOKEN_CHARS else None


class WorkerAccess:
    """What the tools use: the store's services, and who calls, from the request's token."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Reads only (my_task): a worker changes no task.
        self.ledger = Ledger(store, actor="worker")
        self.mailbox = Mailbox(store)
        self.reservations = Reservations(store)

    async def identify(self, token: str) -> Worker | None:
        """The live worker whose current attempt holds this token; None if none does (unknown,
        or its attempt ended, or a newer attempt has its own token). Found by the token's hash
        through the database's index: no comparison of secrets in our code."""
        async with self.store.read(snapshot=False) as tx:
            return await tx.workers.by_token_hash(token_hash(token))

    async def caller(self, ctx: Context) -> Worker:
        """The worker calling, checked at every call: the endpoint let the request in, but its
        attempt may have ended since."""
        token = worker_token(None if ctx.headers is None else ctx.headers.get("authorization"))
        worker = None if token is None else await self.identify(token)
        if worker is None:
            raise ToolError(NOT_A_WORKER)
        return worker

    async def send(self, ctx: Context, kind: MessageType, subject: str, body: str = "") -> CallToolResult:
        """A message from the calling worker to the Mayor, about its own task."""
        worker = await self.caller(ctx)
        message = await self.mailbox.send(worker.id, MAYOR, subject, body, task_id=worker.task_id, type=kind)
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


def build_worker_tools(state: WorkerAccess) -> list[Tool]:
    @guarded
    async def my_task(ctx: Context) -> CallToolResult:
        """Your own task, as the Mayor sees it: subject, description, status, metadata (its
        `validation` checks decide whether your work passes), blockedBy. Call this first."""
        worker = await state.caller(ctx)
        return answer(await state.ledger.get(worker.task_id))

    @guarded
    async def report_progress(
        ctx: Context,
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
        return await state.send(ctx, MessageType.PROGRESS, subject, body)

    @guarded
    async def ask_for_help(
        ctx: Context,
        subject: Annotated[Subject, Field(description="One line: what you need")],
        body: Annotated[
            Body | None, Field(description="The details: what you tried, what blocks you, the options")
        ] = None,
    ) -> CallToolResult:
        """Ask the Mayor for help or a decision when you are stuck (missing information, a conflict
        with another worker, a choice beyond your task). The Mayor is woken for it; its answer
        comes to your inbox (fetch_inbox). Carry on with what you can meanwhile."""
        return await state.send(ctx, MessageType.HELP_REQUEST, subject, body or "")

    @guarded
    async def report_result(
        ctx: Context,
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
        return await state.send(ctx, MessageType(status), subject, body)

    @guarded
    async def send_message(
        ctx: Context,
        subject: Annotated[Subject, Field(description="One line: what the message is about")],
        body: Annotated[Body | None, Field(description="The message itself")] = None,
        type: Annotated[
            WorkerMessageType,
            Field(description="progress, help_request, done, failed, blocked or info (default)"),
        ] = "info",
    ) -> CallToolResult:
        """Send a message to the Mayor (workers write only to the Mayor, never to each other), about
        your own task. report_progress, ask_for_help and report_result are the usual shortcuts."""
        return await state.send(ctx, MessageType(type), subject, body or "")

    @guarded
    async def fetch_inbox(
        ctx: Context,
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
        worker = await state.caller(ctx)
        messages = await state.mailbox.fetch_inbox(
            worker.id, since_id=sinceId or 0, limit=limit or 50, unread_only=bool(unreadOnly)
        )
        return answer({"messages": [answers.message(message) for message in messages]})

    @guarded
    async def reserve_files(
        ctx: Context,
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
        worker = await state.caller(ctx)
        reserved = await state.reservations.reserve(
            worker.id, patterns, exclusive=exclusive, ttl_seconds=ttlSeconds or 3600, reason=reason
        )
        return answer({"reservations": [answers.reservation(reservation) for reservation in reserved]})

    @guarded
    async def release_files(
        ctx: Context,
        patterns: Annotated[
            list[Pattern] | None,
            Field(max_length=MAX_PATTERNS, description="The patterns to release; default: all of yours"),
        ] = None,
    ) -> CallToolResult:
        """Release your reservations (all of them, or these patterns) when you are done with the
        files. Returns how many were released."""
        worker = await state.caller(ctx)
        return answer({"released": await state.reservations.release(worker.id, patterns)})

    @guarded
    async def list_reservations(ctx: Context) -> CallToolResult:
        """Everyone's open file reservations (holder, pattern, exclusive, expiresAt), oldest first:
        who is editing what."""
        await state.caller(ctx)
        reservations = await state.reservations.active()
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
