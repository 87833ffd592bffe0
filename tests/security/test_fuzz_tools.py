"""Every tool of both MCP servers, fuzzed through the SDK's own client.

The Mayor's server (`mcp-swarm serve`) and a worker's (`serve --worker ID`) are reached in memory,
on an event loop of their own (a blocking portal), and called in three ways:

1. the sweep: each argument of each tool in turn takes each of a fixed list of odd values (NUL,
   a megabyte of text, 2**63, a thousand wrong items, deep nesting, ids that overflow SQLite, a
   named pipe as a file...), the other arguments plain and valid, so that no known corner is left
   to chance;
2. per tool, random arguments drawn from the tool's own JSON input schema, as the client lists it
   (so a new tool is fuzzed without a line here; a schema keyword the generator does not know
   fails `test_every_tool_has_a_strategy`), most of them then made hostile: a wrong type, a
   missing or unknown argument, huge or odd text, extreme numbers, nested junk, no arguments;
3. a state machine of mostly valid calls, each run on a fresh project: tasks, plans and
   dependencies (some closing a cycle), deletions, spawns of real workers, wait, close_agent,
   send_input, mail, reservations, a worker's reports through its own server, imports, integrate.

Every call must answer within a deadline, with a result or with a tool error whose message
explains (no bare "Error executing tool X", which is the SDK's word for a crash, no traceback, no
"internal error", no flood), nothing may be logged as an error, and the session must answer the
next call. After each example the database must keep its invariants (tests/support/invariants.py), and
once the server has stopped, no worker of it may be left live.

Workers are real processes of `command` runtimes (`true`, `false`, `sleep 0.5`, a program that
does not exist), so spawn, supervision and close_agent run for real, and fast. Hypothesis is
derandomized: every run draws the same calls (what real workers do with them still varies).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import re
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent, Tool

from mcp_swarm.config import load_settings
from mcp_swarm.server.mayor import build_server
from mcp_swarm.server.worker import build_worker_server
from tests.support import STAND_INS
from tests.support.invariants import assert_ledger_sound, ledger_problems

P = ParamSpec("P")
R = TypeVar("R")
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


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ol` and `bd` stand-ins first on PATH, so the import tools read files and run commands."""
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    beads = tmp_path / "beads.json"
    beads.write_text(json.dumps(BEADS))
    monkeypatch.setenv("BD_STANDIN_DB", str(beads))
    monkeypatch.delenv("OL_STANDIN_LOG", raising=False)


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


@pytest.fixture
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


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
        except Exception as exc:
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


@contextlib.contextmanager
def running_worker(mayor: Served, worker_id: str) -> Generator[Served]:
    """The server of one of the Mayor's workers, `serve --worker ID`, on the Mayor's database."""
    server = build_worker_server(load_settings(cwd=mayor.project, environ={}), worker_id)
    with serving(mayor.portal, server, mayor.project, mayor.errors, WORKER_PROBE) as worker:
        yield worker


MAYOR_PROBE: tuple[str, dict[str, Any]] = ("TaskList", {"owner": "the fuzzer's probe"})
WORKER_PROBE: tuple[str, dict[str, Any]] = ("list_reservations", {})

# -- arguments from a tool's input schema ---------------------------------------------------------

# What the generator understands of JSON Schema; a schema using anything else has no strategy.
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "anyOf",
        "enum",
        "$ref",
        "$defs",
        "items",
        "properties",
        "required",
        "additionalProperties",
        "default",
        "title",
        "description",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)


class NoStrategy(Exception):
    """A tool's schema uses something the generator cannot draw from: teach it before fuzzing."""


JSON_LEAVES: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
JUNK: st.SearchStrategy[Any] = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

# The odd values of each kind of argument: every one is tried once for every argument of its
# name (the sweep), and they are mixed into the random draws.
TASK_ID_EDGES = ("0", "-1", "01", "1.0", " 1", "1e3", "\u0661", "999999999999999999", "9223372036854775808")
WORKER_ID_EDGES = (
    "mayor",
    "worker-0",
    "worker-01",
    "worker--1",
    "Worker-1",
    "worker-1 ",
    "worker-\u0661",
    "worker-\u00b2",
    "worker-" + "9" * 18,
    "worker-" + "9" * 19,
    "worker-" + "9" * 33,
)
PATTERN_EDGES = (
    *("src/a.py", "src/*.py", "src", "docs/**", "a[1].py", "[", "**", "../x", "src/../../x", "/etc/passwd"),
    *(".", "./", "", " ", "\0", "a\0b", "\u00e9/\u00fc.py", "x" * 1000),
)
RUNTIME_NAMES = (*RUNTIMES, "unknown", "")
# Metadata a task may really carry: a write scope (spawn checks overlaps) and safe validation.
METADATA_EDGES: tuple[dict[str, Any], ...] = (
    {"files": ["src/a.py"]},
    {"files": "src/*.py"},
    {"files": [1, 2]},
    {"files": ["../outside"]},
    {"validation": {"files_exist": ["mcp-swarm.toml"]}},
    {"validation": {"files_exist": ["absent.py"], "content_check": [{"file": "x", "pattern": "("}]}},
    {"validation": {"command": {"argv": ["true"]}}},
    {"validation": {"tests": {"argv": ["false"]}}},
    {"validation": "not an object"},
    {"ol_bead_id": "ol-9.1"},
)
TASK_ID = st.integers(1, 40).map(str) | st.sampled_from(TASK_ID_EDGES)
WORKER_ID = st.integers(1, 30).map(lambda n: f"worker-{n}") | st.sampled_from(WORKER_ID_EDGES)
PATTERN = st.text(max_size=12) | st.sampled_from(PATTERN_EDGES)
# Random keys never say "validation": its checks run commands.
METADATA: st.SearchStrategy[dict[str, Any]] = st.sampled_from(METADATA_EDGES) | st.dictionaries(
    st.text(max_size=10).filter(lambda key: key != "validation"), JUNK, max_size=4
)

