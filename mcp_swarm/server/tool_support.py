"""What both MCP servers (the Mayor's and a worker's) build their tools from.

Answers are compact JSON, sent both as structured content and as text; fields that are empty,
null or false are left out. Arguments a tool's schema does not name are refused, and domain
errors become tool errors whose message says what to do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any, LiteralString, ParamSpec, Self, cast

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from mcp_swarm.errors import SwarmError

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


# Errors named in one refusal: a list of ten thousand wrong items is one mistake, not a
# ten-thousand-line message (two megabytes, measured) for an agent to read.
MAX_REPORTED_ERRORS = 10


def _validation_message(exc: ValidationError) -> str:
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "input"
        parts.append(f"{where}: {error['msg']}")
    return "invalid input: " + "; ".join(parts)


def _at_most_reported(exc: ValidationError) -> ValidationError:
    """The same error, naming only its first MAX_REPORTED_ERRORS problems and how many more there are."""
    errors = exc.errors(include_url=False)
    if len(errors) <= MAX_REPORTED_ERRORS:
        return exc
    details = [
        InitErrorDetails(
            type=PydanticCustomError(
                cast(LiteralString, error["type"]), "{message}", {"message": error["msg"]}
            ),
            loc=error["loc"],
            input=error["input"],
        )
        for error in errors[:MAX_REPORTED_ERRORS]
    ]
    more = f"and {len(errors) - MAX_REPORTED_ERRORS} more errors ({len(errors)} in all)"
    details.append(
        InitErrorDetails(type=PydanticCustomError("more_errors", "{message}", {"message": more}), input=None)
    )
    return ValidationError.from_exception_data(exc.title, details)


class _FewErrors(BaseModel):
    """Arguments whose refusal names at most MAX_REPORTED_ERRORS problems: the SDK puts every
    error of the arguments' validation in the tool's error message."""

    @model_validator(mode="wrap")
    @classmethod
    def _few_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as exc:
            raise _at_most_reported(exc) from None


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
            raise ToolError(_validation_message(exc)) from exc

    return call


def strict_tool(fn: Callable[..., Any], annotations: ToolAnnotations) -> Tool:
    """A tool whose arguments are refused if the schema does not name them, as Claude Code's are."""
    tool = Tool.from_function(fn, annotations=annotations)
    loose = tool.fn_metadata.arg_model
    strict = type(
        loose.__name__, (_FewErrors, loose), {"model_config": {**loose.model_config, "extra": "forbid"}}
    )
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    return tool
