"""The sink: every record the worker writes (scores, alerts, dead letters, windows) goes through it.

A record only counts once the broker acknowledged it. Producers report that per
record through a future; a flush waits, but neither aiokafka's nor Faust's flush
raises for a record that failed. So the sink keeps the futures it has not seen
complete, remembers the first failure, and ``flush()`` awaits every one of them and
raises :class:`DeliveryFailed` if any failed: the checkpoint calls it before it
commits a single input offset.

>>> import asyncio
>>> async def demo():
...     loop = asyncio.get_running_loop()
...     async def send(topic, value, key=None, partition=None):
...         fut = loop.create_future()
...         if value == b"bad":
...             fut.set_exception(OSError("broker said no"))
...         else:
...             fut.set_result((topic, partition))
...         return fut
...     sink = Sink(send)
...     await sink.send("scores", b"ok")
...     await sink.flush()
...     await sink.send("scores", b"bad")
...     try:
...         await sink.flush()
...     except DeliveryFailed as exc:
...         return str(exc)
>>> asyncio.run(demo())
"an output was not acknowledged: OSError('broker said no')"
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

SendFn = Callable[..., Awaitable[Any]]  # (topic, value, key=, partition=) -> awaitable of a delivery future


class DeliveryFailed(RuntimeError):
    """An output was not acknowledged: nothing after the last commit may be committed."""


class Sink:
    """Sends through one producer's ``send`` and tracks every delivery until it completes."""

    def __init__(self, send: SendFn, flush: Callable[[], Awaitable[Any]] | None = None):
        self._send = send
        self._flush = flush
        self._pending: set[asyncio.Future] = set()
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        """Record a failure that happened before a record could be sent (a batch that did not score)."""
        if self.error is None:
            self.error = exc

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        fut = asyncio.ensure_future(await self._send(topic, value, key=key, partition=partition))
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None and self.error is None:
            self.error = fut.exception()
        elif fut.cancelled() and self.error is None:
            self.error = DeliveryFailed("a send was cancelled")

    def check(self) -> None:
        """Raise if anything failed so far."""
        if self.error is not None:
            raise DeliveryFailed(f"an output was not acknowledged: {self.error!r}")

    async def flush(self) -> None:
        """Every record sent so far acknowledged by the broker, or :class:`DeliveryFailed`."""
        if self._flush is not None:
            await self._flush()
        if self._pending:
            await asyncio.wait(list(self._pending))
        self.check()
