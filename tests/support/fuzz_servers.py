"""The Mayor's MCP server of a fuzzed project, reached through the SDK's client in memory, and its
worker endpoint, reached over HTTP as a worker does, on an event loop of their own (a blocking
portal); the fuzz tests of tests/security drive them.

Every call must answer within a deadline, with a result or with a tool error whose message
explains (no bare "Error executing tool X", which is the SDK's word for a crash, no traceback, no
"internal error", no flood), nothing may be logged as an error, and the session must answer the
next call: `Served.call` checks all of it.

The project is a git repository whose mcp-swarm.toml names `command` runtimes (`true`, `false`,
`sleep 0.5`, a program that does not exist), so spawn, supervision and close_agent run for real,
and fast; it holds files of every kind for import_wave.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import re
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST, PARSE_ERROR, CallToolResult, TextContent, Tool

from mcp_swarm.config import load_settings
from mcp_swarm.engine.tokens import mint_token
from mcp_swarm.models import worker_number
from mcp_swarm.server.mayor import build_server
from mcp_swarm.server.worker_endpoint import PORT_FILE
from tests.support.worker_endpoints import worker_session

# A call that takes longer hangs: the slowest legitimate one here (a wait with live workers, a
# worktree for a spawn) takes well under a second.
CALL_DEADLINE = 10.0
# The portal itself must answer by then, or the server's event loop is blocked.
LOOP_DEADLINE = CALL_DEADLINE + 5.0
# What the SDK answers when a tool raised something else than a ToolError: it says nothing more.
CRASH = "Error executing tool {tool}"
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+")
# Long enough for every error of a few bad arguments, short enough for an agent's context.
MAX_MESSAGE_CHARS = 10_000

# -- the project the servers run in ---------------------------------------------------------------

RUNTIMES = {
    "quick": ["true"],
    "fails": ["false"],
    "slow": ["sleep", "0.5"],
    # A worker whose token the fuzzer speaks with: it runs until the Mayor's server stops.
    "lasting": ["sleep", "600"],
    "missing": ["/nonexistent/mcp-swarm-fuzz-worker"],
}
HUNT = {
    "wave": [
        {"id": "ol-9.1", "title": "Add auth", "spec_path": "specs/auth.md", "priority": 1},
        {"id": "ol-9.2", "title": "Add tests", "spec_path": "specs/tests.md", "priority": 2},
    ],
    "blocked": [{"id": "ol-9.3", "title": "Integrate", "blocked_by": ["ol-9.1", "ol-9.2"]}],
    "completed": [{"id": "ol-9.0", "title": "Scaffold"}],
}
BEADS = [
    {"id": "bd-1", "title": "Fix the parser", "status": "open", "priority": 1},
    {"id": "bd-2", "title": "Document it", "status": "open", "blocked_by": ["bd-1"]},
]
# import_wave paths: files of every kind, in and outside the project. No endless file such as
# /dev/zero: a regression there would exhaust the machine's memory, not fail a test.
WAVE_PATHS = (
    "wave.json",
    "broken.json",
    "list.json",
    "empty.json",
    "latin1.json",
    "sparse.json",
    "pipe.json",
    "directory",
    "missing.json",
    "../outside.json",
    "/etc/hostname",
    "/proc/self/status",
    "/dev/null",
    "a\0b",
    "",
    " ",
)


def make_project(root: Path, socket: str) -> Path:
    """A git repository with mcp-swarm.toml naming fast command runtimes, and files to import."""
    root.mkdir(parents=True)
    runtimes = "".join(
        f'\n[runtimes.{name}]\ntype = "command"\nargv = {json.dumps(argv)}\n'
        for name, argv in RUNTIMES.items()
    )
    (root / "mcp-swarm.toml").write_text(
        f'default_runtime = "quick"\nmax_workers = 4\ntmux_socket = "{socket}"\n{runtimes}'
    )
    (root / "wave.json").write_text(json.dumps(HUNT))
    (root / "broken.json").write_text('{"wave": [')
    (root / "list.json").write_text("[]")
    (root / "empty.json").write_text("")
    (root / "latin1.json").write_bytes(b'{"wave": [{"id": "\xe9"}]}')
    with (root / "sparse.json").open("wb") as sparse:
        sparse.truncate(1 << 40)  # a terabyte that takes no room: only its size may be read
    os.mkfifo(root / "pipe.json")
    (root / "directory").mkdir()
    (root.parent / "outside.json").write_text(json.dumps(HUNT))
    git = ["git", "-C", str(root), "-c", "user.name=fuzz", "-c", "user.email=fuzz@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    return root


def release_pipe(project: Path) -> None:
    """Open the project's named pipe for writing and close it, so a reader stuck on it sees its end."""
    with contextlib.suppress(OSError):
        os.close(os.open(project / "pipe.json", os.O_RDWR | os.O_NONBLOCK))