# Values for parameters of these names (or "tool.name"), in place of what their type alone
# gives: ids that exist, runtimes that are configured, files that are there, short timeouts.
HINTS: Mapping[str, st.SearchStrategy[Any]] = {
    "taskId": TASK_ID,
    "taskIds": st.none() | st.lists(TASK_ID, max_size=4),
    "blockedBy": st.lists(TASK_ID | st.sampled_from(["k0", "k1", "k2"]), max_size=3),
    "addBlocks": st.lists(TASK_ID, max_size=3),
    "addBlockedBy": st.lists(TASK_ID, max_size=3),
    "key": st.sampled_from(["k0", "k1", "k2", "3", "\u0661"]) | st.text(min_size=1, max_size=5),
    "workerId": WORKER_ID,
    "workerIds": st.none() | st.lists(WORKER_ID, max_size=4),
    "to": WORKER_ID,
    "holder": st.none() | WORKER_ID,
    "runtime": st.none() | st.sampled_from(RUNTIME_NAMES),
    "metadata": st.none() | METADATA,
    "path": st.sampled_from(WAVE_PATHS),
    "patterns": st.lists(PATTERN, min_size=1, max_size=3),
    "maxWorkers": st.none() | st.integers(1, 6),
    "sinceId": st.integers(0, 60) | st.sampled_from([2**63 - 1]),
    "wait.timeoutSeconds": st.sampled_from([0, 0, 0.01, 0.05]),
    "timeoutSeconds": st.none() | st.sampled_from([0.05, 1.0, 60.0]),
}

HUGE_TEXT = (
    "x" * (1 << 20),
    "\u00e9" * (1 << 19),
    "\0" * 100_000,
    "\U0001f41d" * 50_000,
    "a\u0301" * 50_000,
    "\n" * 100_000,
)
ODD_TEXT = (
    "",
    " ",
    "\t\n",
    "\0",
    "a\0b",
    "\u202eevil",
    "\u200b",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "e\u0301\u0301\u0301",
    "\U0001f41d\U0001f41d",
    "\r\n\r\n",
    "null",
    "'; DROP TABLE tasks; --",
    "{{task_id}}",
    "%s%n",
)
EDGE_NUMBERS: tuple[object, ...] = (
    -1,
    0,
    -0.0,
    0.5,
    2**31,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    5e-324,
    True,
    False,
)
UNKNOWN_KEYS = ("taskId", "workerId", "bogus", "", "__proto__", "status ", "\u00e9")


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise NoStrategy(f"a $ref the generator cannot follow: {ref!r}")
    return cast(Mapping[str, Any], defs[ref[len(prefix) :]])


def values_of(
    schema: Mapping[str, Any], defs: Mapping[str, Any], tool: str, name: str | None = None
) -> st.SearchStrategy[Any]:
    """A strategy of values that `schema` accepts (or nearly: hints name ids that may not exist)."""
    unknown = set(schema) - SCHEMA_KEYWORDS
    if unknown:
        raise NoStrategy(f"{tool}: schema keywords {sorted(unknown)} in {schema}")
    schema = _resolve(schema, defs)
    if name is not None and f"{tool}.{name}" in HINTS:
        return HINTS[f"{tool}.{name}"]
    if name is not None and name in HINTS:
        return HINTS[name]
    if "anyOf" in schema:
        return st.one_of([values_of(option, defs, tool) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    kind = schema.get("type")
    if kind == "string":
        top = min(int(schema.get("maxLength", 40)), 40)
        return st.text(min_size=int(schema.get("minLength", 0)), max_size=top)
    if kind == "integer":
        low = int(schema.get("minimum", -1000))
        return st.integers(low, int(schema.get("maximum", low + 1000)))
    if kind == "number":
        low = float(schema.get("minimum", schema.get("exclusiveMinimum", -1000.0)))
        high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 1000.0)))
        return st.floats(
            low,
            high,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = values_of(schema.get("items", {"type": "string"}), defs, tool)
        low = int(schema.get("minItems", 0))
        return st.lists(items, min_size=low, max_size=min(int(schema.get("maxItems", 4)), low + 4))
    if kind == "object":
        return _objects(schema, defs, tool)
    raise NoStrategy(f"{tool}: no strategy for the schema {schema}")


def _objects(schema: Mapping[str, Any], defs: Mapping[str, Any], tool: str) -> st.SearchStrategy[Any]:
    properties = cast(Mapping[str, Mapping[str, Any]], schema.get("properties", {}))
    if not properties:
        if schema.get("additionalProperties") is False:
            return st.just({})
        return st.dictionaries(st.text(max_size=8), JUNK, max_size=4)
    required = set(cast(list[str], schema.get("required", [])))
    drawn = {name: values_of(sub, defs, tool, name) for name, sub in properties.items()}
    return st.fixed_dictionaries(
        {name: value for name, value in drawn.items() if name in required},
        optional={name: value for name, value in drawn.items() if name not in required},
    )


# Whole values put in place of an argument; drawn by index, so a failing example prints short.
BULK: tuple[object, ...] = (
    [0] * 1001,
    ["1"] * 10_001,
    {str(n): n for n in range(10_000)},
    nested(60),
    nested(200),
)
REPLACEMENTS: Mapping[str, st.SearchStrategy[Any]] = {
    "wrong type": JUNK,
    "huge text": st.sampled_from(HUGE_TEXT),
    "odd text": st.sampled_from(ODD_TEXT) | st.text(min_size=1, max_size=30),
    "edge number": st.sampled_from(EDGE_NUMBERS),
    "bulk": st.sampled_from(BULK),
    "odd list": st.lists(st.sampled_from(ODD_TEXT), min_size=1, max_size=3),
}
MUTATIONS = ("missing", "unknown", "no arguments", *REPLACEMENTS)


@st.composite
def _arguments(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], names: tuple[str, ...]) -> Drawn:
    """Valid arguments, or (more often) valid ones with one hostile change."""
    arguments = draw(valid)
    if draw(st.integers(0, 9)) < 4:
        return Drawn(arguments)
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "no arguments":
        return Drawn(draw(st.sampled_from([None, {}])))
    if mutation == "unknown":
        return Drawn({**arguments, draw(st.sampled_from(UNKNOWN_KEYS)): draw(JUNK)})
    key = draw(st.sampled_from(sorted(set(arguments) | set(names)) or UNKNOWN_KEYS))
    if mutation == "missing":
        return Drawn({name: value for name, value in arguments.items() if name != key})
    return Drawn({**arguments, key: draw(REPLACEMENTS[mutation])})


