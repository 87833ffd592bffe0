"""Waves from OL: import an `ol hero hunt` file as tasks, and report finished beads back to OL.

The seed's `/swarm --from-wave <file>` reads the hunt's JSON, creates one task per bead of its
wave, runs them, and after each bead's task is completed and validated runs
`ol hero ratchet <bead> --quest <quest>`: exit 0 keeps the task completed, anything else fails it.

The file has three lists, and each maps onto the ledger differently:

- `wave`: the beads OL says are ready. Each becomes a task, in priority order (lower first).
- `blocked`: beads waiting for others. Each becomes a task blocked by the tasks of its blockers,
  so the swarm holds it back exactly as long as OL would, and a failed ratchet (a failed task)
  keeps it held. A blocker OL lists as `completed` holds nothing up. A blocked bead waiting on a
  bead this file and the ledger know nothing of is not created: as a task it would look ready
  while OL says it is not. It is reported with what it waits on; a later hunt brings it back.
- `completed`: beads OL has already finished. No task: running or ratcheting them again would
  redo finished work. They are reported, and count as done for the blocked beads.

A bead that already has a task (one not deleted) from an earlier import gets no second one; it
is reported as skipped, and its task still serves as a blocker.

Reporting back to OL (the ratchet) is integrations/ol_ratchet.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import (
    MAX_DESCRIPTION_CHARS,
    MAX_PLAN_TASKS,
    MAX_SUBJECT_CHARS,
    PlanTask,
    Task,
    TaskStatus,
)

logger = logging.getLogger(__name__)

# The seed's words, so that a Mayor following the skill recognises the refusal.
OL_MISSING = "Error: ol CLI required for --from-wave. Install ol or use swarm without wave integration."
DEFAULT_RATCHET_TIMEOUT = 300.0
MAX_BEAD_ID_CHARS = 90
MAX_HUNT_FILE_BYTES = 16 * 1024 * 1024
_MAX_REPORTED_ERRORS = 5
_NO_PRIORITY = float("inf")

# Task metadata keys. `ol_quest` is stored at import so the ratchet needs nothing but the task.
BEAD_KEY = "ol_bead_id"
SPEC_KEY = "ol_spec_path"
PRIORITY_KEY = "ol_priority"
QUEST_KEY = "ol_quest"
RATCHET_KEY = "ol_ratchet"


# -- the hero hunt file -------------------------------------------------------------------------


def check_id(value: str) -> str:
    """A bead or quest id as given; ValueError if it is none.

    Ids go on command lines: one starting with '-' would be read as an option.
    """
    if (
        not value
        or not value[0].isalnum()
        or not all(c.isascii() and (c.isalnum() or c in "._:-") for c in value)
    ):
        raise ValueError(
            f"{value!r} is not an id: it must start with a letter or digit and hold only "
            "ASCII letters, digits, '.', '_', ':' and '-'"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


def _null_is_empty(value: object) -> object:
    # A CLI written in Go prints an empty (nil) slice as null.
    return [] if value is None else value


BeadId = Annotated[str, Field(max_length=MAX_BEAD_ID_CHARS), AfterValidator(check_id)]
Text = Annotated[str, AfterValidator(_not_blank)]
BeadIds = Annotated[list[BeadId], BeforeValidator(_null_is_empty)]


class _Entry(BaseModel):
    # Strict types (a priority of "1" or true is an error, not a guess); unknown keys are OL's
    # business and are ignored, so a newer OL does not break the import.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class WaveEntry(_Entry):
    """A bead OL says is ready to work on."""

    id: BeadId
    title: Text
    spec_path: Text
    priority: int
    # Not in the seed's example; honoured between beads of the wave if OL gives it.
    blocked_by: BeadIds = Field(default_factory=list[str])


class BlockedEntry(_Entry):
    """A bead that waits for others; spec and priority are optional, as in the seed's example."""

    id: BeadId
    title: Text
    blocked_by: Annotated[list[BeadId], Field(min_length=1)]
    spec_path: Text | None = None
    priority: int | None = None


