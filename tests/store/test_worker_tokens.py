"""The hash of an attempt's token in the workers table: found while the attempt is live, cleared
with its verdict, replaced by the next attempt's."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from mcp_swarm.engine.tokens import mint_token
from mcp_swarm.engine.verdicts import Verdict, VerdictRecorder
from mcp_swarm.models import TaskStatus, WorkerState, now
from mcp_swarm.store import Store
from tests.support.helpers import assigned_workers

pytestmark = pytest.mark.anyio

ENDS = [
    WorkerState.SUCCEEDED,
    WorkerState.FAILED,
    WorkerState.TIMED_OUT,
    WorkerState.CANCELLED,
    WorkerState.LOST,
]


async def _give_tokens(store: Store, numbers: list[int]) -> dict[int, tuple[str, str]]:
    tokens = {number: mint_token() for number in numbers}
    async with store.write() as tx:
        logs = {worker.number: worker.log for worker in await tx.workers.many(numbers)}
        await tx.workers.set_logs(logs, {number: hashed for number, (_, hashed) in tokens.items()})
    return tokens


async def test_every_kind_of_end_clears_the_attempts_token_with_its_verdict(store: Store) -> None:
    numbers = await assigned_workers(store, len(ENDS))
    tokens = await _give_tokens(store, numbers)
    async with store.read() as tx:
        for number in numbers:
            found = await tx.workers.by_token_hash(tokens[number][1])
            assert found is not None
            assert found.number == number
    recorder = VerdictRecorder(store, lambda: None)
    for number, state in zip(numbers, ENDS, strict=True):
        # attempt None: as close_agent and a stopping server record it.
        attempt = None if state is WorkerState.CANCELLED else 1
        assert await recorder.record(Verdict(number, attempt, state, TaskStatus.PENDING, error="ended"))
    async with store.read() as tx:
        for number in numbers:
            assert await tx.workers.by_token_hash(tokens[number][1]) is None
        assert [worker.state for worker in await tx.workers.many(numbers)] == ENDS
    # Nothing of any token is left: the hashes went with the verdicts.
    assert not [row for row in await _token_hashes(store) if row is not None]


async def test_a_new_attempt_has_a_new_token_and_a_late_verdict_of_the_last_one_leaves_it(
    store: Store,
) -> None:
    [number] = await assigned_workers(store, 1)
    first = (await _give_tokens(store, [number]))[number]
    recorder = VerdictRecorder(store, lambda: None)
    assert await recorder.record(Verdict(number, 1, WorkerState.SUCCEEDED, TaskStatus.COMPLETED))
    second_token, second_hash = mint_token()
    async with store.write() as tx:
        assert await tx.workers.restart(
            number, attempt=1, now=now(), supervisor="1:1", token_hash=second_hash
        )
    # A report of the first attempt, arriving late, is ignored, and leaves the second's token.
    assert not await recorder.record(Verdict(number, 1, WorkerState.FAILED, TaskStatus.FAILED))
    async with store.read() as tx:
        assert await tx.workers.by_token_hash(first[1]) is None
        live = await tx.workers.by_token_hash(second_hash)
    assert live is not None
    assert (live.number, live.attempt) == (number, 2)
    # Only the hash is stored.
    assert await _token_hashes(store) == [second_hash]
    assert second_token not in str(await _token_hashes(store))


async def _token_hashes(store: Store) -> list[str | None]:
    """The token_hash column, read by another connection as a copy of the file would be."""
    with contextlib.closing(sqlite3.connect(store.path)) as connection:
        return [row[0] for row in connection.execute("SELECT token_hash FROM workers ORDER BY id")]