@dataclass(frozen=True)
class Arguments:
    """Strategies of arguments for one tool: valid ones, and hostile variants of them."""

    tool: Tool

    @functools.cached_property
    def valid(self) -> st.SearchStrategy[dict[str, Any]]:
        schema = self.tool.input_schema
        defs = cast(Mapping[str, Any], schema.get("$defs", {}))
        return cast(st.SearchStrategy[dict[str, Any]], values_of(schema, defs, self.tool.name))

    @functools.cached_property
    def any(self) -> st.SearchStrategy[Drawn]:
        names = tuple(sorted(cast(Mapping[str, Any], self.tool.input_schema.get("properties", {}))))
        return _arguments(self.valid, names)


# -- the sweep: each odd value once in each argument ----------------------------------------------

# The values every argument gets once, whatever its type: the sweep's own corner of the fuzz.
SWEEP_VALUES: tuple[object, ...] = (
    None,
    "",
    "\0",
    "a\0b",
    "\u202eevil",
    "\U0010ffff",
    "x" * (1 << 20),
    -1,
    2**63,
    10**30,
    1e308,
    True,
    [0] * 1001,
    nested(200),
    {},
)


def _one_each(values: Sequence[object]) -> tuple[object, ...]:
    return tuple([value] for value in values)


# ... and those an argument of this name gets besides.
EDGES: Mapping[str, tuple[object, ...]] = {
    "taskId": TASK_ID_EDGES,
    "taskIds": _one_each(TASK_ID_EDGES),
    "blockedBy": _one_each(TASK_ID_EDGES),
    "addBlocks": _one_each(TASK_ID_EDGES),
    "addBlockedBy": _one_each(TASK_ID_EDGES),
    "workerId": WORKER_ID_EDGES,
    "workerIds": _one_each(WORKER_ID_EDGES),
    "to": WORKER_ID_EDGES,
    "holder": WORKER_ID_EDGES,
    "patterns": _one_each(PATTERN_EDGES),
    "path": WAVE_PATHS,
    "runtime": RUNTIME_NAMES,
    "metadata": METADATA_EDGES,
    "sinceId": (2**63 - 1,),
}
# The valid value the sweep gives an argument it is not trying, where its type alone says too little.
SIMPLEST: Mapping[str, object] = {
    "taskId": "1",
    "workerId": "worker-1",
    "to": "worker-1",
    "patterns": ["src/a.py"],
    "path": "wave.json",
}


def simplest(schema: Mapping[str, Any], defs: Mapping[str, Any], name: str | None = None) -> Any:
    """The plainest value `schema` accepts: required properties only, minimum sizes."""
    schema = _resolve(schema, defs)
    if name is not None and name in SIMPLEST:
        return SIMPLEST[name]
    if "anyOf" in schema:
        return simplest(schema["anyOf"][0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 0)))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "array":
        return [simplest(schema.get("items", {"type": "string"}), defs)] * int(schema.get("minItems", 0))
    if kind == "object":
        properties = cast(Mapping[str, Mapping[str, Any]], schema.get("properties", {}))
        required = cast(list[str], schema.get("required", []))
        return {key: simplest(properties[key], defs, key) for key in required}
    return {"boolean": False, "null": None}.get(str(kind))


def sweep(served: Served, tools: Sequence[Tool]) -> None:
    """Each argument of each tool in turn takes each odd value, the other arguments plain and valid."""
    for tool in tools:
        schema = tool.input_schema
        defs = cast(Mapping[str, Any], schema.get("$defs", {}))
        plain = cast(dict[str, Any], simplest(schema, defs))
        served.call(tool.name, plain)
        for name in sorted(cast(Mapping[str, Any], schema.get("properties", {}))):
            for value in (*SWEEP_VALUES, *EDGES.get(name, ())):
                served.call(tool.name, {**plain, name: value})
        for name in UNKNOWN_KEYS:
            served.call(tool.name, {**plain, name: 1})
        served.call(tool.name, None)
    assert_ledger_sound(served.db)


def strategies_for(tools: Sequence[Tool]) -> dict[str, Arguments]:
    """A strategy for every tool; NoStrategy if a schema uses what the generator does not know."""
    found: dict[str, Arguments] = {}
    for tool in tools:
        arguments = Arguments(tool)
        arguments.valid  # noqa: B018 - building it checks every keyword of the schema
        found[tool.name] = arguments
    return found


FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    # One bug, reported as soon as it is found: each message names the call and its arguments.
    report_multiple_bugs=False,
)
# Examples share one server and its database, so replaying a smaller one is not replaying the
# same thing: no shrinking, and the failing call is reported as it was made.
SHARED_SERVER = settings(FUZZ_SETTINGS, phases=[Phase.explicit, Phase.generate])
# Tools no call can make succeed here, and why.
NEVER_SUCCEED = {
    # The command runtime keeps no session to continue; send_input says so.
    "send_input",
}


