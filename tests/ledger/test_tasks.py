"""The ledger against a pure-Python model of its rules, driven by a hypothesis state machine.

The real `Ledger` runs on a real SQLite file in a temporary directory, on one asyncio event loop per
test case (a blocking portal), while hypothesis picks operations: create, create_plan, dependency
changes (including self-dependencies and edges that close a cycle), status changes to every status.
The model is a dict of tasks and a set of (waiter, blocker) edges. Every call must be accepted or
refused as the model says, with the same error type (and the same id, blockers or a true cycle in
the message). After every step the listings (whole, ready, by status), the counts and every task's
`get` must match the model, the live dependency graph must be acyclic, and a refused call must have
changed nothing at all: listings, every task, the history.
"""

from __future__ import annotations

import copy
import itertools
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mcp_swarm.errors import BlockedTask, DependencyCycle, InvalidInput, SwarmError, TaskNotFound
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import (
    CreatedPlan,
    NewTask,
    PlanTask,
    Task,
    TaskChanges,
    TaskEvent,
    TaskListing,
    TaskStatus,
)
from mcp_swarm.store import Store

T = TypeVar("T")
Edge = tuple[int, int]  # (waiter, blocker): the waiter cannot start until the blocker is done

PENDING, IN_PROGRESS, COMPLETED, DELETED = (
    TaskStatus.PENDING,
    TaskStatus.IN_PROGRESS,
    TaskStatus.COMPLETED,
    TaskStatus.DELETED,
)
RELEASING = frozenset({COMPLETED, DELETED})
# Deleted tasks are left out: see the report on TaskList(status="deleted").
LISTED_STATUSES = tuple(status for status in TaskStatus if status is not DELETED)
STARTED = frozenset({IN_PROGRESS, COMPLETED})
CYCLE_MESSAGE = re.compile(r"close the cycle (.+) \(each task is blocked by the next\)")

# Weighted choices: sampled_from with repeats keeps the odd cases rare but present.
REF_KINDS = ("live",) * 12 + ("also", "bad")
PLAN_KEY_KINDS = ("own",) * 24 + ("none",) * 4 + ("duplicate", "digits")
PLAN_REF_KINDS = ("earlier",) * 12 + ("later",) * 6 + ("live",) * 6 + ("self", "dangling_key", "bad_id")
# A metadata patch: a key set to None is removed by the merge.
METADATA_KEYS: list[str] = ["a", "b"]
METADATA_PATCHES = st.none() | st.dictionaries(
    st.sampled_from(METADATA_KEYS), st.none() | st.integers(0, 3), min_size=1
)


# -- the model ----------------------------------------------------------------------------------


class ModelCycle(DependencyCycle):
    """The model's verdict that `attempted` closes a cycle over `edges` (which do not include it)."""

    def __init__(self, cycle: list[str], edges: frozenset[Edge], attempted: Edge) -> None:
        super().__init__(cycle)
        self.edges = edges
        self.attempted = attempted


class ModelPlanCycle(DependencyCycle):
    """The model's verdict that a plan's own references form a cycle."""

    def __init__(self, local: dict[int, list[int]], names: dict[str, int]) -> None:
        super().__init__(["(plan)"])
        self.local = local
        self.names = names


@dataclass
class ModelTask:
    subject: str
    status: TaskStatus = PENDING
    metadata: dict[str, int] = field(default_factory=dict[str, int])


