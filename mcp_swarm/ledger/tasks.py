"""The task ledger: the rules of tasks and their dependencies.

No SQL and no MCP here. Each public method is one transaction: every rule is checked against the
state read inside that transaction, and a broken rule rolls all of it back.
"""

from __future__ import annotations

from typing import Any, cast

from mcp_swarm.errors import BlockedTask, DependencyCycle, InvalidInput, TaskNotFound
from mcp_swarm.models import (
    MAX_METADATA_BYTES,
    MAX_PLAN_TASKS,
    CreatedPlan,
    NewTask,
    PlanTask,
    SyncedPlan,
    Task,
    TaskChanges,
    TaskEvent,
    TaskListing,
    TaskStatus,
    TaskSummary,
    is_ready,
    metadata_bytes,
    now,
    parse_task_id,
)
from mcp_swarm.store import Store, Transaction
from mcp_swarm.store.tasks import EventRow

# Statuses that claim the work was started: nothing may start before its blockers are done.
_STARTED = frozenset({TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED})


class Ledger:
    """Tasks, their dependencies and their history, as seen by one actor (the Mayor, the CLI...)."""

    def __init__(self, store: Store, actor: str = "mayor") -> None:
        self.store = store
        self.actor = actor

    # -- reads ------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task:
        number = parse_task_id(task_id)
        async with self.store.read() as tx:
            return await _live_task(tx, number, task_id)

    async def list(
        self, *, status: TaskStatus | None = None, ready: bool | None = None, owner: str | None = None
    ) -> TaskListing:
        async with self.store.read() as tx:
            tasks = await tx.tasks.summaries(status=status, owner=owner)
            if status is None and owner is None:
                counts = _count(tasks)  # the rows at hand are the whole ledger
            else:
                counts = await tx.tasks.counts()
        if ready is not None:
            tasks = [task for task in tasks if task.ready is ready]
        return TaskListing(tasks=tasks, counts=counts)

    async def history(
        self, task_id: str | None = None, *, after_id: int = 0, limit: int = 1000
    ) -> list[TaskEvent]:
        number = None if task_id is None else parse_task_id(task_id)
        async with self.store.read() as tx:
            return await tx.tasks.events(number, after_id=after_id, limit=limit)

    # -- changes ----------------------------------------------------------------------------

    async def create(self, new: NewTask) -> Task:
        at = now()
        active_form, metadata = new.active_form or None, _without_nulls(new.metadata)
        async with self.store.write() as tx:
            blockers = await _live_ids(tx, new.blocked_by)
            number = await tx.tasks.insert(
                subject=new.subject,
                description=new.description,
                active_form=active_form,
                metadata=metadata,
                now=at,
            )
            # A new task has no dependents yet, so none of its blockers can close a cycle.
            if blockers:
                await tx.tasks.add_dependencies((number, blocker) for blocker in blockers)
            await tx.tasks.record_events([_created_event(number, at, self.actor, new.subject, blockers)])
            if blockers:  # which of them are still open is the database's to say
                return await _live_task(tx, number, str(number))
        # With no blockers, all of it is known here: no round trip to read it back.
        return Task(
            id=str(number), subject=new.subject, description=new.description, active_form=active_form,
            status=TaskStatus.PENDING, ready=is_ready(TaskStatus.PENDING, []), metadata=metadata,
            created_at=at, updated_at=at,
        )  # fmt: skip

    async def create_plan(self, plan: list[PlanTask]) -> CreatedPlan:
        """Create several tasks that may depend on each other, all at once or not at all."""
        if not plan:
            raise InvalidInput("a plan needs at least one task")
        if len(plan) > MAX_PLAN_TASKS:
            raise InvalidInput(f"a plan may have at most {MAX_PLAN_TASKS} tasks; this one has {len(plan)}")
        keys = _plan_keys(plan)
        local_edges, existing_refs = _plan_references(plan, keys)
        _refuse_plan_cycle(plan, local_edges)

        at = now()
        async with self.store.write() as tx:
            existing = dict(zip(existing_refs, await _live_ids(tx, existing_refs), strict=True))
            rows = [
                (task.subject, task.description, task.active_form or None, _without_nulls(task.metadata))
                for task in plan
            ]
            numbers = await tx.tasks.insert_many(rows, at)
            events: list[EventRow] = []
            dependencies: list[tuple[int, int]] = []
            for index, task in enumerate(plan):
                refs = task.blocked_by
                blockers = list(dict.fromkeys(numbers[keys[r]] if r in keys else existing[r] for r in refs))
                dependencies.extend((numbers[index], blocker) for blocker in blockers)
                events.append(_created_event(numbers[index], at, self.actor, task.subject, blockers))
            await tx.tasks.add_dependencies(dependencies)
            await tx.tasks.record_events(events)
        ids = [str(number) for number in numbers]
        return CreatedPlan(ids=ids, keys={key: ids[index] for key, index in keys.items()})

    async def sync_plan(self, name: str, plan: list[PlanTask], *, fresh: bool = False) -> SyncedPlan:
        """Bring the tasks of the plan run `name` in line with `plan`, matched by key, in one
        transaction: a new key is created, a changed definition updated, a failed task made pending
        again (its owner cleared; its attempts stay in the history), a completed one kept, a key
        gone from the plan deleted. `fresh` deletes the run's tasks and creates them all anew.

        Each task's `metadata.plan` records the run's name and the task's key; every blocker is a
        key of the same plan."""
        if not plan:
            raise InvalidInput("a plan needs at least one task")
        keys = _plan_keys(plan)
        if len(keys) != len(plan):
            raise InvalidInput("every task of a plan run needs a key")
        local_edges, _ = _plan_references(plan, keys)
        _refuse_plan_cycle(plan, local_edges)
        at = now()
        synced = SyncedPlan(keys={})
        async with self.store.write() as tx:
            existing: dict[str, Task] = {}
            events: list[EventRow] = []
            for task in await tx.tasks.in_plan(name):
                key = _plan_key_of(task)
                if fresh or key not in keys or key in existing:
                    # Set aside: started over, dropped from the file, or a stray copy of a key.
                    await tx.tasks.update(int(task.id), {"status": TaskStatus.DELETED.value}, at)
                    events.append((int(task.id), at, self.actor, "status", task.status.value, "deleted"))
                    if not fresh and key is not None and key not in keys:
                        synced.removed.append(key)
                else:
                    existing[key] = task
            metadata = {
                task.key: _without_nulls(_plan_metadata(task.metadata, name, task.key))
                for task in plan
                if task.key is not None
            }
            new = [task for task in plan if task.key not in existing]
            numbers = await tx.tasks.insert_many(
                [
                    (task.subject, task.description, task.active_form or None, metadata[task.key or ""])
                    for task in new
                ],
                at,
            )
            ids = {key: int(task.id) for key, task in existing.items()}
            for task, number in zip(new, numbers, strict=True):
                ids[task.key or ""] = number
                synced.created.append(task.key or "")
            for task in plan:
                key = task.key or ""
                old = existing.get(key)
                if old is None:
                    continue
                columns = _plan_task_changes(old, task, metadata[key])
                changed = bool(columns)
                if old.status is TaskStatus.FAILED:
                    columns.update(status=TaskStatus.PENDING.value, owner=None)
                    synced.retried.append(key)
                elif old.status is TaskStatus.COMPLETED:
                    synced.kept.append(key)
                if changed:
                    synced.updated.append(key)
                if columns:
                    await tx.tasks.update(ids[key], columns, at)
                    for column, value in columns.items():
                        field = "activeForm" if column == "active_form" else column
                        events.append((ids[key], at, self.actor, field, getattr(old, column), value))
            # Dependencies: exactly those of the file, among the run's tasks.
            wanted = {(ids[task.key or ""], ids[b]) for task in plan for b in task.blocked_by}
            present = set(await tx.tasks.dependencies_among(ids.values()))
            await tx.tasks.remove_dependencies(sorted(present - wanted))
            events.extend((w, at, self.actor, "blockedBy", str(b), None) for w, b in sorted(present - wanted))
            added = sorted(wanted - present)
            if await tx.tasks.linked_outside(ids.values()):
                # A cycle could pass through tasks outside the run: each new edge is checked in the
                # database, as TaskUpdate checks one.
                for waiter, blocker in added:
                    await _refuse_cycle(tx, waiter, blocker)
                    await tx.tasks.add_dependency(waiter, blocker)
            else:
                # The run's tasks wait only for each other: a cycle would be one of the plan's own,
                # refused above. One statement, not a recursive query per edge.
                await tx.tasks.add_dependencies(added)
            created = set(numbers)
            events.extend(
                (waiter, at, self.actor, "blockedBy", None, str(blocker))
                for waiter, blocker in added
                if waiter not in created
            )
            for task, number in zip(new, numbers, strict=True):
                blockers = [ids[b] for b in task.blocked_by]
                events.append(_created_event(number, at, self.actor, task.subject, blockers))
            await tx.tasks.record_events(events)
        synced.keys.update({task.key or "": str(ids[task.key or ""]) for task in plan})
        return synced

    async def update(self, task_id: str, changes: TaskChanges) -> Task:
        number = parse_task_id(task_id)
        at = now()
        async with self.store.write() as tx:
            task = await _live_task(tx, number, task_id)
            events: list[EventRow] = []

            def changed(field: str, old: Any, new: Any) -> None:
                events.append((number, at, self.actor, field, old, new))

            blocked_by = await _live_ids(tx, changes.add_blocked_by)
            blocks = await _live_ids(tx, changes.add_blocks)
            if number in blocked_by or number in blocks:
                raise InvalidInput(f"task {task_id} cannot depend on itself")
            for waiter, blocker in [(number, b) for b in blocked_by] + [(w, number) for w in blocks]:
                await _refuse_cycle(tx, waiter, blocker)
                if await tx.tasks.add_dependency(waiter, blocker):
                    events.append((waiter, at, self.actor, "blockedBy", None, str(blocker)))

            columns: dict[str, Any] = {}
            for field, column, old, new in [
                ("subject", "subject", task.subject, changes.subject),
                ("description", "description", task.description, changes.description),
                ("activeForm", "active_form", task.active_form, _none_if_empty(changes.active_form)),
                ("owner", "owner", task.owner, _none_if_empty(changes.owner)),
            ]:
                given = getattr(changes, column)
                if given is not None and new != old:
                    columns[column] = new
                    changed(field, old, new)

            if changes.metadata is not None:
                merged = _merge_metadata(task.metadata, changes.metadata)
                if merged != task.metadata:
                    columns["metadata"] = merged
                    for key in sorted(set(task.metadata) | set(merged)):
                        if task.metadata.get(key) != merged.get(key):
                            changed(f"metadata.{key}", task.metadata.get(key), merged.get(key))

            if changes.status is not None and changes.status is not task.status:
                if changes.status in _STARTED:
                    open_blockers = await tx.tasks.open_blockers(number)
                    if open_blockers:
                        raise BlockedTask(task_id, changes.status.value, open_blockers)
                columns["status"] = changes.status.value
                changed("status", task.status.value, changes.status.value)
                if changes.status is TaskStatus.PENDING and changes.owner is None and task.owner:
                    # Back to pending, a task is nobody's: an old owner would look like a worker
                    # still on it, and TaskList(owner=...) would list it as theirs.
                    columns["owner"] = None
                    changed("owner", task.owner, None)

            if columns:
                await tx.tasks.update(number, columns, at)
            if events:
                await tx.tasks.record_events(events)
            if changes.status is TaskStatus.DELETED:
                # Read back without the deleted check: the caller deserves to see what it did.
                deleted = await tx.tasks.get(number)
                assert deleted is not None  # noqa: S101 - changed in this very transaction
                return deleted
            if blocked_by or blocks:
                return await _live_task(tx, number, task_id)
            # Only the task's own columns changed, all known here: no round trip to read it back.
            return _with_columns(task, columns, at)

    async def retry(self, task_ids: list[str]) -> list[Task]:
        """Failed tasks back to pending with no owner, so that the next spawn (or a live run) picks
        them up. All of them or none: InvalidInput names every id that is not a failed task."""
        at = now()
        async with self.store.write() as tx:
            tasks: list[Task] = []
            problems: list[str] = []
            wanted = list(dict.fromkeys(task_ids))
            numbers = {task_id: _task_number(task_id) for task_id in wanted}
            # One read for all of them.
            found = {
                int(task.id): task
                for task in await tx.tasks.many([n for n in numbers.values() if n is not None])
            }
            for task_id in wanted:
                number = numbers[task_id]
                task = None if number is None else found.get(number)
                if task is None or task.status is TaskStatus.DELETED:
                    problems.append(f"no task {task_id!r}")
                elif task.status is not TaskStatus.FAILED:
                    problems.append(f"task {task_id} is {task.status.value}, not failed")
                else:
                    tasks.append(task)
            if problems:
                raise InvalidInput(
                    "; ".join(problems) + ". Only failed tasks can be retried; nothing was changed"
                )
            columns: dict[str, Any] = {"status": TaskStatus.PENDING.value, "owner": None}
            events: list[EventRow] = []
            for task in tasks:
                await tx.tasks.update(int(task.id), columns, at)
                events.append((int(task.id), at, self.actor, "status", task.status.value, columns["status"]))
                if task.owner is not None:
                    events.append((int(task.id), at, self.actor, "owner", task.owner, None))
            await tx.tasks.record_events(events)
        # Only the tasks' own columns changed, all known here: no round trip to read them back.
        return [_with_columns(task, columns, at) for task in tasks]