def fuzz_tools(served: Served, strategies: Mapping[str, Arguments], examples: int) -> None:
    """Per example, a few calls of random tools with random arguments; then the invariants."""
    names = sorted(strategies)
    # A tool without parameters has little to fuzz: drawn a quarter as often.
    weighted = [
        name
        for name in names
        for _ in range(4 if strategies[name].tool.input_schema.get("properties") else 1)
    ]
    failures: list[AssertionError] = []

    @settings(SHARED_SERVER, max_examples=examples)
    @given(st.data())
    def calls(data: st.DataObject) -> None:
        try:
            for _ in range(data.draw(st.integers(1, 6), label="calls")):
                tool = data.draw(st.sampled_from(weighted), label="tool")
                served.call(tool, data.draw(strategies[tool].any, label=tool).arguments)
            assert_ledger_sound(served.db)
        except AssertionError as failure:
            failures.append(failure)
            raise

    try:
        calls()
    except Exception as reported:
        # Hypothesis replays the failing example to report it, on a server the first run changed:
        # what it reports then (or its complaint that the replay went otherwise) may hide the bug.
        if failures and reported is not failures[0]:
            raise failures[0] from reported
        raise
    refused = {tool for tool in names if served.answers[tool, True]}
    succeeded = {tool for tool in names if served.answers[tool, False]}
    assert refused == set(names), f"never refused: {sorted(set(names) - refused)}"
    assert succeeded == set(names) - NEVER_SUCCEED, f"never succeeded: {sorted(set(names) - succeeded)}"


# -- 1 and 2. each tool: the sweep, then random arguments -----------------------------------------


def test_every_tool_has_a_strategy(tmp_path: Path, error_log: ErrorLog) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as mayor,
    ):
        mayor.ok("TaskCreate", subject="seed", description="")
        [worker] = mayor.ok("spawn", runtime="slow")["workers"]
        mayor_tools = mayor.tools()
        with running_worker(mayor, worker["workerId"]) as me:
            worker_tools = me.tools()
    assert {"TaskCreate", "spawn", "send_message", "import_wave"} <= {tool.name for tool in mayor_tools}
    assert {"my_task", "report_result", "reserve_files"} <= {tool.name for tool in worker_tools}
    strategies_for([*mayor_tools, *worker_tools])
    # The generator refuses what it does not know rather than guess.
    unknown = Tool(name="odd", input_schema={"type": "object", "properties": {"a": {"oneOf": []}}})
    with pytest.raises(NoStrategy, match="oneOf"):
        strategies_for([unknown])


def test_the_mayors_tools_take_any_arguments(tmp_path: Path, stand_ins: None, error_log: ErrorLog) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as mayor,
    ):
        plan = [
            {"key": f"k{n}", "subject": f"task {n}", "blockedBy": [f"k{n - 1}"] if n else []}
            for n in range(6)
        ]
        mayor.ok("TaskCreatePlan", tasks=plan)
        mayor.ok("TaskCreate", subject="lone", description="")
        mayor.ok("spawn", runtime="slow")
        tools = mayor.tools()
        sweep(mayor, tools)
        fuzz_tools(mayor, strategies_for(tools), examples=250)
    print(f"the Mayor's tools: {sum(mayor.answers.values())} calls")
    assert_ledger_sound(mayor.db, quiescent=True)


def test_a_workers_tools_take_any_arguments(tmp_path: Path, error_log: ErrorLog) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as mayor,
    ):
        checks = {"validation": {"files_exist": ["parser.py"]}}
        mayor.ok("TaskCreate", subject="Write the parser", description="parser.py", metadata=checks)
        mayor.ok("TaskCreate", subject="Another", description="")
        [worker, *_] = mayor.ok("spawn", runtime="slow")["workers"]
        mayor.ok("send_message", to=worker["workerId"], subject="Use TOML", body="not YAML")
        with running_worker(mayor, worker["workerId"]) as me:
            tools = me.tools()
            sweep(me, tools)
            fuzz_tools(me, strategies_for(tools), examples=150)
    print(f"a worker's tools: {sum(me.answers.values())} calls")
    assert_ledger_sound(mayor.db, quiescent=True)


# -- 3. random sessions of mostly valid calls -----------------------------------------------------

STATUSES = ("pending", "in_progress", "completed", "failed")
PATTERNS = ("src/a.py", "src/*.py", "docs", "README.md")
# Which task or worker a rule takes: an index, modulo how many there are.
PICKS = 64
PICK = st.integers(0, PICKS - 1)
# What a worker does through its own server, in the order a worker might.
WORKER_CALLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("report_progress", {"message": "Halfway\nparser done"}),
    ("ask_for_help", {"subject": "Which format?", "body": "TOML or YAML"}),
    ("reserve_files", {"patterns": ["src/a.py"], "ttlSeconds": 60}),
    ("reserve_files", {"patterns": ["docs"], "exclusive": False}),
    ("release_files", {}),
    ("fetch_inbox", {"unreadOnly": True}),
    ("send_message", {"subject": "FYI", "type": "info"}),
    ("report_result", {"status": "done", "summary": "Wrote parser.py"}),
)


@dataclass
class Lab:
    """What every run of the state machine shares: the event loop, the error log, a directory."""

    portal: BlockingPortal
    errors: ErrorLog
    root: Path
    runs: int = 0
    answers: Counter[tuple[str, bool]] = field(default_factory=Counter[tuple[str, bool]])
    failures: list[AssertionError] = field(default_factory=list[AssertionError])

    def mayor(self) -> contextlib.AbstractContextManager[Served]:
        self.runs += 1
        return running_mayor(self.portal, self.root / f"run-{self.runs}", self.errors)


