"""What the Faust engine needs from faust-streaming beyond its public API, in one place.

- Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` hard-coded. A
  broker that holds a fetch for the whole wait when no data is there (the embedded
  one does) then adds up to 1.5 s to an idle worker's latency; the worker's
  ``fetch_max_wait_ms`` setting is applied to that consumer here
  (:func:`use_fetch_max_wait`).
- A no-op monitor (:class:`QuietMonitor`): Faust's default monitor does bookkeeping for
  every message and event (counters, dict updates, timestamps) that the worker's own
  Prometheus metrics already cover.
- Delivery without four tasks per message (:func:`deliver_eagerly`): Faust's fetch loop
  hands every message to its streams through ``Service.wait_first(delivery,
  suspend_flow.wait())``, which creates four tasks, waits on them and cancels three, so
  that a delivery blocked on a full stream buffer gives way to a rebalance. Nearly every
  delivery finishes without blocking; those are now run to completion in place, and only
  one that does block goes through ``wait_first`` as before.
- Fetching resumed as soon as a stream buffer drains (:func:`resume_promptly`): when the
  buffers of all assigned partitions pass their high-water mark Faust stops fetching
  them and its fetch loop sleeps a whole second before looking again, even though the
  buffers reach their low-water mark long before (a worker scoring a few thousand
  events a second drains one in a fraction of that). The loop now wakes when the first
  partition is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from faust.sensors.monitor import Monitor
from mode.services import WaitResults

from streamer.kafka_adapter import set_fetch_max_wait


def use_fetch_max_wait(app: Any, fetch_max_wait_ms: int) -> None:
    """Make ``app``'s consumer thread build its aiokafka consumer with ``fetch_max_wait_ms``."""
    thread = app.consumer._thread  # noqa: SLF001 - Faust's consumer thread, which creates the aiokafka consumer on start
    original = thread._create_worker_consumer  # noqa: SLF001

    def create(self: Any, transport: Any) -> Any:
        consumer = original(transport)
        set_fetch_max_wait(consumer, fetch_max_wait_ms)
        return consumer

    thread._create_worker_consumer = types.MethodType(create, thread)  # noqa: SLF001


def deliver_eagerly(app: Any) -> None:
    """Let ``app``'s consumer finish a message's delivery in place when it need not wait.

    Faust calls ``consumer.wait_first(delivery, suspend_flow.wait())`` once per message,
    and only there; the result is the same as before, only the tasks are gone for a
    delivery that never suspends. See :func:`eager_wait_first`.
    """
    consumer = app.consumer
    original = consumer.wait_first

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        return await eager_wait_first(original, *coros, timeout=timeout)

    consumer.wait_first = wait_first


async def eager_wait_first(wait_first: Any, *coros: Any, timeout: Any = None) -> Any:
    """Run the first coroutine in place; go through ``wait_first`` only if it suspends.

    A coroutine that returns (or raises) without suspending wins the race outright, so
    the other waitables are never started. One that suspends is finished inside
    ``wait_first`` with the others, exactly as it would have been.

    >>> import asyncio
    >>> async def quick(): return 7
    >>> async def never(): await asyncio.Event().wait()
    >>> async def slow():
    ...     await asyncio.sleep(0)
    ...     return 8
    >>> async def real_wait_first(*coros, timeout=None):
    ...     done, pending = await asyncio.wait([asyncio.ensure_future(c) for c in coros], return_when=asyncio.FIRST_COMPLETED)
    ...     for f in pending: f.cancel()
    ...     return "waited", [f.result() for f in done]
    >>> asyncio.run(eager_wait_first(real_wait_first, quick(), never())).results
    [7]
    >>> asyncio.run(eager_wait_first(real_wait_first, slow(), never()))
    ('waited', [8])
    """
    first = coros[0] if coros else None
    if timeout is not None or not inspect.iscoroutine(first):
        return await wait_first(*coros, timeout=timeout)
    others = coros[1:]
    try:
        yielded = first.send(None)
    except StopIteration as finished:
        _close(others)
        await asyncio.sleep(0)  # one loop turn per message, as before: see deliver_eagerly
        return WaitResults([first], [finished.value], False)
    except BaseException:
        _close(others)
        raise
    return await wait_first(_Resume(first, yielded), *others, timeout=None)


def _close(waitables: tuple[Any, ...]) -> None:
    for waitable in waitables:
        if inspect.iscoroutine(waitable):
            waitable.close()


class _Resume(Awaitable[Any]):
    """Await the rest of a coroutine that has already run up to its first suspension."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - thrown in by the task (a cancellation): passed on
                try:
                    yielded = coro.throw(exc)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as finished:
                    return finished.value


def resume_promptly(app: Any) -> None:
    """Wake ``app``'s fetch loop when a paused partition's stream buffer has drained.

    Faust pauses a partition whose buffer is under high pressure (``on_buffer_full``)
    and resumes it once the buffer is down to its low-water mark (``on_buffer_drop``);
    with every partition paused, ``_wait_next_records`` sleeps a fixed second. Here
    it first waits, up to its timeout, for a resume instead.
    """
    consumer = app.consumer
    resumed = asyncio.Event()
    on_buffer_drop = consumer.on_buffer_drop
    wait_next_records = consumer._wait_next_records  # noqa: SLF001 - Faust's fetch step, which sleeps when all is paused

    def drop(tp: Any) -> None:
        on_buffer_drop(tp)
        resumed.set()

    async def wait_next(timeout: float) -> Any:
        if consumer._buffered_partitions and not consumer._get_active_partitions():  # noqa: SLF001
            resumed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(resumed.wait(), timeout)
            if not consumer._get_active_partitions():  # noqa: SLF001 - still all paused: fetch nothing, as Faust would
                return {}, set()
        return await wait_next_records(timeout)

    consumer.on_buffer_drop = drop
    consumer._wait_next_records = wait_next  # noqa: SLF001


class QuietMonitor(Monitor):
    """Faust's monitor without its per-message and per-event bookkeeping (the worker exports its own metrics)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass
