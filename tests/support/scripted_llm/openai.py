"""A scripted stand-in for the OpenAI Responses API, for driving a real agent CLI in tests.

The real Codex CLI is pointed at this server through a ``model_providers`` entry in its
``config.toml`` (``base_url`` = ``ScriptedOpenAIServer.base_url``, ``wire_api = "responses"``).
Every request of the agent loop takes the next turn of the script; anything else gets a harmless
answer without touching the script, so a test's script only describes what the agent should *do*.

What ``codex exec`` 0.169 sends, as observed:

* Only ``POST /v1/responses`` (the provider's ``base_url`` plus ``/responses``), always with
  ``"stream": true`` and ``"store": false``. There is no ``previous_response_id``: every request
  carries the whole conversation in ``input`` (developer instructions, an ``<environment_context>``
  user message, the prompt, then ``function_call``/``function_call_output`` pairs and assistant
  messages). A continued conversation, ``codex exec resume`` included, is therefore a request whose
  ``input`` starts with the previous request's ``input``, item for item (see ``extends``).
* Headers ``session-id``/``thread-id`` holding the thread id that ``codex exec --json`` prints, and
  ``x-codex-turn-metadata``, a JSON document whose ``request_kind`` is ``"turn"`` for the agent
  loop. Nothing else was seen in ``exec`` mode, but the CLI knows other kinds (compaction, for
  one); those are told apart by that field and never consume the script.
* The tools offered depend on the model's bundled metadata. For ``gpt-5.5`` they are top-level
  ``tools``: ``exec_command`` (a function; ``{"cmd": str}`` plus optional ``workdir``,
  ``yield_time_ms``, ...), ``write_stdin``, ``apply_patch`` (a *custom* freeform tool: its input is
  the patch text itself and its answer a ``custom_tool_call_output``), ``view_image``,
  ``request_user_input``, goal tools, and hosted ``tool_search``/``web_search`` entries without a
  ``name``. Newer slugs (gpt-5.6-*, gpt-6*) use "code mode" instead: no top-level ``tools``, but an
  ``additional_tools`` input item whose only way to act is a JavaScript ``exec`` tool, which a
  script of plain function calls cannot drive.
* Codex acts on ``response.output_item.done`` items and on ``response.completed``, whose ``usage``
  ends up in the ``turn.completed`` event (summed over the whole thread, not per run). The deltas
  the real API streams before them are sent as well, split into several pieces, so that a client
  that depended on them would be exercised the way the real API exercises it.
* An HTTP 5xx, or a ``response.failed`` with a retryable code such as ``server_error``, is retried,
  each retry taking the next scripted turn: with the default provider settings a steady 500 was
  requested 30 times (a first stream attempt and 5 reconnects, each of them 5 request attempts)
  over about 25 s before the turn failed, every reconnect printed as an ``error`` event. A
  provider with ``request_max_retries = 0`` and ``stream_max_retries = 0`` fails the turn at once,
  which is what a test scripting a failure wants.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, cast

from ._http import (
    Exchange,
    JSONObject,
    RecordedHTTPRequest,
    ScriptedServer,
    chunks,
    header_value,
    parse_json_object,
)

__all__ = [
    "CallOutput",
    "CustomToolCall",
    "FailedResponseTurn",
    "FunctionCall",
    "HTTPErrorTurn",
    "MessageTurn",
    "RequestKind",
    "ResponsesRequest",
    "ResponsesTurn",
    "ScriptedOpenAIServer",
    "ToolCallsTurn",
    "is_agent_turn",
]

RequestKind = Literal["main", "side", "other"]

TURN_METADATA_HEADER = "x-codex-turn-metadata"


@dataclass(frozen=True)
class FunctionCall:
    """A ``function_call`` output item, for tools with JSON arguments such as ``exec_command``.

    ``call_id`` is what the agent echoes back in its ``function_call_output``; giving it a readable
    value lets a test look the output up without reconstructing generated ids.
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict[str, Any])
    call_id: str | None = None