# -- rules shared by the methods above ------------------------------------------------------


def _task_number(text: str) -> int | None:
    """The number of a task id; None if `text` is not one."""
    try:
        return parse_task_id(text)
    except TaskNotFound:
        return None


def _with_columns(task: Task, columns: dict[str, Any], at: str) -> Task:
    """The task as read, with these columns written at `at` (its dependencies unchanged)."""
    if not columns:
        return task
    status = TaskStatus(columns["status"]) if "status" in columns else task.status
    update = {column: value for column, value in columns.items() if column != "status"}
    ready = is_ready(status, task.blocked_by)
    return task.model_copy(update={**update, "status": status, "ready": ready, "updated_at": at})


async def _live_task(tx: Transaction, number: int, task_id: str) -> Task:
    task = await tx.tasks.get(number)
    if task is None:
        raise TaskNotFound(task_id)
    if task.status is TaskStatus.DELETED:
        raise TaskNotFound(task_id, deleted=True)
    return task


async def _live_ids(tx: Transaction, task_ids: list[str]) -> list[int]:
    """The numbers of these ids, in order and without repeats, each a task that is not deleted."""
    numbers: list[int] = []
    for task_id in task_ids:
        number = parse_task_id(task_id)
        if number not in numbers:
            numbers.append(number)
    statuses = await tx.tasks.statuses(numbers)
    for task_id, number in zip(dict.fromkeys(task_ids), numbers, strict=True):
        if number not in statuses:
            raise TaskNotFound(task_id)
        if statuses[number] is TaskStatus.DELETED:
            raise TaskNotFound(task_id, deleted=True)
    return numbers


