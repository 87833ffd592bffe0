"""Beads (`bd`): import the ready issues as tasks, and close each one when its task completes.

`bd ready --json` lists the open issues nothing blocks, as a JSON array of objects (`id`,
`title`, `description`, `priority` 0-4 with 0 the most urgent, `issue_type`, and more). Each
becomes a task in priority order, with the bead's id in metadata `bead_id`; a bead that already
has a task (one not deleted) gets no second one. Ready beads block nothing among themselves, so
the tasks have no dependencies. When such a task completes, `bd update <id> --status closed`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mcp_swarm.errors import InvalidInput, SwarmError
from mcp_swarm.integrations.ol import MAX_BEAD_ID_CHARS, SkippedBead, check_id, tasks_by_metadata
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import MAX_DESCRIPTION_CHARS, MAX_SUBJECT_CHARS, PlanTask, TaskStatus
from mcp_swarm.placement.processes import ProcessStartError
from mcp_swarm.placement.programs import ProgramAnswer, ProgramRun, ask, run_program

logger = logging.getLogger(__name__)

BD_MISSING = "bd (beads) CLI required to import beads: install beads, or create the tasks with TaskCreate"
DEFAULT_BD_TIMEOUT = 60.0
# bd prints every ready issue with its whole description; beyond this something is wrong.
MAX_READY_OUTPUT_BYTES = 16 * 1024 * 1024
BEAD_KEY = "bead_id"
PRIORITY_KEY = "bead_priority"
TYPE_KEY = "bead_type"
_NO_PRIORITY = float("inf")
_SHOWN_OUTPUT_CHARS = 200


def _none_is_empty(value: object) -> object:
    # Go writes an unset string as "" but a nil pointer as null; both mean "none".
    return "" if value is None else value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


class Bead(BaseModel):
    """One issue of `bd ready --json`: what a task needs of it. Other keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[str, Field(strict=True, max_length=MAX_BEAD_ID_CHARS), AfterValidator(check_id)]
    title: Annotated[str, Field(strict=True), AfterValidator(_not_blank)]
    description: Annotated[str, Field(strict=True), BeforeValidator(_none_is_empty)] = ""
    acceptance_criteria: Annotated[str, Field(strict=True), BeforeValidator(_none_is_empty)] = ""
    # Strict: a priority of true or "2" is a sign of a format we do not know, not a number.
    priority: Annotated[int | None, Field(strict=True)] = None
    issue_type: Annotated[str | None, Field(strict=True)] = None


@dataclass(frozen=True, slots=True)
class ReadyBeads:
    """The beads of one `bd ready --json`, and the entries that were no beads, each with why."""

    beads: list[Bead]
    rejected: list[str] = field(default_factory=list[str])


def parse_ready(output: bytes | str) -> ReadyBeads:
    """Read `bd ready --json` output. SwarmError if it holds no JSON array of objects.

    Lenient where bd may differ between versions: `null` for no issues, a warning line printed
    before the JSON, unknown keys, null strings. An entry that is no bead (no id, say) is left
    out and named in `rejected` rather than spoiling the whole import.
    """
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    value = _first_json(text)
    if value is None:
        return ReadyBeads([])
    if not isinstance(value, list):
        raise SwarmError(
            f"bd ready --json printed a JSON {type(value).__name__}, not the list of ready issues"
        )
    beads: list[Bead] = []
    rejected: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(cast(list[Any], value)):
        try:
            bead = Bead.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "entry"
            rejected.append(f"issue {index + 1}: {where}: {first['msg'].removeprefix('Value error, ')}")
            continue
        if bead.id in seen:
            rejected.append(f"issue {index + 1}: {bead.id} is listed twice")
            continue
        seen.add(bead.id)
        beads.append(bead)
    return ReadyBeads(beads, rejected)


def _first_json(text: str) -> object:
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    # A warning or notice before the JSON: take the array that starts a line.
    decoder = json.JSONDecoder()
    offset = 0
    for line in stripped.splitlines(keepends=True):
        if line.lstrip().startswith("["):
            start = offset + len(line) - len(line.lstrip())
            try:
                value, _ = decoder.raw_decode(stripped, start)
            except json.JSONDecodeError:
                pass
            else:
                return cast(object, value)
        offset += len(line)
    shown = stripped[:_SHOWN_OUTPUT_CHARS] + ("…" if len(stripped) > _SHOWN_OUTPUT_CHARS else "")
    raise SwarmError(f"bd ready --json printed no JSON list of issues; it printed: {shown!r}")


async def _bd(
    args: Sequence[str],
    *,
    cwd: Path,
    timeout: float,  # noqa: ASYNC109 - passed on to `run_program`, which stops bd when it is up
    stdout_limit: int = 0,
) -> ProgramRun:
    program = shutil.which("bd")
    if program is None:
        raise InvalidInput(BD_MISSING)
    try:
        return await run_program([program, *args], cwd=cwd, timeout=timeout, stdout_limit=stdout_limit)
    except ProcessStartError as exc:
        raise InvalidInput(f"bd cannot be run: {exc}") from exc


async def read_ready(
    *,
    cwd: Path,
    timeout: float = DEFAULT_BD_TIMEOUT,  # noqa: ASYNC109 - on expiry bd is stopped and the failure explained
) -> ReadyBeads:
    """`bd ready --json` in `cwd`, parsed; InvalidInput if bd is missing, SwarmError if it fails."""
    run = await _bd(["ready", "--json"], cwd=cwd, timeout=timeout, stdout_limit=MAX_READY_OUTPUT_BYTES)
    if run.exit_code is None:
        raise SwarmError(f"bd ready --json did not finish within {timeout:g} s")
    if run.exit_code != 0:
        said = f": {run.stderr}" if run.stderr else ""
        raise SwarmError(f"bd ready --json failed with exit status {run.exit_code}{said}")
    if run.stdout_cut:
        raise SwarmError(
            f"bd ready --json printed more than {MAX_READY_OUTPUT_BYTES} bytes; nothing was imported"
        )
    ready = parse_ready(run.stdout)
    for problem in ready.rejected:
        logger.warning("bd ready --json: left out %s", problem)
    return ready