@dataclass(frozen=True)
class CustomToolCall:
    """A ``custom_tool_call`` output item, for freeform tools such as Codex's ``apply_patch``."""

    name: str
    input: str
    call_id: str | None = None


@dataclass(frozen=True)
class MessageTurn:
    """A turn in which the model only answers; a turn without tool calls ends the agent's loop."""

    text: str


@dataclass(frozen=True)
class ToolCallsTurn:
    """A turn in which the model calls one or more tools (optionally after a short message)."""

    calls: Sequence[FunctionCall | CustomToolCall]
    text: str | None = None

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError("a ToolCallsTurn needs at least one call")


@dataclass(frozen=True)
class HTTPErrorTurn:
    """The request is refused with ``status`` and an OpenAI-style ``{"error": {...}}`` body.

    Codex shows the body of a 4xx as the error message, but replaces a 5xx by a generic "high
    demand" text, so only a 4xx lets a test recognise its own message in the CLI's output.
    """

    status: int = 500
    message: str = "scripted server error"
    type: str = "server_error"
    code: str | None = None


@dataclass(frozen=True)
class FailedResponseTurn:
    """The stream starts normally and then ends in ``response.failed`` carrying this error."""

    message: str = "scripted response failure"
    code: str = "server_error"


ResponsesTurn = MessageTurn | ToolCallsTurn | HTTPErrorTurn | FailedResponseTurn
# The turns answered with an event stream rather than an HTTP error.
_StreamedTurn = MessageTurn | ToolCallsTurn | FailedResponseTurn


