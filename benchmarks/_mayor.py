"""The Mayor's side of the benchmarks that speak MCP: tool calls, plans, and the spawn/wait loop.

bench_swarm and bench_load drive `mcp-swarm serve` over real stdio with the SDK's client, as an
agent would; what they share lives here, so that each benchmark file keeps only its scenario and
its report.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from mcp import Client
from mcp_types import CallToolResult, TextContent

# Each wait call's own limit: a run that stalls longer fails on its benchmark's run timeout.
WAIT_SECONDS = 30


def _text(result: CallToolResult, tool: str) -> str:
    first = result.content[0] if result.content else None
    if not isinstance(first, TextContent):
        raise RuntimeError(f"{tool} answered without text: {result.content}")
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {first.text}")
    return first.text


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool's answer as JSON; a tool error, or an answer that is not text, raises."""
    return cast(dict[str, Any], json.loads(_text(await client.call_tool(tool, arguments), tool)))


def toml_list(items: Sequence[str]) -> str:
    # A JSON string is a valid TOML basic string: the same escapes, and non-ASCII as \uXXXX.
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def plan(waves: int, per_wave: int, blockers: int) -> list[dict[str, Any]]:
    """waves x per_wave tasks; task j of wave k+1 waits for `blockers` tasks of wave k, spread out."""
    step = max(1, per_wave // blockers)
    tasks: list[dict[str, Any]] = []
    for wave in range(waves):
        for j in range(per_wave):
            task: dict[str, Any] = {"key": f"w{wave}t{j}", "subject": f"Step {j + 1} of wave {wave + 1}"}
            if wave:
                task["blockedBy"] = sorted(
                    {f"w{wave - 1}t{(j + i * step) % per_wave}" for i in range(blockers)}
                )
            tasks.append(task)
    return tasks


# -- Mayors sharing one database (bench_load) ---------------------------------------------------


@dataclass
class Mayor:
    """One Mayor's session and its server, as seen from this client."""

    name: str
    project: Path
    pid: int = 0
    spawn_ms: list[float] = field(default_factory=list[float])
    wait_ms: list[float] = field(default_factory=list[float])
    started: list[str] = field(default_factory=list[str])  # worker ids its spawn answers named
    results: list[str] = field(default_factory=list[str])  # worker ids its wait answers handed over
    rss_kib: list[int] = field(default_factory=list[int])  # sampled during the run
    rss_start_kib: int = 0  # connected, nothing planned yet
    rss_end_kib: int = 0
    hwm_kib: int = 0  # peak RSS of the server process over its whole life


async def mayor_loop(client: Client, mayor: Mayor, total: int) -> None:
    """spawn, wait for the first end, again; until the ledger says every task is completed.

    wait without workerIds hands over any ended worker not yet handed to a Mayor, this server's or
    another's, so no Mayor can count its own results to know when to stop: when nothing is live
    and nothing started, the ledger's counts decide.
    """
    while True:
        before = time.perf_counter_ns()
        spawned = await call(client, "spawn", {})
        mayor.spawn_ms.append((time.perf_counter_ns() - before) / 1e6)
        started = [cast(str, w["workerId"]) for w in cast(list[dict[str, Any]], spawned.get("workers", []))]
        mayor.started += started

        before = time.perf_counter_ns()
        waited = await call(client, "wait", {"mode": "any", "timeoutSeconds": WAIT_SECONDS})
        mayor.wait_ms.append((time.perf_counter_ns() - before) / 1e6)
        done = cast(list[dict[str, Any]], waited.get("done", []))
        for result in done:
            if result.get("state") != "succeeded" or result.get("taskStatus") != "completed":
                raise RuntimeError(f"Mayor {mayor.name}: a worker did not complete its task: {result}")
            mayor.results.append(cast(str, result["workerId"]))
        if started or done or waited.get("running"):
            continue
        counts = cast(dict[str, int], (await call(client, "TaskList", {"ready": True}))["counts"])
        if counts.get("completed", 0) == total:
            return
        if not counts.get("ready") and not counts.get("in_progress"):
            raise RuntimeError(f"Mayor {mayor.name}: nothing runs and nothing can start: {counts}")


def server_pid(project: Path) -> int:
    """The pid of the server this process started in `project`: a child of ours, by its cwd.

    The SDK's stdio client does not expose its process, so it is found in /proc.
    """
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # The command name in parentheses may hold spaces; the fields after it do not.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == me and Path(os.readlink(entry / "cwd")) == project:
                found.append(int(entry.name))
    if len(found) != 1:
        raise RuntimeError(f"expected one server process in {project}, found {found}")
    return found[0]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak RSS the kernel kept for the process) in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values
