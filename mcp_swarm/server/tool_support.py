"""What both MCP servers (the Mayor's and a worker's) build their tools from.

Answers are compact JSON, sent both as structured content and as text; fields that are empty,
null or false are left out. Arguments a tool's schema does not name are refused, arguments that
fail their schema are told so in plain sentences, and domain errors become tool errors whose
message says what to do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from mcp_swarm.errors import SwarmError
from mcp_swarm.server.refusals import refusal

P = ParamSpec("P")

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
WRITES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
UPDATES = ToolAnnotations(
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


class _PlainTool(Tool):
    """A tool whose refused arguments are told in plain sentences (see refusals), not in the
    SDK's pydantic dump."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as exc:
            # Only the SDK's refusal of the arguments has their ValidationError as its cause: what
            # the tool itself raised arrives wrapped once more.
            if isinstance(exc.__cause__, ValidationError) and not isinstance(exc, UnexpectedToolError):
                raise ToolError(refusal(exc.__cause__, self.parameters, self.name)) from exc.__cause__
            raise


def guarded(
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
            raise ToolError(refusal(exc)) from exc

    return call


def strict_tool(fn: Callable[..., Any], annotations: ToolAnnotations) -> Tool:
    """A tool whose arguments are refused if the schema does not name them, as Claude Code's are."""
    tool = _PlainTool.from_function(fn, annotations=annotations)
    loose = tool.fn_metadata.arg_model
    strict = type(loose.__name__, (loose,), {"model_config": {**loose.model_config, "extra": "forbid"}})
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    return tool