def noted(step: Callable[Concatenate[Swarming, P], R]) -> Callable[Concatenate[Swarming, P], R]:
    """Keep a run's first failure: hypothesis replays a failing run to report it, and if the
    replay goes otherwise (workers are real processes, their timing varies), it reports only that
    the replay went otherwise, not why the run failed."""

    @functools.wraps(step)
    def noting(machine: Swarming, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(machine, *args, **kwargs)
        except AssertionError as failure:
            machine.lab.failures.append(failure)
            raise

    return noting


class Swarming(RuleBasedStateMachine):
    """A Mayor's session of mostly valid calls on a fresh project, with a little model of the plan.

    The model knows which tasks exist, which are deleted and which dependencies hold, which is
    enough to say which dependency must be refused as a cycle and which must be accepted; what
    workers do to statuses happens behind its back and is left to the invariants.

    Tasks and workers are picked by index (modulo how many there are), not from bundles: what the
    server answers (how many workers a spawn started, say) depends on timing, and hypothesis must
    draw the same way whenever it replays a run.
    """

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self._session = lab.mayor()
        self.mayor = self._session.__enter__()
        self.tasks: list[str] = []
        self.workers: list[str] = []
        self.imports = 0
        self.deleted: set[str] = set()
        self.edges: set[tuple[str, str]] = set()  # (waiter, blocker)

    @noted
    def teardown(self) -> None:
        self.lab.answers.update(self.mayor.answers)
        self._session.__exit__(None, None, None)
        assert_ledger_sound(self.mayor.db, quiescent=True)

    @invariant()
    @noted
    def sound(self) -> None:
        assert_ledger_sound(self.mayor.db)

    def task(self, index: int) -> str:
        return self.tasks[index % len(self.tasks)]

    def worker(self, index: int) -> str | None:
        return self.workers[index % len(self.workers)] if self.workers else None

    def created(self, ids: Sequence[str], edges: set[tuple[str, str]]) -> None:
        self.tasks += ids
        self.edges |= edges

    def _waits_for(self, start: str, target: str) -> bool:
        """Whether `start` waits for `target` through dependencies on tasks that are not deleted."""
        seen, todo = {start}, [start]
        while todo:
            task = todo.pop()
            for waiter, blocker in self.edges:
                if waiter == task and blocker not in self.deleted and blocker not in seen:
                    if blocker == target:
                        return True
                    seen.add(blocker)
                    todo.append(blocker)
        return False

    @initialize()
    @noted
    def plan(self) -> None:
        """A small plan to start from, so that every rule has tasks to pick and workers come early."""
        plan = [
            {"key": "a", "subject": "A"},
            {"key": "b", "subject": "B", "blockedBy": ["a"]},
            {"subject": "C"},
        ]
        ids = self.mayor.ok("TaskCreatePlan", tasks=plan)["ids"]
        self.created(ids, {(ids[1], ids[0])})

    # -- the plan

    @rule(
        subject=st.text(min_size=1, max_size=30).filter(str.strip),
        picks=st.lists(PICK, max_size=3),
        metadata=METADATA,
    )
    @noted
    def create(self, subject: str, picks: list[int], metadata: dict[str, Any]) -> None:
        blockers = sorted({self.task(pick) for pick in picks})
        arguments = {"subject": subject, "description": "", "blockedBy": blockers, "metadata": metadata}
        result = self.mayor.call("TaskCreate", arguments)
        if self.deleted & set(blockers):
            assert result.is_error, text_of(result)
            return
        assert not result.is_error, text_of(result)
        task = json.loads(text_of(result))["id"]
        self.created([task], {(task, blocker) for blocker in blockers})

    @rule(size=st.integers(1, 5), picks=st.lists(st.lists(PICK, max_size=2), min_size=5, max_size=5))
    @noted
    def create_plan(self, size: int, picks: list[list[int]]) -> None:
        """A plan whose tasks wait for each other (even in a cycle, or on themselves) and for tasks."""
        keys = [f"k{n}" for n in range(size)]
        # Low picks name a task of the plan, high ones a task that exists.
        blockers = {
            key: [keys[pick % size] if pick < PICKS // 2 else self.task(pick) for pick in key_picks]
            for key, key_picks in zip(keys, picks, strict=False)
        }
        plan = [
            {"key": key, "subject": f"plan task {key}", "blockedBy": refs} for key, refs in blockers.items()
        ]
        result = self.mayor.call("TaskCreatePlan", {"tasks": plan})
        local = {(key, ref) for key, refs in blockers.items() for ref in refs if ref in keys}
        self_dependent = any(waiter == blocker for waiter, blocker in local)
        cyclic = _has_cycle(local)
        dangling = {ref for refs in blockers.values() for ref in refs} & self.deleted
        if self_dependent or cyclic or dangling:
            assert result.is_error, f"{plan}: {text_of(result)}"
            if cyclic and not self_dependent:
                assert "cycle" in text_of(result), text_of(result)
            return
        assert not result.is_error, f"{plan}: {text_of(result)}"
        ids = cast(dict[str, str], json.loads(text_of(result))["keys"])
        self.created(
            list(ids.values()),
            {(ids[key], ids.get(ref, ref)) for key, refs in blockers.items() for ref in refs},
        )

    @rule(waiter=PICK, blocker=PICK, through_blocks=st.booleans())
    @noted
    def depend(self, waiter: int, blocker: int, through_blocks: bool) -> None:
        late, early = self.task(waiter), self.task(blocker)
        if through_blocks:
            result = self.mayor.call("TaskUpdate", {"taskId": early, "addBlocks": [late]})
        else:
            result = self.mayor.call("TaskUpdate", {"taskId": late, "addBlockedBy": [early]})
        message = text_of(result)
        if {late, early} & self.deleted or late == early:
            assert result.is_error, message
        elif self._waits_for(early, late):
            assert result.is_error, f"{late} after {early} closes a cycle: {message}"
            assert "cycle" in message, message
        else:
            assert not result.is_error, f"{late} after {early}: {message}"
            self.edges.add((late, early))

    @rule(pick=PICK, status=st.sampled_from(STATUSES), owner=st.sampled_from([None, "", "me", "worker-1"]))
    @noted
    def set_status(self, pick: int, status: str, owner: str | None) -> None:
        task = self.task(pick)
        arguments: dict[str, Any] = {"taskId": task, "status": status}
        if owner is not None:
            arguments["owner"] = owner
        result = self.mayor.call("TaskUpdate", arguments)
        if task in self.deleted:
            assert result.is_error, text_of(result)

    @rule(pick=PICK)
    @noted
    def delete(self, pick: int) -> None:
        task = self.task(pick)
        result = self.mayor.call("TaskUpdate", {"taskId": task, "status": "deleted"})
        assert result.is_error is (task in self.deleted), text_of(result)
        self.deleted.add(task)

    @rule(pick=PICK, patch=METADATA)
    @noted
    def annotate(self, pick: int, patch: dict[str, Any]) -> None:
        self.mayor.call("TaskUpdate", {"taskId": self.task(pick), "metadata": patch, "subject": "renamed"})

    @rule(pick=PICK, ready=st.sampled_from([None, True, False]))
    @noted
    def look(self, pick: int, ready: bool | None) -> None:
        task = self.task(pick)
        result = self.mayor.call("TaskGet", {"taskId": task})
        assert result.is_error is (task in self.deleted), text_of(result)
        self.mayor.ok("TaskList", **({} if ready is None else {"ready": ready}))

    # -- workers

    @rule(
        picks=st.none() | st.lists(PICK, min_size=1, max_size=3),
        runtime=st.sampled_from(["quick", "quick", "slow", "slow", "fails", "missing"]),
        max_workers=st.none() | st.integers(1, 4),
        isolation=st.sampled_from(["shared", "shared", "shared", "worktree"]),
        mode=st.sampled_from(["local"] * 7 + ["distributed"]),
    )
    @noted
    def spawn(
        self, picks: list[int] | None, runtime: str, max_workers: int | None, isolation: str, mode: str
    ) -> None:
        arguments: dict[str, Any] = {"runtime": runtime, "isolation": isolation, "mode": mode}
        chosen = None if picks is None else sorted({self.task(pick) for pick in picks})
        if chosen is not None:
            arguments["taskIds"] = chosen
        if max_workers is not None:
            arguments["maxWorkers"] = max_workers
        result = self.mayor.call("spawn", arguments)
        if chosen is not None and set(chosen) & self.deleted:
            assert result.is_error, text_of(result)
            return
        assert not result.is_error, text_of(result)
        started = cast(list[dict[str, Any]], json.loads(text_of(result))["workers"])
        started_tasks = [worker["taskId"] for worker in started]
        assert len(set(started_tasks)) == len(started_tasks), started
        if chosen is not None:
            assert set(started_tasks) <= set(chosen), started
        self.workers += [worker["workerId"] for worker in started]

    @rule(runtime=st.sampled_from(["quick", "slow", "fails"]))
    @noted
    def wave(self, runtime: str) -> None:
        """The Mayor's loop in one step: spawn the ready wave, wait a little for it."""
        started = [worker["workerId"] for worker in self.mayor.ok("spawn", runtime=runtime)["workers"]]
        self.workers += started
        answer = self.mayor.ok("wait", workerIds=started, timeoutSeconds=0.1)
        assert {done["workerId"] for done in answer["done"]} | set(answer["running"]) == set(started), answer

    @rule(
        picks=st.none() | st.lists(PICK, min_size=1, max_size=3),
        mode=st.sampled_from(["all", "any"]),
        timeout=st.sampled_from([0, 0.02, 0.1]),
    )
    @noted
    def wait(self, picks: list[int] | None, mode: str, timeout: float) -> None:
        arguments: dict[str, Any] = {"mode": mode, "timeoutSeconds": timeout}
        if picks is not None and self.workers:
            arguments["workerIds"] = sorted({cast(str, self.worker(pick)) for pick in picks})
        answer = self.mayor.ok("wait", **arguments)
        ended = {done["workerId"] for done in answer["done"]}
        assert not ended & set(answer["running"]), answer

    @rule(pick=PICK, status=st.sampled_from(["pending", "failed"]))
    @noted
    def close(self, pick: int, status: str) -> None:
        if (worker := self.worker(pick)) is not None:
            answer = self.mayor.ok("close_agent", workerId=worker, taskStatus=status)
            assert answer["state"] not in ("starting", "running"), answer

    @rule(pick=PICK, message=st.text(min_size=1, max_size=40).filter(str.strip))
    @noted
    def send_input(self, pick: int, message: str) -> None:
        if (worker := self.worker(pick)) is not None:
            result = self.mayor.call("send_input", {"workerId": worker, "message": message})
            # A command worker has no session: refused, whether it still runs or has ended.
            assert result.is_error, text_of(result)

    @rule(pick=PICK, calls=st.lists(st.sampled_from(WORKER_CALLS), min_size=1, max_size=4))
    @noted
    def worker_reports(self, pick: int, calls: list[tuple[str, dict[str, Any]]]) -> None:
        if (worker := self.worker(pick)) is None:
            return
        with running_worker(self.mayor, worker) as me:
            me.call("my_task", {})
            for tool, arguments in calls:
                me.call(tool, arguments)
            self.lab.answers.update(me.answers)

    # -- the Mayor's mail, files and imports

    @rule(pick=PICK, kind=st.sampled_from(["instruction", "info"]))
    @noted
    def send_message(self, pick: int, kind: str) -> None:
        if (worker := self.worker(pick)) is not None:
            self.mayor.ok("send_message", to=worker, subject="Use TOML", body="not YAML", type=kind)

    @rule(unread=st.booleans())
    @noted
    def fetch_inbox(self, unread: bool) -> None:
        self.mayor.ok("fetch_inbox", unreadOnly=unread)

    @rule(patterns=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2), exclusive=st.booleans())
    @noted
    def reserve(self, patterns: list[str], exclusive: bool) -> None:
        self.mayor.call("reserve_files", {"patterns": patterns, "exclusive": exclusive, "ttlSeconds": 60})

    @rule(everything=st.booleans())
    @noted
    def release(self, everything: bool) -> None:
        self.mayor.ok("release_files", **({} if everything else {"patterns": ["src/a.py"]}))
        self.mayor.ok("list_reservations")

    @rule()
    @noted
    def integrate(self) -> None:
        self.mayor.call("integrate", {})

    # Each import runs a stand-in program (a tenth of a second): a run has at most two.
    @precondition(lambda self: self.imports < 2)
    @rule(source=st.sampled_from(["import_wave", "import_beads"]))
    @noted
    def import_tasks(self, source: str) -> None:
        self.imports += 1
        answer = self.mayor.ok(source, **({"path": "wave.json"} if source == "import_wave" else {}))
        self.mayor.ok("wave_summary")
        created = cast(list[dict[str, Any]], answer["created"])
        self.created(
            [entry["taskId"] for entry in created],
            {(entry["taskId"], blocker) for entry in created for blocker in entry.get("blockedBy", [])},
        )


def _has_cycle(edges: set[tuple[str, str]]) -> bool:
    remaining = set(edges)
    while remaining:
        # Peel off tasks that wait for nothing left: what cannot be peeled is on a cycle.
        waiting = {waiter for waiter, _ in remaining}
        free = {blocker for _, blocker in remaining if blocker not in waiting}
        if not free:
            return True
        remaining = {(waiter, blocker) for waiter, blocker in remaining if blocker not in free}
    return False


# A pass takes seconds; a failure is shrunk, a run of real workers at a time, for up to five minutes.
@pytest.mark.timeout(600)
def test_random_sessions_keep_the_swarm_sound(tmp_path: Path, stand_ins: None, error_log: ErrorLog) -> None:
    with start_blocking_portal("asyncio") as portal:
        lab = Lab(portal, error_log, tmp_path)

        class InThisLab(Swarming):
            def __init__(self) -> None:
                super().__init__(lab)

        try:
            run_state_machine_as_test(
                InThisLab, settings=settings(FUZZ_SETTINGS, max_examples=30, stateful_step_count=40)
            )
        except Exception as reported:
            if lab.failures and reported is not lab.failures[0]:
                raise lab.failures[0] from reported
            raise
    print(f"random sessions: {lab.runs} runs, {sum(lab.answers.values())} calls")


# -- what the fuzzer found, kept as plain tests ---------------------------------------------------


@pytest.fixture
def mayor(tmp_path: Path, stand_ins: None, error_log: ErrorLog) -> Iterator[Served]:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as served,
    ):
        yield served