def _text_of(content: Any) -> str:
    """Text of a message content or a tool output: a string, or a list of typed text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for part in cast(list[Any], content):
        if isinstance(part, dict):
            text = cast(JSONObject, part).get("text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


@dataclass(frozen=True)
class CallOutput:
    """A ``function_call_output`` or ``custom_tool_call_output`` the agent sent back, flattened."""

    call_id: str
    type: str
    text: str
    raw: JSONObject

    def json(self) -> Any:
        """The output parsed as JSON, for tools that answer with a JSON document."""
        return json.loads(self.text)


@dataclass(frozen=True)
class ResponsesRequest(RecordedHTTPRequest):
    """One HTTP request as received, with the parsed JSON body when there was one."""

    kind: RequestKind

    @property
    def thread_id(self) -> str | None:
        """The Codex thread (session) this request belongs to, as its headers name it."""
        return self.header("thread-id") or self.header("session-id")

    @property
    def turn_metadata(self) -> JSONObject:
        """The ``x-codex-turn-metadata`` header, parsed; empty when absent or not a JSON object."""
        return _turn_metadata(self.headers)

    @property
    def input_items(self) -> list[JSONObject]:
        """The conversation the request carries, in order."""
        items = self.body.get("input") if self.body is not None else None
        if not isinstance(items, list):
            return []
        return [cast(JSONObject, item) for item in cast(list[Any], items) if isinstance(item, dict)]

    def _tool_name(self, tool: JSONObject) -> Any:
        # Hosted tools (``web_search``, ``tool_search``) have no name; they go by their type.
        return tool.get("name", tool.get("type"))

    def messages(self, role: str) -> list[str]:
        """Texts of the ``message`` items with ``role`` in ``input``, in order."""
        return [
            _text_of(item.get("content"))
            for item in self.input_items
            if item.get("type") == "message" and item.get("role") == role
        ]

    def call_outputs(self) -> Iterator[CallOutput]:
        for item in self.input_items:
            kind = item.get("type")
            if kind in ("function_call_output", "custom_tool_call_output"):
                yield CallOutput(
                    call_id=str(item.get("call_id")),
                    type=str(kind),
                    text=_text_of(item.get("output")),
                    raw=item,
                )

    def extends(self, earlier: ResponsesRequest) -> bool:
        """Whether this request continues ``earlier``'s conversation.

        With ``store: false`` the client resends everything, so continuing means repeating the
        earlier ``input`` unchanged as a prefix and adding to it.
        """
        before, now = earlier.input_items, self.input_items
        return len(now) > len(before) and now[: len(before)] == before


def _turn_metadata(headers: Mapping[str, str]) -> JSONObject:
    raw = header_value(headers, TURN_METADATA_HEADER)
    parsed = parse_json_object(raw) if raw is not None else None
    return parsed if parsed is not None else {}


def is_agent_turn(headers: Mapping[str, str]) -> bool:
    """Whether a ``/responses`` request belongs to the agent loop rather than a side request.

    Codex labels each model request in ``x-codex-turn-metadata``; a request without the header
    (another client, or a future CLI that drops it) is taken to be part of the loop, since
    consuming the script is the behaviour a test can see and fix, unlike a silently skipped turn.
    """
    kind = _turn_metadata(headers).get("request_kind")
    return kind is None or kind == "turn"


def _error_body(message: str, error_type: str, code: str | None = None) -> JSONObject:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _item_events(index: int, item: JSONObject) -> Iterator[JSONObject]:
    """The events that stream one finished output item, ``output_item.added`` to ``.done``."""
    item_id = item["id"]
    kind = item["type"]
    if kind == "message":
        text = _text_of(item["content"])
        part: JSONObject = {"type": "output_text", "text": "", "annotations": []}
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "content": []},
        }
        located = {"item_id": item_id, "output_index": index, "content_index": 0}
        yield {"type": "response.content_part.added", **located, "part": part}
        for piece in chunks(text, 16):
            yield {"type": "response.output_text.delta", **located, "delta": piece}
        yield {"type": "response.output_text.done", **located, "text": text}
        yield {"type": "response.content_part.done", **located, "part": {**part, "text": text}}
    else:
        field_name, prefix = ("arguments", "function_call_arguments")
        if kind == "custom_tool_call":
            field_name, prefix = ("input", "custom_tool_call_input")
        full = cast(str, item[field_name])
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", field_name: ""},
        }
        located = {"item_id": item_id, "output_index": index}
        for piece in chunks(full, 24):
            yield {"type": f"response.{prefix}.delta", **located, "delta": piece}
        yield {"type": f"response.{prefix}.done", **located, field_name: full}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


class ScriptedOpenAIServer(ScriptedServer[ResponsesTurn, ResponsesRequest]):
    """An OpenAI Responses API on 127.0.0.1 that plays back a fixed script.

    Use as a context manager; while it runs, ``base_url`` is what a model provider's ``base_url``
    should be. Agent-loop requests consume ``script`` in order; once it is exhausted they get
    ``final_text``. Side requests always get ``side_text``.
    """

    _thread_name = "scripted-openai"

    def __init__(
        self,
        script: Sequence[ResponsesTurn],
        *,
        final_text: str = "done",
        side_text: str = "Scripted summary",
        classify: Callable[[Mapping[str, str]], bool] = is_agent_turn,
        input_tokens: int = 10,
        output_tokens: int = 5,
    ) -> None:
        super().__init__(script, request_type=ResponsesRequest, final_text=final_text, side_text=side_text)
        self._classify = classify
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens

    @property
    def base_url(self) -> str:
        """The API root including ``/v1``, as OpenAI-compatible providers are configured."""
        return f"{super().base_url}/v1"

    # -- answering -------------------------------------------------------------------------------

    def answer_get(self, path: str) -> JSONObject:
        # Codex 0.169 did not list models against a custom provider; should it start to, an empty
        # list in both the OpenAI shape ("data") and Codex's own ("models") keeps the bundled
        # metadata in charge.
        listing: JSONObject = {"object": "list", "data": [], "models": []}
        return listing if path.endswith("/models") else {}

    def answer_post(self, exchange: Exchange, path: str, body: JSONObject | None) -> None:
        if path.endswith("/responses") and body is not None:
            self._answer_responses(exchange, body)
        else:
            self.record(self.recorded(exchange, body, "other"))
            missing = _error_body(f"no such endpoint: {path}", "invalid_request_error")
            exchange.send_json(missing, status=HTTPStatus.NOT_FOUND)

    def _answer_responses(self, exchange: Exchange, body: JSONObject) -> None:
        kind: RequestKind = "main" if self.is_main(dict(exchange.headers.items())) else "side"
        turn = self.take_turn(self.recorded(exchange, body, kind))
        if isinstance(turn, HTTPErrorTurn):
            exchange.send_json(_error_body(turn.message, turn.type, turn.code), status=turn.status)
            return
        model = str(body.get("model") or "scripted-model")
        exchange.send_events(self.build_events(turn, model))

    def is_main(self, headers: Mapping[str, str]) -> bool:
        return self._classify(headers)

    def _reply_turn(self, text: str) -> ResponsesTurn:
        return MessageTurn(text)

    def build_events(self, turn: _StreamedTurn, model: str) -> list[JSONObject]:
        """The SSE events answering one request, numbered as the real API numbers them."""
        response: JSONObject = {
            "id": self._new_id("resp_scripted"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "model": model,
            "output": [],
            "usage": None,
            "error": None,
        }
        events: list[JSONObject] = [
            {"type": "response.created", "response": response},
            {"type": "response.in_progress", "response": response},
        ]
        if isinstance(turn, FailedResponseTurn):
            failed = {**response, "status": "failed", "error": {"code": turn.code, "message": turn.message}}
            events.append({"type": "response.failed", "response": failed})
        else:
            output = self._output_items(turn)
            for index, item in enumerate(output):
                events.extend(_item_events(index, item))
            usage = {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            }
            completed = {**response, "status": "completed", "output": output, "usage": usage}
            events.append({"type": "response.completed", "response": completed})
        return [{**event, "sequence_number": number} for number, event in enumerate(events)]

    def _output_items(self, turn: MessageTurn | ToolCallsTurn) -> list[JSONObject]:
        items: list[JSONObject] = []
        if turn.text:
            items.append(
                {
                    "id": self._new_id("msg_scripted"),
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": turn.text, "annotations": []}],
                }
            )
        if isinstance(turn, ToolCallsTurn):
            for call in turn.calls:
                call_id = call.call_id or self._new_id("call_scripted")
                if isinstance(call, FunctionCall):
                    items.append(
                        {
                            "id": self._new_id("fc_scripted"),
                            "type": "function_call",
                            "status": "completed",
                            "call_id": call_id,
                            "name": call.name,
                            "arguments": json.dumps(dict(call.arguments)),
                        }
                    )
                else:
                    items.append(
                        {
                            "id": self._new_id("ctc_scripted"),
                            "type": "custom_tool_call",
                            "status": "completed",
                            "call_id": call_id,
                            "name": call.name,
                            "input": call.input,
                        }
                    )
        return items

    # -- what tests inspect ----------------------------------------------------------------------

    def call_outputs(self) -> dict[str, CallOutput]:
        """Every tool output the agent sent back, by ``call_id``.

        The agent resends the whole conversation each turn, so later requests repeat earlier
        outputs; the latest copy wins, which is also the one the model would have seen last.
        """
        found: dict[str, CallOutput] = {}
        for request in self.main_requests:
            for output in request.call_outputs():
                found[output.call_id] = output
        return found

    def call_output(self, call_id: str) -> CallOutput:
        """The output for one scripted call; ``KeyError`` lists what did arrive."""
        outputs = self.call_outputs()
        if call_id not in outputs:
            raise KeyError(f"no output for call {call_id!r}; received outputs for {sorted(outputs)}")
        return outputs[call_id]