def parse_id(text: str) -> int | None:
    """The ledger's ids are canonical decimal numbers; anything else names no task."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or str(int(text)) != text:
        return None
    return int(text)


def merge(metadata: dict[str, int], patch: dict[str, int | None]) -> dict[str, int]:
    merged = dict(metadata)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@dataclass
class Model:
    tasks: dict[int, ModelTask] = field(default_factory=dict[int, ModelTask])
    edges: set[Edge] = field(default_factory=set[Edge])

    # -- reading the model

    @property
    def next_id(self) -> int:
        return len(self.tasks) + 1

    def live(self, number: int) -> bool:
        return self.tasks[number].status is not DELETED

    def live_ids(self) -> list[int]:
        return [number for number in sorted(self.tasks) if self.live(number)]

    def deleted_ids(self) -> list[int]:
        return [number for number in sorted(self.tasks) if not self.live(number)]

    def open_blockers(self, number: int) -> list[int]:
        return sorted(b for w, b in self.edges if w == number and self.tasks[b].status not in RELEASING)

    def live_waiters(self, number: int) -> list[int]:
        return sorted(w for w, b in self.edges if b == number and self.live(w))

    def ready(self, number: int) -> bool:
        return self.tasks[number].status is PENDING and not self.open_blockers(number)

    def live_edges(self) -> set[Edge]:
        return {(w, b) for w, b in self.edges if self.live(w) and self.live(b)}

    def blocker_path(self, start: int, goal: int) -> list[int] | None:
        """A chain start, x, ..., goal where each live task is blocked by the next, if there is one."""
        came_from: dict[int, int | None] = {start: None}
        frontier = [start]
        while frontier:
            current = frontier.pop(0)
            if current == goal:
                path = [current]
                while (previous := came_from[path[-1]]) is not None:
                    path.append(previous)
                return path[::-1]
            for w, b in sorted(self.edges):
                if w == current and b not in came_from and self.live(b):
                    came_from[b] = current
                    frontier.append(b)
        return None

    # -- the rules, as operations that raise what the ledger must raise

    def task(self, text: str) -> int:
        number = parse_id(text)
        if number is None or number not in self.tasks:
            raise TaskNotFound(text)
        if not self.live(number):
            raise TaskNotFound(text, deleted=True)
        return number

    def live_refs(self, texts: list[str]) -> list[int]:
        """The numbers of these ids, without repeats; the first malformed id, else the first that
        names no live task, is refused."""
        for text in texts:
            if parse_id(text) is None:
                raise TaskNotFound(text)
        return list(dict.fromkeys(self.task(text) for text in texts))

    def create(self, new: NewTask) -> int:
        blockers = self.live_refs(new.blocked_by)
        number = self.next_id
        metadata = {key: value for key, value in new.metadata.items() if value is not None}
        self.tasks[number] = ModelTask(new.subject, metadata=metadata)
        self.edges.update((number, blocker) for blocker in blockers)
        return number

    def create_plan(self, plan: list[PlanTask]) -> list[int]:
        names: dict[str, int] = {}
        for index, task in enumerate(plan):
            if task.key is None:
                continue
            if task.key.isdigit() or task.key in names:
                raise InvalidInput(f"bad key {task.key!r}")
            names[task.key] = index
        local: dict[int, list[int]] = {index: [] for index in range(len(plan))}
        existing: list[str] = []
        for index, task in enumerate(plan):
            for ref in task.blocked_by:
                if ref in names:
                    if names[ref] == index:
                        raise InvalidInput("a plan task depends on itself")
                    local[index].append(names[ref])
                elif ref.isascii() and ref.isdigit():
                    existing.append(ref)
                else:
                    raise InvalidInput(f"dangling reference {ref!r}")
        if has_cycle(local):
            raise ModelPlanCycle(local, names)
        found = dict(zip(dict.fromkeys(existing), self.live_refs(list(dict.fromkeys(existing))), strict=True))
        first = self.next_id
        for index, task in enumerate(plan):
            self.create(NewTask(subject=task.subject, metadata=task.metadata))
            for ref in task.blocked_by:
                self.edges.add((first + index, first + names[ref] if ref in names else found[ref]))
        return list(range(first, first + len(plan)))

    def update(self, text: str, changes: TaskChanges) -> int:
        number = self.task(text)
        blocked_by = self.live_refs(changes.add_blocked_by)
        blocks = self.live_refs(changes.add_blocks)
        if number in blocked_by or number in blocks:
            raise InvalidInput("a task cannot depend on itself")
        for edge in [(number, b) for b in blocked_by] + [(w, number) for w in blocks]:
            waiter, blocker = edge
            path = self.blocker_path(blocker, waiter)
            if path is not None:
                raise ModelCycle([str(waiter), *map(str, path)], frozenset(self.edges), edge)
            self.edges.add(edge)
        task = self.tasks[number]
        if changes.metadata is not None:
            task.metadata = merge(task.metadata, changes.metadata)
        if changes.status is not None and changes.status is not task.status:
            open_blockers = self.open_blockers(number)
            if changes.status in STARTED and open_blockers:
                raise BlockedTask(text, changes.status.value, [str(b) for b in open_blockers])
            task.status = changes.status
        return number


def has_cycle(edges: dict[int, list[int]]) -> bool:
    """Kahn's algorithm: the graph is acyclic exactly when every node can be peeled off."""
    nodes = set(edges) | {b for blockers in edges.values() for b in blockers}
    remaining = {node: set(edges.get(node, [])) for node in nodes}
    while True:
        free = [node for node, blockers in remaining.items() if not blockers]
        if not free:
            return bool(remaining)
        for node in free:
            del remaining[node]
        for blockers in remaining.values():
            blockers.difference_update(free)


def check_same_refusal(expected: SwarmError, actual: SwarmError) -> None:
    """The ledger refused as the model did: same error type, and the same details where they are
    determined by the rules (which id was not found, which blockers are open, which edge closes
    which cycle)."""
    if isinstance(expected, DependencyCycle):
        assert type(actual) is DependencyCycle, f"expected a cycle refusal, got {actual!r}"
        match = CYCLE_MESSAGE.search(str(actual))
        assert match is not None, f"the cycle message names no cycle: {actual}"
        names = match.group(1).split(" -> ")
        assert names == actual.cycle, (names, actual.cycle)
        if isinstance(expected, ModelCycle):
            check_update_cycle(names, expected)
        else:
            assert isinstance(expected, ModelPlanCycle)
            check_plan_cycle(names, expected)
        return
    assert type(actual) is type(expected), f"expected {expected!r}, got {actual!r}"
    if not isinstance(expected, InvalidInput):
        # TaskNotFound and BlockedTask messages are fully determined by the id and the blockers.
        assert str(actual) == str(expected)


def check_update_cycle(names: list[str], expected: ModelCycle) -> None:
    nodes = [int(name) for name in names]
    pairs = list(itertools.pairwise(nodes))
    assert len(nodes) >= 3, f"too short for a cycle: {names}"
    assert nodes[0] == nodes[-1], f"not a closed path: {names}"
    assert pairs[0] == expected.attempted, f"the cycle {names} does not start with the attempted edge"
    graph = expected.edges | {expected.attempted}
    for pair in pairs:
        assert pair in graph, f"{pair[0]} is not blocked by {pair[1]} in the cycle {names}"


def check_plan_cycle(names: list[str], expected: ModelPlanCycle) -> None:
    def index(name: str) -> int:
        if name in expected.names:
            return expected.names[name]
        assert name.startswith("#"), f"unknown plan task {name!r}"
        return int(name[1:]) - 1

    nodes = [index(name) for name in names]
    assert len(nodes) >= 3, f"too short for a cycle: {names}"
    assert nodes[0] == nodes[-1], f"not a closed path: {names}"
    for waiter, blocker in itertools.pairwise(nodes):
        assert blocker in expected.local[waiter], (
            f"{names}: plan task {waiter + 1} does not wait for {blocker + 1}"
        )


# -- the database side --------------------------------------------------------------------------


@dataclass(frozen=True)
class DbState:
    """Everything a caller can see: listings, each task's get (or its refusal), the history."""

    listing: TaskListing
    ready: TaskListing
    by_status: tuple[TaskListing, ...]  # every status but deleted, in LISTED_STATUSES order
    gets: tuple[Task | str, ...]
    history: tuple[TaskEvent, ...]