def stop_tmux(socket: str) -> None:
    """End the tmux server of this run's own socket, with the distributed workers it still holds."""
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


# -- what the servers log --------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Every record of level ERROR or above: a tool that crashed, a supervisor that failed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        """The records since the last take, each with the exception at the root of it."""
        taken, self.records = self.records, []
        lines: list[str] = []
        for record in taken:
            line = f"{record.name}: {record.getMessage()}"
            error = record.exc_info[1] if record.exc_info else None
            while error is not None and error.__cause__ is not None:
                error = error.__cause__
            lines.append(line if error is None else f"{line}: {error!r}")
        return lines


# -- calling a tool, and judging the answer -------------------------------------------------------


def describe(arguments: object) -> str:
    text = repr(arguments)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} characters)"


class Drawn:
    """Arguments as hypothesis reports a failing example's draws: cut short, as some are megabytes."""

    def __init__(self, arguments: dict[str, Any] | None) -> None:
        self.arguments = arguments

    def __repr__(self) -> str:
        return describe(self.arguments)


def text_of(result: CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


def judge(tool: str, arguments: object, result: CallToolResult) -> None:
    """A success is compact JSON, the same as its structured content; a refusal explains itself."""
    text = text_of(result)
    call = f"{tool}({describe(arguments)})"
    if not result.is_error:
        payload = json.loads(text)
        assert result.structured_content == payload, f"{call}: text and structured content differ"
        return
    explanation = text.removeprefix(CRASH.format(tool=tool)).removeprefix(":").strip()
    assert explanation, f"{call} crashed: the answer explains nothing: {text!r}"
    assert not TRACEBACK.search(text), f"{call}: a traceback in the answer: {text[:2000]}"
    assert "internal error" not in text.lower(), f"{call}: {text[:2000]}"
    assert len(text) <= MAX_MESSAGE_CHARS, f"{call}: a {len(text)}-character message: {text[:500]}..."


@dataclass
class Served:
    """One server, reached through the SDK's client in memory, on the portal's event loop."""

    portal: BlockingPortal
    client: Client
    project: Path
    errors: ErrorLog
    # A cheap call that must succeed after every other: the session still works.
    probe: tuple[str, dict[str, Any]]
    answers: Counter[tuple[str, bool]] = field(default_factory=Counter[tuple[str, bool]])
    # The call after which the event loop stopped answering: every later call fails at once, naming it.
    wedged_by: str | None = None
    # A worker's session: whether its attempt has ended, after which its token opens nothing.
    ended: Callable[[], bool] | None = None

    def call(self, tool: str, arguments: dict[str, Any] | None) -> CallToolResult:
        """Call a tool; the answer must be judged sound, and the session must answer the probe."""
        result = self._send(tool, arguments)
        self.answers[tool, result.is_error] += 1
        logged = self.errors.take()
        assert not logged, f"{tool}({describe(arguments)}) logged errors:\n" + "\n".join(logged)
        judge(tool, arguments, result)
        probe = self._send(*self.probe)
        assert not probe.is_error, f"after {tool}({describe(arguments)}), {self.probe[0]}: {text_of(probe)}"
        return result

    @property
    def db(self) -> Path:
        return self.project / ".mcp-swarm" / "swarm.db"

    def ok(self, tool: str, **arguments: Any) -> Any:
        """A call that must succeed; its JSON answer."""
        result = self.call(tool, arguments)
        assert not result.is_error, f"{tool}({describe(arguments)}): {text_of(result)}"
        return json.loads(text_of(result))

    def _send(self, tool: str, arguments: dict[str, Any] | None) -> CallToolResult:
        assert self.wedged_by is None, f"the server's event loop is blocked since {self.wedged_by}"
        future = self.portal.start_task_soon(self._answer, tool, arguments)
        try:
            return future.result(timeout=LOOP_DEADLINE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.wedged_by = f"{tool}({describe(arguments)})"
            raise AssertionError(
                f"{self.wedged_by}: the server's event loop did not answer in {LOOP_DEADLINE} s"
            ) from None

    async def _answer(self, tool: str, arguments: dict[str, Any] | None) -> CallToolResult:
        try:
            with anyio.fail_after(CALL_DEADLINE):
                return await self.client.call_tool(tool, arguments)
        except TimeoutError:
            raise AssertionError(f"{tool}({describe(arguments)}) hung for {CALL_DEADLINE} s") from None
        except MCPError as exc:
            if self.ended is not None and self.ended():
                raise WorkerEnded from exc
            # Over HTTP the SDK refuses, before any tool, a body it cannot parse (JSON nested past
            # its recursion limit): a protocol error that says so, and that changes nothing.
            if self.ended is not None and exc.code in (PARSE_ERROR, INVALID_REQUEST) and exc.message:
                return CallToolResult(content=[TextContent(type="text", text=exc.message)], is_error=True)
            raise AssertionError(
                f"{tool}({describe(arguments)}) raised {exc!r}, not a result or a tool error"
            ) from exc
        except Exception as exc:
            if self.ended is not None and self.ended():
                raise WorkerEnded from exc
            raise AssertionError(
                f"{tool}({describe(arguments)}) raised {exc!r}, not a result or a tool error"
            ) from exc

    def tools(self) -> list[Tool]:
        return self.portal.call(self._tools)

    async def _tools(self) -> list[Tool]:
        return (await self.client.list_tools()).tools


@contextlib.contextmanager
def serving(
    portal: BlockingPortal,
    server: MCPServer[Any],
    project: Path,
    errors: ErrorLog,
    probe: tuple[str, dict[str, Any]],
) -> Generator[Served]:
    with portal.wrap_async_context_manager(Client(server)) as client:
        yield Served(portal, client, project, errors, probe)


def mayor_server(project: Path) -> MCPServer[Any]:
    return build_server(load_settings(cwd=project, environ={}))


@contextlib.contextmanager
def running_mayor(portal: BlockingPortal, root: Path, errors: ErrorLog) -> Generator[Served]:
    """The Mayor's server on a fresh project at `root`; its tmux server and named pipe seen to after."""
    socket = f"fuzz-{uuid.uuid4().hex[:12]}"
    project = make_project(root, socket)
    try:
        with serving(portal, mayor_server(project), project, errors, MAYOR_PROBE) as mayor:
            try:
                yield mayor
            finally:
                # Before the server stops: a read stuck on the pipe would hold up its shutdown.
                release_pipe(project)
    finally:
        stop_tmux(socket)


class WorkerEnded(Exception):
    """The worker's attempt ended while the fuzzer spoke as it: the endpoint refuses it now."""


@contextlib.contextmanager
def running_worker(mayor: Served, worker_id: str) -> Generator[Served | None]:
    """A session with the Mayor's worker endpoint as one of its workers, with a token minted
    for its attempt here (the worker's own process never shows its token); None if the worker
    has ended. Its attempt may end meanwhile: then the block is left at the next call."""
    number = worker_number(worker_id)
    token, hashed = mint_token()
    if not _give_token(mayor.db, number, hashed):
        yield None
        return
    port = json.loads((mayor.db.parent / PORT_FILE).read_text())["port"]

    def ended() -> bool:
        return not _live(mayor.db, number)

    yielded = False
    try:
        with mayor.portal.wrap_async_context_manager(
            worker_session(f"http://127.0.0.1:{port}/mcp", token)
        ) as client:
            yielded = True
            yield Served(mayor.portal, client, mayor.project, mayor.errors, WORKER_PROBE, ended=ended)
    except WorkerEnded:
        pass
    except Exception as exc:
        # Opening or leaving the session of an attempt that ended meanwhile may fail: its
        # requests get 401.
        if isinstance(exc, AssertionError) or not ended():
            raise
    if not yielded:
        yield None


def _give_token(db: Path, number: int, hashed: str) -> bool:
    """Store the hash of a token for the worker's live attempt; False if it has ended."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection, connection:
        changed = connection.execute(
            "UPDATE workers SET token_hash = ? WHERE id = ? AND state IN ('starting', 'running')",
            (hashed, number),
        ).rowcount
    return changed == 1


def _live(db: Path, number: int) -> bool:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
        row = connection.execute("SELECT state FROM workers WHERE id = ?", (number,)).fetchone()
    return row is not None and row[0] in ("starting", "running")


MAYOR_PROBE: tuple[str, dict[str, Any]] = ("TaskList", {"owner": "the fuzzer's probe"})
WORKER_PROBE: tuple[str, dict[str, Any]] = ("list_reservations", {})
