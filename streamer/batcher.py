"""The adaptive micro-batcher: flush at ``max_batch`` items or ``max_wait`` after the first.

Under light load an event waits at most ``max_wait`` for company; under heavy
load the queue already holds a full batch when the model frees up, so batches fill
without waiting at all. The queue is bounded: when it is full, ``put`` waits, and
the consumer pauses fetching (backpressure instead of unbounded memory).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(self, max_batch: int, max_wait_s: float, maxsize: int = 0):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[T] = asyncio.Queue(maxsize)

    async def put(self, item: T) -> None:
        await self.queue.put(item)

    def put_nowait(self, item: T) -> None:
        self.queue.put_nowait(item)

    def __len__(self) -> int:
        return self.queue.qsize()

    async def next_batch(self) -> list[T]:
        """Wait for one item, then gather more until the batch is full or the wait bound passes."""
        q = self.queue
        batch = [await q.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            while len(batch) < self.max_batch and not q.empty():
                batch.append(q.get_nowait())
            if len(batch) >= self.max_batch:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(q.get(), remaining))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return batch
