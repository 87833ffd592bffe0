"""Workers and checks that record how they were run (tests/support/stand_ins/record_run), and the texts
a shell or an option parser would act on, for the hardening tests."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mcp import Client

from tests.support import STAND_INS
from tests.support.mcp_client import call, stdio_parameters

RECORD_RUN = STAND_INS / "record_run"
RUNTIME = "record"
# Workers here end in well under a second; this only turns a hang into a failure.
WAIT_SECONDS = 60


def record_argv(out: Path, *args: str) -> list[str]:
    """The command line of a run of record_run that writes its record to `out`."""
    return [sys.executable, str(RECORD_RUN), str(out), *args]


def worker_argv(records: Path) -> list[str]:
    """A command runtime's argv: every placeholder, each as an argument of its own."""
    placeholders = ("{prompt}", "{task_id}", "{worker_id}", "{prompt_file}", "{result_file}", "{cwd}")
    return record_argv(records / "{worker_id}.json", *placeholders)


def configure(project: Path, records: Path, extra: Sequence[str] = (), *, socket: str | None = None) -> None:
    """mcp-swarm.toml for `project`: the `record` runtime by default; `socket` makes it distributed."""
    lines = [f"default_runtime = {json.dumps(RUNTIME)}", *extra]
    if socket is not None:
        lines += ['mode = "distributed"', f"tmux_socket = {json.dumps(socket)}"]
    # A JSON string, or array of strings, is a TOML one.
    lines += ["", f"[runtimes.{RUNTIME}]", 'type = "command"', f"argv = {json.dumps(worker_argv(records))}"]
    records.mkdir(exist_ok=True)
    (project / "mcp-swarm.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Record:
    """How one run of record_run was run."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    parent_cmdline: list[str]
    parent_env: dict[str, str]


def read_record(path: Path) -> Record:
    data = cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))
    parent = cast(dict[str, Any], data["parent"])
    return Record(data["argv"], data["cwd"], data["env"], parent["cmdline"], parent["environ"])


def hostile_texts(marker: Path) -> list[str]:
    """Texts that would create `marker` if a shell read them, or be options to a parser of options."""
    return [
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"| touch {marker}",
        f"&& touch {marker}",
        f"' ; touch {marker} ; '",
        f'" ; touch {marker} ; "',
        f"line one\ntouch {marker}",
        # tmux: '#(...)' runs a command where a format is expanded; a trailing ';' ends a command.
        f"#(touch {marker}) #{{pane_pid}}",
        f"touch {marker} ;",
        "--dangerously-skip-permissions",
        "-c",
        "--help",
    ]


@asynccontextmanager
async def serve(project: Path, env: Mapping[str, str] | None = None) -> AsyncGenerator[Client]:
    """`mcp-swarm serve` over stdio in `project`, with `env` added to the SDK's small default one."""
    params = stdio_parameters(project / "unused.db", cwd=project)
    params.args = ["serve"]
    params.env = dict(env or {})
    async with Client(params, mode="legacy") as client:
        yield client


async def run_one(client: Client, task: Mapping[str, Any], **spawn: Any) -> dict[str, Any]:
    """Create the task, spawn its worker, wait for it: its one `wait` result."""
    created = await call(client, "TaskCreate", **task)
    spawned = await call(client, "spawn", taskIds=[created["id"]], **spawn)
    assert spawned.get("skipped", []) == [], spawned
    [worker] = spawned["workers"]
    result = await call(client, "wait", workerIds=[worker["workerId"]], timeoutSeconds=WAIT_SECONDS)
    assert "timedOut" not in result, result
    [done] = result["done"]
    return cast(dict[str, Any], done)
