"""batching.Grouped: calls that arrive while one is served are served together, and each caller
gets its own answer, or the error of its batch."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from mcp_swarm.batching import Grouped

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


async def test_calls_waiting_meanwhile_are_served_in_one_batch_each_with_its_answer() -> None:
    doubler = Doubler()
    grouped = Grouped(doubler.serve)
    answers: dict[int, int] = {}

    async def ask(item: int) -> None:
        answers[item] = await grouped(item)

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
