"""The answers made of the ledger's records: tasks, messages and reservations, compact camelCase.

Only the server shapes answers, so the ledger and the engine return plain records and know nothing
of how a client sees them. Fields that are empty, null or false are left out unless a tool's
contract keeps them (a message's `read`). Both servers use these; the swarm's answers are shaped
in `mayor` and the waves' in `import_tools`, so that this module imports only the ledger and a
worker's server, started for every worker, loads no engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_swarm.ledger.mail import Message
from mcp_swarm.ledger.reservations import Reservation
from mcp_swarm.models import TaskListing, TaskStatus, TaskSummary

# A note names this many holding tasks at most, and this many of the tasks each one holds up:
# it is a pointer for the next step, TaskList has the rest.
MAX_NOTED_TASKS = 5
MAX_NOTED_IDS = 10

# -- tasks ----------------------------------------------------------------------------------------


def task_summary(task: TaskSummary) -> dict[str, Any]:
    """One row of TaskList: {id, subject, status, owner?, blockedBy?, ready?}."""
    row: dict[str, Any] = {"id": task.id, "subject": task.subject, "status": task.status.value}
    if task.owner:
        row["owner"] = task.owner
    if task.blocked_by:
        row["blockedBy"] = task.blocked_by
    if task.ready:
        row["ready"] = True
    return row


def task_listing(listing: TaskListing) -> dict[str, Any]:
    return {"tasks": [task_summary(task) for task in listing.tasks], "counts": listing.counts}


# -- why a spawn started nothing ----------------------------------------------------------------


def holding_up(listing: TaskListing) -> dict[str, list[str]]:
    """Each task that is not pending yet holds up pending ones, through their chains of pending
    blockers, with the pending tasks it holds up: the failed and running tasks to act on."""
    tasks = {task.id: task for task in listing.tasks}
    roots: dict[str, set[str]] = {}

    def roots_of(task_id: str, seen: set[str]) -> set[str]:
        found: set[str] = set()
        for blocker in tasks[task_id].blocked_by:
            held = tasks.get(blocker)
            if held is not None and held.status is TaskStatus.PENDING:
                if blocker not in seen:
                    seen.add(blocker)
                    found |= roots_of(blocker, seen)
            else:
                found.add(blocker)
        return found

    for task in listing.tasks:
        if task.status is TaskStatus.PENDING and not task.ready:
            for root in roots_of(task.id, {task.id}):
                roots.setdefault(root, set()).add(task.id)
    return {
        root: sorted(waiting, key=_number)
        for root, waiting in sorted(roots.items(), key=lambda r: _number(r[0]))
    }


def spawn_note(listing: TaskListing, failures: Mapping[str, str]) -> str:
    """Why the ready wave was empty and what to do, in a line or two. `failures` holds a failed
    task's reason (`worker-3: the command exited with status 3`) by its id."""
    tasks = listing.tasks
    if not tasks:
        return "no tasks yet: create them with TaskCreate or TaskCreatePlan"
    if not any(task.status is TaskStatus.PENDING for task in tasks):
        return _none_pending(tasks, failures)
    parts: list[str] = []
    for root, waiting in list(holding_up(listing).items())[:MAX_NOTED_TASKS]:
        status = next((task.status for task in tasks if task.id == root), None)
        if status is TaskStatus.FAILED:
            parts.append(
                f"task {root} failed{_why(root, failures)} and blocks {_ids(waiting)}; "
                "retry it with TaskUpdate status=pending, or delete it"
            )
        else:
            held = "in progress" if status is TaskStatus.IN_PROGRESS else "not completed"
            verb = "waits" if len(waiting) == 1 else "wait"
            parts.append(f"{_tasks(waiting)} {verb} for {root} ({held}); call wait")
    return "nothing is ready: " + ". ".join(parts)


def failed_holders(listing: TaskListing) -> list[str]:
    """The failed tasks a spawn note names, whose reasons it gives."""
    statuses = {task.id: task.status for task in listing.tasks}
    if any(status is TaskStatus.PENDING for status in statuses.values()):
        holders = [root for root in holding_up(listing) if statuses.get(root) is TaskStatus.FAILED]
    else:
        holders = [task_id for task_id, status in statuses.items() if status is TaskStatus.FAILED]
    return holders[:MAX_NOTED_TASKS]


def _none_pending(tasks: list[TaskSummary], failures: Mapping[str, str]) -> str:
    counts: dict[TaskStatus, int] = {}
    for task in tasks:
        counts[task.status] = counts.get(task.status, 0) + 1
    if counts.get(TaskStatus.COMPLETED) == len(tasks):
        return f"no pending tasks: all {len(tasks)} are completed"
    order = (TaskStatus.COMPLETED, TaskStatus.IN_PROGRESS, TaskStatus.FAILED)
    shown = ", ".join(f"{counts[s]} {s.value.replace('_', ' ')}" for s in order if counts.get(s))
    note = f"no pending tasks: {shown}"
    if counts.get(TaskStatus.IN_PROGRESS):
        note += "; call wait for the running ones"
    failed = [task.id for task in tasks if task.status is TaskStatus.FAILED][:MAX_NOTED_TASKS]
    if failed:
        reasons = "".join(f". task {task_id} failed{_why(task_id, failures)}" for task_id in failed)
        note += f"{reasons}; retry with TaskUpdate status=pending"
    return note


def _why(task_id: str, failures: Mapping[str, str]) -> str:
    return f" ({failures[task_id]})" if task_id in failures else ""


def _tasks(ids: list[str]) -> str:
    return f"task {ids[0]}" if len(ids) == 1 else f"tasks {_ids(ids)}"


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:MAX_NOTED_IDS])
    return shown if len(ids) <= MAX_NOTED_IDS else f"{shown} and {len(ids) - MAX_NOTED_IDS} more"


def _number(task_id: str) -> tuple[int, str]:
    return (int(task_id), "") if task_id.isdigit() else (0, task_id)


# -- mail and reservations ------------------------------------------------------------------------


def message(sent: Message) -> dict[str, Any]:
    """A message; taskId and body left out when there is none, `read` always there (False marks news)."""
    shaped: dict[str, Any] = {"id": sent.id, "at": sent.at, "from": sent.sender, "to": sent.recipient}
    if sent.task_id is not None:
        shaped["taskId"] = sent.task_id
    shaped["type"] = sent.type.value
    shaped["subject"] = sent.subject
    if sent.body:
        shaped["body"] = sent.body
    shaped["read"] = sent.read
    return shaped


def reservation(held: Reservation) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "id": held.id,
        "holder": held.holder,
        "pattern": held.pattern,
        "exclusive": held.exclusive,
    }
    if held.reason:
        shaped["reason"] = held.reason
    shaped["expiresAt"] = held.expires_at
    return shaped
