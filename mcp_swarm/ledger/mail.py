"""Agent Mail: messages between the Mayor and its workers.

Workers report to the Mayor and the Mayor instructs workers; workers never write to each other, so
that every decision about the swarm passes through the one party that sees all of it. No SQL here:
each public method is one transaction of the store, and a broken rule writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from mcp_swarm.errors import InvalidInput, TaskNotFound
from mcp_swarm.models import TaskStatus, Worker, now, parse_task_id, worker_number
from mcp_swarm.store import Store, Transaction
from mcp_swarm.store.messages import MessageRow

MAYOR = "mayor"
MAX_SUBJECT_CHARS = 200
MAX_BODY_CHARS = 65_536
MAX_FETCH = 500
# SQLite's largest integer: a message id (sinceId) above it overflows the query.
MAX_MESSAGE_ID = 2**63 - 1

# Canonical worker ids only ("worker-03" is not "worker-3"), as `models.worker_name` writes them.


class MessageType(StrEnum):
    PROGRESS = "progress"
    HELP_REQUEST = "help_request"
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"
    INSTRUCTION = "instruction"
    INFO = "info"


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    at: str
    sender: str
    recipient: str
    task_id: str | None = None
    type: MessageType
    subject: str
    body: str = ""
    # Whether it had been read before the call that returned it: False marks news.
    read: bool = False


def party_number(party: str, role: str) -> int | None:
    """The `workers` row a party names, None for the Mayor; anything else is refused."""
    if party == MAYOR:
        return None
    try:
        return worker_number(party)
    except InvalidInput:
        raise InvalidInput(
            f"{role} {party!r} is neither {MAYOR!r} nor a worker id such as 'worker-3'"
        ) from None


async def party_worker(tx: Transaction, party: str, role: str) -> Worker | None:
    """The worker a party names, None for the Mayor; a worker that never existed is refused."""
    number = party_number(party, role)
    if number is None:
        return None
    worker = await tx.workers.get(number)
    if worker is None:
        raise InvalidInput(f"{role} {party!r} is no worker of this swarm; worker ids come from spawn")
    return worker


class Mailbox:
    def __init__(self, store: Store, *, clock: Callable[[], str] = now) -> None:
        self.store = store
        self._clock = clock

    async def send(
        self,
        sender: str,
        recipient: str,
        subject: str,
        body: str = "",
        *,
        task_id: str | None = None,
        type: MessageType = MessageType.INFO,
    ) -> Message:
        kind = _message_type(type)
        sender_number = party_number(sender, "sender")
        recipient_number = party_number(recipient, "recipient")
        if sender_number is not None and recipient_number is not None:
            raise InvalidInput(
                f"workers report to the Mayor, never to each other: {sender} may only send to {MAYOR!r}; "
                f"ask the Mayor to pass it on to {recipient}"
            )
        if sender_number is None and recipient_number is None:
            raise InvalidInput(
                "the Mayor cannot send mail to itself; send it to a worker id such as 'worker-3'"
            )
        subject = subject.strip()
        if not subject:
            raise InvalidInput("a message needs a subject: one line saying what it is about")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise InvalidInput(
                f"the subject has {len(subject)} characters; the limit is {MAX_SUBJECT_CHARS}: "
                "shorten it and put the rest in the body"
            )
        if len(body) > MAX_BODY_CHARS:
            raise InvalidInput(
                f"the body has {len(body)} characters; the limit is {MAX_BODY_CHARS}: "
                "summarise it, or write the details to a file and name the file"
            )
        number = None if task_id is None else _task_number(task_id)

        at = self._clock()
        async with self.store.write() as tx:
            writer = await party_worker(tx, sender, "sender")
            await party_worker(tx, recipient, "recipient")
            if number is not None and task_id is not None:
                await _refuse_dead_task(tx, number, task_id)
            if writer is not None:
                own = int(writer.task_id)
                if number is None:
                    number = own
                elif number != own:
                    raise InvalidInput(
                        f"{sender} works on task {own}, not task {task_id}; a worker writes only about "
                        "its own task (leave taskId out to use it)"
                    )
            row = await tx.messages.insert(
                at=at,
                sender=sender,
                recipient=recipient,
                task_id=number,
                type=kind.value,
                subject=subject,
                body=body,
            )
        return _message(row)

    async def fetch_inbox(
        self, recipient: str, *, since_id: int = 0, limit: int = 50, unread_only: bool = False
    ) -> list[Message]:
        """Messages to `recipient` after `since_id`, oldest first; those unread until now are marked
        read, and come back with read=False so that the caller sees which are new."""
        if not 1 <= limit <= MAX_FETCH:
            raise InvalidInput(f"limit must be between 1 and {MAX_FETCH}; it is {limit}")
        party_number(recipient, "recipient")
        at = self._clock()
        async with self.store.write() as tx:
            await party_worker(tx, recipient, "recipient")
            rows = await tx.messages.inbox(recipient, since_id=since_id, limit=limit, unread_only=unread_only)
            unread = [row.id for row in rows if row.read_at is None]
            if unread:
                await tx.messages.mark_read(unread, at)
        return [_message(row) for row in rows]

    async def help_requests(self, *, after_id: int = 0, mayor: str | None = None) -> list[Message]:
        """Unread help requests to the Mayor after `after_id` from the workers `mayor` spawned
        (None: those spawned with no name, by a stdio server or the command line), oldest first.
        They stay unread: they are listed again until the Mayor fetches its inbox."""
        async with self.store.read(snapshot=False) as tx:
            rows = await tx.messages.unread_from_workers(
                MAYOR, type=MessageType.HELP_REQUEST.value, after_id=after_id, mayor=mayor
            )
        return [_message(row) for row in rows]

    async def take_help_requests(self, *, mayor: str | None = None) -> list[Message]:
        """Unread help requests from `mayor`'s workers, marked read as they are handed over (by
        `wait`): another Mayor's workers' requests are left for that Mayor.

        A plain read comes first, so that the usual case (none) costs no write transaction.
        """
        if not await self.help_requests(mayor=mayor):
            return []
        at = self._clock()
        async with self.store.write() as tx:
            rows = await tx.messages.unread_from_workers(
                MAYOR, type=MessageType.HELP_REQUEST.value, after_id=0, mayor=mayor
            )
            if rows:
                await tx.messages.mark_read([row.id for row in rows], at)
        return [_message(row) for row in rows]


def _message_type(value: str) -> MessageType:
    # The MCP layer may hand over the plain string it received.
    try:
        return MessageType(value)
    except ValueError:
        allowed = ", ".join(kind.value for kind in MessageType)
        raise InvalidInput(f"unknown message type {value!r}; use one of {allowed}") from None


def _task_number(task_id: str) -> int:
    try:
        return parse_task_id(task_id)
    except TaskNotFound as exc:
        raise InvalidInput(str(exc)) from None


async def _refuse_dead_task(tx: Transaction, number: int, task_id: str) -> None:
    status = (await tx.tasks.statuses([number])).get(number)
    if status is None:
        raise InvalidInput(str(TaskNotFound(task_id)))
    if status is TaskStatus.DELETED:
        raise InvalidInput(f"task {task_id} was deleted; mail cannot be about a deleted task")


def _message(row: MessageRow) -> Message:
    return Message(
        id=row.id,
        at=row.at,
        sender=row.sender,
        recipient=row.recipient,
        task_id=None if row.task_id is None else str(row.task_id),
        type=MessageType(row.type),
        subject=row.subject,
        body=row.body,
        read=row.read_at is not None,
    )


__all__ = ["MAYOR", "Mailbox", "Message", "MessageType", "party_worker", "worker_number"]
