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

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import urlsplit

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

JSONObject = dict[str, Any]
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
class RecordedRequest:
    """One HTTP request as received, with the parsed JSON body when there was one."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: JSONObject | None
    kind: RequestKind

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools this request offered the model, in the order given."""
        tools = self.body.get("tools") if self.body is not None else None
        if not isinstance(tools, list):
            return []
        names: list[str] = []
        for tool in cast(list[Any], tools):
            if isinstance(tool, dict):
                name = cast(JSONObject, tool).get("name")
                if isinstance(name, str):
                    names.append(name)
        return names


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


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads must never keep the test process alive after stop().
    daemon_threads = True

    def __init__(self, owner: ScriptedAnthropicServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the CLI's keep-alive connections are honoured for JSON replies; streamed replies
    # close the connection instead of using chunked encoding, which every client handles.
    protocol_version = "HTTP/1.1"

    @property
    def owner(self) -> ScriptedAnthropicServer:
        return cast(_HTTPServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request to stderr, which drowns pytest's captured output.
        pass

    def do_HEAD(self) -> None:
        self.owner.record(self._recorded(None, "other"))
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.owner.record(self._recorded(None, "other"))
        path = urlsplit(self.path).path
        # An empty model list is a valid answer should the CLI ever validate its model name.
        self._send_json({"data": [], "has_more": False} if path == "/v1/models" else {})

    def do_POST(self) -> None:
        owner = self.owner
        body = self._read_json()
        path = urlsplit(self.path).path
        try:
            if path == "/v1/messages/count_tokens":
                owner.record(self._recorded(body, "count_tokens"))
                self._send_json({"input_tokens": owner.usage_input_tokens})
            elif path == "/v1/messages" and body is not None:
                self._answer_messages(owner, body)
            else:
                owner.record(self._recorded(body, "other"))
                self._send_json({})
        except Exception as exc:  # the CLI only sees a closed socket; keep the cause for the test
            owner.record_error(f"{self.command} {self.path}: {exc!r}")
            raise

    def _answer_messages(self, owner: ScriptedAnthropicServer, body: JSONObject) -> None:
        turn = owner.take_turn(self._recorded(body, "main" if owner.is_main(body) else "side"))
        if isinstance(turn, APIErrorTurn):
            error = {"type": "error", "error": {"type": turn.type, "message": turn.message}}
            self._send_json(error, status=turn.status)
            return
        model = str(body.get("model") or "claude-scripted")
        message = owner.build_message(turn, model)
        if body.get("stream") is True:
            self._send_stream(message)
        else:
            self._send_json(message)

    def _recorded(self, body: JSONObject | None, kind: RequestKind) -> RecordedRequest:
        return RecordedRequest(
            method=self.command, path=self.path, headers=dict(self.headers.items()), body=body, kind=kind
        )

    def _read_json(self) -> JSONObject | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw:
            return None
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            return None
        return cast(JSONObject, parsed) if isinstance(parsed, dict) else None

    def _send_json(self, payload: Mapping[str, Any], status: int = HTTPStatus.OK) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, message: JSONObject) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for event in _stream_events(message):
            frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            self.wfile.write(frame.encode())
        self.wfile.flush()


def _chunks(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


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
            for piece in _chunks(cast(str, block["text"]), 16):
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
            for piece in _chunks(json.dumps(block["input"]), 24):
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


class ScriptedAnthropicServer:
    """An Anthropic Messages API on 127.0.0.1 that plays back a fixed script.

    Use as a context manager; while it runs, ``base_url`` is what ``ANTHROPIC_BASE_URL`` should be.
    Main-conversation requests consume ``script`` in order; once it is exhausted they get
    ``final_text``. Side requests always get ``side_text``.
    """

    def __init__(
        self,
        script: Sequence[ScriptStep],
        *,
        final_text: str = "done",
        side_text: str = "Scripted session",
        classify: Callable[[Mapping[str, Any]], bool] = is_main_conversation,
    ) -> None:
        self._script: list[ScriptStep] = list(script)
        self.final_text = final_text
        self.side_text = side_text
        self._classify = classify
        self.usage_input_tokens = 10
        self._lock = threading.Lock()
        self._script_done = threading.Condition(self._lock)
        self._position = 0
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._ids = itertools.count(1)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="scripted-anthropic", kwargs={"poll_interval": 0.05}
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd, self._thread = None, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- what the handler calls ------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def is_main(self, body: Mapping[str, Any]) -> bool:
        return self._classify(body)

    def take_turn(self, request: RecordedRequest) -> ScriptStep:
        """Record a ``/v1/messages`` request and pick its answer.

        Both happen under one lock so that concurrent requests cannot consume the script in an
        order different from the one in which they were recorded.
        """
        with self._lock:
            self._requests.append(request)
            if request.kind != "main":
                return TextTurn(_side_reply(request.body, self.side_text))
            if self._position >= len(self._script):
                return TextTurn(self.final_text)
            turn = self._script[self._position]
            self._position += 1
            self._script_done.notify_all()
            return turn

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

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}_{next(self._ids):04d}"

    # -- what tests inspect ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "main"]

    @property
    def side_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "side"]

    @property
    def errors(self) -> list[str]:
        """Exceptions raised while answering; the CLI itself would only report a dropped connection."""
        with self._lock:
            return list(self._errors)

    @property
    def turns_consumed(self) -> int:
        with self._lock:
            return self._position

    @property
    def script_exhausted(self) -> bool:
        with self._lock:
            return self._position >= len(self._script)

    def wait_script_consumed(self, timeout: float) -> bool:
        """Block until every scripted turn has been handed out (or ``timeout`` elapses)."""
        with self._script_done:
            return self._script_done.wait_for(lambda: self._position >= len(self._script), timeout)

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

    def offered_tools(self) -> list[str]:
        """Tool names offered in the most recent main-conversation request."""
        main = self.main_requests
        return main[-1].tool_names if main else []
