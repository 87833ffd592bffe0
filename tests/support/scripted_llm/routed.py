"""Scripted model servers for several agent conversations at once: the workers of a swarm, each
started by the real CLI against one server, some of them in parallel.

A single script is consumed in arrival order, which parallel workers make a race. Here each
conversation has a script of its own, picked by a key found in what the request carries (a
worker's prompt names its task: "Your one task is task 3: ..."); each conversation's agent-loop
requests take its own script's steps in order.

A scripted call of an MCP tool, `mcp__<server>__<tool>`, goes out under the name the CLI offered
that tool by, as a model calls what it was shown: the server's name in the CLI's configuration
is the runtime's business (Codex, say, may name a worker's server otherwise than Claude Code),
not the script's.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar, cast

from .anthropic import RecordedRequest, ScriptedAnthropicServer, ScriptStep, ToolUseTurn
from .openai import FunctionCall, ResponsesRequest, ResponsesTurn, ToolCallsTurn
from .tool_search import ToolSearchOpenAIServer

__all__ = ["Conversations", "RoutedAnthropicServer", "RoutedToolSearchServer", "offered_as", "task_of_worker"]

StepT = TypeVar("StepT")
_TASK = re.compile(r"Your one task is task (\d+):")


def task_of_worker(conversation: str) -> str | None:
    """The task id a swarm worker's prompt names, anywhere in the conversation's text."""
    found = _TASK.search(conversation)
    return found.group(1) if found else None


class Conversations(Generic[StepT]):
    """A script per conversation key; `take` hands out the next step of the key's script."""

    def __init__(self, scripts: Mapping[str, Sequence[StepT]], key_of: Callable[[str], str | None]) -> None:
        self._scripts = {key: list(steps) for key, steps in scripts.items()}
        self._taken = dict.fromkeys(self._scripts, 0)
        self._key_of = key_of
        self._lock = threading.Lock()
        self.unrouted: list[str] = []

    def take(self, conversation: str) -> StepT | None:
        """The next step for the conversation this text belongs to; None once its script is used
        up, or when no script is its (recorded in `unrouted`)."""
        key = self._key_of(conversation)
        with self._lock:
            if key is None or key not in self._scripts:
                self.unrouted.append(conversation[:200])
                return None
            position = self._taken[key]
            if position >= len(self._scripts[key]):
                return None
            self._taken[key] = position + 1
            return self._scripts[key][position]

    def left(self) -> dict[str, int]:
        """How many steps each conversation has not taken yet, for those with any left."""
        with self._lock:
            return {
                key: len(steps) - self._taken[key]
                for key, steps in self._scripts.items()
                if self._taken[key] < len(steps)
            }


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def offered_as(name: str, offered: Iterable[str]) -> str:
    """The name an MCP tool call `mcp__<server>__<tool>` goes out by: the one offered name of that
    tool, whatever its server is called; `name` itself if it is offered, or if none or several are."""
    offered = list(offered)
    if not name.startswith("mcp__") or name in offered:
        return name
    tool = name[len("mcp__") :].partition("__")[2]
    matches = [o for o in offered if o.startswith("mcp__") and o[len("mcp__") :].partition("__")[2] == tool]
    return matches[0] if len(matches) == 1 else name


class RoutedAnthropicServer(ScriptedAnthropicServer):
    """The scripted Messages API with a script per conversation (Claude Code workers)."""

    def __init__(
        self,
        scripts: Mapping[str, Sequence[ScriptStep]],
        key_of: Callable[[str], str | None] = task_of_worker,
    ) -> None:
        super().__init__([])
        self.conversations = Conversations(scripts, key_of)

    def take_turn(self, request: RecordedRequest) -> ScriptStep:
        if request.kind != "main":
            return super().take_turn(request)
        self.record(request)
        step = self.conversations.take(_text((request.body or {}).get("messages")))
        if step is None:
            return self._reply_turn(self.final_text)
        if isinstance(step, ToolUseTurn):
            offered = request.tool_names
            calls = [replace(call, name=offered_as(call.name, offered)) for call in step.calls]
            return replace(step, calls=calls)
        return step


class RoutedToolSearchServer(ToolSearchOpenAIServer):
    """The scripted Responses API, with Codex's deferred MCP tools, and a script per conversation
    (Codex workers)."""

    def __init__(
        self,
        scripts: Mapping[str, Sequence[ResponsesTurn]],
        key_of: Callable[[str], str | None] = task_of_worker,
    ) -> None:
        super().__init__([])
        self.conversations = Conversations(scripts, key_of)

    def take_turn(self, request: ResponsesRequest) -> ResponsesTurn:
        if request.kind != "main":
            return super().take_turn(request)
        self.record(request)
        step = self.conversations.take(_text(request.input_items))
        if step is None:
            return self._reply_turn(self.final_text)
        if isinstance(step, ToolCallsTurn):
            offered = _searched_tools(request)
            calls = [
                replace(call, name=offered_as(call.name, offered)) if isinstance(call, FunctionCall) else call
                for call in step.calls
            ]
            return replace(step, calls=calls)
        return step


def _searched_tools(request: ResponsesRequest) -> list[str]:
    """The MCP tools Codex's tool_search found so far in this conversation, as
    `<namespace>__<tool>` (the namespace is `mcp__<server>`)."""
    found: list[str] = []
    for item in request.input_items:
        if item.get("type") != "tool_search_output":
            continue
        for namespace in cast(list[dict[str, Any]], item.get("tools") or []):
            for tool in cast(list[dict[str, Any]], namespace.get("tools") or []):
                found.append(f"{namespace.get('name')}__{tool.get('name')}")
    return found
