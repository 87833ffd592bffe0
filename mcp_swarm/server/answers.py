"""The answers made of the ledger's records: tasks, messages and reservations, compact camelCase.

Only the server shapes answers, so the ledger and the engine return plain records and know nothing
of how a client sees them. Fields that are empty, null or false are left out unless a tool's
contract keeps them (a message's `read`). Both servers use these; the swarm's answers are shaped
in `mayor` and the waves' in `import_tools`, so that this module imports only the ledger and a
worker's server, started for every worker, loads no engine.
"""

from __future__ import annotations

from typing import Any

from mcp_swarm.ledger.mail import Message
from mcp_swarm.ledger.reservations import Reservation
from mcp_swarm.models import TaskListing, TaskSummary

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
