"""A scripted stand-in for the Anthropic Messages API, for driving a real agent CLI in tests.

The real Claude Code CLI is pointed at this server with ``ANTHROPIC_BASE_URL``. Every request that
belongs to the main conversation takes the next turn of the script; everything else the CLI sends
(side requests, token counting, connectivity probes) gets a harmless answer without touching the
script, so a test's script only describes what the agent should *do*.

What Claude Code 2.1.197 sends in ``-p`` mode, as observed:

* ``HEAD /`` once at start-up, a reachability probe; any 2xx will do.
* ``POST /v1/messages?beta=true`` with ``"stream": true`` for each main-conversation turn. Those
  carry the full ``tools`` list (built-ins plus ``mcp__<server>__<tool>``), a list-shaped ``system``
  prompt, a ``"role": "system"`` entry inside ``messages``, and ``thinking``,
  ``context_management``, ``output_config`` and ``metadata`` fields that need no answer.
* Unless ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` is set, a session-title request too: same
  model, also streamed, but ``"tools": []``, a "Generate a concise, sentence-case title" system
  prompt and ``output_config.format`` asking for ``{"title": string}`` as JSON. The CLI knows other
  helper queries of this kind (tool-use summaries, bash prefix extraction, quota probes) that a
  ``-p`` run did not make here; all of them are one-shot queries without tools, so "has a
  non-empty ``tools`` array" is what tells the agent loop apart, whatever the model or prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from ._http import Exchange, JSONObject, RecordedHTTPRequest, ScriptedServer, chunks

__all__ = [
    "APIErrorTurn",
    "RecordedRequest",
    "RequestKind",
    "ScriptStep",
    "ScriptedAnthropicServer",
    "ScriptedTurn",
    "TextTurn",
    "ToolCall",
    "ToolResult",
    "ToolUseTurn",
    "is_main_conversation",
]

RequestKind = Literal["main", "side", "count_tokens", "other"]


@dataclass(frozen=True)
class ToolCall:
    """One ``tool_use`` block the scripted model emits.

    ``id`` is what the agent echoes back as ``tool_use_id`` in its ``tool_result``; giving it a
    readable value lets a test look the result up without reconstructing generated ids.
    """

    name: str
    input: Mapping[str, Any] = field(default_factory=dict[str, Any])
    id: str | None = None


@dataclass(frozen=True)
class TextTurn:
    """A turn in which the model only talks; with ``end_turn`` this ends the agent's loop."""

    text: str


@dataclass(frozen=True)
class ToolUseTurn:
    """A turn in which the model calls one or more tools (optionally after a short text)."""

    calls: Sequence[ToolCall]
    text: str | None = None

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError("a ToolUseTurn needs at least one ToolCall")


ScriptedTurn = TextTurn | ToolUseTurn


@dataclass(frozen=True)
class APIErrorTurn:
    """The request is refused with ``status`` and an Anthropic-style ``{"type": "error", ...}`` body.

    Claude Code 2.1.197 retries a 5xx with back-off for well over 40 s, but not a 400: that ends a
    ``-p`` run at once (exit status 1) with a ``result`` event that has ``is_error: true``,
    ``api_error_status`` and ``"result": "API Error: 400 <message>"``.
    """

    status: int = 400
    message: str = "scripted API error"
    type: str = "invalid_request_error"


# Everything a script may hold: a turn of the model, or a refused request.
ScriptStep = ScriptedTurn | APIErrorTurn


@dataclass(frozen=True)
class RecordedRequest(RecordedHTTPRequest):
    """One HTTP request as received, with the parsed JSON body when there was one."""

    kind: RequestKind


@dataclass(frozen=True)
class ToolResult:
    """A ``tool_result`` block the agent sent back, flattened for assertions."""

    tool_use_id: str
    text: str
    is_error: bool
    raw: JSONObject

    def json(self) -> Any:
        """The result text parsed as JSON, for tools (like ours) that answer with a JSON document."""
        return json.loads(self.text)


def is_main_conversation(body: Mapping[str, Any]) -> bool:
    """Whether a ``/v1/messages`` body belongs to the agent loop rather than a side request.

    The agent loop always offers its tools; title generation, summaries, quota checks and other
    helper queries are made without any, which is the one signal that is stable across models and
    prompt wording.
    """
    tools = body.get("tools")
    return isinstance(tools, list) and len(cast(list[Any], tools)) > 0


