"""batching.Grouped: calls that arrive while one is served are served together, and each caller
gets its own answer, or the error of its batch."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
import pytest

from mcp_swarm.engine.batching import Grouped

pytestmark = pytest.mark.anyio


class Doubler:
    """Serves a batch by doubling each item; holds each batch until `release` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = anyio.Event()
        self.fail_next = False

    async def serve(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database is gone")
        return [2 * item for item in items]


def asking(grouped: Grouped[int, int], answers: dict[int, int]) -> Callable[[int], Coroutine[Any, Any, None]]:
    """A caller of `grouped` that notes each answer it gets in `answers`."""

    async def ask(item: int) -> None:
        answers[item] = await grouped(item)

    return ask


async def test_calls_waiting_meanwhile_are_served_in_one_batch_each_with_its_answer() -> None:
    doubler = Doubler()
    answers: dict[int, int] = {}
    ask = asking(Grouped(doubler.serve), answers)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for item in range(5):
                group.start_soon(ask, item)
                await anyio.wait_all_tasks_blocked()
            doubler.release.set()
    assert answers == {item: 2 * item for item in range(5)}
    # The first call is served alone; the four that came while it was served, together.
    assert doubler.batches == [[0], [1, 2, 3, 4]]


async def test_an_error_reaches_every_call_of_its_batch_and_the_next_batch_is_served() -> None:
    doubler = Doubler()
    grouped = Grouped(doubler.serve)
    outcomes: dict[int, int | str] = {}

    async def ask(item: int) -> None:
        try:
            outcomes[item] = await grouped(item)
        except RuntimeError as exc:
            outcomes[item] = str(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for item in (1, 2, 3):
                group.start_soon(ask, item)
                await anyio.wait_all_tasks_blocked()
            doubler.fail_next = True  # the batch of 1 fails; 2 and 3 wait meanwhile
            doubler.release.set()
        assert await grouped(4) == 8
    assert outcomes == {1: "the database is gone", 2: 4, 3: 6}
    assert doubler.batches == [[1], [2, 3], [4]]


async def test_calls_made_in_one_turn_of_the_event_loop_are_served_as_one_batch() -> None:
    doubler = Doubler()
    doubler.release.set()
    answers: dict[int, int] = {}
    ask = asking(Grouped(doubler.serve), answers)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for item in range(5):  # all five start in the same turn, none waits for another
                group.start_soon(ask, item)
    assert answers == {item: 2 * item for item in range(5)}
    assert doubler.batches == [[0, 1, 2, 3, 4]]


async def test_the_callers_of_one_batch_resume_together_so_their_next_calls_share_a_batch() -> None:
    # A wave of supervisors: each reads its metadata (one batch for all), then records its
    # verdict. The verdicts must make one batch too, not a first one of whoever resumed first.
    reads, writes = Doubler(), Doubler()
    read, write = Grouped(reads.serve), Grouped(writes.serve)
    answers: dict[int, int] = {}

    async def supervise(item: int) -> None:
        answers[item] = await write(await read(item))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for item in range(6):
                group.start_soon(supervise, item)
            await anyio.wait_all_tasks_blocked()
            reads.release.set()
            await anyio.wait_all_tasks_blocked()
            writes.release.set()
    assert answers == {item: 4 * item for item in range(6)}
    assert reads.batches == [[0, 1, 2, 3, 4, 5]]
    assert writes.batches == [[0, 2, 4, 6, 8, 10]]


async def test_a_call_cancelled_while_it_waits_for_its_turn_is_withdrawn() -> None:
    doubler = Doubler()
    answers: dict[int, int] = {}
    ask = asking(Grouped(doubler.serve), answers)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(ask, 1)
            await anyio.wait_all_tasks_blocked()  # 1 is being served, and held
            async with anyio.create_task_group() as doomed:
                doomed.start_soon(ask, 2)
                await anyio.wait_all_tasks_blocked()  # 2 waits for its turn
                doomed.cancel_scope.cancel()
            group.start_soon(ask, 3)
            await anyio.wait_all_tasks_blocked()
            doubler.release.set()
    assert answers == {1: 2, 3: 6}
    assert doubler.batches == [[1], [3]]
