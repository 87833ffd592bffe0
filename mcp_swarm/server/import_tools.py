"""The Mayor's tools for waves from elsewhere: an OL hero hunt file, and beads' ready list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

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
        return answer(imported.to_wire())

    @guarded
    async def wave_summary() -> CallToolResult:
        """Per OL bead: its task's status in the swarm and its ratchet outcome (passed, failed with
        the reason, or notRun)."""
        return answer({"beads": await ol_ratchet.wave_summary(ledger())})

    @guarded
    async def import_beads() -> CallToolResult:
        """Create tasks for the ready beads (`bd ready --json`), most urgent first, with bead_id in
        metadata; a bead's task completing closes it (`bd update <id> --status closed`)."""
        imported = await beads.import_ready(ledger(), cwd=project_dir())
        return answer(imported.to_wire())

    return [
        strict_tool(import_wave, WRITES),
        strict_tool(wave_summary, READ_ONLY),
        strict_tool(import_beads, WRITES),
    ]