class CompletedEntry(_Entry):
    """A bead OL has already finished."""

    id: BeadId
    title: str = ""


class HeroHunt(_Entry):
    """The JSON `ol hero hunt` prints, as `/swarm --from-wave` reads it."""

    wave: Annotated[list[WaveEntry], BeforeValidator(_null_is_empty), Field(max_length=MAX_PLAN_TASKS)]
    blocked: Annotated[
        list[BlockedEntry], BeforeValidator(_null_is_empty), Field(max_length=MAX_PLAN_TASKS)
    ] = Field(default_factory=list[BlockedEntry])
    completed: Annotated[list[CompletedEntry], BeforeValidator(_null_is_empty)] = Field(
        default_factory=list[CompletedEntry]
    )


def quest_of(bead_id: str) -> str:
    """The quest of a bead: its id without the last '.part' (ol-527.1 -> ol-527), as the seed's sed does."""
    return bead_id.rsplit(".", 1)[0]


def parse_hero_hunt(path: Path) -> HeroHunt:
    """Read and check a hero hunt file; InvalidInput says what is wrong and where."""
    if "\0" in str(path):
        raise InvalidInput(f"wave file {str(path)!r} contains a NUL character; give the path of a file")
    try:
        text = _read_regular_file(path).decode("utf-8")
    except FileNotFoundError as exc:
        raise InvalidInput(f"wave file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"wave file {path} is a directory, not an `ol hero hunt` JSON file") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"wave file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read wave file {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"wave file {path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(raw, dict):
        raise InvalidInput(
            f'wave file {path} must hold a JSON object with a "wave" list (`ol hero hunt` output); '
            f"it holds a {type(raw).__name__}"
        )
    try:
        hunt = HeroHunt.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"wave file {path} is not a valid hero hunt: {_describe(exc)}") from exc
    _check_ids(hunt, path)
    return hunt


def _read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_HUNT_FILE_BYTES; InvalidInput for anything else.

    Only the open file is looked at, so it cannot be swapped between the check and the read. A
    named pipe is opened without waiting for a writer, and refused like a device: reading either
    could block forever or never end (/dev/zero)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"wave file {path} is not a regular file, not an `ol hero hunt` JSON file")
        # One byte more than the limit: a file that grows past it after the stat is caught too.
        size = info.st_size
        data = file.read(MAX_HUNT_FILE_BYTES + 1) if size <= MAX_HUNT_FILE_BYTES else b""
    if size > MAX_HUNT_FILE_BYTES or len(data) > MAX_HUNT_FILE_BYTES:
        size = max(size, len(data))
        raise InvalidInput(
            f"wave file {path} is {size} bytes; a hero hunt file may be at most {MAX_HUNT_FILE_BYTES}"
        )
    return data


