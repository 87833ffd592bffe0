"""A Mayor's session against a real `mcp-swarm serve`, over stdio, with no configuration.

It plans the seed's example (a user auth system in five tasks), then walks the plan wave by
wave, the way an agent connected to the server would, and prints each call and its answer.

    python examples/ledger_tour.py [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import TextContent
from rich.console import Console
from rich.table import Table

console = Console()

PLAN: list[dict[str, Any]] = [
    {"key": "model", "subject": "Create User model", "activeForm": "Creating User model"},
    {"key": "hash", "subject": "Add password hashing", "blockedBy": ["model"]},
    {"key": "login", "subject": "Create login endpoint", "blockedBy": ["model"]},
    {"key": "jwt", "subject": "Add JWT tokens", "blockedBy": ["login"]},
    {"key": "tests", "subject": "Write tests", "blockedBy": ["hash", "login", "jwt"]},
]


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    block = result.content[0]
    text = block.text if isinstance(block, TextContent) else ""
    style = "red" if result.is_error else "green"
    console.print(f"[bold]{tool}[/]({json.dumps(arguments)})", highlight=False)
    console.print(f"  [{style}]→ {text}[/]", highlight=False, no_wrap=True, overflow="ellipsis")
    return json.loads(text) if not result.is_error else None


def show(listing: dict[str, Any]) -> None:
    table = Table("id", "subject", "status", "blocked by", "ready")
    for task in listing["tasks"]:
        blocked_by = ", ".join(task.get("blockedBy", []))
        table.add_row(
            task["id"], task["subject"], task["status"], blocked_by, "✓" if task.get("ready") else ""
        )
    console.print(table)


async def tour(db: Path) -> None:
    server = StdioServerParameters(command=sys.executable, args=["-m", "mcp_swarm", "serve", "--db", str(db)])
    async with Client(server, mode="legacy") as client:
        console.rule("Plan: one call creates the whole plan")
        await call(client, "TaskCreatePlan", tasks=PLAN)
        show(await call(client, "TaskList"))

        console.rule("The ledger refuses what would break the plan")
        await call(client, "TaskUpdate", taskId="1", addBlockedBy=["5"])
        await call(client, "TaskUpdate", taskId="4", status="in_progress")

        wave = 1
        while ready := (await call(client, "TaskList", ready=True))["tasks"]:
            console.rule(f"Wave {wave}: {', '.join(task['subject'] for task in ready)}")
            for task in ready:
                owner = f"worker-{task['id']}"
                await call(client, "TaskUpdate", taskId=task["id"], status="in_progress", owner=owner)
            for task in ready:
                await call(client, "TaskUpdate", taskId=task["id"], status="completed")
            wave += 1
        show(await call(client, "TaskList"))
    console.print(f"The ledger is in {db}; `mcp-swarm serve --db {db}` serves it again.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, help="the SQLite file to use (default: a new temporary one)")
    args = parser.parse_args()
    db: Path = args.db or Path(tempfile.mkdtemp(prefix="mcp-swarm-tour-")) / "swarm.db"
    anyio.run(tour, db, backend="asyncio")


if __name__ == "__main__":
    main()
