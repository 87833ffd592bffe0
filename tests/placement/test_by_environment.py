"""A worker's processes are found by its key, never by its id alone: every swarm has a worker-1.

Two swarms on one machine (two projects, or two test runs) each run a `worker-1`. A server that
looks for what its worker-1 left behind (its wrapper was killed), or for a worker whose pid it
never recorded, must find its own and leave the other swarm's alone.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mcp_swarm.placement.by_environment import kill_strays, session_leaders_with
from mcp_swarm.placement.wrapped import WORKER_KEY_VARIABLE, worker_key

pytestmark = pytest.mark.anyio

DEADLINE = 10


@pytest.fixture
def two_swarms_worker_1(
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path]]:
    """A `worker-1` of each of two swarms, each leading its own session, as a wrapper does; and
    the first swarm's worker directory."""
    ours, theirs = (
        tmp_path / "ours" / ".mcp-swarm" / "workers" / "worker-1",
        tmp_path / "theirs" / "workers" / "worker-1",
    )
    started = [
        subprocess.Popen(
            ["sleep", "600"],
            env={"PATH": os.defpath, "SWARM_WORKER_ID": "worker-1", WORKER_KEY_VARIABLE: worker_key(files)},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for files in (ours, theirs)
    ]
    try:
        yield started[0], started[1], ours
    finally:
        for process in started:
            process.kill()
            process.wait()


def test_keys_differ_between_swarms_and_agree_between_servers(tmp_path: Path) -> None:
    files = tmp_path / "project" / ".mcp-swarm" / "workers" / "worker-1"
    files.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "project")
    assert worker_key(files) == worker_key(tmp_path / "link" / ".mcp-swarm" / "workers" / "worker-1")
    assert worker_key(files) != worker_key(tmp_path / "other" / ".mcp-swarm" / "workers" / "worker-1")
    assert worker_key(files) != worker_key(files.parent / "worker-2")


def test_a_worker_whose_pid_was_never_recorded_is_found_by_its_key_only(
    two_swarms_worker_1: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path],
) -> None:
    ours, _theirs, files = two_swarms_worker_1
    found = session_leaders_with(WORKER_KEY_VARIABLE, worker_key(files))
    assert [identity.pid for identity in found] == [ours.pid]


async def test_strays_are_killed_by_the_key_and_another_swarms_worker_1_lives_on(
    two_swarms_worker_1: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path],
) -> None:
    ours, theirs, files = two_swarms_worker_1
    with anyio.fail_after(DEADLINE):
        await kill_strays(WORKER_KEY_VARIABLE, worker_key(files), since=0)
    assert ours.wait(timeout=DEADLINE) == -9
    assert theirs.poll() is None