def _describe(exc: ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors(include_url=False)[:_MAX_REPORTED_ERRORS]:
        where = ""
        for part in error["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _check_ids(hunt: HeroHunt, path: Path) -> None:
    seen: dict[str, str] = {}
    for section, entries in (("wave", hunt.wave), ("blocked", hunt.blocked), ("completed", hunt.completed)):
        for entry in entries:
            if entry.id in seen:
                raise InvalidInput(
                    f"wave file {path}: bead {entry.id} appears twice (in {seen[entry.id]} and in {section})"
                )
            seen[entry.id] = section
    for entry in [*hunt.wave, *hunt.blocked]:
        if entry.id in entry.blocked_by:
            raise InvalidInput(f"wave file {path}: bead {entry.id} is blocked by itself")


# -- import -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportedBead:
    """A bead that got a new task; `blocked_by` holds task ids."""

    bead_id: str
    task_id: str
    blocked_by: list[str] = field(default_factory=list[str])


@dataclass(frozen=True, slots=True)
class SkippedBead:
    """A bead left alone because a task of an earlier import already stands for it."""

    bead_id: str
    task_id: str
    status: TaskStatus


@dataclass(frozen=True, slots=True)
class BlockedBead:
    """A blocked entry of the file: its task if it has one, else the unknown beads it waits on."""

    bead_id: str
    blocked_by: list[str]
    task_id: str | None = None
    waiting_on: list[str] = field(default_factory=list[str])


@dataclass(frozen=True, slots=True)
class CompletedBead:
    bead_id: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class WaveImport:
    """What an import did, bead by bead. `created` is in task order, which is priority order."""

    created: list[ImportedBead]
    skipped: list[SkippedBead]
    blocked: list[BlockedBead]
    completed: list[CompletedBead]


async def tasks_by_metadata(ledger: Ledger, key: str) -> dict[str, Task]:
    """The tasks, not deleted, whose metadata `key` holds a string, by that string; the oldest wins.

    One read transaction, so the answer is one consistent picture of the ledger.
    """
    async with ledger.store.read() as tx:
        summaries = await tx.tasks.summaries()
        tasks = await tx.tasks.many([int(summary.id) for summary in summaries])
    found: dict[str, Task] = {}
    for task in sorted(tasks, key=lambda task: int(task.id)):
        value = task.metadata.get(key)
        if isinstance(value, str) and task.status is not TaskStatus.DELETED:
            found.setdefault(value, task)
    return found


async def import_wave(ledger: Ledger, path: Path, *, path_env: str | None = None) -> WaveImport:
    """Create the tasks of a hero hunt file, all in one plan: every task is created or none is.

    Refuses at once, with the seed's message, when `ol` is not on PATH (`path_env`, or this
    process's PATH): its tasks could never be ratcheted back to OL.
    """
    if shutil.which("ol", path=path_env) is None:
        raise InvalidInput(OL_MISSING)
    hunt = await anyio.to_thread.run_sync(parse_hero_hunt, path)
    existing = await tasks_by_metadata(ledger, BEAD_KEY)
    plan, skipped, blocked = _plan(hunt, existing)
    created: list[ImportedBead] = []
    if plan:
        result = await ledger.create_plan(plan)
        ids = {_bead_of_key(key): task_id for key, task_id in result.keys.items()}
        for task in plan:
            bead = _bead_of_key(task.key or "")
            blockers = [result.keys.get(ref, ref) for ref in task.blocked_by]
            created.append(ImportedBead(bead, ids[bead], blockers))
        blocked = [
            BlockedBead(
                b.bead_id, b.blocked_by, task_id=ids.get(b.bead_id, b.task_id), waiting_on=b.waiting_on
            )
            for b in blocked
        ]
    completed = [CompletedBead(entry.id, entry.title) for entry in hunt.completed]
    logger.info("imported wave %s: %d tasks created, %d skipped", path, len(created), len(skipped))
    return WaveImport(created=created, skipped=skipped, blocked=blocked, completed=completed)


def _key(bead_id: str) -> str:
    # Plan keys must not look like task ids; a bead id of digits only would.
    return f"bead {bead_id}"


def _bead_of_key(key: str) -> str:
    return key.removeprefix("bead ")


def _plan(
    hunt: HeroHunt, existing: Mapping[str, Task]
) -> tuple[list[PlanTask], list[SkippedBead], list[BlockedBead]]:
    skipped = [
        SkippedBead(entry.id, existing[entry.id].id, existing[entry.id].status)
        for entry in [*hunt.wave, *hunt.blocked]
        if entry.id in existing
    ]
    done = {entry.id for entry in hunt.completed}
    wave_ids = {entry.id for entry in hunt.wave}

    # Which blocked beads can be tasks: every blocker must be done, a task already, or a task of
    # this plan. Repeated until nothing changes, since blocked beads may wait on each other.
    creatable = {entry.id for entry in hunt.blocked if entry.id not in existing}
    known = wave_ids | done | set(existing)
    while True:
        dropped = {
            entry.id
            for entry in hunt.blocked
            if entry.id in creatable and not all(ref in known or ref in creatable for ref in entry.blocked_by)
        }
        if not dropped:
            break
        creatable -= dropped

    def refs(blockers: Iterable[str], allowed: set[str]) -> list[str]:
        out: list[str] = []
        for ref in blockers:
            if ref in done or ref not in allowed:
                continue
            out.append(existing[ref].id if ref in existing else _key(ref))
        return list(dict.fromkeys(out))

    plan = [
        _wave_task(entry, refs(entry.blocked_by, wave_ids))
        for entry in sorted(hunt.wave, key=lambda entry: entry.priority)  # stable: file order breaks ties
        if entry.id not in existing
    ]
    plan.extend(
        _blocked_task(entry, refs(entry.blocked_by, known | creatable))
        for entry in _blockers_first([entry for entry in hunt.blocked if entry.id in creatable])
    )

    blocked = [
        BlockedBead(
            entry.id,
            list(entry.blocked_by),
            task_id=existing[entry.id].id if entry.id in existing else None,
            waiting_on=[]
            if entry.id in existing or entry.id in creatable
            else [ref for ref in entry.blocked_by if ref not in known and ref not in creatable],
        )
        for entry in hunt.blocked
    ]
    return plan, skipped, blocked


def _blockers_first(entries: list[BlockedEntry]) -> list[BlockedEntry]:
    """The entries in priority order, except that each comes after the entries it waits for, so
    that task ids read in the order the work can be done. Entries in a cycle go last, in priority
    order: the ledger then refuses the plan, naming the cycle."""
    rank = {
        entry.id: (_NO_PRIORITY if entry.priority is None else entry.priority, i)
        for i, entry in enumerate(entries)
    }
    waits = {entry.id: {ref for ref in entry.blocked_by if ref in rank} for entry in entries}
    by_id = {entry.id: entry for entry in entries}
    ordered: list[BlockedEntry] = []
    while waits:
        free = [bead for bead, blockers in waits.items() if not blockers] or list(waits)
        bead = min(free, key=rank.__getitem__)
        ordered.append(by_id[bead])
        del waits[bead]
        for blockers in waits.values():
            blockers.discard(bead)
    return ordered


def _subject(bead_id: str, title: str) -> str:
    subject = f"[{bead_id}] {title.strip()}"
    return subject if len(subject) <= MAX_SUBJECT_CHARS else subject[: MAX_SUBJECT_CHARS - 1] + "…"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION_CHARS else text[: MAX_DESCRIPTION_CHARS - 1] + "…"


def _wave_task(entry: WaveEntry, blocked_by: list[str]) -> PlanTask:
    # The description is the seed's, word for word: skills written for it expect this text.
    description = (
        f"OL bead {entry.id}\nSpec: {entry.spec_path}\nPriority: {entry.priority}\n\n"
        f"Read the spec file at {entry.spec_path} for full requirements."
    )
    metadata: dict[str, Any] = {
        BEAD_KEY: entry.id,
        SPEC_KEY: entry.spec_path,
        PRIORITY_KEY: entry.priority,
        QUEST_KEY: quest_of(entry.id),
    }
    return PlanTask(
        key=_key(entry.id),
        subject=_subject(entry.id, entry.title),
        description=_cut(description),
        metadata=metadata,
        blocked_by=blocked_by,
    )


def _blocked_task(entry: BlockedEntry, blocked_by: list[str]) -> PlanTask:
    lines = [f"OL bead {entry.id}"]
    metadata: dict[str, Any] = {BEAD_KEY: entry.id, QUEST_KEY: quest_of(entry.id)}
    if entry.spec_path is not None:
        lines.append(f"Spec: {entry.spec_path}")
        metadata[SPEC_KEY] = entry.spec_path
    if entry.priority is not None:
        lines.append(f"Priority: {entry.priority}")
        metadata[PRIORITY_KEY] = entry.priority
    lines.append(f"Blocked in OL by: {', '.join(entry.blocked_by)}")
    if entry.spec_path is not None:
        lines.append(f"\nRead the spec file at {entry.spec_path} for full requirements.")
    else:
        lines.append(
            "\nThe hero hunt gave no spec for this bead; `ol hero hunt` shows it once the bead is ready."
        )
    return PlanTask(
        key=_key(entry.id),
        subject=_subject(entry.id, entry.title),
        description=_cut("\n".join(lines)),
        metadata=metadata,
        blocked_by=blocked_by,
    )
