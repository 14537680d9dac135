"""The Faust adapter's changes to Faust's consumer, on a real (unstarted) Faust consumer.

The engine tests run them end to end against the broker; these pin down the edge
cases a stream of well-behaved messages never reaches: a delivery that blocks, one that
raises, and a fetch loop with every partition paused.
"""

from __future__ import annotations

import asyncio
import inspect
import time

import faust
import pytest

from streamer.faust_adapter import deliver_eagerly, eager_wait_first, resume_promptly


def _consumer() -> tuple[faust.App, object]:
    app = faust.App("adapter-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    return app, app.consumer


def _eager() -> object:
    """A Faust consumer whose deliveries go through ``deliver_eagerly``."""
    _, consumer = _consumer()
    deliver_eagerly(consumer.app)
    return consumer


async def _delivering(consumer: object, deliver: object) -> asyncio.Future:
    """Faust's fetch loop handing one message to ``deliver``; returned once the delivery had time to block."""
    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.05)
    return waiting


def test_a_delivery_that_does_not_block_finishes_in_place_and_the_flow_wait_is_never_started():
    async def main() -> None:
        consumer = _eager()
        delivered: list[int] = []

        async def deliver() -> str:
            delivered.append(1)
            return "done"

        flow = consumer.suspend_flow.wait()
        before = len(asyncio.all_tasks())
        result = await consumer.wait_first(deliver(), flow)
        assert delivered == [1]
        assert result.results == ["done"] and not result.stopped
        assert inspect.getcoroutinestate(flow) == inspect.CORO_CLOSED  # closed, not left un-awaited
        assert len(asyncio.all_tasks()) == before  # no task was created for it

    asyncio.run(main())


def test_a_delivery_that_blocks_finishes_through_faust_wait_first():
    async def main() -> None:
        consumer = _eager()
        space = asyncio.Event()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("started")
            await space.wait()  # a full stream buffer
            steps.append("put")
            return "done"

        waiting = await _delivering(consumer, deliver)
        assert steps == ["started"] and not waiting.done()
        space.set()
        result = await asyncio.wait_for(waiting, 2)
        assert steps == ["started", "put"] and result.results == ["done"]

    asyncio.run(main())


def test_a_blocked_delivery_gives_way_when_flow_is_suspended():
    async def main() -> None:
        consumer = _eager()

        async def deliver() -> None:
            await asyncio.Event().wait()  # never gets space

        waiting = await _delivering(consumer, deliver)
        consumer.suspend_flow.set()  # a rebalance begins
        result = await asyncio.wait_for(waiting, 2)
        assert result.results == [True] and len(result.done) == 1  # the flow wait won, as in Faust

    asyncio.run(main())


def test_a_delivery_that_raises_raises_and_closes_the_other_waits():
    async def main() -> None:
        consumer = _eager()

        async def deliver() -> None:
            raise ValueError("bad message")

        flow = consumer.suspend_flow.wait()
        with pytest.raises(ValueError, match="bad message"):
            await consumer.wait_first(deliver(), flow)
        assert inspect.getcoroutinestate(flow) == inspect.CORO_CLOSED

    asyncio.run(main())


def test_eager_wait_first_leaves_timeouts_and_non_coroutines_to_faust():
    calls: list[tuple] = []

    async def faust_wait_first(*coros, timeout=None):
        calls.append((len(coros), timeout))
        for c in coros:
            if inspect.iscoroutine(c):
                c.close()
        return "faust"

    async def main() -> None:
        async def quick() -> int:
            return 1

        assert await eager_wait_first(faust_wait_first, quick(), quick(), timeout=1.0) == "faust"
        assert await eager_wait_first(faust_wait_first, asyncio.Event()) == "faust"

    asyncio.run(main())
    assert calls == [(2, 1.0), (1, None)]


def _fetching(paused: bool = True) -> tuple[object, object, list[float]]:
    """A consumer with ``resume_promptly`` and one partition, paused (its stream buffer full) or active.

    Faust's own fetch step is replaced by a recorder (the consumer is never started).
    """
    _, consumer = _consumer()
    tp = faust.types.TP("in", 0)
    fetched: list[float] = []

    async def fetch(timeout: float):
        fetched.append(timeout)
        return {"records": True}, consumer._get_active_partitions()

    consumer._active_partitions = set() if paused else {tp}
    consumer._buffered_partitions = {tp} if paused else set()
    consumer._wait_next_records = fetch
    resume_promptly(consumer.app)
    return consumer, tp, fetched


def test_fetching_resumes_as_soon_as_a_paused_partition_drains():
    async def main() -> None:
        consumer, tp, fetched = _fetching()
        started = time.monotonic()
        waiting = asyncio.ensure_future(consumer._wait_next_records(1.0))
        await asyncio.sleep(0.05)
        assert not waiting.done() and fetched == []  # paused: nothing fetched
        consumer.on_buffer_drop(tp)  # the stream buffer went below its low-water mark
        records, active = await asyncio.wait_for(waiting, 2)
        assert time.monotonic() - started < 0.5  # not Faust's whole second
        assert records == {"records": True} and active == {tp} and fetched == [1.0]

    asyncio.run(main())


def test_a_fetch_with_every_partition_still_paused_returns_nothing_after_its_timeout():
    async def main() -> None:
        consumer, tp, fetched = _fetching()
        started = time.monotonic()
        assert await consumer._wait_next_records(0.2) == ({}, set())
        assert 0.15 < time.monotonic() - started < 1.0 and fetched == []

    asyncio.run(main())


def test_a_fetch_with_active_partitions_goes_straight_to_faust():
    async def main() -> None:
        consumer, tp, fetched = _fetching(paused=False)
        assert await consumer._wait_next_records(1.0) == ({"records": True}, {tp})
        assert fetched == [1.0]

    asyncio.run(main())
