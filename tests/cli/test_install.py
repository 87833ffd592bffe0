"""`mcp-swarm install`: each client's file, idempotence, the rest of the file kept, refusals, the
portable project entry, the Mayor skill; and the real Claude Code and Codex CLIs reading what it
wrote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcp_swarm.cli.install import packaged_skill
from tests.support import REPOSITORY
from tests.support.agent_clis import QUIET_CLAUDE
from tests.support.mcp_client import installed_command
from tests.support.scripted_llm import MessageTurn, ScriptedAnthropicServer, ScriptedOpenAIServer, TextTurn
from tests.support.scripted_llm.codex_config import CODEX_KEY_VARIABLE, write_codex_config

TOOLS_BIN = REPOSITORY / ".tools" / "npm" / "node_modules" / ".bin"


@dataclass
class Place:
    home: Path
    project: Path
    # The PATH of the person's shell; None keeps the one the tests run with.
    path: str | None = None

    def env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MCP_SWARM_", "CLAUDE", "CODEX_", "ANTHROPIC_", "OPENAI_"))
        }
        env.update(
            HOME=str(self.home),
            NO_COLOR="1",
            **QUIET_CLAUDE,
        )
        if self.path is not None:
            env["PATH"] = self.path
        return env

    def install(self, *args: str, path: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        env = self.env()
        if path is not None:
            env["PATH"] = path
        env.update(extra)
        return subprocess.run(
            [installed_command(), "install", *args],
            cwd=self.project,
            env=env,
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


# A user's own file names this installation; a project's file, shared with the team, runs
# `mcp-swarm` from PATH, as every teammate who installed it has it.
ENTRY = {"command": installed_command(), "args": ["serve"]}
PORTABLE = {"command": "mcp-swarm", "args": ["serve"]}


@pytest.mark.parametrize(
    ("args", "where", "path", "skill"),
    [
        (["claude"], "project", ".mcp.json", ".claude/skills/swarm/SKILL.md"),
        (["claude", "--scope", "user"], "home", ".claude.json", ".claude/skills/swarm/SKILL.md"),
        (["cursor"], "project", ".cursor/mcp.json", ".cursor/skills/swarm/SKILL.md"),
        (["cursor", "--scope", "user"], "home", ".cursor/mcp.json", ".cursor/skills/swarm/SKILL.md"),
        (["gemini"], "project", ".gemini/settings.json", ".gemini/skills/swarm/SKILL.md"),
        (["gemini", "--scope", "user"], "home", ".gemini/settings.json", ".gemini/skills/swarm/SKILL.md"),
    ],
)
def test_json_clients_get_the_entry_and_the_skill_once(
    place: Place, args: list[str], where: str, path: str, skill: str
) -> None:
    base = place.project if where == "project" else place.home
    config, skill_file = base / path, base / skill
    first = place.install(*args)
    assert first.returncode == 0, first.stderr
    entry = PORTABLE if where == "project" else ENTRY
    assert json.loads(config.read_text()) == {"mcpServers": {"swarm": entry}}
    assert f"{config}: added the swarm server" in first.stdout
    assert skill_file.read_text() == packaged_skill()
    assert f"{skill_file}: wrote the Mayor skill" in first.stdout
    written = config.read_bytes()
    again = place.install(*args)
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert "Nothing to change: it was already registered." in again.stdout
    assert config.read_bytes() == written
    # Only that file, the skill (and, for a Claude project, its approval) were made.
    made = {p.relative_to(place.home.parent) for p in place.home.parent.rglob("*") if p.is_file()}
    expected = {config.relative_to(place.home.parent), skill_file.relative_to(place.home.parent)}
    if args == ["claude"]:
        expected.add(Path("project/.claude/settings.local.json"))
    assert made == expected


def test_the_project_entry_names_no_path_of_this_machine(place: Place) -> None:
    for client in ("claude", "cursor", "gemini"):
        assert place.install(client).returncode == 0
    for path in (".mcp.json", ".cursor/mcp.json", ".gemini/settings.json"):
        text = (place.project / path).read_text()
        assert json.loads(text)["mcpServers"]["swarm"] == PORTABLE
        # Neither this virtual environment nor this interpreter: a teammate has neither.
        assert str(Path(installed_command()).parent) not in text
        assert sys.prefix not in text


def test_a_project_entry_says_when_mcp_swarm_is_not_on_path(place: Place) -> None:
    missing = place.install("cursor", path="/usr/bin:/bin")
    assert missing.returncode == 0, missing.stderr
    assert "`mcp-swarm` is not on PATH here" in missing.stdout
    assert "pipx install mcp-swarm-mayor" in missing.stdout
    found = place.install("gemini", path=f"{Path(installed_command()).parent}:/usr/bin:/bin")
    assert "not on PATH" not in found.stdout


def test_an_entry_of_an_earlier_install_moves_to_the_portable_form(place: Place) -> None:
    # A project entry with this machine's absolute path, as `install` wrote one before: it is ours,
    # so it is replaced without --force.
    config = place.project / ".mcp.json"
    config.write_text(json.dumps({"mcpServers": {"swarm": {"command": "/home/someone/.venv/bin/mcp-swarm",
                                                            "args": ["serve"]}}}))  # fmt: skip
    done = place.install("claude")
    assert done.returncode == 0, done.stderr
    assert "replaced the swarm server" in done.stdout
    assert json.loads(config.read_text()) == {"mcpServers": {"swarm": PORTABLE}}


@pytest.mark.parametrize(
    ("args", "where", "skill"),
    [
        (["claude"], "project", ".claude/skills/swarm/SKILL.md"),
        (["codex"], "home", ".agents/skills/swarm/SKILL.md"),
        (["gemini", "--scope", "user"], "home", ".gemini/skills/swarm/SKILL.md"),
    ],
)
def test_an_edited_skill_is_kept_unless_forced(place: Place, args: list[str], where: str, skill: str) -> None:
    skill_file = (place.project if where == "project" else place.home) / skill
    assert place.install(*args).returncode == 0
    edited = packaged_skill() + "\n## Our team's rules\n\nAlways run the linters.\n"
    skill_file.write_text(edited)
    kept = place.install(*args)
    assert kept.returncode == 0, kept.stderr
    assert f"{skill_file}: kept as it is: it differs" in kept.stdout
    assert "--force replaces it" in kept.stdout
    assert skill_file.read_text() == edited
    forced = place.install(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"{skill_file}: replaced the Mayor skill" in forced.stdout
    assert skill_file.read_text() == packaged_skill()


def test_no_skill_registers_the_server_only(place: Place) -> None:
    done = place.install("claude", "--no-skill")
    assert done.returncode == 0, done.stderr
    assert (place.project / ".mcp.json").is_file()
    assert not (place.project / ".claude" / "skills").exists()
    assert "SKILL.md" not in done.stdout


def test_the_packaged_skill_is_the_one_in_the_repository_and_examples() -> None:
    source = REPOSITORY / "mcp_swarm" / "skill" / "SKILL.md"
    assert packaged_skill() == source.read_text()
    # examples/ links to it, so that the two cannot drift apart.
    example = REPOSITORY / "examples" / "SKILL.md"
    assert example.is_symlink()
    assert example.resolve() == source.resolve()


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
    assert after["mcpServers"] == {**before["mcpServers"], "swarm": PORTABLE}
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


def test_a_refusal_writes_no_skill(place: Place) -> None:
    (place.project / ".cursor").mkdir()
    (place.project / ".cursor" / "mcp.json").write_text('{"mcpServers": {"swarm": {"command": "other"}}}')
    assert place.install("cursor").returncode == 1
    assert not (place.project / ".cursor" / "skills").exists()


@pytest.mark.parametrize(("args", "message"), [(["vscode"], "unknown client"), (["cursor", "--scope", "team"],
                                                "unknown scope")])  # fmt: skip
def test_unknown_clients_and_scopes_are_refused(place: Place, args: list[str], message: str) -> None:
    done = place.install(*args)
    assert done.returncode == 2
    assert message in done.stderr


def agent_cli_path(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS_BIN))
    if found is None:
        message = f"the {name} CLI is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{message}; CI must install it (./dev test puts .tools/npm/node_modules/.bin on PATH)"
            )
        pytest.skip(message)
    return found


def listed_servers(cli: str, place: Place, **extra: str) -> subprocess.CompletedProcess[str]:
    """`<cli> mcp list` run in the project, as the user would run it (with `extra` in its environment)."""
    listed = subprocess.run(
        [cli, "mcp", "list"],
        cwd=place.project,
        env={**place.env(), **extra},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return listed


def make_teammate(place: Place) -> None:
    """Make `place` a person who installed mcp-swarm: its command on PATH, in a git repository.

    Claude Code honours .claude/settings.local.json only where git shows that it is not part of
    the project's shared files, so the project is a git repository, as projects are.
    """
    place.path = f"{Path(installed_command()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    subprocess.run(["git", "init", "-q"], cwd=place.project, check=True)


def asked(place: Place, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """An agent CLI's one-shot run (`argv`) in the project, to its successful end."""
    done = subprocess.run(
        argv, cwd=place.project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def skill_description_start() -> str:
    """The first 40 characters of the packaged skill's description, which the model is shown."""
    description = re.search(r"^description: (.{40})", packaged_skill(), re.MULTILINE)
    assert description is not None
    return description.group(1)


@pytest.mark.agent_cli
def test_claude_code_connects_to_the_portable_entry(place: Place) -> None:
    claude = agent_cli_path("claude")
    make_teammate(place)
    assert place.install("claude").returncode == 0
    listed = listed_servers(claude, place)
    # Claude Code 2.1 prints "swarm: <command> serve - ✔ Connected" once it has talked to the server.
    assert re.search(r"^swarm: mcp-swarm serve - [✓✔] Connected$", listed.stdout, re.MULTILINE), listed.stdout


@pytest.mark.agent_cli
def test_claude_code_loads_the_installed_skill_and_offers_it_to_the_model(place: Place) -> None:
    claude = agent_cli_path("claude")
    make_teammate(place)
    assert place.install("claude").returncode == 0
    with ScriptedAnthropicServer([TextTurn("Ready to run a swarm.")]) as llm:
        env = place.env()
        env.update(
            ANTHROPIC_BASE_URL=llm.base_url,
            ANTHROPIC_API_KEY="sk-ant-scripted-test-key",
            # Wait for the MCP server before the first request, so that it shows as connected.
            MCP_CONNECTION_NONBLOCKING="0",
            MCP_CONNECT_TIMEOUT_MS="60000",
            NO_PROXY="127.0.0.1,localhost",
        )
        done = asked(
            place, env, claude, "-p", "What can you do here?", "--output-format", "stream-json", "--verbose"
        )
        requests = llm.main_requests
    init = next(
        event
        for event in (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
        if event.get("type") == "system" and event.get("subtype") == "init"
    )
    assert "swarm" in init["skills"], init
    assert {"name": "swarm", "status": "connected"} in init["mcp_servers"], init
    # The model is told of the skill by its description, so it can choose it.
    assert requests, done.stdout
    assert skill_description_start() in json.dumps(requests[0].body), "the skill was not offered to the model"


@pytest.mark.agent_cli
def test_codex_lists_the_server_it_was_given(place: Place) -> None:
    codex = agent_cli_path("codex")
    assert place.install("codex").returncode == 0
    listed = listed_servers(codex, place)
    assert re.search(
        rf"^swarm\s+{re.escape(installed_command())}\s+serve\s.*enabled", listed.stdout, re.MULTILINE
    )


@pytest.mark.agent_cli
def test_codex_offers_the_installed_skill_to_the_model(place: Place) -> None:
    codex = agent_cli_path("codex")
    codex_home = place.home / ".codex"
    codex_home.mkdir()
    with ScriptedOpenAIServer([MessageTurn("Ready to run a swarm.")]) as llm:
        write_codex_config(codex_home, llm.base_url)
        assert place.install("codex").returncode == 0
        assert (place.home / ".agents" / "skills" / "swarm" / "SKILL.md").is_file()
        env = place.env()
        env.update(
            CODEX_HOME=str(codex_home), TMPDIR=str(place.home), NO_PROXY="127.0.0.1,localhost",
            **{CODEX_KEY_VARIABLE: "sk-scripted-test-key"},
        )  # fmt: skip
        done = asked(place, env, codex, "exec", "--json", "--skip-git-repo-check", "What can you do here?")
        requests = llm.main_requests
    assert requests, done.stdout + done.stderr
    # Codex lists the skills it found, by name and description, in what it sends the model.
    assert f"- swarm: {skill_description_start()}" in json.dumps(requests[0].body)
