"""The scripted Anthropic Messages server on its own, without the CLI: what Claude Code gets from it
(tests/agents/test_claude.py drives the real CLI against it)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any, cast

import pytest

from tests.support.scripted_llm import ScriptedAnthropicServer, ToolCall, ToolUseTurn


def _post(url: str, body: dict[str, Any]) -> tuple[str, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get_content_type(), response.read()


def _sse_events(raw: bytes) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for frame in raw.decode().split("\n\n"):
        data = [line.removeprefix("data: ") for line in frame.splitlines() if line.startswith("data: ")]
        if data:
            events.append(cast(dict[str, Any], json.loads("".join(data))))
    return events


_MAIN_BODY: dict[str, Any] = {
    "model": "claude-opus-4-8",
    "max_tokens": 64000,
    "tools": [{"name": "mcp__x__echo", "input_schema": {"type": "object"}}],
    "messages": [{"role": "user", "content": "hi"}],
}


def test_scripted_server_streams_tool_use_and_skips_side_requests() -> None:
    script = [ToolUseTurn([ToolCall("mcp__x__echo", {"word": "a long enough word to be split"}, id="t1")])]
    with ScriptedAnthropicServer(script, final_text="finished") as llm:
        messages_url = f"{llm.base_url}/v1/messages?beta=true"
        # A title request like Claude Code's: no tools, structured output wanted.
        side = {
            "model": "claude-opus-4-8",
            "tools": [],
            "messages": [{"role": "user", "content": "<session>hi</session>"}],
            "output_config": {
                "format": {
                    "type": "json_schema",
                    "schema": {
                        "type": "object",
                        "properties": {"title": {"type": "string"}},
                        "required": ["title"],
                    },
                }
            },
        }
        _, raw_side = _post(messages_url, side)
        assert json.loads(json.loads(raw_side)["content"][0]["text"]) == {"title": "Scripted session"}

        content_type, raw = _post(messages_url, {**_MAIN_BODY, "stream": True})
        assert content_type == "text/event-stream"
        events = _sse_events(raw)
        assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
        assert events[-2]["delta"]["stop_reason"] == "tool_use"
        assert events[-1]["type"] == "message_stop"
        partial = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
        assert json.loads(partial) == {"word": "a long enough word to be split"}

        # The script is used up: the next main request gets the closing text, not streamed.
        _, raw_final = _post(messages_url, _MAIN_BODY)
        final = json.loads(raw_final)
        assert final["stop_reason"] == "end_turn"
        assert final["content"] == [{"type": "text", "text": "finished"}]

        _, raw_count = _post(f"{llm.base_url}/v1/messages/count_tokens", _MAIN_BODY)
        assert json.loads(raw_count) == {"input_tokens": 10}
        assert [r.kind for r in llm.requests] == ["side", "main", "main", "count_tokens"]
        assert llm.errors == []


def test_scripted_server_finds_tool_results() -> None:
    with ScriptedAnthropicServer([]) as llm:
        reply = {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": '{"id":"1"}'}],
                },
                {"type": "tool_result", "tool_use_id": "t2", "content": "denied", "is_error": True},
            ],
        }
        _post(f"{llm.base_url}/v1/messages", {**_MAIN_BODY, "messages": [*_MAIN_BODY["messages"], reply]})
        assert llm.tool_result("t1").json() == {"id": "1"}
        assert llm.tool_result("t2").is_error
        with pytest.raises(KeyError, match="t3"):
            llm.tool_result("t3")
