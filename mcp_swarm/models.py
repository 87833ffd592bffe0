"""The vocabulary every layer speaks: statuses, limits, and the task records passed between layers.

Output records use camelCase aliases so that the MCP layer can dump them as Claude Code's own task
tools shape their answers; Python code uses the snake_case attribute names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mcp_swarm.errors import InvalidInput, TaskNotFound

# Limits are part of the tool contract (documented in the README); raising one is a compatible
# change, lowering one is not.
MAX_SUBJECT_CHARS = 500
MAX_DESCRIPTION_CHARS = 50_000
MAX_ACTIVE_FORM_CHARS = 500
MAX_OWNER_CHARS = 200
MAX_METADATA_BYTES = 64 * 1024
MAX_IDS_PER_CALL = 1_000
MAX_PLAN_TASKS = 1_000
MAX_TASK_ID_CHARS = 20
MAX_PLAN_KEY_CHARS = 100


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"


# A blocker in one of these states no longer holds anything up. A failed blocker keeps blocking:
# its dependents must not run on top of work that did not happen.
RELEASING_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.DELETED})


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


def metadata_bytes(value: dict[str, Any]) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _metadata_size(value: dict[str, Any]) -> dict[str, Any]:
    size = metadata_bytes(value)
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return value


Subject = Annotated[str, Field(min_length=1, max_length=MAX_SUBJECT_CHARS), AfterValidator(_not_blank)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)]
ActiveForm = Annotated[str, Field(max_length=MAX_ACTIVE_FORM_CHARS)]
Owner = Annotated[str, Field(max_length=MAX_OWNER_CHARS)]
TaskId = Annotated[str, Field(min_length=1, max_length=MAX_TASK_ID_CHARS)]
TaskIds = Annotated[list[TaskId], Field(max_length=MAX_IDS_PER_CALL)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata_size)]


class _Input(BaseModel):
    # Inputs accept the tool contract's camelCase keys as well as the Python names.
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class NewTask(_Input):
    """What a caller gives to create one task."""

    # The descriptions reach a caller in TaskCreatePlan's schema, where each task is one of these.
    subject: Annotated[Subject, Field(description="A brief title, in the imperative: 'Add login endpoint'")]
    description: Annotated[Description, Field(description="What needs to be done, in full")] = ""
    active_form: Annotated[
        ActiveForm | None, Field(description="Present continuous form for spinners: 'Adding login endpoint'")
    ] = None
    metadata: Metadata = Field(
        default_factory=dict[str, Any], description="Arbitrary JSON object kept with the task"
    )
    blocked_by: TaskIds = Field(
        default_factory=list[str], description="Ids of tasks (or keys of this plan's tasks) to wait for"
    )


class PlanTask(NewTask):
    """One task of a plan; `blocked_by` may name plan keys as well as existing task ids."""

    key: Annotated[
        str | None,
        Field(
            min_length=1, max_length=MAX_PLAN_KEY_CHARS, description="A name other tasks' blockedBy may use"
        ),
    ] = None


class TaskChanges(_Input):
    """A partial update. A field left as None is not touched."""

    status: TaskStatus | None = None
    subject: Subject | None = None
    description: Description | None = None
    active_form: ActiveForm | None = None
    owner: Owner | None = None
    metadata: Metadata | None = None
    add_blocks: TaskIds = Field(default_factory=list[str])
    add_blocked_by: TaskIds = Field(default_factory=list[str])


class _Output(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class TaskSummary(NamedTuple):
    """One row of a task listing: just enough for the Mayor to pick the next wave.

    A plain tuple, not a pydantic model: a plan of thousands of tasks is listed again and again,
    and validating every row cost more than the query (benchmarks/bench_ledger.py).
    """

    id: str
    subject: str
    status: TaskStatus
    owner: str | None
    blocked_by: list[str]
    ready: bool


class Task(_Output):
    """Everything known about one task."""

    id: str
    subject: str
    description: str = ""
    active_form: str | None = None
    status: TaskStatus
    owner: str | None = None
    blocked_by: list[str] = Field(default_factory=list[str])
    blocks: list[str] = Field(default_factory=list[str])
    ready: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict[str, Any])
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class TaskListing:
    tasks: list[TaskSummary]
    counts: dict[str, int]


class TaskEvent(_Output):
    """One recorded change of one task field: the swarm's history, read back."""

    id: int
    task_id: str
    at: str
    actor: str
    field: str
    old: Any = None
    new: Any = None


