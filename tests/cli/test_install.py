"""`mcp-swarm install`: each client's file, idempotence, the rest of the file kept, refusals; and the
real Claude Code and Codex CLIs reading what it wrote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPOSITORY
from tests.support.mcp_client import installed_command

TOOLS_BIN = REPOSITORY / ".tools" / "npm" / "node_modules" / ".bin"


@dataclass
class Place:
    home: Path
    project: Path

    def env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MCP_SWARM_", "CLAUDE", "CODEX_", "ANTHROPIC_", "OPENAI_"))
        }
        env.update(
            HOME=str(self.home),
            NO_COLOR="1",
            DISABLE_TELEMETRY="1",
            DISABLE_ERROR_REPORTING="1",
            DISABLE_AUTOUPDATER="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        )
        return env

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [installed_command(), "install", *args],
            cwd=self.project,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def place(tmp_path: Path) -> Place:
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    return Place(tmp_path / "home", tmp_path / "project")


ENTRY = {"command": installed_command(), "args": ["serve"]}


@pytest.mark.parametrize(
    ("args", "where", "path"),
    [
        (["claude"], "project", ".mcp.json"),
        (["claude", "--scope", "user"], "home", ".claude.json"),
        (["cursor"], "project", ".cursor/mcp.json"),
        (["cursor", "--scope", "user"], "home", ".cursor/mcp.json"),
        (["gemini"], "project", ".gemini/settings.json"),
        (["gemini", "--scope", "user"], "home", ".gemini/settings.json"),
    ],
)
def test_json_clients_get_the_entry_once(place: Place, args: list[str], where: str, path: str) -> None:
    config = (place.project if where == "project" else place.home) / path
    first = place.install(*args)
    assert first.returncode == 0, first.stderr
    assert json.loads(config.read_text()) == {"mcpServers": {"swarm": ENTRY}}
    assert f"{config}: added the swarm server" in first.stdout
    written = config.read_bytes()
    again = place.install(*args)
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert "Nothing to change: it was already registered." in again.stdout
    assert config.read_bytes() == written
    # Only that file (and, for a Claude project, its approval) was made.
    made = {p.relative_to(place.home.parent) for p in place.home.parent.rglob("*") if p.is_file()}
    expected = {config.relative_to(place.home.parent)}
    if args == ["claude"]:
        expected.add(Path("project/.claude/settings.local.json"))
    assert made == expected


def test_claude_project_scope_approves_the_server_for_this_person(place: Place) -> None:
    assert place.install("claude").returncode == 0
    local = json.loads((place.project / ".claude" / "settings.local.json").read_text())
    assert local == {"enabledMcpjsonServers": ["swarm"]}


def test_the_rest_of_a_json_file_is_kept_with_its_indentation(place: Place) -> None:
    config = place.project / ".mcp.json"
    other = {"command": "other-server", "args": ["--flag"], "env": {"A": "1"}}
    before: dict[str, Any] = {"mcpServers": {"other": other}, "unrelated": [1, 2, {"x": None}]}
    config.write_text(json.dumps(before, indent=4) + "\n")
    settings = place.project / ".claude" / "settings.local.json"
    settings.parent.mkdir()
    settings.write_text(
        '{\n\t"permissions": {"allow": ["Bash(ls:*)"]},\n\t"enabledMcpjsonServers": ["other"]\n}\n'
    )
    done = place.install("claude")
    assert done.returncode == 0, done.stderr
    text = config.read_text()
    after = json.loads(text)
    assert after["unrelated"] == before["unrelated"]
    assert after["mcpServers"] == {**before["mcpServers"], "swarm": ENTRY}
    assert list(after) == ["mcpServers", "unrelated"]
    assert '\n    "mcpServers": {\n        "other": {' in text
    local = json.loads(settings.read_text())
    assert local == {"permissions": {"allow": ["Bash(ls:*)"]}, "enabledMcpjsonServers": ["other", "swarm"]}
    assert '\n\t"permissions"' in settings.read_text()


def test_a_different_swarm_entry_is_refused_unless_forced(place: Place) -> None:
    config = place.home / ".gemini" / "settings.json"
    config.parent.mkdir()
    theirs = '{\n  "mcpServers": {\n    "swarm": {"command": "/opt/other/swarm", "args": []}\n  }\n}\n'
    config.write_text(theirs)
    refused = place.install("gemini", "--scope", "user")
    assert refused.returncode == 1
    assert "already has a different 'swarm' server" in refused.stderr
    assert "--force" in refused.stderr
    assert config.read_text() == theirs
    forced = place.install("gemini", "--scope", "user", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "replaced the swarm server" in forced.stdout
    assert json.loads(config.read_text()) == {"mcpServers": {"swarm": ENTRY}}


def test_a_refusal_in_claude_project_scope_writes_neither_file(place: Place) -> None:
    (place.project / ".mcp.json").write_text('{"mcpServers": {"swarm": {"command": "elsewhere"}}}')
    assert place.install("claude").returncode == 1
    assert not (place.project / ".claude").exists()


CODEX_CONFIG = """\
# my settings
model = "o3"  # the fast one

