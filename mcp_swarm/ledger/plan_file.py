"""Plan files for `mcp-swarm run`: a whole plan in TOML or JSON, checked before anything is created.

    runtime = "demo"          # optional: the runtime of every task that names none
    max_workers = 3           # optional

    [[tasks]]
    key = "model"
    subject = "Create User model"
    description = "A User dataclass in app/models.py"
    [tasks.metadata.validation]
    files_exist = ["app/models.py"]

    [[tasks]]
    key = "login"
    subject = "Create login endpoint"
    blocked_by = ["model"]
    runtime = "claude"        # optional, per task

    [[tasks]]
    key = "lint"
    subject = "Lint the code"
    command = ["ruff", "check", "."]   # instead of a runtime: this argument list, with no shell

A plan run is known by `name` (else the file's resolved path) and each task by its key, so that
running the same plan again continues the run instead of creating it twice.

Keys may be written snake_case or camelCase (`blocked_by` or `blockedBy`), as in the tool contract.
Every reference, every cycle and every field is checked here, so a bad file is refused whole
with a message that names the task, before the database is even opened.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from mcp_swarm.errors import InvalidInput
from mcp_swarm.models import (
    MAX_PLAN_KEY_CHARS,
    MAX_PLAN_TASKS,
    ActiveForm,
    Description,
    Metadata,
    PlanTask,
    Subject,
    Task,
    TaskStatus,
)

Key = Annotated[str, Field(min_length=1, max_length=MAX_PLAN_KEY_CHARS, pattern=r"^[A-Za-z_][\w.-]*$")]
RuntimeName = Annotated[str, Field(min_length=1, max_length=100)]
Argument = Annotated[str, Field(min_length=1, max_length=10_000)]
# How many problems of a plan are listed; the rest are counted.
MAX_PROBLEMS = 10
# The run's own record in each task's metadata (its name, the key, the runtime or command).
PLAN_METADATA_KEY = "plan"


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class PlanFileTask(_FileModel):
    key: Key
    subject: Subject
    description: Description = ""
    active_form: ActiveForm | None = None
    blocked_by: Annotated[list[Key], Field(max_length=MAX_PLAN_TASKS)] = Field(default_factory=list[str])
    runtime: RuntimeName | None = None
    command: Annotated[list[Argument], Field(min_length=1, max_length=1_000)] | None = None
    metadata: Metadata = Field(default_factory=dict[str, Any])

    @model_validator(mode="after")
    def _one_way_to_run(self) -> PlanFileTask:
        if self.runtime is not None and self.command is not None:
            raise ValueError("give either runtime or command, not both")
        if PLAN_METADATA_KEY in self.metadata:
            raise ValueError(f"metadata.{PLAN_METADATA_KEY} is the run's own record; use another name")
        return self


class PlanFile(_FileModel):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    runtime: RuntimeName | None = None
    max_workers: Annotated[int, Field(ge=1, le=256)] | None = None
    tasks: Annotated[list[PlanFileTask], Field(min_length=1, max_length=MAX_PLAN_TASKS)]

    def identity(self, path: Path) -> str:
        """What names this plan's run in the database: its `name`, else the file's resolved path."""
        return self.name or str(path.resolve())

    def plan_tasks(self, runtimes: dict[str, str] | None = None) -> list[PlanTask]:
        """The tasks as `Ledger.create_plan` and `Ledger.sync_plan` take them; with each task's
        runtime (`runtimes`, by key) or command recorded in `metadata.plan`, so that a change of
        either counts as a change of the task."""
        tasks: list[PlanTask] = []
        for task in self.tasks:
            metadata = task.metadata
            if task.command is not None:
                metadata = {**metadata, PLAN_METADATA_KEY: {"command": task.command}}
            elif runtimes is not None and task.key in runtimes:
                metadata = {**metadata, PLAN_METADATA_KEY: {"runtime": runtimes[task.key]}}
            tasks.append(
                PlanTask(
                    key=task.key,
                    subject=task.subject,
                    description=task.description,
                    active_form=task.active_form,
                    metadata=metadata,
                    blocked_by=task.blocked_by,
                )
            )
        return tasks

    def waves(self) -> dict[str, int]:
        """Each key's wave: 1 for a task that waits for nothing, else one more than its latest blocker."""
        return plan_waves({task.key: task.blocked_by for task in self.tasks})