def refused(served: Served, tool: str, **arguments: Any) -> str:
    result = served.call(tool, arguments)
    assert result.is_error, f"{tool}({describe(arguments)}) was accepted: {text_of(result)}"
    return text_of(result)


def test_worker_ids_beyond_sqlites_integers_are_refused(mayor: Served) -> None:
    # Found: close_agent and send_input crashed with OverflowError on "worker-" and 19 digits, and
    # str.isdigit let through "²", which int() refuses.
    for worker in ("worker-" + "9" * 19, "worker-" + "9" * 33, "worker-\u00b2"):
        assert "no worker" in refused(mayor, "close_agent", workerId=worker)
        assert "no worker" in refused(mayor, "send_input", workerId=worker, message="go on")
    assert "no worker 'worker-" in refused(mayor, "close_agent", workerId="worker-" + "9" * 18)


def test_message_ids_beyond_sqlites_integers_are_refused(mayor: Served) -> None:
    # Found: fetch_inbox(sinceId=2**63) crashed with OverflowError, in both servers.
    assert "less than or equal to 9223372036854775807" in refused(mayor, "fetch_inbox", sinceId=2**63)
    assert mayor.ok("fetch_inbox", sinceId=2**63 - 1) == {"messages": []}
    mayor.ok("TaskCreate", subject="Write the parser", description="")
    [worker] = mayor.ok("spawn", runtime="slow")["workers"]
    with running_worker(mayor, worker["workerId"]) as me:
        assert "less than or equal to 9223372036854775807" in refused(me, "fetch_inbox", sinceId=2**63)
        assert me.ok("fetch_inbox", sinceId=2**63 - 1) == {"messages": []}