async def _refuse_cycle(tx: Transaction, waiter: int, blocker: int) -> None:
    """Refuse `waiter` waiting for `blocker` if `blocker` already waits, through any chain, for `waiter`."""
    tree = await tx.tasks.blocker_tree(blocker)
    waiter_of: dict[int, int | None] = {}
    for task, direct_waiter in tree:
        waiter_of.setdefault(task, direct_waiter)
    if waiter not in waiter_of:
        return
    chain = [waiter]
    while chain[-1] != blocker:
        up = waiter_of[chain[-1]]
        assert up is not None  # noqa: S101 - only `blocker`, where the walk ends, has no waiter
        chain.append(up)
    # chain runs from waiter up to blocker; the cycle reads "waiter is blocked by blocker ... by waiter".
    raise DependencyCycle([str(waiter), *(str(task) for task in reversed(chain))])


def _count(tasks: list[TaskSummary]) -> dict[str, int]:
    counts: dict[str, int] = {}
    ready = 0
    for task in tasks:
        counts[task.status.value] = counts.get(task.status.value, 0) + 1
        ready += task.ready
    counts["ready"] = ready
    return counts


def _created_event(number: int, at: str, actor: str, subject: str, blockers: list[int]) -> EventRow:
    new: dict[str, Any] = {"subject": subject}
    if blockers:
        new["blockedBy"] = [str(blocker) for blocker in blockers]
    return (number, at, actor, "created", None, new)