def _block_text(content: Any) -> str:
    """Text of a ``tool_result`` content, which is either a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in cast(list[Any], content):
        if isinstance(block, dict):
            typed = cast(JSONObject, block)
            if typed.get("type") == "text" and isinstance(typed.get("text"), str):
                parts.append(cast(str, typed["text"]))
    return "".join(parts)


def _iter_tool_results(body: Mapping[str, Any]) -> Iterator[ToolResult]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for message in cast(list[Any], messages):
        if not isinstance(message, dict):
            continue
        content = cast(JSONObject, message).get("content")
        if not isinstance(content, list):
            continue
        for block in cast(list[Any], content):
            if not isinstance(block, dict):
                continue
            typed = cast(JSONObject, block)
            if typed.get("type") != "tool_result":
                continue
            yield ToolResult(
                tool_use_id=str(typed.get("tool_use_id")),
                text=_block_text(typed.get("content")),
                is_error=bool(typed.get("is_error", False)),
                raw=typed,
            )


def _placeholder(schema: Any, text: str) -> Any:
    """A minimal value that satisfies a simple JSON schema, using ``text`` for strings."""
    kind = cast(JSONObject, schema).get("type") if isinstance(schema, dict) else None
    if kind == "object":
        properties = cast(JSONObject, schema).get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: _placeholder(sub, text) for name, sub in cast(JSONObject, properties).items()}
    scalars: dict[str, Any] = {"array": [], "number": 0, "integer": 0, "boolean": False, "null": None}
    return scalars.get(str(kind), text)


def _side_reply(body: Mapping[str, Any] | None, text: str) -> str:
    """The answer to a side request.

    Some side requests ask for structured output (session titles come with
    ``output_config.format = {"type": "json_schema", ...}``); plain text there would only make the
    CLI log a parse failure, so they get a placeholder document of the requested shape instead.
    """
    config = body.get("output_config") if body is not None else None
    output_format = cast(JSONObject, config).get("format") if isinstance(config, dict) else None
    if isinstance(output_format, dict) and cast(JSONObject, output_format).get("type") == "json_schema":
        return json.dumps(_placeholder(cast(JSONObject, output_format).get("schema"), text))
    return text


def _stream_events(message: JSONObject) -> Iterator[JSONObject]:
    """The SSE events that together make up ``message``, as the real API streams them.

    Text and tool input are split into several deltas on purpose: a client that only handled a
    single delta per block would pass against a mock that never splits, and fail against the API.
    """
    usage = cast(JSONObject, message["usage"])
    yield {
        "type": "message_start",
        "message": {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        },
    }
    for index, block in enumerate(cast(list[JSONObject], message["content"])):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            for piece in chunks(cast(str, block["text"]), 16):
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "input": {}},
            }
            for piece in chunks(json.dumps(block["input"]), 24):
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield {"type": "message_stop"}


class ScriptedAnthropicServer(ScriptedServer[ScriptStep, RecordedRequest]):
    """An Anthropic Messages API on 127.0.0.1 that plays back a fixed script.

    Use as a context manager; while it runs, ``base_url`` is what ``ANTHROPIC_BASE_URL`` should be.
    Main-conversation requests consume ``script`` in order; once it is exhausted they get
    ``final_text``. Side requests always get ``side_text``.
    """

    _thread_name = "scripted-anthropic"

    def __init__(
        self,
        script: Sequence[ScriptStep],
        *,
        final_text: str = "done",
        side_text: str = "Scripted session",
        classify: Callable[[Mapping[str, Any]], bool] = is_main_conversation,
    ) -> None:
        super().__init__(script, request_type=RecordedRequest, final_text=final_text, side_text=side_text)
        self._classify = classify
        self.usage_input_tokens = 10

    # -- answering -------------------------------------------------------------------------------

    def answer_get(self, path: str) -> JSONObject:
        # An empty model list is a valid answer should the CLI ever validate its model name.
        return {"data": [], "has_more": False} if path == "/v1/models" else {}

    def answer_post(self, exchange: Exchange, path: str, body: JSONObject | None) -> None:
        if path == "/v1/messages/count_tokens":
            self.record(self.recorded(exchange, body, "count_tokens"))
            exchange.send_json({"input_tokens": self.usage_input_tokens})
        elif path == "/v1/messages" and body is not None:
            self._answer_messages(exchange, body)
        else:
            self.record(self.recorded(exchange, body, "other"))
            exchange.send_json({})

    def _answer_messages(self, exchange: Exchange, body: JSONObject) -> None:
        turn = self.take_turn(self.recorded(exchange, body, "main" if self.is_main(body) else "side"))
        if isinstance(turn, APIErrorTurn):
            error = {"type": "error", "error": {"type": turn.type, "message": turn.message}}
            exchange.send_json(error, status=turn.status)
            return
        model = str(body.get("model") or "claude-scripted")
        message = self.build_message(turn, model)
        if body.get("stream") is True:
            exchange.send_events(_stream_events(message))
        else:
            exchange.send_json(message)

    def is_main(self, body: Mapping[str, Any]) -> bool:
        return self._classify(body)

    def _reply_turn(self, text: str) -> ScriptStep:
        return TextTurn(text)

    def _side_text(self, request: RecordedRequest) -> str:
        return _side_reply(request.body, self.side_text)

    def build_message(self, turn: ScriptedTurn, model: str) -> JSONObject:
        content: list[JSONObject] = []
        if turn.text:
            content.append({"type": "text", "text": turn.text})
        stop_reason = "end_turn"
        if isinstance(turn, ToolUseTurn):
            stop_reason = "tool_use"
            for call in turn.calls:
                content.append(
                    {
                        "type": "tool_use",
                        "id": call.id or self._new_id("toolu_scripted"),
                        "name": call.name,
                        "input": dict(call.input),
                    }
                )
        return {
            "id": self._new_id("msg_scripted"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.usage_input_tokens,
                "output_tokens": 5,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    # -- what tests inspect ----------------------------------------------------------------------

    def tool_results(self) -> dict[str, ToolResult]:
        """Every ``tool_result`` the agent sent back, by ``tool_use_id``.

        The agent resends the whole conversation each turn, so later requests repeat earlier
        results; the latest copy wins, which is also the one the model would have seen last.
        """
        found: dict[str, ToolResult] = {}
        for request in self.main_requests:
            if request.body is not None:
                for result in _iter_tool_results(request.body):
                    found[result.tool_use_id] = result
        return found

    def tool_result(self, tool_use_id: str) -> ToolResult:
        """The ``tool_result`` for one scripted call; ``KeyError`` lists what did arrive."""
        results = self.tool_results()
        if tool_use_id not in results:
            raise KeyError(f"no tool_result for {tool_use_id!r}; received results for {sorted(results)}")
        return results[tool_use_id]
