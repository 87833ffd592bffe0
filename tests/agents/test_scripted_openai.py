"""The scripted OpenAI Responses server on its own, without the CLI: what Codex gets from it
(tests/agents/test_codex.py drives the real CLI against it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, cast

import pytest

from tests.support.scripted_llm import (
    CustomToolCall,
    FailedResponseTurn,
    FunctionCall,
    HTTPErrorTurn,
    ScriptedOpenAIServer,
    ToolCallsTurn,
)
from tests.support.scripted_llm.codex_config import CODEX_MODEL


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get_content_type(), error.read()


def _sse_events(raw: bytes) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for frame in raw.decode().split("\n\n"):
        lines = frame.splitlines()
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        if data:
            event = cast(dict[str, Any], json.loads("".join(data)))
            # The SSE event name and the payload's type must agree; clients dispatch on either.
            assert f"event: {event['type']}" in lines, frame
            events.append(event)
    return events


_REQUEST: dict[str, Any] = {
    "model": CODEX_MODEL,
    "stream": True,
    "store": False,
    "tools": [{"type": "function", "name": "exec_command"}, {"type": "web_search"}],
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
}


def test_scripted_server_streams_calls_and_skips_side_requests() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+a line long enough to be split\n*** End Patch\n"
    script = [
        ToolCallsTurn(
            [
                FunctionCall("exec_command", {"cmd": "echo a long enough command to be split"}, "c1"),
                CustomToolCall("apply_patch", patch, "c2"),
            ],
            text="Two calls.",
        )
    ]
    with ScriptedOpenAIServer(script, final_text="finished") as llm:
        url = f"{llm.base_url}/responses"
        compaction = {"x-codex-turn-metadata": json.dumps({"request_kind": "compaction"})}
        _, _, raw_side = _post(url, _REQUEST, compaction)
        side_done = [e for e in _sse_events(raw_side) if e["type"] == "response.output_item.done"]
        assert [e["item"]["content"][0]["text"] for e in side_done] == ["Scripted summary"]

        status, content_type, raw = _post(url, _REQUEST, {"x-codex-turn-metadata": '{"request_kind":"turn"}'})
        assert (status, content_type) == (200, "text/event-stream")
        events = _sse_events(raw)
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
        assert events[-1]["type"] == "response.completed"
        output = events[-1]["response"]["output"]
        assert [item["type"] for item in output] == ["message", "function_call", "custom_tool_call"]
        assert [e["item"] for e in events if e["type"] == "response.output_item.done"] == output
        arguments = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
        assert len(arguments) > 1
        assert json.loads("".join(arguments)) == {"cmd": "echo a long enough command to be split"}
        inputs = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
        assert len(inputs) > 1
        assert "".join(inputs) == patch
        text = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert "".join(text) == "Two calls."
        assert (output[1]["call_id"], output[2]["call_id"]) == ("c1", "c2")
        assert events[-1]["response"]["usage"]["total_tokens"] == 15

        # The script is used up: the next request of the loop gets the closing text.
        _, _, raw_final = _post(url, _REQUEST)
        final = _sse_events(raw_final)[-1]["response"]["output"]
        assert final[0]["content"][0]["text"] == "finished"

        assert [r.kind for r in llm.requests] == ["side", "main", "main"]
        assert llm.offered_tools() == ["exec_command", "web_search"]
        assert llm.errors == []


def test_scripted_server_fails_on_cue_and_finds_call_outputs() -> None:
    script = [HTTPErrorTurn(503, "try later"), FailedResponseTurn("no capacity", "server_error")]
    with ScriptedOpenAIServer(script) as llm:
        url = f"{llm.base_url}/responses"
        status, content_type, raw = _post(url, _REQUEST)
        assert (status, content_type) == (503, "application/json")
        assert json.loads(raw)["error"]["message"] == "try later"

        _, _, raw_failed = _post(url, _REQUEST)
        failed = _sse_events(raw_failed)[-1]
        assert failed["type"] == "response.failed"
        assert failed["response"]["error"] == {"code": "server_error", "message": "no capacity"}

        calls: list[Any] = [
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": '{"ok": true}'},
            {
                "type": "custom_tool_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "Success."}],
            },
        ]
        _post(url, {**_REQUEST, "input": [*_REQUEST["input"], *calls]})
        assert llm.call_output("c1").json() == {"ok": True}
        assert (llm.call_output("c2").type, llm.call_output("c2").text) == (
            "custom_tool_call_output",
            "Success.",
        )
        with pytest.raises(KeyError, match="c3"):
            llm.call_output("c3")
        first, last = llm.main_requests[0], llm.main_requests[-1]
        assert last.extends(first)
        # Continuing means adding to the conversation: neither going back nor standing still.
        assert not first.extends(last)
        assert not first.extends(first)
