"""The HTTP plumbing the scripted LLM servers share, whatever API they stand in for.

``ScriptedServer`` runs a threaded HTTP server on 127.0.0.1 (a free port) while it is used as a
context manager, records every request, and hands requests of the agent loop the steps of a script
in order. What a request looks like, how it is answered and how the agent loop is told apart from
side requests is up to the subclass for each API (``answer_get``, ``answer_post``, ``_reply_turn``).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar, cast
from urllib.parse import urlsplit

__all__ = [
    "Exchange",
    "JSONObject",
    "RecordedHTTPRequest",
    "ScriptedServer",
    "chunks",
    "header_value",
    "parse_json_object",
]

JSONObject = dict[str, Any]


def parse_json_object(raw: str | bytes) -> JSONObject | None:
    """``raw`` parsed as JSON when it is an object; ``None`` for anything else, invalid JSON included."""
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        return None
    return cast(JSONObject, parsed) if isinstance(parsed, dict) else None


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, ignoring case as HTTP does."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def chunks(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of ``size`` characters, for streaming it as several deltas.

    An empty text still gets one (empty) piece, as the real APIs send one delta for an empty value.
    """
    if not text:
        yield ""
    for start in range(0, len(text), size):
        yield text[start : start + size]


@dataclass(frozen=True)
class RecordedHTTPRequest:
    """One HTTP request as received, with the parsed JSON body when there was one."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: JSONObject | None
    # How the server treated it: "main" and "side" for model requests, "other" for the rest; an API
    # module narrows this to the kinds it knows.
    kind: str

    def header(self, name: str) -> str | None:
        """A header by name, ignoring case as HTTP does."""
        return header_value(self.headers, name)

    @property
    def tool_names(self) -> list[str]:
        """Names of the top-level tools this request offered the model, in the order given."""
        tools = self.body.get("tools") if self.body is not None else None
        if not isinstance(tools, list):
            return []
        names: list[str] = []
        for tool in cast(list[Any], tools):
            if isinstance(tool, dict):
                name = self._tool_name(cast(JSONObject, tool))
                if isinstance(name, str):
                    names.append(name)
        return names

    def _tool_name(self, tool: JSONObject) -> Any:
        return tool.get("name")


StepT = TypeVar("StepT")
RequestT = TypeVar("RequestT", bound=RecordedHTTPRequest)


class _ThreadingServer(ThreadingHTTPServer):
    # Handler threads must never keep the test process alive after stop().
    daemon_threads = True

    def __init__(self, owner: ScriptedServer[Any, Any]) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), Exchange)


class Exchange(BaseHTTPRequestHandler):
    """One request being answered; the owning ``ScriptedServer`` decides what the answer is."""

    # HTTP/1.1 so the CLI's keep-alive connections are honoured for JSON replies; streamed replies
    # close the connection instead of using chunked encoding, which every client handles.
    protocol_version = "HTTP/1.1"

    @property
    def owner(self) -> ScriptedServer[Any, Any]:
        return cast(_ThreadingServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request to stderr, which drowns pytest's captured output.
        pass

    def do_HEAD(self) -> None:
        self.owner.record(self.owner.recorded(self, None, "other"))
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.owner.record(self.owner.recorded(self, None, "other"))
        self.send_json(self.owner.answer_get(urlsplit(self.path).path))

    def do_POST(self) -> None:
        owner = self.owner
        body = self.read_json()
        path = urlsplit(self.path).path
        try:
            owner.answer_post(self, path, body)
        except Exception as exc:  # the CLI only sees a closed socket; keep the cause for the test
            owner.record_error(f"{self.command} {self.path}: {exc!r}")
            raise

    def read_json(self) -> JSONObject | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        return parse_json_object(raw) if raw else None

    def send_json(self, payload: Mapping[str, Any], status: int = HTTPStatus.OK) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_events(self, events: Iterable[JSONObject]) -> None:
        """Answer with server-sent events, each named after its ``type``."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for event in events:
            frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            self.wfile.write(frame.encode())
        self.wfile.flush()


class ScriptedServer(Generic[StepT, RequestT]):
    """A model API on 127.0.0.1 that plays back a fixed script of ``StepT``.

    Agent-loop requests consume the script in order; once it is exhausted they get ``final_text``.
    Side requests always get ``side_text``. Every request is recorded as a ``RequestT``.
    """

    # The name of the thread that serves requests.
    _thread_name: ClassVar[str] = "scripted-llm"

    def __init__(
        self,
        script: Sequence[StepT],
        *,
        request_type: type[RequestT],
        final_text: str,
        side_text: str,
    ) -> None:
        self._script: list[StepT] = list(script)
        self._request_type = request_type
        self.final_text = final_text
        self.side_text = side_text
        self._lock = threading.Lock()
        self._script_done = threading.Condition(self._lock)
        self._position = 0
        self._requests: list[RequestT] = []
        self._errors: list[str] = []
        self._ids = itertools.count(1)
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    # -- what each API defines -------------------------------------------------------------------

    def answer_get(self, path: str) -> Mapping[str, Any]:
        """The JSON answer to a ``GET`` of ``path`` (the request is already recorded)."""
        return {}

    def answer_post(self, exchange: Exchange, path: str, body: JSONObject | None) -> None:
        """Record a ``POST`` of ``path`` and answer it through ``exchange``."""
        raise NotImplementedError

    def _reply_turn(self, text: str) -> StepT:
        """A step in which the model only says ``text``, for requests the script does not answer."""
        raise NotImplementedError

    def _side_text(self, request: RequestT) -> str:
        """What the model says to a side request."""
        return self.side_text

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._httpd = _ThreadingServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=self._thread_name, kwargs={"poll_interval": 0.05}
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

    def recorded(self, exchange: Exchange, body: JSONObject | None, kind: str) -> RequestT:
        """The record of the request ``exchange`` is answering (not yet added to ``requests``)."""
        return self._request_type(
            method=exchange.command,
            path=exchange.path,
            headers=dict(exchange.headers.items()),
            body=body,
            kind=kind,
        )

    def record(self, request: RequestT) -> None:
        with self._lock:
            self._requests.append(request)

    def record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def take_turn(self, request: RequestT) -> StepT:
        """Record a model request and pick its answer.

        Both happen under one lock so that concurrent requests cannot consume the script in an
        order different from the one in which they were recorded.
        """
        with self._lock:
            self._requests.append(request)
            if request.kind != "main":
                return self._reply_turn(self._side_text(request))
            if self._position >= len(self._script):
                return self._reply_turn(self.final_text)
            turn = self._script[self._position]
            self._position += 1
            self._script_done.notify_all()
            return turn

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}_{next(self._ids):04d}"

    # -- what tests inspect ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestT]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def main_requests(self) -> list[RequestT]:
        return [r for r in self.requests if r.kind == "main"]

    @property
    def side_requests(self) -> list[RequestT]:
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

    def offered_tools(self) -> list[str]:
        """Top-level tool names offered in the most recent agent-loop (main) request."""
        main = self.main_requests
        return main[-1].tool_names if main else []
