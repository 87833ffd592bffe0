"""Real agent CLIs as mcp-swarm workers: spawn, wait and send_input over stdio, a scripted model behind.

`mcp-swarm serve` runs in a project directory whose `mcp-swarm.toml` picks the runtime (claude or
codex, the installed CLI) and lets exactly the hermetic variables of the server's environment
through to its workers (`env_allow`). The server is driven with the SDK's client over real stdio;
each worker is the real CLI talking to a scripted LLM server on 127.0.0.1
(`ScriptedAnthropicServer` or `ScriptedOpenAIServer`). What is checked is the whole chain a unit
test with a fake runtime cannot reach: the argv the runtime builds, the worker's environment, the
reading of the CLI's own event stream into a verdict, validation, and `send_input` continuing the
worker's own conversation.

The hermetic setups are those of test_claude.py and test_codex.py, which explain every
variable; tests/support/agent_clis.py makes each CLI the project's runtime. Here the workers need
no MCP server of their own, so the MCP variables are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from tests.support.agent_clis import (
    AgentCLI,
    Answer,
    ClaudeCLI,
    CodexCLI,
    Refuse,
    Step,
    WriteFile,
    spawn_one,
    wait_for,
)
from tests.support.mcp_client import call

pytestmark = [pytest.mark.anyio, pytest.mark.agent_cli, pytest.mark.slow]

# What both CLIs exit with after a refused model call (claude: an is_error result; codex: turn.failed).
FAILED_RUN_EXIT_CODE = 1


@pytest.fixture(params=[ClaudeCLI, CodexCLI], ids=["claude", "codex"])
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> AgentCLI:
    kind = cast(type[AgentCLI], request.param)
    return kind(tmp_path)


# -- 1. a worker does the work -----------------------------------------------------------------------

NOTES = "written by the worker\nsecond line\n"
DONE_TEXT = "notes.txt is written."


async def test_worker_writes_a_file_with_its_own_tools(agent: AgentCLI) -> None:
    with agent.scripted([WriteFile("notes.txt", NOTES, "call_notes"), Answer(DONE_TEXT)]):
        async with agent.swarm() as client:
            worker_id = await spawn_one(client, agent, "Write the notes", description="Put notes.txt here.")
            done = await wait_for(client, agent, worker_id)
            task = await call(client, "TaskGet", taskId=done["taskId"])

    assert (done["state"], done["taskStatus"]) == ("succeeded", "completed"), agent.explain(done)
    assert done["exitCode"] == 0, agent.explain(done)
    assert done["summary"] == DONE_TEXT, agent.explain(done)
    assert "error" not in done, agent.explain(done)
    if agent.reports_cost:
        assert isinstance(done["costUsd"], int | float), agent.explain(done)
        assert done["costUsd"] >= 0, agent.explain(done)
    assert (agent.project / "notes.txt").read_text() == NOTES, agent.explain(done)
    assert (task["status"], task["owner"]) == ("completed", worker_id), task
    assert [(w["workerId"], w["state"], w["attempt"]) for w in task["workers"]] == [
        (worker_id, "succeeded", 1)
    ]

    calls = agent.calls()
    # One request for the tool call, one after its result; both in the worker's one session.
    assert len(calls) == 2, agent.explain(done)
    assert calls[0].session is not None, agent.explain(done)
    assert {call.session for call in calls} == {calls[0].session}, agent.explain(done)
    assert any("Your one task is task 1: Write the notes" in text for text in calls[0].user_texts)
    assert calls[1].answered_calls == ["call_notes"], agent.explain(done)
    assert agent.server_errors() == []


# -- 2. the model call fails -------------------------------------------------------------------------

REFUSAL = "scripted refusal: this model is not available"


async def test_failed_model_call_fails_the_task_with_the_reason(agent: AgentCLI) -> None:
    with agent.scripted([Refuse(REFUSAL)]):
        async with agent.swarm() as client:
            worker_id = await spawn_one(client, agent, "Doomed", description="The model refuses.")
            done = await wait_for(client, agent, worker_id)
            task = await call(client, "TaskGet", taskId=done["taskId"])

    assert (done["state"], done["taskStatus"]) == ("failed", "failed"), agent.explain(done)
    assert done["exitCode"] == FAILED_RUN_EXIT_CODE, agent.explain(done)
    assert REFUSAL in done["error"], agent.explain(done)
    assert task["status"] == "failed", task
    # Neither CLI retried the 400: the refusal was the whole run.
    assert len(agent.calls()) == 1, agent.explain(done)
    assert agent.server_errors() == []


# -- 3. validation fails, send_input continues the same conversation ---------------------------------

OTHER_TEXT = "I wrote other.txt instead."
FIXED_TEXT = "fixed.txt is there now."
FOLLOW_UP = "create fixed.txt"


async def test_send_input_retries_a_failed_validation_in_the_same_conversation(agent: AgentCLI) -> None:
    steps: list[Step] = [
        WriteFile("other.txt", "not what was asked\n", "call_other"),
        Answer(OTHER_TEXT),
        WriteFile("fixed.txt", "fixed\n", "call_fixed"),
        Answer(FIXED_TEXT),
    ]
    with agent.scripted(steps):
        async with agent.swarm() as client:
            worker_id = await spawn_one(
                client,
                agent,
                "Create fixed.txt",
                description="The file fixed.txt must exist.",
                metadata={"validation": {"files_exist": ["fixed.txt"]}},
            )
            first = await wait_for(client, agent, worker_id)
            failed_task = await call(client, "TaskGet", taskId=first["taskId"])
            first_calls = agent.calls()

            resumed = await call(client, "send_input", workerId=worker_id, message=FOLLOW_UP)
            second = await wait_for(client, agent, worker_id)
            task = await call(client, "TaskGet", taskId=first["taskId"])

    # The worker itself succeeded; its task did not pass the check.
    assert (first["state"], first["taskStatus"]) == ("succeeded", "failed"), agent.explain(first)
    assert first["summary"] == OTHER_TEXT, agent.explain(first)
    assert first["error"] == "validation failed: files_exist fixed.txt: missing", agent.explain(first)
    assert first["validation"] == {
        "passed": False,
        "checks": [{"check": "files_exist fixed.txt", "passed": False, "detail": "missing"}],
    }, agent.explain(first)
    assert failed_task["status"] == "failed", failed_task
    assert (agent.project / "other.txt").is_file(), agent.explain(first)

    assert resumed == {"workerId": worker_id, "state": "running", "attempt": 2}, resumed
    assert (second["state"], second["taskStatus"]) == ("succeeded", "completed"), agent.explain(second)
    assert second["summary"] == FIXED_TEXT, agent.explain(second)
    assert "error" not in second, agent.explain(second)
    assert second["validation"] == {
        "passed": True,
        "checks": [{"check": "files_exist fixed.txt", "passed": True}],
    }
    assert (agent.project / "fixed.txt").read_text() == "fixed\n", agent.explain(second)
    assert (task["status"], task["owner"]) == ("completed", worker_id), task
    assert [(w["workerId"], w["state"], w["attempt"]) for w in task["workers"]] == [
        (worker_id, "succeeded", 2)
    ]

    # The follow-up arrived in the first attempt's conversation: same session, everything said before
    # resent ahead of the new message.
    calls = agent.calls()
    assert len(first_calls) == 2, agent.explain(second)
    later = calls[len(first_calls) :]
    assert len(later) == 2, agent.explain(second)
    session = first_calls[0].session
    assert session is not None, agent.explain(second)
    assert {call.session for call in calls} == {session}, agent.explain(second)
    resumed_call = later[0]
    assert resumed_call.user_texts[-1] == FOLLOW_UP, resumed_call.user_texts
    assert any("Your one task is task 1: Create fixed.txt" in text for text in resumed_call.user_texts)
    assert OTHER_TEXT in resumed_call.assistant_texts, resumed_call.assistant_texts
    assert resumed_call.answered_calls == ["call_other"], resumed_call.answered_calls
    assert later[1].answered_calls == ["call_other", "call_fixed"], later[1].answered_calls
    before, after = first_calls[-1].items, resumed_call.items
    if before is not None and after is not None:
        assert after[: len(before)] == before, agent.explain(second)
    assert agent.server_errors() == []
