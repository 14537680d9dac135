"""The aiokafka adapter (streamer/kafka_adapter.py): each private-API workaround checked against a real broker.

When aiokafka changes, these are the tests that say which workaround broke.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.kafka_adapter import MetadataProbe, commit_in_generation, membership, position, round_trip, set_fetch_max_wait, stop_client
from streamer.settings import Settings
from tests.conftest import create
from tests.reliability import leak_a_cancellation_on_stop

REQUEST_TIMEOUT_MS = 5000
SESSION_TIMEOUT_MS = 6000


def _refill_without_yielding(broker, topic: str, values: list[bytes]) -> None:
    """Restart the broker (data gone), recreate ``topic``, write ``values``: blocking calls, so no
    coroutine of the running loop (the consumer's fetcher, heartbeat, commits) runs in between."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # kept alive until the topic exists
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(15)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for v in values:
        p.produce(topic, v, partition=0)
    assert p.flush(15) == 0


def test_commit_after_a_broker_lost_its_data_never_hides_the_new_records(own_broker):
    """The race behind a worker that stopped consuming after a broker restart, made deterministic.

    The consumer has read and committed offset 10 of the old log; the new log is refilled with
    exactly 10 records before the consumer notices anything, so its position looks caught up.
    ``consumer.commit()`` retried across the re-join and wrote 10 into the new group, and the
    re-joined consumer sat at 10 for good. ``commit_in_generation`` must not, and every new
    record must then be read.
    """
    broker, topic, tp = own_broker, "lost-data", TopicPartition("lost-data", 0)

    async def main():
        _refill_without_yielding(broker, topic, [f"old{i}".encode() for i in range(10)])
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="g-lost", enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=1000,
                             request_timeout_ms=REQUEST_TIMEOUT_MS, fetch_max_wait_ms=500)
        await c.start()
        try:
            c.subscribe([topic])
            old = []
            await fetch_until(lambda: len(old) >= 10, 60, "the old records", c, old)
            assert await commit_in_generation(c, {tp: 10}) and await c.committed(tp) == 10
            old_member = membership(c)
            _refill_without_yielding(broker, topic, [f"new{i}".encode() for i in range(10)])
            committed_stale = await commit_in_generation(c, {tp: 10})
            new = []
            await fetch_until(lambda: len(new) >= 10, 60, "the new records", c, new)
            # offsets read under the old membership stay uncommitted once the consumer re-joined
            assert membership(c) != old_member
            assert await commit_in_generation(c, {tp: 3}, old_member) is False and await c.committed(tp) is None
            assert await commit_in_generation(c, {tp: 10}, membership(c)) and await c.committed(tp) == 10
            return committed_stale, new
        finally:
            await c.stop()

    committed_stale, new = asyncio.run(main())
    assert committed_stale is False
    assert new == [f"new{i}".encode() for i in range(10)]


async def fetch_until(cond, timeout: float, what: str, consumer, into: list) -> None:
    """Fetch into ``into`` until ``cond()``, with a deadline."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (got {len(into)})")
        for msgs in (await consumer.getmany(timeout_ms=500)).values():
            into.extend(m.value for m in msgs)


def test_stop_client_absorbs_a_stray_cancellation_but_not_a_real_one(broker, topics):
    async def started():
        c = AIOKafkaConsumer(topics["transactions"], bootstrap_servers=broker.bootstrap, group_id=None)
        await c.start()
        return c

    async def main():
        await create(broker, topics)
        c = await started()
        leak = leak_a_cancellation_on_stop(c)
        await stop_client(c, 5)  # must return: nobody cancelled this task
        stray = leak.cancelled() and asyncio.current_task().cancelling() == 0
        conns_left = sum(conn.connected() for conn in c._client._conns.values())  # noqa: SLF001 - closed by the fallback

        c2 = await started()
        leak_a_cancellation_on_stop(c2)
        closing = asyncio.create_task(stop_client(c2, 5))
        await asyncio.sleep(0)
        closing.cancel()  # a real cancellation of the caller still cancels it
        with pytest.raises(asyncio.CancelledError):
            await closing
        await stop_client(c2, 5)
        return stray, conns_left

    stray, conns_left = asyncio.run(main())
    assert stray, "the injected back-off task was not cancelled by the consumer's stop"
    assert conns_left == 0, f"{conns_left} broker connections left open after a stop that raised"


def test_position_round_trip_and_fetch_wait_on_a_real_consumer(broker, topics):
    """``position`` reads the fetcher's own position, ``round_trip`` and ``MetadataProbe`` reach the broker,
    and ``set_fetch_max_wait`` changes the wait the fetcher is built with."""
    topic, tp = topics["transactions"], TopicPartition(topics["transactions"], 0)

    async def main():
        await create(broker, topics, partitions=1)
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await p.start()
        try:
            for i in range(5):
                await p.send_and_wait(topic, f"v{i}".encode(), partition=0)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=1500)
        set_fetch_max_wait(c, 50)
        await c.start()
        try:
            fetch_wait = c._fetcher._fetch_max_wait_ms  # noqa: SLF001 - what the fetcher was really built with
            c.assign([tp])
            before = position(c, tp)
            got = []
            await fetch_until(lambda: len(got) >= 5, 30, "the records", c, got)
            after = position(c, tp)
            await round_trip(c)  # returns: the broker answered
            probe = MetadataProbe(Settings.from_env({}, brokers=broker.bootstrap))
            await probe.start()
            try:
                await probe.round_trip()
            finally:
                await probe.close()
        finally:
            await c.stop()
        return fetch_wait, before, after

    fetch_wait, before, after = asyncio.run(main())
    assert fetch_wait == 50
    assert before in (None, 0)  # no position before the first fetch resolved it
    assert after == 5, "the position is the next offset to fetch"


def test_metadata_probe_fails_fast_when_no_broker_answers():
    async def main():
        probe = MetadataProbe(Settings.from_env({}, brokers="127.0.0.1:1", request_timeout_ms=1000))
        t0 = time.monotonic()
        with pytest.raises(Exception):
            await asyncio.wait_for(probe.start(), 10)
        await probe.close()
        return time.monotonic() - t0

    assert asyncio.run(main()) < 10