def _none_if_empty(value: str | None) -> str | None:
    return value or None


def _without_nulls(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if value is not None}


def _merge_metadata(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    # The patch alone was checked; the merge of two legal halves can still be too big.
    size = metadata_bytes(merged)
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"metadata would be {size} bytes as JSON after the merge; the limit is {MAX_METADATA_BYTES}"
        )
    return merged


def _plan_keys(plan: list[PlanTask]) -> dict[str, int]:
    keys: dict[str, int] = {}
    for index, task in enumerate(plan):
        if task.key is None:
            continue
        if task.key.isdigit():
            raise InvalidInput(
                f"plan task {index + 1}: key {task.key!r} looks like a task id; use a name such as 'model'"
            )
        if task.key in keys:
            raise InvalidInput(f"plan task {index + 1}: key {task.key!r} is used twice in this plan")
        keys[task.key] = index
    return keys


def _plan_key_of(task: Task) -> str | None:
    plan = task.metadata.get("plan")
    key = cast(dict[str, Any], plan).get("key") if isinstance(plan, dict) else None
    return key if isinstance(key, str) else None


def _plan_metadata(metadata: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    """The task's metadata with the run's name and the task's key in `metadata.plan`."""
    given = metadata.get("plan")
    plan = cast(dict[str, Any], given) if isinstance(given, dict) else {}
    return {**metadata, "plan": {**plan, "name": name, "key": key}}


def _plan_task_changes(old: Task, task: PlanTask, metadata: dict[str, Any]) -> dict[str, Any]:
    """The columns of `old` that the plan's definition of it changes."""
    wanted = {
        "subject": task.subject,
        "description": task.description,
        "active_form": task.active_form or None,
        "metadata": metadata,
    }
    return {column: new for column, new in wanted.items() if getattr(old, column) != new}


def _plan_references(plan: list[PlanTask], keys: dict[str, int]) -> tuple[dict[int, list[int]], list[str]]:
    """Split each task's blockers into tasks of this plan (by index) and existing task ids."""
    local: dict[int, list[int]] = {}
    existing: list[str] = []
    for index, task in enumerate(plan):
        for ref in task.blocked_by:
            if ref in keys:
                if keys[ref] == index:
                    raise InvalidInput(f"plan task {index + 1} ({ref!r}) cannot depend on itself")
                local.setdefault(index, []).append(keys[ref])
            elif ref.isascii() and ref.isdigit():
                existing.append(ref)
            else:
                raise InvalidInput(
                    f"plan task {index + 1}: blockedBy {ref!r} is neither a key of this plan nor a task id"
                )
    return local, list(dict.fromkeys(existing))


def _refuse_plan_cycle(plan: list[PlanTask], edges: dict[int, list[int]]) -> None:
    """Depth-first search over the plan's own dependencies; an edge back into the path is a cycle.

    Iterative, so that a plan shaped as one long chain cannot exhaust Python's recursion limit.
    """
    finished: set[int] = set()
    for start in range(len(plan)):
        if start in finished:
            continue
        path = [start]
        on_path = {start}
        pending = [iter(edges.get(start, []))]
        while pending:
            blocker = next(pending[-1], None)
            if blocker is None:
                pending.pop()
                done = path.pop()
                on_path.discard(done)
                finished.add(done)
            elif blocker in on_path:
                cycle = [*path[path.index(blocker) :], blocker]
                raise DependencyCycle([plan[i].key or f"#{i + 1}" for i in cycle])
            elif blocker not in finished:
                path.append(blocker)
                on_path.add(blocker)
                pending.append(iter(edges.get(blocker, [])))


__all__ = ["Ledger", "now", "parse_task_id"]
