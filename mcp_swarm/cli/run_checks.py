"""What `mcp-swarm run` checks before anything is created: that every task has a runtime that
exists and whose program can start.

Every problem is collected, not only the first, so that one look at the plan's errors is enough
to fix them all; a misspelt runtime name gets the nearest known one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mcp_swarm.config import Settings
from mcp_swarm.ledger.plan_file import PlanFile, did_you_mean
from mcp_swarm.runtimes.base import Runtime
from mcp_swarm.runtimes.command import CommandProfile, CommandRuntime
from mcp_swarm.runtimes.registry import DEMO_RUNTIME, default_runtime


@dataclass
class PlanRuntimes:
    """Each task's runtime by key, the runtimes to run them with, and what stands in the way."""

    chosen: dict[str, str] = field(default_factory=dict[str, str])
    runtimes: dict[str, Runtime] = field(default_factory=dict[str, Runtime])
    problems: list[str] = field(default_factory=list[str])


def command_runtime_name(key: str) -> str:
    """The runtime of a task that carries its own command: one per task, named after its key."""
    return f"command:{key}"


def plan_runtimes(
    plan: PlanFile, forced: str | None, settings: Settings, runtimes: Mapping[str, Runtime]
) -> PlanRuntimes:
    """Each task's runtime: its own command; else `forced` (--runtime), the task's, the plan's,
    the configured default, or codex or claude if installed. Problems are listed, not raised."""
    found = PlanRuntimes(runtimes=dict(runtimes))
    fallback = plan.runtime or settings.default_runtime or default_runtime(runtimes, None, None)
    missing: list[str] = []
    checked: set[str] = set()
    for task in plan.tasks:
        if task.command is not None:
            name = command_runtime_name(task.key)
            found.runtimes[name] = CommandRuntime(CommandProfile(list(task.command)), name=name)
            found.chosen[task.key] = name
            problem = _cannot_start(task.command[0], settings.project_dir)
            if problem is not None:
                found.problems.append(f"task {task.key!r}: {problem}")
            continue
        name = forced or task.runtime or fallback
        if name is None:
            missing.append(task.key)
            continue
        found.chosen[task.key] = name
        if name in checked:
            continue
        checked.add(name)
        runtime = runtimes.get(name)
        if runtime is None:
            found.problems.append(
                f"task {task.key!r}: unknown runtime {name!r}{did_you_mean(name, runtimes)}; the runtimes "
                f"here are {', '.join(sorted(runtimes))}"
            )
            continue
        program = runtime_program(runtime)
        problem = None if program is None else _cannot_start(program, settings.project_dir)
        if problem is not None:
            found.problems.append(f"runtime {name!r} (task {task.key!r}): {problem}")
    if missing:
        found.problems.insert(
            0,
            f"no runtime for {_keys(missing)}: pass --runtime NAME (--runtime {DEMO_RUNTIME} runs "
            "scripted workers with no LLM), set runtime in the plan or default_runtime in "
            "mcp-swarm.toml, or give the task a command = [...]",
        )
    return found


def runtime_program(runtime: Runtime) -> str | None:
    """The program a runtime starts: an agent CLI's, or a command's first argument."""
    profile = getattr(runtime, "profile", None)
    if isinstance(profile, CommandProfile):
        return profile.argv[0] if profile.argv else None
    program = getattr(profile, "program", None)
    return program if isinstance(program, str) else None


def _cannot_start(program: str, project_dir: Path) -> str | None:
    """Why `program` cannot be started by a worker in the project; None if it can."""
    if "{" in program:
        return None  # filled in per worker: known only then
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else project_dir / program
        if path.is_file() and os.access(path, os.X_OK):
            return None
        what = "is not executable" if path.exists() else "does not exist"
        return f"the program {program} {what}"
    if shutil.which(program) is None:
        return f"the program {program!r} is not on PATH; install it, or name it by its path"
    return None


def _keys(keys: list[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:5])
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    return ("task " if len(keys) == 1 else "tasks ") + shown + more
