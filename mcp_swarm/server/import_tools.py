"""The Mayor's tools for waves from elsewhere: an OL hero hunt file, and beads' ready list.

The imports' records are shaped into their answers here, beside the only tools that return them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult
from pydantic import Field

from mcp_swarm.integrations import beads, ol, ol_ratchet
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.server.tool_support import READ_ONLY, WRITES, answer, guarded, strict_tool


def build_import_tools(ledger: Callable[[], Ledger], project_dir: Callable[[], Path]) -> list[Tool]:
    @guarded
    async def import_wave(
        path: Annotated[str, Field(min_length=1, max_length=4096, description="An OL hero hunt JSON file")],
    ) -> CallToolResult:
        """Create tasks for the wave of an OL hero hunt file (ol hero hunt --json), in priority
        order, with ol_bead_id, ol_spec_path and ol_priority in metadata. When such a task is
        completed and validated, the server runs `ol hero ratchet`; a bead OL refuses fails its task.
        Needs the ol CLI on PATH. Importing a file again adds only what is new."""
        imported = await ol.import_wave(ledger(), project_dir() / path)
        return answer(wave_import_answer(imported))

    @guarded
    async def wave_summary() -> CallToolResult:
        """Per OL bead: its task's status in the swarm and its ratchet outcome (passed, failed with
        the reason, or notRun)."""
        return answer({"beads": wave_summary_answer(await ol_ratchet.wave_summary(ledger()))})

    @guarded
    async def import_beads() -> CallToolResult:
        """Create tasks for the ready beads (`bd ready --json`), most urgent first, with bead_id in
        metadata; a bead's task completing closes it (`bd update <id> --status closed`)."""
        imported = await beads.import_ready(ledger(), cwd=project_dir())
        return answer(beads_import_answer(imported))

    return [
        strict_tool(import_wave, WRITES),
        strict_tool(wave_summary, READ_ONLY),
        strict_tool(import_beads, WRITES),
    ]


def wave_import_answer(imported: ol.WaveImport) -> dict[str, Any]:
    """`created` always; `skipped`, `blocked` and `completed` when not empty."""
    shaped: dict[str, Any] = {"created": [_wave_bead(bead) for bead in imported.created]}
    if imported.skipped:
        shaped["skipped"] = [_skipped_bead(bead) for bead in imported.skipped]
    if imported.blocked:
        shaped["blocked"] = [_blocked_bead(bead) for bead in imported.blocked]
    if imported.completed:
        shaped["completed"] = [_completed_bead(bead) for bead in imported.completed]
    return shaped


def wave_summary_answer(outcomes: list[ol_ratchet.BeadOutcome]) -> list[dict[str, Any]]:
    """A row per bead: `ratchet` is "passed", "failed" (with `reason`) or "notRun"."""
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        row: dict[str, Any] = {
            "beadId": outcome.bead_id,
            "taskId": outcome.task_id,
            "swarm": outcome.swarm.value,
        }
        result = outcome.ratchet
        if result is None:
            row["ratchet"] = "notRun"
        else:
            row["ratchet"] = "passed" if result.ok else "failed"
            if result.exit_code is not None:
                row["exitCode"] = result.exit_code
            if result.reason is not None:
                row["reason"] = result.reason
        rows.append(row)
    return rows


def beads_import_answer(imported: beads.BeadsImport) -> dict[str, Any]:
    """`created` always; `skipped` and `rejected` when not empty."""
    shaped: dict[str, Any] = {
        "created": [{"beadId": bead.bead_id, "taskId": bead.task_id} for bead in imported.created]
    }
    if imported.skipped:
        shaped["skipped"] = [_skipped_bead(bead) for bead in imported.skipped]
    if imported.rejected:
        shaped["rejected"] = imported.rejected
    return shaped


def _wave_bead(bead: ol.ImportedBead) -> dict[str, Any]:
    row: dict[str, Any] = {"beadId": bead.bead_id, "taskId": bead.task_id}
    if bead.blocked_by:
        row["blockedBy"] = bead.blocked_by
    return row


def _skipped_bead(bead: ol.SkippedBead) -> dict[str, Any]:
    return {"beadId": bead.bead_id, "taskId": bead.task_id, "status": bead.status.value}


def _blocked_bead(bead: ol.BlockedBead) -> dict[str, Any]:
    row: dict[str, Any] = {"beadId": bead.bead_id, "blockedBy": bead.blocked_by}
    if bead.task_id is not None:
        row["taskId"] = bead.task_id
    if bead.waiting_on:
        row["waitingOn"] = bead.waiting_on
    return row


def _completed_bead(bead: ol.CompletedBead) -> dict[str, Any]:
    return {"beadId": bead.bead_id, "title": bead.title} if bead.title else {"beadId": bead.bead_id}
