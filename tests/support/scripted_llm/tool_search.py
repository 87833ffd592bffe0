"""The scripted Responses API, plus the two item kinds Codex uses for deferred MCP tools.

Codex 0.169 defers MCP tools: the model first calls the client-side `tool_search` tool, whose
answer (`tool_search_output`) holds a namespace `mcp__<server>` with the tools found, and then
calls one as a `function_call` named `<tool>` in that namespace.
"""

from __future__ import annotations

import json
from typing import Any

from .openai import ScriptedOpenAIServer

__all__ = ["TOOL_SEARCH_CALL", "ToolSearchOpenAIServer"]

TOOL_SEARCH_CALL = "call_tool_search"


class ToolSearchOpenAIServer(ScriptedOpenAIServer):
    """A scripted `FunctionCall("tool_search", {...})` goes out as a client-executed
    `tool_search_call`, and a `FunctionCall("mcp__<server>__<tool>", ...)` as a `function_call`
    named `<tool>` in the namespace `mcp__<server>`, as the real API sends a call of a tool that
    a `tool_search_output` namespace made available.
    """

    def build_events(self, turn: Any, model: str) -> list[dict[str, Any]]:
        events = super().build_events(turn, model)
        searches = {
            event["item"]["id"]
            for event in events
            if event.get("type") == "response.output_item.added" and _is_search(event["item"])
        }
        rewritten: list[dict[str, Any]] = []
        for event in events:
            if event.get("item_id") in searches:
                continue  # argument deltas: a tool_search_call carries its arguments as an object
            if "item" in event:
                event = {**event, "item": _rewrite(event["item"])}
            if event.get("type") == "response.completed":
                response = event["response"]
                event = {
                    **event,
                    "response": {**response, "output": [_rewrite(i) for i in response["output"]]},
                }
            rewritten.append(event)
        return rewritten


def _is_search(item: dict[str, Any]) -> bool:
    return item.get("type") == "function_call" and item.get("name") == "tool_search"


def _rewrite(item: dict[str, Any]) -> dict[str, Any]:
    if _is_search(item):
        return {
            "type": "tool_search_call",
            "id": item["id"],
            "call_id": item["call_id"],
            "status": "completed",
            "execution": "client",
            "arguments": json.loads(item.get("arguments") or "{}"),
        }
    name = str(item.get("name", ""))
    if item.get("type") == "function_call" and name.startswith("mcp__") and "__" in name[5:]:
        namespace, tool = name[5:].split("__", 1)
        return {**item, "name": tool, "namespace": f"mcp__{namespace}"}
    return item