def test_import_wave_refuses_at_once_what_is_not_a_file(mayor: Served) -> None:
    # Found: a named pipe hung the call (and the server's shutdown) waiting for a writer; a path
    # with NUL crashed with ValueError; /dev/zero would be read until memory ran out.
    for path in ("pipe.json", "/dev/null"):
        assert "is not a regular file" in refused(mayor, "import_wave", path=path)
    assert "NUL" in refused(mayor, "import_wave", path="a\0b")
    assert "is a directory" in refused(mayor, "import_wave", path="directory")
    assert "bytes; a hero hunt file may be at most" in refused(mayor, "import_wave", path="sparse.json")
    assert mayor.ok("import_wave", path="wave.json")["created"]


def test_a_refusal_names_at_most_ten_of_its_problems(mayor: Served) -> None:
    # Found: ten thousand wrong items made a message of two megabytes, one line pair per item.
    message = refused(mayor, "TaskCreatePlan", tasks=["1"] * 10_001)
    assert "and 9991 more errors (10001 in all)" in message
    assert message.count("Input should be") == 10
    assert len(message) < 3000
    few = refused(mayor, "TaskCreate", subject=5, description=6)
    assert few.count("Input should be a valid string") == 2
    assert "more errors" not in few


# -- the invariants themselves --------------------------------------------------------------------


