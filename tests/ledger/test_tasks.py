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
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
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

from mcp_swarm.errors import SwarmError, TaskNotFound
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
from tests.support.ledger_model import DELETED, Edge, Model, check_same_refusal, has_cycle

pytestmark = pytest.mark.slow

T = TypeVar("T")

# Deleted tasks are left out: see the report on TaskList(status="deleted").
LISTED_STATUSES = tuple(status for status in TaskStatus if status is not DELETED)

# Weighted choices: sampled_from with repeats keeps the odd cases rare but present.
REF_KINDS = ("live",) * 12 + ("also", "bad")
PLAN_KEY_KINDS = ("own",) * 24 + ("none",) * 4 + ("duplicate", "digits")
PLAN_REF_KINDS = ("earlier",) * 12 + ("later",) * 6 + ("live",) * 6 + ("self", "dangling_key", "bad_id")
# A metadata patch: a key set to None is removed by the merge.
METADATA_KEYS: list[str] = ["a", "b"]
METADATA_PATCHES = st.none() | st.dictionaries(
    st.sampled_from(METADATA_KEYS), st.none() | st.integers(0, 3), min_size=1
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
