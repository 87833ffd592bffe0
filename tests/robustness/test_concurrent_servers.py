"""Two `mcp-swarm serve` processes on one SQLite file, each with several callers at once.

Two Mayor sessions sharing a swarm: both servers start together (and race to create the file),
then every caller of each server creates tasks and, on a few shared tasks, merges metadata and
adds dependencies, all at the same time as the callers of the other server. Pairs of tasks are
also linked both ways at once from the two servers: exactly one link of each pair may win.
Afterwards nothing may be lost or doubled: ids, tasks, metadata keys, dependencies, history.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import TaskEvent
from mcp_swarm.store import Store
from tests.support.mcp_client import call, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SERVERS = ("east", "west")
CALLERS_PER_SERVER = 3
CREATES_PER_CALLER = 100
SHARED_TASKS = 3
CYCLE_PAIRS = 20
TIME_LIMIT_SECONDS = 240


def serve(db: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_swarm", "serve", "--db", str(db)], cwd=db.parent
    )


@dataclass
class Writes:
    """What the callers were told succeeded, to be found again in the database."""

    # id -> subject, for every TaskCreate answer
    created: dict[str, str] = field(default_factory=dict[str, str])
    # every id handed out, repeats kept
    created_ids: list[str] = field(default_factory=list[str])
    # shared task id -> metadata keys merged into it, with their values
    metadata: dict[str, dict[str, int]] = field(default_factory=dict[str, dict[str, int]])
    # shared task id -> the tasks it was made to wait for
    blockers: dict[str, set[str]] = field(default_factory=dict[str, set[str]])
    # pair index -> the servers whose link was accepted
    pair_wins: dict[int, list[str]] = field(default_factory=dict[int, list[str]])
    # server -> what its TaskList showed at the end: id -> subject
    listings: dict[str, dict[str, str]] = field(default_factory=dict[str, dict[str, str]])


@dataclass
class Setup:
    shared: list[str]
    pairs: list[tuple[str, str]]  # (x, y): east asks x to wait for y, west y for x


class Barrier:
    """Each party waits here until all have arrived."""

    def __init__(self, parties: int) -> None:
        self._left = parties
        self._all_here = anyio.Event()

    async def wait(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._all_here.set()
        await self._all_here.wait()


@dataclass
class Rendezvous:
    connected: Barrier = field(default_factory=lambda: Barrier(len(SERVERS)))
    setup_ready: anyio.Event = field(default_factory=anyio.Event)
    setup: Setup | None = None
    writers_done: Barrier = field(default_factory=lambda: Barrier(len(SERVERS)))
    pair_barriers: list[Barrier] = field(
        default_factory=lambda: [Barrier(len(SERVERS)) for _ in range(CYCLE_PAIRS)]
    )


async def create_setup(client: Client) -> Setup:
    plan: list[dict[str, Any]] = [
        {"key": f"shared{n}", "subject": f"Shared task {n}"} for n in range(SHARED_TASKS)
    ]
    for n in range(CYCLE_PAIRS):
        plan += [{"key": f"x{n}", "subject": f"Pair {n} x"}, {"key": f"y{n}", "subject": f"Pair {n} y"}]
    keys: dict[str, str] = (await call(client, "TaskCreatePlan", tasks=plan))["keys"]
    return Setup(
        shared=[keys[f"shared{n}"] for n in range(SHARED_TASKS)],
        pairs=[(keys[f"x{n}"], keys[f"y{n}"]) for n in range(CYCLE_PAIRS)],
    )


async def caller(client: Client, server: str, number: int, setup: Setup, writes: Writes) -> None:
    name = f"{server}-{number}"
    for i in range(CREATES_PER_CALLER):
        subject = f"{name} task {i}"
        created = await call(client, "TaskCreate", subject=subject, description="")
        task_id: str = created["id"]
        writes.created_ids.append(task_id)
        writes.created[task_id] = subject

        shared = setup.shared[i % SHARED_TASKS]
        key = f"{name}.{i}"  # this writer's own key: a lost merge would lose it
        await call(client, "TaskUpdate", taskId=shared, metadata={key: i})
        writes.metadata.setdefault(shared, {})[key] = i

        await call(client, "TaskUpdate", taskId=shared, addBlockedBy=[task_id])
        writes.blockers.setdefault(shared, set()).add(task_id)


async def link_pairs(client: Client, server: str, setup: Setup, meet: Rendezvous, writes: Writes) -> None:
    """For each pair, at the same moment, east asks x to wait for y and west y for x: exactly one
    of the two may be accepted, the other closes a cycle."""
    for pair, (x, y) in enumerate(setup.pairs):
        waiter, blocker = (x, y) if server == SERVERS[0] else (y, x)
        await meet.pair_barriers[pair].wait()
        result = await client.call_tool("TaskUpdate", {"taskId": waiter, "addBlockedBy": [blocker]})
        if result.is_error:
            assert f"close the cycle {waiter} -> {blocker} -> {waiter} " in text_of(result), text_of(result)
        else:
            writes.pair_wins.setdefault(pair, []).append(server)


async def run_server(name: str, db: Path, meet: Rendezvous, writes: Writes) -> None:
    async with Client(serve(db), mode="legacy") as client:
        # Both servers have opened (and raced to create) the file before anyone writes.
        await meet.connected.wait()
        if name == SERVERS[0]:
            meet.setup = await create_setup(client)
            meet.setup_ready.set()
        await meet.setup_ready.wait()
        assert meet.setup is not None
        async with anyio.create_task_group() as group:
            for number in range(CALLERS_PER_SERVER):
                group.start_soon(caller, client, name, number, meet.setup, writes)
            group.start_soon(link_pairs, client, name, meet.setup, meet, writes)
        # Once both servers are done writing, each must see every task of both.
        await meet.writers_done.wait()
        listing = await call(client, "TaskList")
        writes.listings[name] = {task["id"]: task["subject"] for task in listing["tasks"]}


async def test_two_servers_on_one_file_lose_and_double_nothing(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    meet = Rendezvous()
    writes = Writes()
    with anyio.fail_after(TIME_LIMIT_SECONDS):
        async with anyio.create_task_group() as group:
            for name in SERVERS:
                group.start_soon(run_server, name, db, meet, writes)
    setup = meet.setup
    assert setup is not None

    # Ids: none handed out twice, and together with the plan's exactly 1..N.
    doubled = {task_id: n for task_id, n in Counter(writes.created_ids).items() if n > 1}
    assert not doubled, f"ids handed out more than once: {doubled}"
    creates = len(SERVERS) * CALLERS_PER_SERVER * CREATES_PER_CALLER
    assert len(writes.created_ids) == creates
    setup_ids = [*setup.shared, *(task_id for pair in setup.pairs for task_id in pair)]
    total = len(setup_ids) + creates
    assert sorted([*setup_ids, *writes.created_ids], key=int) == [str(n) for n in range(1, total + 1)]

    # Every task, as each server lists it.
    for name in SERVERS:
        listed = writes.listings[name]
        assert set(listed) == {str(n) for n in range(1, total + 1)}, f"{name} lists the wrong tasks"
        assert {task_id: listed[task_id] for task_id in writes.created} == writes.created

    async with await Store.open(db) as store:
        ledger = Ledger(store)
        # No lost merge, no lost dependency on the shared tasks.
        for shared in setup.shared:
            task = await ledger.get(shared)
            assert task.metadata == writes.metadata[shared], f"metadata of shared task {shared}"
            assert set(task.blocked_by) == writes.blockers[shared], f"blockers of shared task {shared}"

        # Each pair was linked exactly once: both links would be a cycle, none a lost write.
        for pair, (x, y) in enumerate(setup.pairs):
            wins = writes.pair_wins.get(pair, [])
            assert len(wins) == 1, f"pair {pair} ({x}, {y}) was linked by {wins}"
            x_blockers = (await ledger.get(x)).blocked_by
            y_blockers = (await ledger.get(y)).blocked_by
            assert (x_blockers, y_blockers) == (([y], []) if wins == ["east"] else ([], [x]))

        history = await ledger.history(limit=1_000_000)
        problems = await store.integrity_check()

    assert problems == [], problems
    check_history(history, setup, writes, total)


def check_history(history: list[TaskEvent], setup: Setup, writes: Writes, total: int) -> None:
    """The history accounts for every change, once: each creation, merge and new dependency."""
    event_ids = [event.id for event in history]
    assert event_ids == sorted(set(event_ids)), "event ids repeat or go backwards"
    fields = Counter(event.field.split(".")[0] for event in history)
    assert set(fields) <= {"created", "metadata", "blockedBy"}, fields

    # The creations, in commit order, name their server: they must interleave, or nothing ran at once.
    servers = [
        writes.created[event.task_id].split("-")[0]
        for event in history
        if event.field == "created" and event.task_id in writes.created
    ]
    switches = sum(a != b for a, b in itertools.pairwise(servers))
    assert switches >= 2, f"the servers' writes did not interleave ({switches} switches): nothing ran at once"

    created = Counter(event.task_id for event in history if event.field == "created")
    assert created == Counter(str(n) for n in range(1, total + 1)), "a task created not once"
    subjects = {event.task_id: event.new["subject"] for event in history if event.field == "created"}
    assert {task_id: subjects[task_id] for task_id in writes.created} == writes.created

    merges = [event for event in history if event.field.startswith("metadata.")]
    expected_merges = {
        (shared, key): value for shared, keys in writes.metadata.items() for key, value in keys.items()
    }
    assert len(merges) == len(expected_merges)
    assert {(e.task_id, e.field.removeprefix("metadata.")): e.new for e in merges} == expected_merges
    assert all(event.old is None for event in merges)

    links = Counter((event.task_id, event.new) for event in history if event.field == "blockedBy")
    expected_links = Counter(
        (shared, blocker) for shared, blockers in writes.blockers.items() for blocker in blockers
    )
    for pair, (x, y) in enumerate(setup.pairs):
        expected_links[(x, y) if writes.pair_wins[pair] == ["east"] else (y, x)] += 1
    assert links == expected_links
    assert len(history) == total + len(expected_merges) + sum(expected_links.values())
