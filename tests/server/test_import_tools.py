"""Waves from OL and beads through the Mayor's tools, over real stdio, with stand-in `ol` and `bd`.

The stand-ins (tests/support/stand_ins) are put first on the server's PATH; what they were asked is read
from the logs they keep.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.support import STAND_INS
from tests.support.mcp_client import call, refuse, stdio_parameters

pytestmark = pytest.mark.anyio

SEED_MESSAGE = "Error: ol CLI required for --from-wave. Install ol or use swarm without wave integration."

HUNT = {
    "wave": [
        {"id": "ol-527.2", "title": "Add tests", "spec_path": "specs/tests.md", "priority": 2},
        {"id": "ol-527.1", "title": "Add auth", "spec_path": "specs/auth.md", "priority": 1},
    ],
    "blocked": [{"id": "ol-527.3", "title": "Integration tests", "blocked_by": ["ol-527.1", "ol-527.2"]}],
    "completed": [{"id": "ol-527.0", "title": "Scaffold"}],
}


def mayor(tmp_path: Path, *, path: str, **env: str) -> Client:
    # A worker that does its task at once and succeeds.
    argv = [sys.executable, "-c", "print('done')"]
    (tmp_path / "mcp-swarm.toml").write_text(
        f'default_runtime = "quick"\n\n[runtimes.quick]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    params = stdio_parameters(tmp_path / "unused.db", cwd=tmp_path)
    params.args = ["serve"]
    params.env = {"PATH": path, "HOME": str(tmp_path), **env}
    return Client(params, mode="legacy")


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def run_to_the_end(client: Client) -> list[dict[str, Any]]:
    done: list[dict[str, Any]] = []
    while (await call(client, "spawn"))["workers"]:
        while True:
            result = await call(client, "wait", timeoutSeconds=20)
            done.extend(result["done"])
            if not result["running"]:
                break
    return done


async def test_an_ol_wave_runs_and_each_bead_is_ratcheted_once_its_task_is_validated(tmp_path: Path) -> None:
    (tmp_path / "wave.json").write_text(json.dumps(HUNT))
    log = tmp_path / "ol.log"
    path = f"{STAND_INS}{os.pathsep}{os.environ['PATH']}"
    async with mayor(tmp_path, path=path, OL_STANDIN_LOG=str(log), OL_STANDIN_FAIL="ol-527.2") as client:
        imported = await call(client, "import_wave", path="wave.json")
        created = {entry["beadId"]: entry for entry in imported["created"]}
        assert set(created) == {"ol-527.1", "ol-527.2", "ol-527.3"}
        first = await call(client, "TaskGet", taskId="1")
        # Priority order: ol-527.1 (priority 1) first.
        assert first["metadata"]["ol_bead_id"] == "ol-527.1"
        assert first["metadata"]["ol_spec_path"] == "specs/auth.md"
        assert first["metadata"]["ol_priority"] == 1
        done = {d["taskId"]: d for d in await run_to_the_end(client)}
        # ol-527.1's ratchet passed: completed. ol-527.2's failed: its task failed with ol's words.
        assert done["1"]["taskStatus"] == "completed"
        assert done["2"]["taskStatus"] == "failed"
        assert "acceptance criteria not met" in done["2"]["error"]
        # The blocked bead waits for a failed one: it never ran.
        assert "3" not in done
        assert (await call(client, "TaskGet", taskId="3"))["status"] == "pending"
        summary = {row["beadId"]: row for row in (await call(client, "wave_summary"))["beads"]}
        assert (summary["ol-527.1"]["swarm"], summary["ol-527.1"]["ratchet"]) == ("completed", "passed")
        assert (summary["ol-527.2"]["swarm"], summary["ol-527.2"]["ratchet"]) == ("failed", "failed")
        assert summary["ol-527.3"]["ratchet"] == "notRun"
        # Importing again adds nothing.
        assert (await call(client, "import_wave", path="wave.json"))["created"] == []
    assert sorted(calls(log)) == [
        ["hero", "ratchet", "ol-527.1", "--quest", "ol-527"],
        ["hero", "ratchet", "ol-527.2", "--quest", "ol-527"],
    ]


async def test_without_ol_the_import_is_refused_with_the_seeds_message(tmp_path: Path) -> None:
    (tmp_path / "wave.json").write_text(json.dumps(HUNT))
    # A PATH with Python's directory (for the workers) but no ol.
    async with mayor(tmp_path, path=str(Path(sys.executable).parent)) as client:
        assert SEED_MESSAGE in await refuse(client, "import_wave", path="wave.json")
        assert (await call(client, "TaskList"))["tasks"] == []


async def test_ready_beads_become_tasks_and_are_closed_when_done(tmp_path: Path) -> None:
    db = tmp_path / "beads.json"
    db.write_text(
        json.dumps(
            [
                {"id": "bd-1", "title": "Fix login", "status": "open", "priority": 1},
                {"id": "bd-2", "title": "Write docs", "status": "open", "priority": 2},
            ]
        )
    )
    log = tmp_path / "bd.log"
    path = f"{STAND_INS}{os.pathsep}{os.environ['PATH']}"
    async with mayor(tmp_path, path=path, BD_STANDIN_DB=str(db), BD_STANDIN_LOG=str(log)) as client:
        imported = await call(client, "import_beads")
        assert [entry["beadId"] for entry in imported["created"]] == ["bd-1", "bd-2"]
        done = await run_to_the_end(client)
        assert sorted(d["taskStatus"] for d in done) == ["completed", "completed"]
        assert (await call(client, "import_beads"))["created"] == []
    assert ["update", "bd-1", "--status", "closed"] in calls(log)
    assert ["update", "bd-2", "--status", "closed"] in calls(log)
    assert {issue["id"]: issue["status"] for issue in json.loads(db.read_text())} == {
        "bd-1": "closed",
        "bd-2": "closed",
    }
