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
    error: BaseException | None = None


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
        # Set once the batch being served is answered. An event rather than a lock: every caller
        # of that batch resumes in the same turn of the event loop, not one per turn as a lock
        # hands over, so their next grouped calls (a verdict after a metadata read) queue
        # together too.
        self._in_flight: anyio.Event | None = None

    async def __call__(self, item: Item) -> Answer:
        call: _Call[Item, Answer] = _Call(item)
        self._queue.append(call)
        try:
            # One turn of the event loop first, so that callers resumed together all join the
            # queue before it is served.
            await anyio.lowlevel.checkpoint()
            while not call.served:
                if self._in_flight is None:
                    await self._serve_queue()
                else:
                    await self._in_flight.wait()
        except BaseException:
            if call in self._queue:
                self._queue.remove(call)
            raise
        if call.error is not None:
            raise call.error
        return call.answer  # type: ignore[return-value]  # set for every served call

    async def _serve_queue(self) -> None:
        batch, self._queue = self._queue, []
        answered = self._in_flight = anyio.Event()
        with anyio.CancelScope(shield=True):
            try:
                answers = await self._serve([call.item for call in batch])
            except BaseException as exc:  # every call of the batch fails, and each caller hears why
                for call in batch:
                    call.error = exc
            else:
                for call, answer in zip(batch, answers, strict=True):
                    call.answer = answer
            finally:
                for call in batch:
                    call.served = True
                self._in_flight = None
                answered.set()