class CreatedPlan(_Output):
    """The ids a plan's tasks received, in the order given, and each key's id."""

    ids: list[str]
    keys: dict[str, str] = Field(default_factory=dict[str, str])


class SyncedPlan(_Output):
    """A plan run brought in line with its file: each key's id, and what happened to each key."""

    keys: dict[str, str]
    created: list[str] = Field(default_factory=list[str])
    updated: list[str] = Field(default_factory=list[str])  # its definition changed in the file
    retried: list[str] = Field(default_factory=list[str])  # failed before, pending again
    kept: list[str] = Field(default_factory=list[str])  # completed before: not run again
    removed: list[str] = Field(default_factory=list[str])  # no longer in the file: deleted


class WorkerState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


LIVE_WORKER_STATES = frozenset({WorkerState.STARTING, WorkerState.RUNNING})


def worker_name(number: int) -> str:
    return f"worker-{number}"


class Worker(_Output):
    """One run of one task by one runtime; `attempt` counts the runs of that task."""

    id: str
    task_id: str
    runtime: str
    attempt: int
    state: WorkerState
    pid: int | None = None
    pid_start_time: int | None = None
    cwd: str
    log: str
    session_id: str | None = None
    exit_code: int | None = None
    summary: str | None = None
    error: str | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    validation: dict[str, Any] | None = None
    task_status: TaskStatus | None = None
    started_at: str
    ended_at: str | None = None
    mode: str = "local"
    tmux_session: str | None = None
    # The server process supervising it while it is live, as "pid:start time".
    supervisor: str | None = None
    isolation: str = "shared"
    worktree: dict[str, str] | None = None
    changes: list[dict[str, Any]] | None = None
    integrated_commit: str | None = None
    # The Mayor whose plain `wait` gets its result (an HTTP session's name); None: any Mayor's.
    mayor: str | None = None

    @property
    def number(self) -> int:
        """The worker's row in the store: `worker-3` is 3."""
        return worker_number(self.id)


def is_ready(status: TaskStatus, open_blockers: list[str]) -> bool:
    return status is TaskStatus.PENDING and not open_blockers


# -- ids and the clock: one home for every layer ---------------------------------------------

# Ids are SQLite integers: more digits than this name nothing (and overflow a query).
_MAX_DB_ID_DIGITS = 18


def now() -> str:
    """The time as every record of the swarm keeps it: UTC, milliseconds, fixed width, with a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_task_id(task_id: str) -> int:
    """Task ids are the decimal strings the ledger hands out; anything else names no task."""
    if not (task_id.isascii() and task_id.isdigit()) or len(task_id) > _MAX_DB_ID_DIGITS:
        raise TaskNotFound(task_id)
    number = int(task_id)
    if str(number) != task_id:
        raise TaskNotFound(task_id)
    return number


def worker_number(worker_id: str) -> int:
    """The number in a worker id (`worker-3` -> 3); anything else names no worker."""
    prefix, _, number = worker_id.partition("-")
    # isascii: str.isdigit is also true of digits int() refuses, such as "²".
    digits = number.isascii() and number.isdigit() and len(number) <= _MAX_DB_ID_DIGITS
    if prefix != "worker" or not digits or str(int(number)) != number or int(number) < 1:
        raise InvalidInput(f"no worker {worker_id!r}; worker ids look like 'worker-3'")
    return int(number)
