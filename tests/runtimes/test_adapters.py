"""The runtime adapters: the command lines they build and how they read real CLI output.

The fixtures are output recorded from the real CLIs (Claude Code 2.1.197 and Codex 0.169, run
against a mock model), as kept in the project's shared reference material.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from mcp_swarm.errors import RuntimeNotCapable
from mcp_swarm.runtimes import (
    ClaudeProfile,
    ClaudeRuntime,
    CodexProfile,
    CodexRuntime,
    CommandProfile,
    CommandRuntime,
    OutputReader,
    Runtime,
    WorkerRequest,
)
from mcp_swarm.runtimes.codex import toml_string
from tests.support import FIXTURES

HOSTILE_PROMPT = "-rf; $(touch pwned) `id` && echo 'x' | cat > /tmp/out"


def request(tmp_path: Path, prompt: str = "Do task 1") -> WorkerRequest:
    return WorkerRequest(
        worker_id="worker-7",
        task_id="3",
        prompt=prompt,
        prompt_file=tmp_path / "prompt.md",
        result_file=tmp_path / "result.json",
        cwd=tmp_path,
    )


def read(runtime: Runtime, req: WorkerRequest, lines: list[str]) -> OutputReader:
    reader = runtime.reader(req)
    for line in lines:
        reader.feed(line)
    return reader


def claude_lines() -> list[str]:
    return (FIXTURES / "claude-2.1.197-p-stream-json.jsonl").read_text().splitlines()


def codex_lines() -> list[str]:
    return (FIXTURES / "codex-0.169-exec-json.jsonl").read_text().splitlines()


def test_claude_command_line_keeps_the_prompt_one_argument(tmp_path: Path) -> None:
    runtime = ClaudeRuntime(ClaudeProfile(model="sonnet", max_turns=12))
    argv = runtime.argv(request(tmp_path, HOSTILE_PROMPT))
    assert argv[:2] == ["claude", "-p"]
    assert argv[-2:] == ["--", HOSTILE_PROMPT]
    assert argv[argv.index("--output-format") + 1] == "stream-json"
    assert "--verbose" in argv
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--model") + 1] == "sonnet"
    assert argv[argv.index("--max-turns") + 1] == "12"
    resumed = runtime.resume_argv(request(tmp_path), "session-1", "Fix the failing check")
    assert resumed[:4] == ["claude", "-p", "--resume", "session-1"]
    assert resumed[-2:] == ["--", "Fix the failing check"]


def test_claude_worker_does_not_inherit_the_mayors_session_markers() -> None:
    env = ClaudeRuntime().environment({"CLAUDECODE": "1", "CLAUDE_CODE_ENTRYPOINT": "cli", "PATH": "/bin"})
    # Told to wait for its MCP server (the swarm's) before the first model request.
    assert env == {"PATH": "/bin", "MCP_CONNECTION_NONBLOCKING": "0", "MCP_CONNECT_TIMEOUT_MS": "60000"}
    # A value the user chose is kept.
    assert ClaudeRuntime().environment({"MCP_CONNECT_TIMEOUT_MS": "5"})["MCP_CONNECT_TIMEOUT_MS"] == "5"


URL = "http://127.0.0.1:41234/mcp"


def swarm_request(tmp_path: Path) -> WorkerRequest:
    return dataclasses.replace(request(tmp_path), swarm_url=URL)


def test_claude_worker_gets_its_swarm_endpoint_and_only_it(tmp_path: Path) -> None:
    runtime = ClaudeRuntime(ClaudeProfile(model="sonnet"))
    for argv in (
        runtime.argv(swarm_request(tmp_path)),
        runtime.resume_argv(swarm_request(tmp_path), "session-1", "Fix the failing check"),
    ):
        config = json.loads(argv[argv.index("--mcp-config") + 1])
        # The token is named, never given: Claude Code expands ${SWARM_TOKEN} from the worker's
        # environment, and the argument list (readable by every user) holds no secret.
        assert config == {
            "mcpServers": {
                "swarm": {"type": "http", "url": URL, "headers": {"Authorization": "Bearer ${SWARM_TOKEN}"}}
            }
        }
        # Next comes another flag: --mcp-config takes several values, and must take only this one.
        assert argv[argv.index("--mcp-config") + 2] == "--strict-mcp-config"
        allowed = argv[argv.index("--allowedTools") + 1].split(",")
        assert allowed == ["Read", "Edit", "Write", "Glob", "Grep", "mcp__swarm"]
        assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
        assert not any("serve" in arg or "swarm.db" in arg for arg in argv)
    # The swarm's tools are allowed even where the profile allows nothing else.
    bare = ClaudeRuntime(ClaudeProfile(allowed_tools=())).argv(swarm_request(tmp_path))
    assert bare[bare.index("--allowedTools") + 1] == "mcp__swarm"
    # Without a worker endpoint there is no MCP server at all.
    plain = runtime.argv(request(tmp_path))
    assert "--mcp-config" not in plain
    assert "mcp__swarm" not in plain[plain.index("--allowedTools") + 1]


@pytest.mark.parametrize("users_swarm", [False, True])
def test_codex_worker_gets_its_swarm_endpoint_before_the_prompt_and_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, users_swarm: bool
) -> None:
    codex_home = tmp_path / "codex home"
    codex_home.mkdir()
    if users_swarm:  # the Mayor's server, as `mcp-swarm install codex` registers it
        (codex_home / "config.toml").write_text(
            '[mcp_servers.swarm]\ncommand = "mcp-swarm"\nargs = ["serve"]\n'
        )
    monkeypatch.setenv("CODEX_HOME", str(codex_home))
    runtime = CodexRuntime(CodexProfile(extra_args=("--strict-config",)))
    argv = runtime.argv(swarm_request(tmp_path))
    resumed = runtime.resume_argv(swarm_request(tmp_path), "thread-1", "-again")
    for args in (argv, resumed):
        overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "-c"]
        values = {
            key: tomllib.loads(f"v = {value}")["v"] for key, value in (o.split("=", 1) for o in overrides)
        }
        expected: dict[str, object] = {
            "mcp_servers.swarm_worker.url": URL,
            "mcp_servers.swarm_worker.bearer_token_env_var": "SWARM_TOKEN",
            "mcp_servers.swarm_worker.required": True,
        }
        if users_swarm:
            expected["mcp_servers.swarm.enabled"] = False
        assert values == expected
    assert argv[-2:] == ["--", "Do task 1"]
    # The overrides are options of `codex exec`: before `resume`, as -C and --sandbox are.
    assert resumed.index("-c") < resumed.index("resume")
    assert resumed[-4:] == ["resume", "--", "thread-1", "-again"]
    assert "-c" not in runtime.argv(request(tmp_path))


@pytest.mark.parametrize("text", ["/plain/path.db", '/odd dir/é😀/q"uote\\back\x7f.db'])
def test_codex_overrides_are_toml_strings(text: str) -> None:
    assert tomllib.loads(f"x = {toml_string(text)}") == {"x": text}


def test_claude_reads_the_final_result_event(tmp_path: Path) -> None:
    reader = read(ClaudeRuntime(), request(tmp_path), claude_lines())
    assert reader.finished
    outcome = reader.outcome(0)
    assert outcome.succeeded
    assert outcome.summary == "Hello from mock"
    assert outcome.session_id == "f05e976c-993f-485a-8a60-c273f2faf46c"
    assert outcome.cost_usd == pytest.approx(0.000175)
    assert outcome.num_turns == 1


def test_claude_exit_zero_with_an_error_result_is_a_failure(tmp_path: Path) -> None:
    lines = claude_lines()
    result = json.loads(lines[-1])
    result.update(is_error=True, subtype="error_during_execution", result="API Error: 500 overloaded")
    outcome = read(ClaudeRuntime(), request(tmp_path), [*lines[:-1], json.dumps(result)]).outcome(0)
    assert not outcome.succeeded
    assert outcome.error is not None
    assert "API Error: 500 overloaded" in outcome.error


def test_claude_without_a_result_event_is_a_failure(tmp_path: Path) -> None:
    reader = read(ClaudeRuntime(), request(tmp_path), [*claude_lines()[:-1], "not json", '{"partial":'])
    assert not reader.finished
    outcome = reader.outcome(0)
    assert not outcome.succeeded
    assert outcome.summary == "Hello from mock"  # the last thing it said is still worth showing
    assert outcome.error is not None
    assert "without a final result" in outcome.error


def test_codex_command_line_ends_options_before_the_prompt(tmp_path: Path) -> None:
    argv = CodexRuntime().argv(request(tmp_path, HOSTILE_PROMPT))
    assert argv[:2] == ["codex", "exec"]
    for flag in ["--json", "--skip-git-repo-check"]:
        assert flag in argv
    assert argv[argv.index("-C") + 1] == str(tmp_path)
    assert argv[argv.index("--sandbox") + 1] == "workspace-write"
    assert argv[-2:] == ["--", HOSTILE_PROMPT]
    resumed = CodexRuntime().resume_argv(request(tmp_path), "thread-1", "-again")
    assert resumed[-4:] == ["resume", "--", "thread-1", "-again"]


def test_codex_reads_thread_message_and_completion(tmp_path: Path) -> None:
    reader = read(CodexRuntime(), request(tmp_path), codex_lines())
    assert reader.finished
    outcome = reader.outcome(0)
    assert outcome.succeeded
    assert outcome.summary == "hi from mock"
    assert outcome.session_id == "01a20ab2-3aae-7731-9236-ebbf7a52af1e"


@pytest.mark.parametrize(
    "failure",
    [
        {"type": "turn.failed", "error": {"message": "stream disconnected before completion"}},
        {"type": "error", "message": "stream disconnected before completion"},
    ],
)
def test_codex_failure_events_decide_even_with_exit_zero(tmp_path: Path, failure: dict[str, object]) -> None:
    lines = [*codex_lines()[:2], json.dumps(failure)]
    outcome = read(CodexRuntime(), request(tmp_path), lines).outcome(0)
    assert not outcome.succeeded
    assert outcome.error is not None
    assert "stream disconnected" in outcome.error
    assert outcome.session_id == "01a20ab2-3aae-7731-9236-ebbf7a52af1e"


def test_codex_retry_errors_followed_by_a_completed_turn_are_a_success(tmp_path: Path) -> None:
    retry = json.dumps({"type": "error", "message": "Reconnecting... 1/5"})
    lines = [*codex_lines()[:2], retry, *codex_lines()[2:]]
    outcome = read(CodexRuntime(), request(tmp_path), lines).outcome(0)
    assert outcome.succeeded
    assert outcome.summary == "hi from mock"


def test_command_placeholders_fill_single_arguments(tmp_path: Path) -> None:
    runtime = CommandRuntime(
        CommandProfile(
            ["worker", "--task={task_id}", "{prompt}", "{prompt_file}", "{worker_id}", "{unknown}"]
        )
    )
    argv = runtime.argv(request(tmp_path, HOSTILE_PROMPT))
    assert argv == [
        "worker",
        "--task=3",
        HOSTILE_PROMPT,
        str(tmp_path / "prompt.md"),
        "worker-7",
        "{unknown}",
    ]
    with pytest.raises(RuntimeNotCapable):
        runtime.resume_argv(request(tmp_path), "s", "m")


@pytest.mark.parametrize(
    ("exit_code", "result", "succeeded", "error"),
    [
        (0, None, True, None),
        (0, {"status": "done", "summary": "wrote auth.py"}, True, None),
        (0, {"status": "blocked", "summary": "needs the schema"}, False, "blocked: needs the schema"),
        (0, {"status": "maybe"}, False, "unknown status"),
        (3, {"status": "done"}, False, "exited with status 3"),
        (-9, None, False, "signal 9"),
    ],
)
def test_command_verdict_is_exit_status_refined_by_the_result_file(
    tmp_path: Path, exit_code: int, result: dict[str, str] | None, succeeded: bool, error: str | None
) -> None:
    req = request(tmp_path)
    if result is not None:
        req.result_file.write_text(json.dumps(result))
    outcome = read(CommandRuntime(CommandProfile(["true"])), req, ["working", "last line"]).outcome(exit_code)
    assert outcome.succeeded is succeeded
    if error is None:
        assert outcome.error is None
    else:
        assert outcome.error is not None
        assert error in outcome.error
    expected_summary = (result or {}).get("summary", "last line")
    assert outcome.summary == expected_summary


# -- the swarm's state, closed to agent workers ------------------------------------------------------


def state_request(tmp_path: Path, *paths: Path) -> WorkerRequest:
    return dataclasses.replace(request(tmp_path), state_paths=paths)


def codex_overrides(argv: list[str]) -> dict[str, object]:
    """The `-c key=value` overrides of a codex command line, each value read as TOML."""
    values = [argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "-c"]
    return {key: tomllib.loads(f"v = {value}")["v"] for key, value in values}


def test_codex_closes_the_state_with_a_permission_profile(tmp_path: Path) -> None:
    state = tmp_path / 'odd "state" dir é' / ".mcp-swarm"
    db = tmp_path / "swarm.db"
    runtime = CodexRuntime()
    for argv in (
        runtime.argv(state_request(tmp_path, state, db)),
        runtime.resume_argv(state_request(tmp_path, state, db), "thread-1", "again"),
    ):
        # --sandbox on the command line would win over the profile, and leave the state writable.
        assert "--sandbox" not in argv
        assert codex_overrides(argv) == {
            "default_permissions": "swarm-worker",
            "permissions.swarm-worker.extends": ":workspace",
            "permissions.swarm-worker.filesystem": {str(state): "none", str(db): "none"},
        }
    resumed = runtime.resume_argv(state_request(tmp_path, state), "thread-1", "again")
    assert max(i for i, arg in enumerate(resumed) if arg == "-c") < resumed.index("resume")
    # Another sandbox the user chose is passed as it is: read-only writes nothing anyway, and full
    # access is theirs to give.
    for sandbox in ("read-only", "danger-full-access"):
        chosen = CodexRuntime(CodexProfile(sandbox=sandbox)).argv(state_request(tmp_path, state))
        assert chosen[chosen.index("--sandbox") + 1] == sandbox
        assert codex_overrides(chosen) == {}


def test_claude_denies_reading_and_editing_the_state(tmp_path: Path) -> None:
    state = tmp_path / "a state, [with] *odd* ?chars" / ".mcp-swarm"
    db = tmp_path / "swarm.db"
    runtime = ClaudeRuntime()
    for argv in (
        runtime.argv(state_request(tmp_path, state, db)),
        runtime.resume_argv(state_request(tmp_path, state, db), "session-1", "again"),
    ):
        settings = json.loads(argv[argv.index("--settings") + 1])
        # "//" starts an absolute path; a rule is a gitignore pattern, so the path's own pattern
        # characters are escaped. Edit rules cover Write and the shell's file commands.
        odd = str(state).replace("[", "\\[").replace("*", "\\*").replace("?", "\\?")
        assert settings == {
            "permissions": {
                "deny": [
                    f"Read(/{odd})",
                    f"Read(/{odd}/**)",
                    f"Read(/{db})",
                    f"Read(/{db}/**)",
                    f"Edit(/{odd})",
                    f"Edit(/{odd}/**)",
                    f"Edit(/{db})",
                    f"Edit(/{db}/**)",
                ]
            }
        }
        assert argv.index("--settings") < argv.index("--")
    assert "--settings" not in runtime.argv(request(tmp_path))


def test_agent_workers_do_not_get_the_result_file() -> None:
    env = {"PATH": "/bin", "SWARM_RESULT_FILE": "/p/.mcp-swarm/results/worker-1.json", "SWARM_TASK_ID": "1"}
    for runtime in (ClaudeRuntime(), CodexRuntime()):
        given = runtime.environment(env)
        assert "SWARM_RESULT_FILE" not in given, runtime.name
        assert given["SWARM_TASK_ID"] == "1"
    # A command worker reports through it.
    assert CommandRuntime(CommandProfile(["true"])).environment(env) == env
