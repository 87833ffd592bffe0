"""The wheel a person installs: its distribution name, its command, and the Mayor skill inside it
(`mcp-swarm install` reads the skill from the installed package, not from a clone)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.support import REPOSITORY


@pytest.mark.slow
def test_the_wheel_carries_the_skill_and_the_command(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(REPOSITORY), "-w", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        skill = archive.read("mcp_swarm/skill/SKILL.md").decode()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        (entry_points_name,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points_name).decode()
    assert skill == (REPOSITORY / "mcp_swarm" / "skill" / "SKILL.md").read_text()
    # "mcp-swarm" on the package index is another project; the command keeps the short name.
    assert metadata["Name"] == "mcp-swarm-mayor"
    assert "mcp-swarm = mcp_swarm.cli.main:main" in entry_points
