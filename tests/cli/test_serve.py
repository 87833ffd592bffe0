"""`mcp-swarm serve` as a process: what it writes to stdout, where it keeps its state, its options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.support.mcp_client import call, installed_command, stdio_parameters

PROTOCOL_VERSION = "2025-06-18"


def _request(id_: int, method: str, params: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})


def test_stdout_carries_only_protocol_even_at_debug_level(tmp_path: Path) -> None:
    requests = [
        _request(
            1,
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        ),
        _request(2, "tools/call", {"name": "TaskCreate", "arguments": {"subject": "A", "description": ""}}),
        _request(3, "tools/call", {"name": "TaskGet", "arguments": {"taskId": "404"}}),
    ]
    with subprocess.Popen(
        [installed_command(), "serve", "--db", str(tmp_path / "swarm.db"), "--log-level", "DEBUG"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stdin is not None
        assert server.stdout is not None
        messages: list[dict[str, Any]] = []
        for index, request in enumerate(requests):
            server.stdin.write(request + "\n")
            if index == 0:
                server.stdin.write(
                    json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n"
                )
            server.stdin.flush()
            # Every line on stdout must be a JSON-RPC message; a stray print would fail to parse here.
            messages.append(json.loads(server.stdout.readline()))
        # End of input means the client went away: the server must exit on its own, cleanly.
        server.stdin.close()
        assert server.wait(timeout=30) == 0
        assert server.stdout.read() == ""
        assert server.stderr is not None
        assert "DEBUG" in server.stderr.read()
    assert [m["id"] for m in messages] == [1, 2, 3]
    assert messages[1]["result"]["structuredContent"]["id"] == "1"
    assert messages[2]["result"]["isError"] is True


@pytest.mark.anyio
async def test_default_database_is_under_the_working_directory(tmp_path: Path) -> None:
    params = stdio_parameters(tmp_path / "ignored.db", cwd=tmp_path)
    params.args = ["serve"]
    async with Client(params, mode="legacy") as client:
        await call(client, "TaskCreate", subject="A", description="")
    assert (tmp_path / ".mcp-swarm" / "swarm.db").is_file()


@pytest.mark.anyio
async def test_config_file_sets_the_database(tmp_path: Path) -> None:
    (tmp_path / "mcp-swarm.toml").write_text('db = "state/ledger.db"\n')
    params = stdio_parameters(tmp_path / "ignored.db", cwd=tmp_path)
    params.args = ["serve"]
    async with Client(params, mode="legacy") as client:
        await call(client, "TaskCreate", subject="A", description="")
    assert (tmp_path / "state" / "ledger.db").is_file()


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (["--log-level", "LOUD"], None, "unknown log level"),
        (["--config", "missing.toml"], None, "does not exist"),
        ([], "max_wrkers = 3\n", "max_wrkers"),
        ([], "db = [\n", "not valid TOML"),
    ],
)
def test_bad_options_fail_fast_with_a_message(
    tmp_path: Path, args: list[str], config: str | None, expected: str
) -> None:
    if config is not None:
        (tmp_path / "mcp-swarm.toml").write_text(config)
    done = subprocess.run(
        [installed_command(), "serve", *args],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert expected in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / ".mcp-swarm").exists()


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_swarm", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--db" in done.stdout
    assert "--log-level" in done.stdout
