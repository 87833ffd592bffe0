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
from mcp_swarm.placement.wrapped import wrapper_argv
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


async def test_direct_mode_gives_the_worker_its_environment_exactly_and_records_its_end(
    tmp_path: Path,
) -> None:
    """A local worker's wrapper: output straight to its own stdout, the environment it was given
    (in a C locale Python adds LC_CTYPE to its own os.environ; the worker must not see it)."""
    status = tmp_path / "status"
    # `env` rather than Python, which would add LC_CTYPE to its own environment before printing it.
    argv = wrapper_argv(["sh", "-c", "env; exit 4"], status=status)
    env = {"PATH": os.defpath, "LANG": "C", "SWARM_WORKER_ID": "worker-1"}
    with anyio.fail_after(DEADLINE):
        done = await anyio.run_process(argv, check=False, env=env)
    assert done.returncode == 4
    given = dict(line.split("=", 1) for line in done.stdout.decode().splitlines())
    for variable in ("PWD", "SHLVL", "_"):  # what sh itself may set
        given.pop(variable, None)
    assert given == env
    assert Tmux.read_status(status) == {"exit_code": 4}


async def test_the_wrapper_stops_what_its_worker_left_even_outside_its_session(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon"
    # A double fork into a new session, SIGTERM ignored: only a subreaper's SIGKILL ends it.
    script = f"""
import os, signal, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pidfile)!r} + ".tmp", "w").write(str(os.getpid()))
        os.rename({str(pidfile)!r} + ".tmp", {str(pidfile)!r})
        time.sleep(600)
    os._exit(0)
os.wait()
while not os.path.exists({str(pidfile)!r}):
    time.sleep(0.005)
"""
    status = tmp_path / "status"
    argv = wrapper_argv([sys.executable, "-c", script], status=status)
    with anyio.fail_after(DEADLINE):
        done = await anyio.run_process(argv, check=False, env={"PATH": os.defpath})
    assert done.returncode == 0
    assert Tmux.read_status(status) == {"exit_code": 0}
    # The wrapper exits only once it has killed and reaped the daemon.
    assert not await anyio.Path(f"/proc/{int(pidfile.read_text())}").exists()
