"""The MCP surface: thin tools that check their input, call the engine and shape the answer.

Parameter and result keys are camelCase, as in Claude Code's own task tools, so a skill written
for those tools works here unchanged. Answers are compact JSON, sent both as structured content
and as text; fields that are empty, null or false are left out.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, ParamSpec

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from mcp_swarm import __version__
from mcp_swarm.config import Settings
from mcp_swarm.errors import SwarmError
from mcp_swarm.ledger import Ledger
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
)
from mcp_swarm.store import Store

logger = logging.getLogger(__name__)
P = ParamSpec("P")

INSTRUCTIONS = """\
mcp-swarm makes you the Mayor of a swarm of worker agents. The loop:
1. Plan: TaskCreate for each piece of work (or TaskCreatePlan for a whole plan in one call), with
   dependencies via blockedBy / TaskUpdate(addBlockedBy=[...]).
2. Find the wave: TaskList(ready=true) lists pending tasks whose blockers are all completed.
3. Work the wave, mark each task in_progress then completed (or failed) with TaskUpdate.
4. Repeat until TaskList shows every task completed.
A failed task keeps blocking its dependents; a deleted one no longer blocks. State is kept in
SQLite, so it survives restarts and can be shared by several sessions."""

_READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
_WRITES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
_UPDATES = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)


def answer(data: BaseModel | dict[str, Any], *, include: set[str] | None = None) -> CallToolResult:
    """A compact JSON answer; defaults (None, empty lists, False) are dropped to save context."""
    if isinstance(data, BaseModel):
        payload: dict[str, Any] = data.model_dump(
            mode="json", by_alias=True, exclude_defaults=True, include=include
        )
    else:
        payload = data
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=payload)


def _validation_message(exc: ValidationError) -> str:
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "input"
        parts.append(f"{where}: {error['msg']}")
    return "invalid input: " + "; ".join(parts)


class _Ledger:
    """Holds the ledger while the server runs; tools look it up at call time."""

    ledger: Ledger | None = None

    def get(self) -> Ledger:
        if self.ledger is None:
            raise ToolError("the server is starting or stopping; try again")
        return self.ledger


def _guarded(
    fn: Callable[P, Coroutine[Any, Any, CallToolResult]],
) -> Callable[P, Coroutine[Any, Any, CallToolResult]]:
    """Turn domain errors into tool errors whose message is the caller's to act on."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
        try:
            return await fn(*args, **kwargs)
        except SwarmError as exc:
            raise ToolError(str(exc)) from exc
        except ValidationError as exc:
            raise ToolError(_validation_message(exc)) from exc

    return call


def _strict_tool(fn: Callable[..., Any], annotations: ToolAnnotations) -> Tool:
    """A tool whose arguments are refused if the schema does not name them, as Claude Code's are."""
    tool = Tool.from_function(fn, annotations=annotations)
    loose = tool.fn_metadata.arg_model
    strict = type(loose.__name__, (loose,), {"model_config": {**loose.model_config, "extra": "forbid"}})
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    return tool


def build_tools(state: _Ledger) -> list[Tool]:
    @_guarded
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

    @_guarded
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

    @_guarded
    async def TaskUpdate(
        taskId: Annotated[TaskId, Field(description="The id of the task to update")],
        status: Annotated[
            TaskStatus | None,
            Field(description="pending, in_progress, completed, failed, or deleted (removes it from lists)"),
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

    @_guarded
    async def TaskGet(
        taskId: Annotated[TaskId, Field(description="The id of the task")],
    ) -> CallToolResult:
        """Everything about one task: description, status, owner, blockedBy (open blockers only),
        blocks, ready, metadata."""
        return answer(await state.get().get(taskId))

    @_guarded
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
        return answer(listing.to_wire())

    return [
        _strict_tool(TaskCreate, _WRITES),
        _strict_tool(TaskCreatePlan, _WRITES),
        _strict_tool(TaskUpdate, _UPDATES),
        _strict_tool(TaskGet, _READ_ONLY),
        _strict_tool(TaskList, _READ_ONLY),
    ]


def build_server(settings: Settings) -> MCPServer[_Ledger]:
    state = _Ledger()

    @asynccontextmanager
    async def lifespan(_: MCPServer[_Ledger]) -> AsyncGenerator[_Ledger]:
        async with await Store.open(settings.db_path) as store:
            state.ledger = Ledger(store, actor="mayor")
            logger.info("mcp-swarm %s serving %s", __version__, settings.db_path)
            try:
                yield state
            finally:
                state.ledger = None

    return MCPServer(
        "mcp-swarm",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=build_tools(state),
        lifespan=lifespan,
        log_level=settings.log_level,
    )
