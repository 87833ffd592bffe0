"""A scripted worker for demonstrations and tests: no agent CLI, no LLM, no network.

Started by the `demo` runtime (`python -m mcp_swarm.cli.demo_worker`) like any `command` worker, it
reads its own task from the server's worker endpoint with the MCP SDK's client (`$SWARM_URL`, with
its attempt's token `$SWARM_TOKEN`), writes each file the task's `metadata.validation.files_exist`
names (the user-auth example's files get real code, any other file a short stub), prints what it
does with short pauses so that a live view has something to show, and reports its result both to
the Mayor (`report_result`) and in `$SWARM_RESULT_FILE`.

`metadata.demo = {"fail": "why"}` makes it fail on purpose, to show what a failed task does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, cast

import anyio

from mcp_swarm.cli.demo_files import TEMPLATES
from mcp_swarm.models import Task
from mcp_swarm.server.worker_client import EndpointRefused, WorkerClient, worker_client


def _object(value: object) -> dict[str, Any]:
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def _files_of(task: Task) -> list[str]:
    names = _object(task.metadata.get("validation")).get("files_exist")
    return [str(name) for name in cast(list[Any], names)] if isinstance(names, list) else []


def _stub(name: str, task: Task) -> str:
    if name.endswith(".md"):
        return f"# {task.subject}\n\nWritten by the demo worker for task {task.id}.\n"
    comment = "//" if name.endswith((".js", ".ts", ".go", ".rs", ".c", ".java")) else "#"
    return f"{comment} {task.subject}\n{comment} Written by the demo worker for task {task.id}.\n"


async def _say(line: str, pace: float) -> None:
    print(line, flush=True)
    await anyio.sleep(pace)


class Reporter:
    """Where the worker's result goes: to the Mayor through the endpoint, and to the result file
    (the evidence its verdict reads)."""

    def __init__(self, client: WorkerClient) -> None:
        self.client = client

    async def __call__(self, status: str, summary: str) -> None:
        _write_result(status, summary)
        await self.client.call("report_result", {"status": status, "summary": summary})


def _write_result(status: str, summary: str) -> None:
    result = os.environ.get("SWARM_RESULT_FILE")
    if result:
        Path(result).write_text(json.dumps({"status": status, "summary": summary}), encoding="utf-8")


def _write(cwd: Path, name: str, text: str) -> bool:
    """Write one file of the task; False if its name leads outside the project."""
    path = (cwd / name).resolve()
    if cwd.resolve() not in path.parents:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


async def work(task: Task, cwd: Path, pace: float, report: Reporter) -> int:
    await _say(f"task {task.id}: {task.subject}", pace)
    failure = _object(task.metadata.get("demo")).get("fail")
    if failure:
        await _say(f"giving up: {failure}", pace)
        await report("blocked", str(failure))
        return 0  # the result says why, which an exit status could not
    files = _files_of(task)
    await _say(f"planning: {len(files)} file{'s' if len(files) != 1 else ''} to write", pace)
    for name in files:
        text = TEMPLATES.get(name) or _stub(name, task)
        if not _write(cwd, name, text):
            await _say(f"refusing {name}: it is outside the project", pace)
            await report("blocked", f"{name} is outside the project")
            return 1
        lines = len(text.splitlines())
        await _say(f"wrote {name} ({lines} line{'s' if lines != 1 else ''})", pace)
        if name.endswith(".py"):
            compile(text, name, "exec")
            await _say(f"checked that {name} compiles", pace)
    summary = f"Wrote {', '.join(files)}" if files else "Nothing to write; the task names no files"
    await report("done", summary)
    print(summary, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_swarm.cli.demo_worker", description=__doc__)
    parser.add_argument("--pace", type=float, default=0.25, help="seconds between progress lines")
    args = parser.parse_args(argv)
    url, token = os.environ.get("SWARM_URL"), os.environ.get("SWARM_TOKEN")
    if not url or not token:
        print("demo worker: SWARM_URL and SWARM_TOKEN must be set (mcp-swarm sets them)", file=sys.stderr)
        return 2
    try:
        return anyio.run(_run, url, token, max(0.0, args.pace))
    except EndpointRefused as exc:
        print(f"demo worker: the swarm refused {exc}", file=sys.stderr)
        return 1


async def _run(url: str, token: str, pace: float) -> int:
    async with worker_client(url, token) as client:
        task = Task.model_validate(await client.call("my_task"))
        return await work(task, Path.cwd(), pace, Reporter(client))


if __name__ == "__main__":
    sys.exit(main())