async def ready_beads(
    *,
    cwd: Path,
    timeout: float = DEFAULT_BD_TIMEOUT,  # noqa: ASYNC109 - as `read_ready`'s
) -> list[Bead]:
    """The beads `bd ready --json` lists in `cwd`; entries that are no beads are logged and left out."""
    return (await read_ready(cwd=cwd, timeout=timeout)).beads


@dataclass(frozen=True, slots=True)
class ImportedBead:
    bead_id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class BeadsImport:
    created: list[ImportedBead]
    skipped: list[SkippedBead]
    rejected: list[str] = field(default_factory=list[str])


def bead_task(bead: Bead) -> PlanTask:
    """The task that stands for a bead."""
    subject = f"[{bead.id}] {bead.title.strip()}"
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[: MAX_SUBJECT_CHARS - 1] + "…"
    parts = [bead.description.strip()] if bead.description.strip() else []
    if bead.acceptance_criteria.strip():
        parts.append(f"Acceptance criteria:\n{bead.acceptance_criteria.strip()}")
    about = f"Beads issue {bead.id}" + ("" if bead.priority is None else f", priority P{bead.priority}")
    footer = f"{about}. `bd show {bead.id}` has all of it."
    body = "\n\n".join(parts)
    room = MAX_DESCRIPTION_CHARS - len(footer) - 2
    if len(body) > room:
        body = body[: room - 1] + "…"
    metadata: dict[str, Any] = {BEAD_KEY: bead.id}
    if bead.priority is not None:
        metadata[PRIORITY_KEY] = bead.priority
    if bead.issue_type:
        metadata[TYPE_KEY] = bead.issue_type
    return PlanTask(
        subject=subject,
        description=f"{body}\n\n{footer}" if body else footer,
        metadata=metadata,
    )


async def import_ready(
    ledger: Ledger,
    *,
    cwd: Path,
    timeout: float = DEFAULT_BD_TIMEOUT,  # noqa: ASYNC109 - as `read_ready`'s
) -> BeadsImport:
    """Create a task for each ready bead that has none, most urgent first, all in one plan."""
    ready = await read_ready(cwd=cwd, timeout=timeout)
    existing = await tasks_by_metadata(ledger, BEAD_KEY)
    skipped = [
        SkippedBead(bead.id, existing[bead.id].id, existing[bead.id].status)
        for bead in ready.beads
        if bead.id in existing
    ]
    new = sorted(
        (bead for bead in ready.beads if bead.id not in existing),
        key=lambda bead: _NO_PRIORITY if bead.priority is None else bead.priority,
    )
    created: list[ImportedBead] = []
    if new:
        plan = await ledger.create_plan([bead_task(bead) for bead in new])
        created = [ImportedBead(bead.id, task_id) for bead, task_id in zip(new, plan.ids, strict=True)]
    logger.info("imported %d ready beads, %d already had tasks", len(created), len(skipped))
    return BeadsImport(created=created, skipped=skipped, rejected=ready.rejected)


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseResult(ProgramAnswer):
    """How `bd update <id> --status closed` answered. `error` says why bd could not answer."""

    bead_id: str

    @property
    def reason(self) -> str | None:
        return self.failure(f"bd update {self.bead_id} --status closed")


async def close_bead(
    bead_id: str,
    *,
    cwd: Path,
    timeout: float = DEFAULT_BD_TIMEOUT,  # noqa: ASYNC109 - a timed-out close is a result, not an error
) -> CloseResult:
    """Run `bd update <id> --status closed` in `cwd`.

    What bd does comes back as a result, not an exception (bd missing, a timeout, an exit status
    other than 0), so a completion hook has one path; InvalidInput only for an id that cannot go
    on a command line.
    """
    try:
        check_id(bead_id)
    except ValueError as exc:
        raise InvalidInput(f"bead id: {exc}") from exc
    program = shutil.which("bd")
    if program is None:
        return CloseResult(bead_id=bead_id, ok=False, exit_code=None, error=BD_MISSING)
    argv = [program, "update", bead_id, "--status", "closed"]
    answer = await ask(argv, cwd=cwd, timeout=timeout, cannot_start="bd cannot be run: ")
    return CloseResult(
        bead_id=bead_id, ok=answer.ok, exit_code=answer.exit_code, stderr=answer.stderr, error=answer.error
    )


async def close_task_bead(
    ledger: Ledger,
    task_id: str,
    *,
    cwd: Path,
    timeout: float = DEFAULT_BD_TIMEOUT,  # noqa: ASYNC109 - as `close_bead`'s
) -> CloseResult | None:
    """The completion hook for one task: close its bead. None, and nothing run, for a task that is
    not completed or stands for no bead. The task stays completed whatever bd says: the work is
    done, and the result says what to do about the bead."""
    task = await ledger.get(task_id)
    bead = task.metadata.get(BEAD_KEY)
    if not isinstance(bead, str) or task.status is not TaskStatus.COMPLETED:
        return None
    return await close_bead(bead, cwd=cwd, timeout=timeout)


__all__ = [
    "BD_MISSING",
    "Bead",
    "BeadsImport",
    "CloseResult",
    "ImportedBead",
    "ReadyBeads",
    "SkippedBead",
    "bead_task",
    "close_bead",
    "close_task_bead",
    "import_ready",
    "parse_ready",
    "read_ready",
    "ready_beads",
]
