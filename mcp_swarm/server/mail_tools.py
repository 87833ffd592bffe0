"""The Mayor's Agent Mail and file reservation tools: thin, like the rest of the MCP surface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult
from pydantic import Field

from mcp_swarm.ledger.mail import (
    MAX_BODY_CHARS,
    MAX_FETCH,
    MAX_MESSAGE_ID,
    MAX_SUBJECT_CHARS,
    MAYOR,
    Mailbox,
    MessageType,
)
from mcp_swarm.ledger.patterns import MAX_PATTERN_CHARS
from mcp_swarm.ledger.reservations import MAX_PATTERNS, MAX_TTL_SECONDS, Reservations
from mcp_swarm.server import answers
from mcp_swarm.server.tool_support import READ_ONLY, UPDATES, WRITES, answer, guarded, strict_tool

Pattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]
Patterns = Annotated[
    list[Pattern],
    Field(min_length=1, max_length=MAX_PATTERNS, description="Paths or globs in the project: src/auth/*.py"),
]


def build_mail_tools(mailbox: Callable[[], Mailbox], reserved: Callable[[], Reservations]) -> list[Tool]:
    """The tools over the Mayor's mailbox and reservations, each looked up at call time."""

    @guarded
    async def send_message(
        to: Annotated[str, Field(max_length=40, description="The worker, e.g. worker-3")],
        subject: Annotated[
            str, Field(min_length=1, max_length=MAX_SUBJECT_CHARS, description="One line: what it is about")
        ],
        body: Annotated[str, Field(max_length=MAX_BODY_CHARS, description="The message itself")] = "",
        taskId: Annotated[str | None, Field(max_length=20, description="The task it is about")] = None,
        type: Annotated[
            Literal["instruction", "info", "progress", "help_request", "done", "failed", "blocked"],
            Field(description="What kind of message (default instruction)"),
        ] = "instruction",
    ) -> CallToolResult:
        """Send a message to a running worker (it reads it with its own fetch_inbox). To retry an
        ended worker with new instructions, use send_input instead."""
        message = await mailbox().send(MAYOR, to, subject, body, task_id=taskId, type=MessageType(type))
        return answer(answers.message(message))

    @guarded
    async def fetch_inbox(
        sinceId: Annotated[
            int, Field(ge=0, le=MAX_MESSAGE_ID, description="Only messages after this id")
        ] = 0,
        limit: Annotated[int, Field(ge=1, le=MAX_FETCH, description="At most this many (default 50)")] = 50,
        unreadOnly: Annotated[bool, Field(description="Only messages not yet read")] = False,
    ) -> CallToolResult:
        """The Mayor's inbox: workers' progress reports, help requests and results, oldest first.
        Messages come back with read=false the first time; they are marked read by this call."""
        messages = await mailbox().fetch_inbox(MAYOR, since_id=sinceId, limit=limit, unread_only=unreadOnly)
        return answer({"messages": [answers.message(message) for message in messages]})

    @guarded
    async def list_reservations(
        holder: Annotated[str | None, Field(max_length=40, description="Only this holder's")] = None,
    ) -> CallToolResult:
        """Open file reservations: who is editing what, until when. Check them when forming a wave."""
        reservations = await reserved().active(holder=holder)
        return answer({"reservations": [answers.reservation(r) for r in reservations]})

    @guarded
    async def reserve_files(
        patterns: Patterns,
        exclusive: Annotated[bool, Field(description="Exclusive (default) or shared")] = True,
        ttlSeconds: Annotated[
            float,
            Field(ge=1, le=MAX_TTL_SECONDS, description="How long the reservation lasts (default 3600)"),
        ] = 3600,
        reason: Annotated[str | None, Field(max_length=500, description="Why: what will change")] = None,
    ) -> CallToolResult:
        """Reserve paths for the Mayor (e.g. while integrating); refused, naming the holder, if a
        worker holds a conflicting reservation."""
        held = await reserved().reserve(
            MAYOR, list(patterns), exclusive=exclusive, ttl_seconds=ttlSeconds, reason=reason
        )
        return answer({"reservations": [answers.reservation(r) for r in held]})

    @guarded
    async def release_files(
        patterns: Annotated[
            list[Pattern] | None,
            Field(max_length=MAX_PATTERNS, description="Which of the Mayor's reservations (default: all)"),
        ] = None,
    ) -> CallToolResult:
        """Release the Mayor's reservations."""
        released = await reserved().release(MAYOR, None if patterns is None else list(patterns))
        return answer({"released": released})

    return [
        strict_tool(send_message, WRITES),
        strict_tool(fetch_inbox, WRITES),  # it marks messages read
        strict_tool(list_reservations, READ_ONLY),
        strict_tool(reserve_files, WRITES),
        strict_tool(release_files, UPDATES),
    ]
