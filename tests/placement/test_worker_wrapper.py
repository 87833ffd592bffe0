"""The worker wrapper on its own, run by hand as a tmux pane runs it: what it copies where, how it
exits, and that it needs nothing but the standard library (tests/placement/test_tmux.py runs it in
real tmux sessions)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from mcp_swarm.placement.tmux import Tmux
from tests.support.helpers import DEADLINE, names_in

pytestmark = pytest.mark.anyio


async def test_the_wrapper_run_by_hand_copies_to_its_stdout_and_exits_as_its_worker(tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"PATH": os.defpath}))
    script = "import os, signal; print('before the end', flush=True); os.kill(os.getpid(), signal.SIGTERM)"
    wrapper = [
        sys.executable,
        "-P",
        "-m",
        "mcp_swarm.placement.worker_wrapper",
        "--log",
        str(tmp_path / "log"),
    ]
    wrapper += ["--status", str(tmp_path / "status"), "--env-file", str(env_file), "--"]
    with anyio.fail_after(DEADLINE):
        done = await anyio.run_process([*wrapper, sys.executable, "-c", script], check=False)
    # As a shell reports a command killed by a signal; the status has it as subprocess does.
    assert done.returncode == 128 + signal.SIGTERM
    assert done.stdout == b"before the end\n"
    assert (tmp_path / "log").read_bytes() == b"before the end\n"
    assert Tmux.read_status(tmp_path / "status") == {"exit_code": -signal.SIGTERM}
    assert not env_file.exists()
    assert names_in(tmp_path) == ["log", "status"]

    with anyio.fail_after(DEADLINE):
        usage = await anyio.run_process(wrapper[:5], check=False)
    assert usage.returncode == 2
    assert b"missing '--'" in usage.stderr


async def test_the_wrapper_imports_only_the_standard_library() -> None:
    probe = "import sys; import mcp_swarm.placement.worker_wrapper; print(' '.join(sorted(sys.modules)))"
    with anyio.fail_after(DEADLINE):
        done = await anyio.run_process([sys.executable, "-P", "-c", probe])
    modules = set(done.stdout.decode().split())
    assert "mcp_swarm.placement.worker_wrapper" in modules
    heavy = {
        "mcp",
        "pydantic",
        "anyio",
        "subprocess",
        "asyncio",
        "mcp_swarm.placement.processes",
        "mcp_swarm.errors",
    }
    assert modules.isdisjoint(heavy), modules & heavy