def broken_copy(db: Path, copy: Path, *statements: str) -> Path:
    """A copy of the database (taken through SQLite, so a server may have it open), then changed."""
    with (
        contextlib.closing(sqlite3.connect(db)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
        target.execute("PRAGMA foreign_keys = OFF")
        for statement in statements:
            target.execute(statement)
        target.commit()
    return copy


def test_the_invariants_name_each_kind_of_breakage(mayor: Served, tmp_path: Path) -> None:
    plan = [{"key": "a", "subject": "A"}, {"key": "b", "subject": "B", "blockedBy": ["a"]}, {"subject": "C"}]
    mayor.ok("TaskCreatePlan", tasks=plan)
    [worker] = mayor.ok("spawn", runtime="quick", taskIds=["1"])["workers"]
    mayor.ok("wait", workerIds=[worker["workerId"]], timeoutSeconds=5)
    mayor.ok("send_message", to=worker["workerId"], subject="Thanks")
    mayor.ok("TaskUpdate", taskId="3", metadata={"note": "x"}, description="later")
    assert ledger_problems(mayor.db, quiescent=True) == []
    event = "INSERT INTO task_events (task_id, at, actor, field, old, new) VALUES"
    worker_row = "INSERT INTO workers (task_id, runtime, attempt, state, cwd, log, started_at) VALUES"
    breakages = {
        "dependency cycle among live tasks: 1 -> 2 -> 1": [
            "INSERT INTO task_dependencies VALUES (1, 2)",
            f"{event} (1, 'x', 'mayor', 'blockedBy', NULL, '\"2\"')",
        ],
        "task 3: its status is 'failed', its history says 'pending'": [
            "UPDATE tasks SET status = 'failed' WHERE id = 3"
        ],
        "task 3 goes 'in_progress' -> 'failed', but its status was pending": [
            f"{event} (3, 'x', 'mayor', 'status', '\"in_progress\"', '\"failed\"')"
        ],
        "task 2 depends on 3, which no event records": ["INSERT INTO task_dependencies VALUES (2, 3)"],
        "task 3 is created a second time": [
            f"{event} (3, 'x', 'mayor', 'created', NULL, '{{\"subject\": \"C\"}}')"
        ],
        "events name task 99": [f"{event} (99, 'x', 'mayor', 'status', '\"pending\"', '\"failed\"')"],
        "PRAGMA foreign_key_check": [f"{event} (99, 'x', 'mayor', 'subject', NULL, '\"x\"')"],
        "task 3 has an event of an unknown field": [f"{event} (3, 'x', 'mayor', 'colour', NULL, '\"red\"')"],
        "its metadata.note is 'x', its history says 'y'": [
            f"{event} (3, 'x', 'mayor', 'metadata.note', '\"x\"', '\"y\"')"
        ],
        "task 2 has 2 live workers": [
            f"{worker_row} (2, 'quick', 1, 'running', '/', 'a.log', 'x')",
            f"{worker_row} (2, 'quick', 1, 'starting', '/', 'b.log', 'x')",
        ],
        "state succeeded but ended_at None": ["UPDATE workers SET ended_at = NULL"],
        "runs from 'worker-1' to 'worker-1'": ["UPDATE messages SET sender = 'worker-1'"],
        "is held by 'worker-7', no party of the swarm": [
            "INSERT INTO reservations (holder, pattern, exclusive, created_at, expires_at) "
            "VALUES ('worker-7', 'a', 1, 'x', 'y')"
        ],
    }
    for number, (problem, statements) in enumerate(breakages.items()):
        copy = broken_copy(mayor.db, tmp_path / f"broken-{number}.db", *statements)
        found = ledger_problems(copy)
        assert any(problem in line for line in found), f"{statements}: {found}"
    # Only once every server has stopped must no local worker be live.
    running = broken_copy(
        mayor.db, tmp_path / "running.db", f"{worker_row} (2, 'quick', 1, 'running', '/', 'c.log', 'x')"
    )
    assert ledger_problems(running) == []
    assert "worker-2 (local) is still running after every server stopped" in ledger_problems(
        running, quiescent=True
    )


def test_deleting_an_ol_task_while_its_worker_runs_leaves_the_server_working(mayor: Served) -> None:
    # Found: the worker succeeded, its OL ratchet hook then wrote to the deleted task, and the
    # TaskNotFound it raised took down the engine's task group with every supervisor in it.
    [first, *_] = mayor.ok("import_wave", path="wave.json")["created"]
    [worker] = mayor.ok("spawn", taskIds=[first["taskId"]], runtime="slow")["workers"]
    mayor.ok("TaskUpdate", taskId=first["taskId"], status="deleted")
    [done] = mayor.ok("wait", workerIds=[worker["workerId"]], timeoutSeconds=5)["done"]
    assert done["state"] == "succeeded", done
    assert "ratchet" not in json.dumps(done), "a deleted task's bead was reported done to OL"
    # The engine still supervises: the next worker runs and is judged.
    [second] = mayor.ok("spawn", taskIds=["2"], runtime="quick")["workers"]
    [judged] = mayor.ok("wait", workerIds=[second["workerId"]], timeoutSeconds=5)["done"]
    assert judged["taskStatus"] == "completed", judged
