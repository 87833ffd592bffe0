"""Agent Mail between the Mayor and workers, on a real database."""

from __future__ import annotations

import sqlite3
from typing import Any, cast

import anyio
import pytest

from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.mail import MAX_BODY_CHARS, MAYOR, Mailbox, MessageType
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskChanges, TaskStatus, worker_name
from mcp_swarm.server import answers
from mcp_swarm.store import Store
from tests.support.helpers import assigned_workers

pytestmark = pytest.mark.anyio


def messages_table(store: Store) -> list[tuple[Any, ...]]:
    """Every row of the table as it is on disk, read past the engine."""
    with sqlite3.connect(store.path) as conn:
        return conn.execute("SELECT * FROM messages ORDER BY id").fetchall()


async def test_a_worker_reports_to_the_mayor_about_its_own_task(store: Store) -> None:
    [number] = await assigned_workers(store, 1)
    mailbox = Mailbox(store)
    sent = await mailbox.send(
        worker_name(number), MAYOR, "  half done  ", "tests pass", type=MessageType.PROGRESS
    )
    # The worker did not say which task: its own is filled in.
    assert (sent.sender, sent.recipient, sent.task_id, sent.subject, sent.read) == (
        "worker-1",
        "mayor",
        "1",
        "half done",
        False,
    )
    [received] = await mailbox.fetch_inbox(MAYOR)
    assert received == sent
    assert answers.message(received) == {
        "id": sent.id,
        "at": sent.at,
        "from": "worker-1",
        "to": "mayor",
        "taskId": "1",
        "type": "progress",
        "subject": "half done",
        "body": "tests pass",
        "read": False,
    }


async def test_the_mayor_instructs_a_worker_which_reads_it_in_its_own_inbox(store: Store) -> None:
    first, second = await assigned_workers(store, 2)
    mailbox = Mailbox(store)
    sent = await mailbox.send(MAYOR, worker_name(second), "use the v2 API", type=MessageType.INSTRUCTION)
    assert sent.task_id is None
    assert answers.message(sent) == {
        "id": sent.id,
        "at": sent.at,
        "from": "mayor",
        "to": "worker-2",
        "type": "instruction",
        "subject": "use the v2 API",
        "read": False,
    }
    assert await mailbox.fetch_inbox(worker_name(first)) == []
    assert [m.subject for m in await mailbox.fetch_inbox(worker_name(second))] == ["use the v2 API"]
    assert await mailbox.fetch_inbox(MAYOR) == []


async def test_a_worker_cannot_message_another_worker(store: Store) -> None:
    first, second = await assigned_workers(store, 2)
    mailbox = Mailbox(store)
    await mailbox.send(worker_name(first), MAYOR, "before")
    before = messages_table(store)
    with pytest.raises(InvalidInput, match="never to each other"):
        await mailbox.send(worker_name(first), worker_name(second), "psst")
    assert messages_table(store) == before


async def test_a_worker_cannot_send_about_another_workers_task(store: Store) -> None:
    first, _second = await assigned_workers(store, 2)
    mailbox = Mailbox(store)
    before = messages_table(store)
    with pytest.raises(InvalidInput, match="works on task 1, not task 2"):
        await mailbox.send(worker_name(first), MAYOR, "done", task_id="2", type=MessageType.DONE)
    assert messages_table(store) == before
    sent = await mailbox.send(worker_name(first), MAYOR, "done", task_id="1", type=MessageType.DONE)
    assert sent.task_id == "1"


# The MCP layer hands over the type as the string it received.
SHOUT = cast(MessageType, "shout")


@pytest.mark.parametrize(
    ("sender", "recipient", "subject", "body", "task_id", "kind", "error"),
    [
        ("mayor", "mayor", "hi", "", None, MessageType.INFO, "cannot send mail to itself"),
        ("mayor", "worker-9", "hi", "", None, MessageType.INFO, "'worker-9' is no worker"),
        ("worker-9", "mayor", "hi", "", None, MessageType.INFO, "'worker-9' is no worker"),
        ("Mayor", "worker-1", "hi", "", None, MessageType.INFO, "neither 'mayor' nor a worker id"),
        ("mayor", "worker-01", "hi", "", None, MessageType.INFO, "neither 'mayor' nor a worker id"),
        ("mayor", "worker-1", "   ", "", None, MessageType.INFO, "needs a subject"),
        ("mayor", "worker-1", "x" * 201, "", None, MessageType.INFO, "201 characters; the limit is 200"),
        ("mayor", "worker-1", "hi", "x" * (MAX_BODY_CHARS + 1), None, MessageType.INFO, "limit is 65536"),
        ("mayor", "worker-1", "hi", "", "99", MessageType.INFO, "no task with id '99'"),
        ("mayor", "worker-1", "hi", "", "01", MessageType.INFO, "no task with id '01'"),
        ("mayor", "worker-1", "hi", "", "3", MessageType.INFO, "task 3 was deleted"),
        ("worker-1", "mayor", "hi", "", "3", MessageType.INFO, "task 3 was deleted"),
        ("mayor", "worker-1", "hi", "", None, SHOUT, "unknown message type 'shout'"),
    ],
)
async def test_every_refusal_says_why_and_writes_nothing(
    store: Store,
    sender: str,
    recipient: str,
    subject: str,
    body: str,
    task_id: str | None,
    kind: MessageType,
    error: str,
) -> None:
    await assigned_workers(store, 2)
    deleted = await Ledger(store).create(NewTask(subject="gone"))
    await Ledger(store).update(deleted.id, TaskChanges(status=TaskStatus.DELETED))
    mailbox = Mailbox(store)
    await mailbox.send(MAYOR, "worker-1", "before")
    before = messages_table(store)
    with pytest.raises(InvalidInput, match=error):
        await mailbox.send(sender, recipient, subject, body, task_id=task_id, type=kind)
    assert messages_table(store) == before


