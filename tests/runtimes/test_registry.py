"""Which runtime runs when spawn names none."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_swarm.config import RuntimeSettings
from mcp_swarm.errors import InvalidInput
from mcp_swarm.runtimes import CommandRuntime, WorkerRequest
from mcp_swarm.runtimes.registry import build_runtimes, default_runtime


def put_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *programs: str) -> None:
    for program in programs:
        script = tmp_path / program
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.mark.parametrize(
    ("installed", "client", "expected"),
    [
        (("claude", "codex"), "claude-code", "claude"),
        (("claude", "codex"), "codex-mcp-client", "codex"),
        (("claude", "codex"), "cursor", "codex"),
        (("claude",), "codex-mcp-client", "claude"),
        (("codex",), None, "codex"),
        ((), "claude-code", None),
    ],
)
def test_the_clients_own_cli_then_whatever_is_installed(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    installed: tuple[str, ...],
    client: str | None,
    expected: str,
) -> None:
    put_on_path(monkeypatch, tmp_path, *installed)
    assert default_runtime(build_runtimes({}), None, client) == expected


def test_configuration_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    put_on_path(monkeypatch, tmp_path, "claude")
    runtimes = build_runtimes({"mine": RuntimeSettings(type="command", argv=["true"])})
    assert isinstance(runtimes["mine"], CommandRuntime)
    assert default_runtime(runtimes, "mine", "claude-code") == "mine"


def test_a_command_runtime_without_argv_is_a_configuration_error() -> None:
    with pytest.raises(InvalidInput, match=r"\[runtimes.broken\].*argv"):
        build_runtimes({"broken": RuntimeSettings(type="command")})


def test_profiles_tune_the_built_in_runtimes() -> None:
    runtimes = build_runtimes(
        {
            "claude": RuntimeSettings(
                type="claude", model="opus", allowed_tools=["Read"], program="/opt/claude"
            )
        }
    )
    request = WorkerRequest(
        worker_id="worker-1",
        task_id="1",
        prompt="p",
        prompt_file=Path("/x/prompt.md"),
        result_file=Path("/x/result.json"),
        cwd=Path("/x"),
    )
    argv = runtimes["claude"].argv(request)
    assert argv[0] == "/opt/claude"
    assert argv[argv.index("--model") + 1] == "opus"
    assert argv[argv.index("--allowedTools") + 1] == "Read"