[mcp_servers.docs]
command = "docs-server"
args = ["--port", "0"]

[profiles.deep]
model = "o3-pro"
"""


def test_codex_gets_a_toml_table_and_keeps_the_rest_of_the_file(place: Place) -> None:
    config = place.home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(CODEX_CONFIG)
    done = place.install("codex")
    assert done.returncode == 0, done.stderr
    swarm_table = f'[mcp_servers.swarm]\ncommand = "{installed_command()}"\nargs = ["serve"]\n'
    assert config.read_text() == CODEX_CONFIG.replace("[profiles.deep]", swarm_table + "\n[profiles.deep]")
    written = config.read_text()
    again = place.install("codex")
    assert "nothing changed" in again.stdout
    assert config.read_text() == written
    config.write_text(CODEX_CONFIG + '\n[mcp_servers.swarm]\ncommand = "old"\n')
    assert place.install("codex").returncode == 1
    assert place.install("codex", "--force").returncode == 0
    assert config.read_text().count("[mcp_servers.swarm]") == 1
    assert 'command = "old"' not in config.read_text()


def test_codex_has_no_project_scope(place: Place) -> None:
    done = place.install("codex", "--scope", "project")
    assert done.returncode == 2
    assert "--scope user" in done.stderr
    assert list(place.home.iterdir()) == []
    assert list(place.project.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [(["vscode"], "unknown client"), (["cursor", "--scope", "team"],
                                                "unknown scope")])  # fmt: skip
def test_unknown_clients_and_scopes_are_refused(place: Place, args: list[str], message: str) -> None:
    done = place.install(*args)
    assert done.returncode == 2
    assert message in done.stderr


def _agent_cli(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS_BIN))
    if found is None:
        message = f"the {name} CLI is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{message}; CI must install it (./dev test puts .tools/npm/node_modules/.bin on PATH)"
            )
        pytest.skip(message)
    return found


def _listed_servers(cli: str, place: Place) -> subprocess.CompletedProcess[str]:
    """`<cli> mcp list` run in the project, as the user would run it."""
    listed = subprocess.run(
        [cli, "mcp", "list"],
        cwd=place.project,
        env=place.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return listed


@pytest.mark.agent_cli
def test_claude_code_connects_to_the_server_it_was_given(place: Place) -> None:
    claude = _agent_cli("claude")
    # A project is a git repository: Claude Code honours .claude/settings.local.json only where git
    # shows it is not part of the project's shared files.
    subprocess.run(["git", "init", "-q"], cwd=place.project, check=True)
    assert place.install("claude").returncode == 0
    listed = _listed_servers(claude, place)
    # Claude Code 2.1 prints "swarm: <command> serve - ✔ Connected" once it has talked to the server.
    assert re.search(rf"^swarm: {re.escape(installed_command())} serve - [✓✔] Connected$", listed.stdout,
                     re.MULTILINE), listed.stdout  # fmt: skip


@pytest.mark.agent_cli
def test_codex_lists_the_server_it_was_given(place: Place) -> None:
    codex = _agent_cli("codex")
    assert place.install("codex").returncode == 0
    listed = _listed_servers(codex, place)
    assert re.search(
        rf"^swarm\s+{re.escape(installed_command())}\s+serve\s.*enabled", listed.stdout, re.MULTILINE
    )