async def test_fetch_marks_read_exactly_once(store: Store) -> None:
    [number] = await assigned_workers(store, 1)
    mailbox = Mailbox(store)
    for n in range(3):
        await mailbox.send(worker_name(number), MAYOR, f"m{n}")
    first = await mailbox.fetch_inbox(MAYOR)
    assert [(m.subject, m.read) for m in first] == [("m0", False), ("m1", False), ("m2", False)]
    read_at = [row[-1] for row in messages_table(store)]
    assert all(read_at)
    again = await mailbox.fetch_inbox(MAYOR)
    assert [(m.subject, m.read) for m in again] == [("m0", True), ("m1", True), ("m2", True)]
    # A second fetch does not move the time each was first read.
    assert [row[-1] for row in messages_table(store)] == read_at
    assert await mailbox.fetch_inbox(MAYOR, unread_only=True) == []


async def test_since_id_limit_and_unread_only_choose_what_is_fetched(store: Store) -> None:
    [number] = await assigned_workers(store, 1)
    mailbox = Mailbox(store)
    sent = [await mailbox.send(worker_name(number), MAYOR, f"m{n}") for n in range(5)]
    page = await mailbox.fetch_inbox(MAYOR, limit=2)
    assert [m.subject for m in page] == ["m0", "m1"]
    # Only what was returned was marked read.
    unread = await mailbox.fetch_inbox(MAYOR, unread_only=True, limit=500)
    assert [(m.subject, m.read) for m in unread] == [("m2", False), ("m3", False), ("m4", False)]
    later = await mailbox.fetch_inbox(MAYOR, since_id=sent[2].id)
    assert [(m.subject, m.read) for m in later] == [("m3", True), ("m4", True)]
    for limit in (0, 501):
        with pytest.raises(InvalidInput, match="limit must be between 1 and 500"):
            await mailbox.fetch_inbox(MAYOR, limit=limit)
    with pytest.raises(InvalidInput, match="is no worker"):
        await mailbox.fetch_inbox("worker-7")


async def test_help_requests_are_listed_until_the_mayor_reads_them(store: Store) -> None:
    first, second = await assigned_workers(store, 2)
    mailbox = Mailbox(store)
    await mailbox.send(worker_name(first), MAYOR, "progress", type=MessageType.PROGRESS)
    stuck = await mailbox.send(worker_name(first), MAYOR, "which db?", type=MessageType.HELP_REQUEST)
    lost = await mailbox.send(worker_name(second), MAYOR, "no creds", type=MessageType.HELP_REQUEST)
    await mailbox.send(MAYOR, worker_name(second), "hold on", type=MessageType.INFO)

    assert await mailbox.help_requests() == [stuck, lost]
    # Listing does not mark them: they are listed again, and after_id skips those already seen.
    assert await mailbox.help_requests() == [stuck, lost]
    assert await mailbox.help_requests(after_id=stuck.id) == [lost]

    fetched = await mailbox.fetch_inbox(MAYOR, since_id=stuck.id - 1, limit=1)
    assert fetched == [stuck]
    assert await mailbox.help_requests() == [lost]
    await mailbox.fetch_inbox(MAYOR)
    assert await mailbox.help_requests() == []


async def test_workers_writing_at_once_each_get_their_message_through(store: Store) -> None:
    numbers = await assigned_workers(store, 20)
    mailbox = Mailbox(store)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for number in numbers:
                group.start_soon(mailbox.send, worker_name(number), MAYOR, f"from {number}")
    inbox = await mailbox.fetch_inbox(MAYOR, limit=500)
    assert sorted(m.sender for m in inbox) == sorted(worker_name(n) for n in numbers)
    # Each carries its own worker's task (task i + 1 went to the i-th worker).
    assert {m.sender: m.task_id for m in inbox} == {
        worker_name(number): str(index + 1) for index, number in enumerate(numbers)
    }