def plan_waves(blocked_by: dict[str, list[str]]) -> dict[str, int]:
    """The depth of each node in the dependency graph, 1-based; InvalidInput for a dangling
    reference or a cycle (named). Iterative, so a long chain cannot exhaust the recursion limit."""
    for key, blockers in blocked_by.items():
        for blocker in blockers:
            if blocker not in blocked_by:
                raise InvalidInput(f"task {key!r} is blocked by {blocker!r}, which is no key of this plan")
            if blocker == key:
                raise InvalidInput(f"task {key!r} cannot be blocked by itself")
    waves: dict[str, int] = {}
    for start in blocked_by:
        path = [start]
        while path:
            key = path[-1]
            if key in waves:
                path.pop()
                continue
            waiting = [b for b in blocked_by[key] if b not in waves]
            if not waiting:
                waves[key] = 1 + max((waves[b] for b in blocked_by[key]), default=0)
                path.pop()
                continue
            blocker = waiting[0]
            if blocker in path:
                cycle = [*path[path.index(blocker) :], blocker]
                raise InvalidInput(
                    f"the plan has a cycle: {' -> '.join(cycle)} (each task is blocked by the next)"
                )
            path.append(blocker)
    return waves


def load_plan(path: Path, check: Callable[[PlanFile], list[str]] | None = None) -> PlanFile:
    """Read and check a plan file; InvalidInput lists every problem found (up to MAX_PROBLEMS), each
    saying what is wrong and where. `check` adds problems of its own (runtimes that cannot start)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidInput(f"no plan file {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the plan file {path}: {exc}") from exc
    data = _parse(path, text)
    try:
        plan = PlanFile.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(problems_message(path, _problems(exc, data))) from exc
    problems = _reference_problems(plan)
    if not problems:
        try:
            plan.waves()
        except InvalidInput as exc:
            problems.append(str(exc))
    if check is not None:
        problems.extend(check(plan))
    if problems:
        raise InvalidInput(problems_message(path, problems))
    return plan


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices`, or nothing if none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reference_problems(plan: PlanFile) -> list[str]:
    """Keys used twice, and blockers that are no key of the plan (with the nearest one)."""
    problems: list[str] = []
    keys: dict[str, int] = {}
    for number, task in enumerate(plan.tasks, start=1):
        if task.key in keys:
            problems.append(f"task {number}: key {task.key!r} is also the key of task {keys[task.key]}")
        keys.setdefault(task.key, number)
    for task in plan.tasks:
        for blocker in task.blocked_by:
            if blocker == task.key:
                problems.append(f"task {task.key!r} cannot be blocked by itself")
            elif blocker not in keys:
                problems.append(
                    f"task {task.key!r} is blocked by {blocker!r}, which is no key of this plan"
                    + did_you_mean(blocker, keys)
                )
    return problems


def problems_message(path: Path | str, problems: list[str]) -> str:
    """Problems as one message: one on its line, several as a list of at most MAX_PROBLEMS."""
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    shown = problems[:MAX_PROBLEMS]
    lines = [f"{path} has {len(problems)} problems:", *(f"  - {problem}" for problem in shown)]
    if len(problems) > len(shown):
        lines.append(f"  and {len(problems) - len(shown)} more")
    return "\n".join(lines)


def _parse(path: Path, text: str) -> Any:
    as_json = path.suffix.lower() == ".json" or (path.suffix.lower() != ".toml" and text.lstrip()[:1] == "{")
    if as_json:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"{path} is not valid JSON: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from exc


def _problems(exc: ValidationError, data: Any) -> list[str]:
    """Pydantic's errors, each placed as a person reads the file: task 3 (key 'jwt'): subject."""
    tasks = _list(_dict(data).get("tasks"))
    problems: list[str] = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
            index = loc[1]
            key = _dict(tasks[index]).get("key") if index < len(tasks) else None
            where = f"task {index + 1}" + (f" ({key!r})" if isinstance(key, str) else "")
            loc = loc[2:]
        field = ".".join(str(part) for part in loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "not a known field"
        message = message.removeprefix("Value error, ")
        problems.append(": ".join(part for part in (where, field, message) if part))
    return problems


# Not runtimes.base's helpers: importing the runtimes package pulls in the MCP SDK, and `status`
# (which reads plan waves) starts twice as fast without it.
def _dict(value: object) -> dict[str, Any]:
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return cast(list[Any], value) if isinstance(value, list) else []


def task_waves(tasks: list[Task]) -> dict[str, int]:
    """Each task's wave over every dependency, completed ones included (`blocks` lists them all)."""
    live = {task.id for task in tasks if task.status is not TaskStatus.DELETED}
    blocked_by: dict[str, list[str]] = {task_id: [] for task_id in live}
    for task in tasks:
        if task.id in live:
            for waiter in task.blocks:
                if waiter in live:
                    blocked_by[waiter].append(task.id)
    return plan_waves(blocked_by)