def find_cycle(edges: set[Edge]) -> bool:
    graph: dict[int, list[int]] = {}
    for waiter, blocker in edges:
        graph.setdefault(waiter, []).append(blocker)
    return has_cycle(graph)


def has_live_tasks(machine: LedgerMachine) -> bool:
    return bool(machine.model.live_ids())


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self._resources = ExitStack()
        tmp = Path(tempfile.mkdtemp(prefix="ledger-props-"))
        self._resources.callback(shutil.rmtree, tmp, ignore_errors=True)
        try:
            self.portal = self._resources.enter_context(start_blocking_portal(backend="asyncio"))
            self.store = self.portal.call(Store.open, tmp / "swarm.db")
        except BaseException:
            self._resources.close()
            raise
        self._resources.callback(self.portal.call, self.store.close)
        self.ledger = Ledger(self.store)
        # What the database showed when last read; only `_run` may change it, and forgets it.
        self._cached_state: DbState | None = None

    def teardown(self) -> None:
        self._resources.close()

    # -- running one call on both sides

    def _run(self, call: Callable[[], Awaitable[T]], expect: Callable[[Model], object]) -> T | None:
        """Run `call` on the ledger and `expect` on a copy of the model. Both must succeed, or both
        refuse the same way; a refused call must leave the database exactly as it was."""
        before = self._current_state()
        self._cached_state = None  # from here on the database may change
        trial = copy.deepcopy(self.model)
        expected: SwarmError | None = None
        try:
            expect(trial)
        except SwarmError as exc:
            expected = exc
        refusal: SwarmError | None = None
        result: T | None = None
        try:
            result = self.portal.call(call)
        except SwarmError as exc:
            refusal = exc
        if refusal is not None:
            assert expected is not None, f"refused {refusal!r}; the model accepts it"
            check_same_refusal(expected, refusal)
            assert self._current_state() == before, "a refused call changed the database"
            return None
        assert expected is None, f"accepted; the model refuses with {expected!r}"
        self.model = trial
        return result

    def _current_state(self) -> DbState:
        if self._cached_state is None:
            self._cached_state = self.portal.call(self._read_state)
        return self._cached_state

    async def _read_state(self) -> DbState:
        gets: list[Task | str] = []
        for number in range(1, self.model.next_id + 1):  # one past the end: it must not exist
            try:
                gets.append(await self.ledger.get(str(number)))
            except TaskNotFound as exc:
                gets.append(str(exc))
        return DbState(
            listing=await self.ledger.list(),
            ready=await self.ledger.list(ready=True),
            by_status=tuple([await self.ledger.list(status=status) for status in LISTED_STATUSES]),
            gets=tuple(gets),
            history=tuple(await self.ledger.history(limit=1_000_000)),
        )

    # -- drawing arguments

    def _bad_refs(self) -> list[str]:
        """Ids that name no live task: deleted ones, unused numbers, malformed strings."""
        unused = self.model.next_id
        return [str(n) for n in self.model.deleted_ids()] + [str(unused), str(unused + 5), "0", "01", "x"]

    def _ref(self, data: st.DataObject, *, also: Sequence[str] = ()) -> str:
        """Mostly a live task's id, sometimes one of `also`, rarely a bad one."""
        pools = {"live": [str(n) for n in self.model.live_ids()], "also": list(also), "bad": self._bad_refs()}
        pool = pools[data.draw(st.sampled_from(REF_KINDS))]
        return data.draw(st.sampled_from(pool or pools["bad"]))

    def _refs(self, data: st.DataObject, max_size: int, *, also: Sequence[str] = ()) -> list[str]:
        count = data.draw(st.integers(0, max_size))
        return [self._ref(data, also=also) for _ in range(count)]

    def _metadata_patch(self, data: st.DataObject) -> dict[str, int | None] | None:
        return data.draw(METADATA_PATCHES)

    # -- rules

    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        live = [str(n) for n in self.model.live_ids()]
        blocked_by = data.draw(st.lists(st.sampled_from(live), max_size=3)) if live else []
        if data.draw(st.sampled_from(REF_KINDS)) == "bad":
            blocked_by.insert(
                data.draw(st.integers(0, len(blocked_by))), data.draw(st.sampled_from(self._bad_refs()))
            )
        patch = self._metadata_patch(data) or {}
        new = NewTask(subject=f"task {self.model.next_id}", metadata=patch, blocked_by=blocked_by)
        expected_id = self.model.next_id
        task = self._run(lambda: self.ledger.create(new), lambda model: model.create(new))
        if task is not None:
            assert task.id == str(expected_id)
            assert task == self.portal.call(self.ledger.get, task.id)

    @rule(data=st.data())
    def create_plan(self, data: st.DataObject) -> None:
        size = data.draw(st.integers(1, 4), label="plan size")
        keys: list[str | None] = []
        for index in range(size):
            kind = data.draw(st.sampled_from(PLAN_KEY_KINDS))
            keys.append(
                {"own": f"k{index}", "none": None, "duplicate": "k0", "digits": str(10 + index)}[kind]
            )
        live = [str(n) for n in self.model.live_ids()]
        plan: list[PlanTask] = []
        for index, key in enumerate(keys):
            earlier = [k for k in keys[:index] if k is not None]
            later = [k for k in keys[index + 1 :] if k is not None]
            choices = {
                "earlier": earlier,
                "later": later,
                "live": live,
                "self": [] if key is None else [key],
                "dangling_key": ["nowhere"],
                "bad_id": self._bad_refs(),
            }
            refs: list[str] = []
            for _ in range(data.draw(st.integers(0, 3))):
                candidates = choices[data.draw(st.sampled_from(PLAN_REF_KINDS))]
                if candidates:
                    refs.append(data.draw(st.sampled_from(candidates)))
            plan.append(PlanTask(key=key, subject=f"plan task {index + 1}", blocked_by=refs))
        first = self.model.next_id
        created = self._run(lambda: self.ledger.create_plan(plan), lambda model: model.create_plan(plan))
        if created is not None:
            ids = [str(first + index) for index in range(size)]
            expected_keys = {key: ids[index] for index, key in enumerate(keys) if key is not None}
            assert created == CreatedPlan(ids=ids, keys=expected_keys)

    @precondition(has_live_tasks)
    @rule(data=st.data())
    def add_dependencies(self, data: st.DataObject) -> None:
        target = self._ref(data)
        changes = TaskChanges(
            add_blocked_by=self._refs(data, 2, also=[target]),
            add_blocks=self._refs(data, 2, also=[target]),
            status=data.draw(st.none() | st.sampled_from(TaskStatus)),
            metadata=self._metadata_patch(data),
        )
        self._update(target, changes)

    @precondition(has_live_tasks)
    @rule(data=st.data())
    def close_a_cycle(self, data: st.DataObject) -> None:
        """Follow a chain of dependencies, then ask a live task down the chain to block its first
        task: refused when the chain is live all along, accepted when a deleted task breaks it."""
        edges = sorted((w, b) for w, b in self.model.edges if self.model.live(w))
        if not edges:
            return
        path = list(data.draw(st.sampled_from(edges)))
        while data.draw(st.booleans()):
            onward = [b for w, b in self.model.edges if w == path[-1]]
            if not onward:
                break
            path.append(data.draw(st.sampled_from(sorted(onward))))
        ends = [n for n in path[1:] if self.model.live(n)]
        if not ends:
            return
        first, last = str(path[0]), str(data.draw(st.sampled_from(ends)))
        if data.draw(st.booleans()):
            self._update(last, TaskChanges(add_blocked_by=[first]))
        else:
            self._update(first, TaskChanges(add_blocks=[last]))

    @precondition(has_live_tasks)
    @rule(data=st.data())
    def delete_a_link(self, data: st.DataObject) -> None:
        """Delete a task in the middle of a chain: the chain no longer counts as a path to a cycle."""
        live_edges = self.model.live_edges()
        inner = sorted({b for _, b in live_edges} & {w for w, _ in live_edges})
        if inner:
            self._update(str(data.draw(st.sampled_from(inner))), TaskChanges(status=DELETED))

    @precondition(has_live_tasks)
    @rule(data=st.data())
    def set_status(self, data: st.DataObject) -> None:
        changes = TaskChanges(
            status=data.draw(st.sampled_from(TaskStatus)), metadata=self._metadata_patch(data)
        )
        self._update(self._ref(data), changes)

    def _update(self, target: str, changes: TaskChanges) -> None:
        task = self._run(
            lambda: self.ledger.update(target, changes), lambda model: model.update(target, changes)
        )
        if task is None:
            return
        assert task.id == target
        if changes.status is DELETED:
            assert task.status is DELETED
        else:
            assert task == self.portal.call(self.ledger.get, target)

    # -- what must hold after every step

    @invariant()
    def database_matches_model(self) -> None:
        state = self._current_state()
        model = self.model
        live = model.live_ids()

        assert [summary.id for summary in state.listing.tasks] == [str(n) for n in live], (
            "deleted tasks listed?"
        )
        for summary in state.listing.tasks:
            number = int(summary.id)
            assert summary.status is model.tasks[number].status
            assert summary.subject == model.tasks[number].subject
            assert summary.blocked_by == [str(b) for b in model.open_blockers(number)], summary
            assert summary.ready is model.ready(number), summary
        assert [summary.id for summary in state.ready.tasks] == [str(n) for n in live if model.ready(n)]

        counts: dict[str, int] = {}
        for number in live:
            status = model.tasks[number].status.value
            counts[status] = counts.get(status, 0) + 1
        counts["ready"] = sum(model.ready(number) for number in live)
        assert state.listing.counts == counts
        assert state.ready.counts == counts, "counts are over the whole ledger, whatever the filter"
        for status, listing in zip(LISTED_STATUSES, state.by_status, strict=True):
            assert [s.id for s in listing.tasks] == [str(n) for n in live if model.tasks[n].status is status]
            assert listing.counts == counts, f"counts of TaskList(status={status.value})"

        for number, got in enumerate(state.gets, start=1):
            if number not in model.tasks:
                assert got == str(TaskNotFound(str(number)))
            elif not model.live(number):
                assert got == str(TaskNotFound(str(number), deleted=True))
            else:
                assert isinstance(got, Task), got
                expected = model.tasks[number]
                assert (got.id, got.subject, got.status, got.metadata) == (
                    str(number),
                    expected.subject,
                    expected.status,
                    expected.metadata,
                )
                assert got.blocked_by == [str(b) for b in model.open_blockers(number)], got
                assert got.blocks == [str(w) for w in model.live_waiters(number)], got
                assert got.ready is model.ready(number), got

        # The live dependency graph, as the ledger shows it through `blocks`, is the model's, and
        # has no cycle.
        shown = {
            (int(waiter), number)
            for number, got in enumerate(state.gets, start=1)
            if isinstance(got, Task)
            for waiter in got.blocks
        }
        assert shown == model.live_edges()
        assert not find_cycle(shown), f"a cycle among live tasks: {sorted(shown)}"


# A pass takes seconds; a failure is shrunk for up to hypothesis's own five minutes, on real SQLite.
@pytest.mark.timeout(600)
def test_ledger_follows_the_model() -> None:
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            # One bug, shrunk, is what a failure should report; each replay costs real SQLite work.
            report_multiple_bugs=False,
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        ),
    )
