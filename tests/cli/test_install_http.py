"""`mcp-swarm install claude|codex --http URL`: an entry that connects to a running `serve --http`
with the token from the client's environment, never the token itself; and the real Claude Code and
Codex CLIs reading it, Claude Code connecting to a real server with it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_install import Place, agent_cli_path, listed_servers, make_teammate, place
from tests.support.http_server import http_server, new_token
from tests.support.scripted_llm import MessageTurn, ScriptedOpenAIServer
from tests.support.scripted_llm.codex_config import CODEX_KEY_VARIABLE, write_codex_config

__all__ = ["place"]  # the fixture, shared with the stdio entries' tests

URL = "http://127.0.0.1:8765/mcp"
CLAUDE_ENTRY = {"type": "http", "url": URL, "headers": {"Authorization": "Bearer ${MCP_SWARM_TOKEN}"}}
CODEX_TABLE = f'[mcp_servers.swarm]\nurl = "{URL}"\nbearer_token_env_var = "MCP_SWARM_TOKEN"\n'


@pytest.mark.parametrize(
    ("args", "config"),
    [(["claude"], "project/.mcp.json"), (["claude", "--scope", "user"], "home/.claude.json")],
)
def test_claude_gets_an_http_entry_that_reads_the_token_from_the_environment(
    place: Place, args: list[str], config: str
) -> None:
    token = new_token()
    done = place.install(*args, "--http", URL, MCP_SWARM_TOKEN=token)
    assert done.returncode == 0, done.stderr
    path = place.home.parent / config
    assert json.loads(path.read_text()) == {"mcpServers": {"swarm": CLAUDE_ENTRY}}
    assert f"'swarm' connects to {URL}" in done.stdout
    assert "set MCP_SWARM_TOKEN" in done.stdout
    # Nothing written anywhere holds the token of the environment it was installed from.
    for written in place.home.parent.rglob("*"):
        if written.is_file():
            assert token not in written.read_text(), written
    again = place.install(*args, "--http", URL)
    assert "Nothing to change" in again.stdout
    # From the stdio entry to the HTTP one and back: both are ours, so no --force is needed.
    assert place.install(*args).returncode == 0
    assert "url" not in json.loads(path.read_text())["mcpServers"]["swarm"]
    assert place.install(*args, "--http", URL).returncode == 0
    assert json.loads(path.read_text())["mcpServers"]["swarm"] == CLAUDE_ENTRY


def test_codex_gets_a_url_and_the_variable_its_token_is_in(place: Place) -> None:
    token = new_token()
    done = place.install("codex", "--http", URL, MCP_SWARM_TOKEN=token)
    assert done.returncode == 0, done.stderr
    config = place.home / ".codex" / "config.toml"
    assert config.read_text() == CODEX_TABLE
    assert token not in config.read_text()
    assert "nothing changed" in place.install("codex", "--http", URL).stdout
    other = "http://10.0.0.5:9000/mcp"
    assert place.install("codex", "--http", other).returncode == 0
    assert config.read_text() == CODEX_TABLE.replace(URL, other)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8765/mcp", "is not an http:// or https:// URL with a host"),
        ("ftp://127.0.0.1:8765/mcp", "is not an http:// or https:// URL with a host"),
        ("http:///mcp", "is not an http:// or https:// URL with a host"),
        ("http://127.0.0.1:99999/mcp", "is not an http:// or https:// URL with a host"),
        ("http://127.0.0.1:port/mcp", "is not an http:// or https:// URL with a host"),
        ("http://127.0.0.1:8765", "names no path"),
        ("http://127.0.0.1:8765/", "names no path"),
        ("http://127.0.0.1:8765/mcp#x", "is not a URL a client can reach"),
        ("http://127.0.0.1:8765/m cp", "is not a URL a client can reach"),
        ("http://me:s3cret-token-value@127.0.0.1:8765/mcp", "holds a user name or password"),
    ],
)
@pytest.mark.parametrize("client", ["claude", "codex"])
def test_a_bad_url_is_refused_and_nothing_is_written(
    place: Place, client: str, url: str, message: str
) -> None:
    done = place.install(client, "--http", url)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    assert "http://127.0.0.1:8765/mcp" in done.stderr  # what to give instead
    assert "s3cret-token-value" not in done.stderr
    assert [p for p in place.home.parent.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("client", ["cursor", "gemini"])
def test_http_entries_are_for_claude_and_codex(place: Place, client: str) -> None:
    done = place.install(client, "--http", URL)
    assert done.returncode == 2
    assert "--http is for claude and codex" in done.stderr
    assert [p for p in place.home.parent.rglob("*") if p.is_file()] == []


@pytest.mark.agent_cli
@pytest.mark.slow
def test_claude_code_connects_to_a_running_server_with_the_token_from_its_environment(
    place: Place, tmp_path: Path
) -> None:
    claude = agent_cli_path("claude")
    make_teammate(place)
    token = new_token()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with http_server(server_dir, token=token) as server:
        assert place.install("claude", "--http", server.url).returncode == 0
        shown = f"swarm: {server.url} (HTTP)"
        listed = listed_servers(claude, place, MCP_SWARM_TOKEN=token)
        assert re.search(rf"^{re.escape(shown)} - [✓✔] Connected$", listed.stdout, re.MULTILINE), (
            listed.stdout
        )
        # Without the token, or with another one, it does not get in.
        for env in ({}, {"MCP_SWARM_TOKEN": new_token()}):
            listed = listed_servers(claude, place, **env)
            assert re.search(
                rf"^{re.escape(shown)} - [✗✘] Failed to connect$", listed.stdout, re.MULTILINE
            ), listed.stdout
        assert server.process.poll() is None
    assert token not in server.stderr


@pytest.mark.agent_cli
@pytest.mark.slow
def test_codex_lists_the_http_entry_and_connects_with_the_token(place: Place, tmp_path: Path) -> None:
    codex = agent_cli_path("codex")
    token = new_token()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    codex_home = place.home / ".codex"
    codex_home.mkdir()
    # At INFO the server notes each session it opens: only a request that passed the token gets one.
    with (
        http_server(server_dir, "--log-level", "INFO", token=token) as server,
        ScriptedOpenAIServer([MessageTurn("Ready."), MessageTurn("Ready.")]) as llm,
    ):
        write_codex_config(codex_home, llm.base_url)
        assert place.install("codex", "--http", server.url).returncode == 0
        listed = listed_servers(codex, place)
        assert re.search(
            rf"^swarm\s+{re.escape(server.url)}\s+MCP_SWARM_TOKEN\s+enabled", listed.stdout, re.M
        )
        sessions: list[int] = []
        for shown in (token, new_token()):
            env = place.env()
            env.update(
                CODEX_HOME=str(codex_home), TMPDIR=str(place.home), NO_PROXY="127.0.0.1,localhost",
                MCP_SWARM_TOKEN=shown, **{CODEX_KEY_VARIABLE: "sk-scripted-test-key"},
            )  # fmt: skip
            done = subprocess.run(
                [codex, "exec", "--json", "--skip-git-repo-check", "What can you do here?"],
                cwd=place.project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=180, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            sessions.append(server.stderr.count("Created new transport with session ID"))
    # With the right token Codex opened a session (and closed it); with a wrong one it opened none.
    assert sessions == [1, 1], server.stderr
    assert "Terminating session" in server.stderr
    assert token not in server.stderr
