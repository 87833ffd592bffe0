"""Which directories the store gives a `.gitignore` of `*`: its own, never one of the user's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_swarm.config import STATE_DIR_GITIGNORE
from mcp_swarm.store import Store

pytestmark = pytest.mark.anyio


async def test_the_project_state_directory_is_ignored_and_an_edit_kept(tmp_path: Path) -> None:
    ignore = tmp_path / ".mcp-swarm" / ".gitignore"
    async with await Store.open(tmp_path / ".mcp-swarm" / "swarm.db"):
        pass
    assert ignore.read_text() == STATE_DIR_GITIGNORE
    ignore.write_text("*.log\n")
    async with await Store.open(tmp_path / ".mcp-swarm" / "swarm.db"):
        pass
    assert ignore.read_text() == "*.log\n"


async def test_a_directory_made_for_a_named_database_is_ignored(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "kept" / "elsewhere" / "swarm.db"):
        pass
    assert (tmp_path / "kept" / "elsewhere" / ".gitignore").read_text() == STATE_DIR_GITIGNORE
    assert not (tmp_path / "kept" / ".gitignore").exists()


async def test_a_directory_of_the_users_gets_no_gitignore(tmp_path: Path) -> None:
    # `--db data/swarm.db` in a folder that holds the user's own files: ignoring all of it would
    # hide their files from git.
    data = tmp_path / "data"
    data.mkdir()
    (data / "users.csv").write_text("id\n")
    async with await Store.open(data / "swarm.db"):
        pass
    assert not (data / ".gitignore").exists()
