"""The installed `mcp-swarm` command, run as a user runs it: in a directory, with no setting of
ours from the environment the tests run in, and no colour."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.mcp_client import installed_command


def cli_environment(**extra: str) -> dict[str, str]:
    """Our environment without MCP_SWARM_* settings, NO_COLOR set, and `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MCP_SWARM_")}
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def mcp_swarm(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`mcp-swarm ARGS` in `cwd` to its end (two minutes at most), its output captured."""
    return subprocess.run(
        [installed_command(), *args], cwd=cwd, env=cli_environment(**env), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
