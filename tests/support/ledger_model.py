"""A pure-Python model of the ledger's task rules, for tests/ledger/test_tasks.py: a dict of tasks
and a set of (waiter, blocker) edges, and the checks that the ledger refused a call as the model
did (the same error type, and the same id, blockers or a true cycle in the message)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from mcp_swarm.errors import BlockedTask, DependencyCycle, InvalidInput, SwarmError, TaskNotFound
from mcp_swarm.models import (
    NewTask,
    PlanTask,
    TaskChanges,
    TaskStatus,
)

Edge = tuple[int, int]  # (waiter, blocker): the waiter cannot start until the blocker is done

PENDING, IN_PROGRESS, COMPLETED, DELETED = (
    TaskStatus.PENDING,
    TaskStatus.IN_PROGRESS,
    TaskStatus.COMPLETED,
    TaskStatus.DELETED,
)
RELEASING = frozenset({COMPLETED, DELETED})
STARTED = frozenset({IN_PROGRESS, COMPLETED})
CYCLE_MESSAGE = re.compile(r"close the cycle (.+) \(each task is blocked by the next\)")


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
