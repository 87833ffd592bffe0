"""Reporting finished beads back to OL: `ol hero ratchet`, and the wave's summary.

After a bead's task is completed and validated, `ol hero ratchet <bead> --quest <quest>` runs:
exit 0 keeps the task completed, anything else fails it, with ol's stderr as the reason.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mcp_swarm.errors import InvalidInput
from mcp_swarm.integrations.ol import (
    BEAD_KEY,
    DEFAULT_RATCHET_TIMEOUT,
    OL_MISSING,
    QUEST_KEY,
    RATCHET_KEY,
    check_id,
    quest_of,
    tasks_by_metadata,
)
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import Task, TaskChanges, TaskStatus
from mcp_swarm.placement.programs import ProgramAnswer, ask

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RatchetResult(ProgramAnswer):
    """How `ol hero ratchet` answered. `error` says why it could not answer (no ol, no time)."""

    @property
    def reason(self) -> str | None:
        """Why the bead's task fails, in words for the Mayor; None when the ratchet passed."""
        return self.failure("OL ratchet")

    def to_metadata(self) -> dict[str, Any]:
        """The stored form, kept in the task's metadata `ol_ratchet`: not a tool answer.

        Databases already hold it, so its keys stay as they are, camelCase ones included.
        """
        stored: dict[str, Any] = {"ok": self.ok}
        if self.exit_code is not None:
            stored["exitCode"] = self.exit_code
        if self.stderr:
            stored["stderr"] = self.stderr
        if self.error:
            stored["error"] = self.error
        return stored

    @classmethod
    def from_metadata(cls, value: object) -> RatchetResult | None:
        """Read back what `to_metadata` stored in a task's metadata; None if it is not that."""
        if not isinstance(value, dict):
            return None
        stored = cast(dict[str, Any], value)
        ok, code, stderr, error = (
            stored.get("ok"),
            stored.get("exitCode"),
            stored.get("stderr", ""),
            stored.get("error"),
        )
        if (
            not isinstance(ok, bool)
            or not (code is None or isinstance(code, int))
            or not isinstance(stderr, str)
        ):
            return None
        return cls(ok=ok, exit_code=code, stderr=stderr, error=error if isinstance(error, str) else None)

    def task_changes(self) -> TaskChanges:
        """The change that records this outcome on the bead's task: exit 0 leaves it completed,
        anything else fails it. The outcome goes into metadata `ol_ratchet` for the summary."""
        status = None if self.ok else TaskStatus.FAILED
        return TaskChanges(status=status, metadata={RATCHET_KEY: self.to_metadata()})


async def ratchet(
    bead_id: str,
    quest: str,
    *,
    cwd: Path,
    timeout: float = DEFAULT_RATCHET_TIMEOUT,  # noqa: ASYNC109 - a timed-out ratchet is a result, not an error
) -> RatchetResult:
    """Run `ol hero ratchet <bead> --quest <quest>` in `cwd`.

    Never raises for what ol does: a missing ol, a timeout or a program that cannot start come
    back as a result that is not ok, with `error` set, so a completion hook has one path.
    InvalidInput only for ids that cannot be put on a command line.
    """
    for name, value in (("bead id", bead_id), ("quest", quest)):
        try:
            check_id(value)
        except ValueError as exc:
            raise InvalidInput(f"{name}: {exc}") from exc
    program = shutil.which("ol")
    if program is None:
        return RatchetResult(ok=False, exit_code=None, error=OL_MISSING)
    answer = await ask([program, "hero", "ratchet", bead_id, "--quest", quest], cwd=cwd, timeout=timeout)
    return RatchetResult(ok=answer.ok, exit_code=answer.exit_code, stderr=answer.stderr, error=answer.error)


async def ratchet_task(
    ledger: Ledger,
    task_id: str,
    *,
    cwd: Path,
    timeout: float = DEFAULT_RATCHET_TIMEOUT,  # noqa: ASYNC109 - as `ratchet`'s
) -> RatchetResult | None:
    """The completion backflow for one task: ratchet its bead and record the outcome on it.

    None, and nothing done, for a task that is not an OL bead, is not completed, or whose bead
    has already been ratcheted: ratcheting twice would ask OL to finish a finished bead.
    """
    task = await ledger.get(task_id)
    bead = task.metadata.get(BEAD_KEY)
    if not isinstance(bead, str) or task.status is not TaskStatus.COMPLETED:
        return None
    earlier = RatchetResult.from_metadata(task.metadata.get(RATCHET_KEY))
    if earlier is not None and earlier.ok:
        return None
    quest = task.metadata.get(QUEST_KEY)
    result = await ratchet(
        bead, quest if isinstance(quest, str) else quest_of(bead), cwd=cwd, timeout=timeout
    )
    await ledger.update(task_id, result.task_changes())
    return result


# -- the summary --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BeadOutcome:
    """One OL bead task: its swarm outcome (the task's status) and its ratchet outcome, None when
    it has not run."""

    bead_id: str
    task_id: str
    swarm: TaskStatus
    ratchet: RatchetResult | None


def summarize(
    tasks: Iterable[Task], ratchets: Mapping[str, RatchetResult] | None = None
) -> list[BeadOutcome]:
    """One outcome per OL bead task, in task order, which an import made priority order.

    The ratchet outcome is `ratchets[bead]` when given, else what `ratchet_task` recorded in
    metadata `ol_ratchet`, else None. Tasks of no OL bead, and deleted ones, are left out.
    """
    outcomes: list[BeadOutcome] = []
    given = ratchets or {}
    for task in tasks:
        bead = task.metadata.get(BEAD_KEY)
        if not isinstance(bead, str) or task.status is TaskStatus.DELETED:
            continue
        result = given.get(bead) or RatchetResult.from_metadata(task.metadata.get(RATCHET_KEY))
        outcomes.append(BeadOutcome(bead, task.id, task.status, result))
    return sorted(outcomes, key=lambda outcome: int(outcome.task_id))


async def wave_summary(ledger: Ledger) -> list[BeadOutcome]:
    """`summarize` over every OL bead task of the ledger."""
    return summarize((await tasks_by_metadata(ledger, BEAD_KEY)).values())
