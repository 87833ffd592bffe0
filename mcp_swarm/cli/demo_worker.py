"""A scripted worker for demonstrations and tests: no agent CLI, no LLM, no network.

Started by the `demo` runtime (`python -m mcp_swarm.cli.demo_worker`) like any `command` worker, it
reads its own task from the swarm's database (`$SWARM_DB`, `$SWARM_TASK_ID`), writes each file the
task's `metadata.validation.files_exist` names (the user-auth example's files get real code, any
other file a short stub), prints what it does with short pauses so that a live view has
something to show, and reports through `$SWARM_RESULT_FILE`.

`metadata.demo = {"fail": "why"}` makes it fail on purpose, to show what a failed task does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

import anyio

from mcp_swarm.cli.demo_files import TEMPLATES
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import Task
from mcp_swarm.store import Store


async def _read_task(db: Path, task_id: str) -> Task:
    async with await Store.open(db) as store:
        return await Ledger(store).get(task_id)


def _object(value: object) -> dict[str, Any]:
    # Not runtimes.base.as_object: importing the runtimes package pulls in the MCP SDK, which
    # would double the start-up time of every scripted worker.
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def _files_of(task: Task) -> list[str]:
    names = _object(task.metadata.get("validation")).get("files_exist")
    return [str(name) for name in cast(list[Any], names)] if isinstance(names, list) else []


def _stub(name: str, task: Task) -> str:
    if name.endswith(".md"):
        return f"# {task.subject}\n\nWritten by the demo worker for task {task.id}.\n"
    comment = "//" if name.endswith((".js", ".ts", ".go", ".rs", ".c", ".java")) else "#"
    return f"{comment} {task.subject}\n{comment} Written by the demo worker for task {task.id}.\n"


def _say(line: str, pace: float) -> None:
    print(line, flush=True)
    time.sleep(pace)


def _report(status: str, summary: str) -> None:
    result = os.environ.get("SWARM_RESULT_FILE")
    if result:
        Path(result).write_text(json.dumps({"status": status, "summary": summary}), encoding="utf-8")


def work(task: Task, cwd: Path, pace: float) -> int:
    _say(f"task {task.id}: {task.subject}", pace)
    failure = _object(task.metadata.get("demo")).get("fail")
    if failure:
        _say(f"giving up: {failure}", pace)
        _report("blocked", str(failure))
        return 0  # the result file says why, which an exit status could not
    files = _files_of(task)
    _say(f"planning: {len(files)} file{'s' if len(files) != 1 else ''} to write", pace)
    for name in files:
        path = (cwd / name).resolve()
        if cwd.resolve() not in path.parents:
            _say(f"refusing {name}: it is outside the project", pace)
            _report("blocked", f"{name} is outside the project")
            return 1
        path.parent.mkdir(parents=True, exist_ok=True)
        text = TEMPLATES.get(name) or _stub(name, task)
        path.write_text(text, encoding="utf-8")
        lines = len(text.splitlines())
        _say(f"wrote {name} ({lines} line{'s' if lines != 1 else ''})", pace)
        if name.endswith(".py"):
            compile(text, name, "exec")
            _say(f"checked that {name} compiles", pace)
    summary = f"Wrote {', '.join(files)}" if files else "Nothing to write; the task names no files"
    _report("done", summary)
    print(summary, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_swarm.cli.demo_worker", description=__doc__)
    parser.add_argument("--pace", type=float, default=0.25, help="seconds between progress lines")
    args = parser.parse_args(argv)
    db, task_id = os.environ.get("SWARM_DB"), os.environ.get("SWARM_TASK_ID")
    if not db or not task_id:
        print("demo worker: SWARM_DB and SWARM_TASK_ID must be set (mcp-swarm sets them)", file=sys.stderr)
        return 2
    task = anyio.run(_read_task, Path(db), task_id)
    return work(task, Path.cwd(), max(0.0, args.pace))


if __name__ == "__main__":
    sys.exit(main())
