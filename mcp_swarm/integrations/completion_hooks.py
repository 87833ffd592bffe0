"""What the server does when a task imported from OL or beads has been done and validated.

These run as the last checks of the verdict, before the task is recorded completed, so that no
dependent can start on a task whose bead OL refuses to ratchet.

A hook's check ({"check", "passed", "detail"?, "warning"?}) is the stored form of the verdict's
checks: it is kept in the worker's `validation` and shown as it is, so its keys do not change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcp_swarm.engine.supervision import CompletionHook
from mcp_swarm.errors import SwarmError, TaskNotFound
from mcp_swarm.integrations import beads, ol, ol_ratchet
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import TaskChanges

logger = logging.getLogger(__name__)


class OlRatchet:
    """`ol hero ratchet <bead> --quest <quest>`: exit 0 keeps the task completed; anything else
    fails it with ol's stderr. The outcome is kept in the task's metadata for the wave summary."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def __call__(self, task_id: str, metadata: Mapping[str, Any], cwd: Path) -> dict[str, Any] | None:
        bead, quest = metadata.get(ol.BEAD_KEY), metadata.get(ol.QUEST_KEY)
        if not isinstance(bead, str) or not isinstance(quest, str) or ol.RATCHET_KEY in metadata:
            return None
        try:
            await self._ledger.get(task_id)
        except TaskNotFound:
            # Deleted while its worker ran: the work is not taken, so OL is not told the bead is done.
            return None
        result = await ol_ratchet.ratchet(bead, quest, cwd=cwd)
        try:
            await self._ledger.update(task_id, TaskChanges(metadata={ol.RATCHET_KEY: result.to_metadata()}))
        except SwarmError as exc:
            # Deleted while ol answered, say. Raised here, it would end the supervisor, and with it
            # the engine; the outcome decides the verdict all the same.
            logger.warning("task %s: the ratchet outcome of %s was not kept: %s", task_id, bead, exc)
        check: dict[str, Any] = {"check": f"ol hero ratchet {bead} --quest {quest}", "passed": result.ok}
        if result.reason:
            check["detail"] = result.reason
        return check


class BeadClose:
    """`bd update <id> --status closed`. The work is done whatever bd answers: a bead that could not
    be closed leaves the task completed, with a warning the Mayor sees in the result."""

    async def __call__(self, task_id: str, metadata: Mapping[str, Any], cwd: Path) -> dict[str, Any] | None:
        bead = metadata.get(beads.BEAD_KEY)
        if not isinstance(bead, str):
            return None
        result = await beads.close_bead(bead, cwd=cwd)
        check: dict[str, Any] = {"check": f"bd update {bead} --status closed", "passed": True}
        if result.reason:
            check["warning"] = f"the bead was not closed: {result.reason}"
        return check


def completion_hooks(ledger: Ledger) -> list[CompletionHook]:
    return [OlRatchet(ledger), BeadClose()]
