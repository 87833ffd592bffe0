"""Every tool of both MCP servers, fuzzed through the SDK's own client.

The Mayor's server (`mcp-swarm serve`) is reached in memory, and its worker endpoint over HTTP as a
worker reaches it (with a token for its attempt), on an event loop of their own (a blocking
portal, tests/support/fuzz_servers.py), and called in three ways, the first two here:

1. the sweep: each argument of each tool in turn takes each of a fixed list of odd values (NUL,
   a megabyte of text, 2**63, a thousand wrong items, deep nesting, ids that overflow SQLite, a
   named pipe as a file...), the other arguments plain and valid, so that no known corner is left
   to chance;
2. per tool, random arguments drawn from the tool's own JSON input schema, as the client lists it
   (so a new tool is fuzzed without a line here; a schema keyword the generator does not know
   fails `test_every_tool_has_a_strategy`), most of them then made hostile: a wrong type, a
   missing or unknown argument, huge or odd text, extreme numbers, nested junk, no arguments
   (tests/support/tool_arguments.py);
3. a state machine of mostly valid calls, each run on a fresh project: test_fuzz_sessions.py.

What the fuzzer found is kept as plain tests in test_fuzz_findings.py.

Every call must answer within a deadline, with a result or with a tool error whose message
explains (no bare "Error executing tool X", which is the SDK's word for a crash, no traceback, no
"internal error", no flood), nothing may be logged as an error, and the session must answer the
next call. After each example the database must keep its invariants (tests/support/invariants.py),
and once the server has stopped, no worker of it may be left live.

Workers are real processes of `command` runtimes (`true`, `false`, `sleep 0.5`, a program that
does not exist), so spawn, supervision and close_agent run for real, and fast. Hypothesis is
derandomized: every run draws the same calls (what real workers do with them still varies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from mcp_types import Tool

from tests.support.fuzz_servers import ErrorLog, Served, running_mayor, running_worker
from tests.support.invariants import assert_ledger_sound
from tests.support.tool_arguments import (
    EDGES,
    FUZZ_SETTINGS,
    SWEEP_VALUES,
    UNKNOWN_KEYS,
    Arguments,
    NoStrategy,
    simplest,
    strategies_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.tmux]


def sweep(served: Served, tools: Sequence[Tool]) -> None:
    """Each argument of each tool in turn takes each odd value, the other arguments plain and valid."""
    for tool in tools:
        schema = tool.input_schema
        defs = cast(Mapping[str, Any], schema.get("$defs", {}))
        plain = cast(dict[str, Any], simplest(schema, defs))
        served.call(tool.name, plain)
        for name in sorted(cast(Mapping[str, Any], schema.get("properties", {}))):
            for value in (*SWEEP_VALUES, *EDGES.get(name, ())):
                served.call(tool.name, {**plain, name: value})
        for name in UNKNOWN_KEYS:
            served.call(tool.name, {**plain, name: 1})
        served.call(tool.name, None)
    assert_ledger_sound(served.db)


# Examples share one server and its database, so replaying a smaller one is not replaying the
# same thing: no shrinking, and the failing call is reported as it was made.
SHARED_SERVER = settings(FUZZ_SETTINGS, phases=[Phase.explicit, Phase.generate])
# Tools no call can make succeed here, and why.
NEVER_SUCCEED = {
    # The command runtime keeps no session to continue; send_input says so.
    "send_input",
}


def fuzz_tools(served: Served, strategies: Mapping[str, Arguments], examples: int) -> None:
    """Per example, a few calls of random tools with random arguments; then the invariants."""
    names = sorted(strategies)
    # A tool without parameters has little to fuzz: drawn a quarter as often.
    weighted = [
        name
        for name in names
        for _ in range(4 if strategies[name].tool.input_schema.get("properties") else 1)
    ]
    failures: list[AssertionError] = []

    @settings(SHARED_SERVER, max_examples=examples)
    @given(st.data())
    def calls(data: st.DataObject) -> None:
        try:
            for _ in range(data.draw(st.integers(1, 6), label="calls")):
                tool = data.draw(st.sampled_from(weighted), label="tool")
                served.call(tool, data.draw(strategies[tool].any, label=tool).arguments)
            assert_ledger_sound(served.db)
        except AssertionError as failure:
            failures.append(failure)
            raise

    try:
        calls()
    except Exception as reported:
        # Hypothesis replays the failing example to report it, on a server the first run changed:
        # what it reports then (or its complaint that the replay went otherwise) may hide the bug.
        if failures and reported is not failures[0]:
            raise failures[0] from reported
        raise
    refused = {tool for tool in names if served.answers[tool, True]}
    succeeded = {tool for tool in names if served.answers[tool, False]}
    assert refused == set(names), f"never refused: {sorted(set(names) - refused)}"
    assert succeeded == set(names) - NEVER_SUCCEED, f"never succeeded: {sorted(set(names) - succeeded)}"


# -- 1 and 2. each tool: the sweep, then random arguments -----------------------------------------


def test_every_tool_has_a_strategy(tmp_path: Path, error_log: ErrorLog) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as mayor,
    ):
        mayor.ok("TaskCreate", subject="seed", description="")
        [worker] = mayor.ok("spawn", runtime="lasting")["workers"]
        mayor_tools = mayor.tools()
        with running_worker(mayor, worker["workerId"]) as me:
            assert me is not None
            worker_tools = me.tools()
    assert {"TaskCreate", "spawn", "send_message", "import_wave"} <= {tool.name for tool in mayor_tools}
    assert {"my_task", "report_result", "reserve_files"} <= {tool.name for tool in worker_tools}
    strategies_for([*mayor_tools, *worker_tools])
    # The generator refuses what it does not know rather than guess.
    unknown = Tool(name="odd", input_schema={"type": "object", "properties": {"a": {"oneOf": []}}})
    with pytest.raises(NoStrategy, match="oneOf"):
        strategies_for([unknown])


def test_the_mayors_tools_take_any_arguments(tmp_path: Path, stand_ins: None, error_log: ErrorLog) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as mayor,
    ):
        plan = [
            {"key": f"k{n}", "subject": f"task {n}", "blockedBy": [f"k{n - 1}"] if n else []}
            for n in range(6)
        ]
        mayor.ok("TaskCreatePlan", tasks=plan)
        mayor.ok("TaskCreate", subject="lone", description="")
        mayor.ok("spawn", runtime="slow")
        tools = mayor.tools()
        sweep(mayor, tools)
        fuzz_tools(mayor, strategies_for(tools), examples=250)
    print(f"the Mayor's tools: {sum(mayor.answers.values())} calls")
    assert_ledger_sound(mayor.db, quiescent=True)


def test_a_workers_tools_take_any_arguments(tmp_path: Path, error_log: ErrorLog) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as mayor,
    ):
        checks = {"validation": {"files_exist": ["parser.py"]}}
        mayor.ok("TaskCreate", subject="Write the parser", description="parser.py", metadata=checks)
        mayor.ok("TaskCreate", subject="Another", description="")
        [worker, *_] = mayor.ok("spawn", runtime="lasting")["workers"]
        mayor.ok("send_message", to=worker["workerId"], subject="Use TOML", body="not YAML")
        with running_worker(mayor, worker["workerId"]) as me:
            assert me is not None
            tools = me.tools()
            sweep(me, tools)
            fuzz_tools(me, strategies_for(tools), examples=150)
    print(f"a worker's tools: {sum(me.answers.values())} calls")
    assert_ledger_sound(mayor.db, quiescent=True)
