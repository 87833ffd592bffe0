"""Calls that arrive together are served together: one database round trip for many callers.

Each worker's supervisor reads its task's metadata and records its verdict on its own. When a
wave of short workers ends within a few milliseconds, fifty supervisors would queue fifty round
trips to the database thread one after the other; instead, the calls that arrive while one is
being served are served next, all in one go (a group commit, for writes). A lone call costs what
it cost before; a crowd costs a handful of round trips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass
class _Call(Generic[Item, Answer]):
    item: Item
    served: bool = False
    answer: Answer | None = None
    error: Exception | None = None


class Grouped(Generic[Item, Answer]):
    """`await grouped(item)` is `serve([item])[0]`, but calls that wait meanwhile share one `serve`.

    `serve` answers a list of items with a list of answers in the same order. It runs shielded
    from cancellation: a call cancelled before its turn is withdrawn, and nothing is done for
    it; once its batch is being served, it is served. An exception from `serve` reaches every
    call of that batch.
    """

    def __init__(self, serve: Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]]) -> None:
        self._serve = serve
        self._queue: list[_Call[Item, Answer]] = []
        self._serving = anyio.Lock()

    async def __call__(self, item: Item) -> Answer:
        call: _Call[Item, Answer] = _Call(item)
        self._queue.append(call)
        try:
            async with self._serving:
                if not call.served:
                    await self._serve_queue()
        except BaseException:
            if call in self._queue:
                self._queue.remove(call)
            raise
        if call.error is not None:
            raise call.error
        return call.answer  # type: ignore[return-value]  # set for every served call

    async def _serve_queue(self) -> None:
        batch, self._queue = self._queue, []
        with anyio.CancelScope(shield=True):
            try:
                answers = await self._serve([call.item for call in batch])
            except Exception as exc:  # every call of the batch fails, and each caller hears why
                for call in batch:
                    call.error = exc
            else:
                for call, answer in zip(batch, answers, strict=True):
                    call.answer = answer
        for call in batch:
            call.served = True
