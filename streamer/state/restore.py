"""Windows back from their changelog: what a worker does before it consumes a newly assigned partition.

Both engines call :func:`restore_windows` for the partitions they were just
assigned, and accept no event of a partition before it returns: an event scored
without its entity's history would get a different score than the one an
uninterrupted worker gives (and a different one from ``score-file``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.kafka_adapter import stop_client
from streamer.state.store import WindowStore, decode_state

log = logging.getLogger("streamer.state")


async def restore_windows(kafka_kwargs: dict[str, Any], topic: str, partitions: list[int], store: WindowStore, idle_s: float = 5.0) -> int:
    """Read changelog partitions to their end into ``store``; returns the number of records applied.

    The end is taken from ListOffsets, which some brokers (the embedded Tansu)
    under-report by up to one record batch; fetches still return whole batches, so
    reading until the position passes that end applies every record. It can also
    over-report: after a restart with its data gone, a changelog auto-created by a
    late write answered end 1 while fetches from 0 returned nothing, forever. So a
    partition that yields nothing for ``idle_s`` counts as read (with a warning)
    instead of holding the rebalance, and with it all consumption, indefinitely.
    """
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(**kafka_kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    n = 0
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends.get(tp, 0) > 0}
        moved = dict.fromkeys(todo, time.monotonic())
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=500)
            for tp, msgs in batches.items():
                moved[tp] = time.monotonic()
                for msg in msgs:
                    store.load(tp.partition, msg.key.decode(), decode_state(msg.value))
                    n += 1
            for tp in list(todo):
                position = await consumer.position(tp)
                if position >= ends[tp]:
                    todo.discard(tp)
                elif time.monotonic() - moved[tp] > idle_s:
                    log.warning("changelog %s[%d]: nothing to read at offset %d although the broker reports end %d; restored what was there", topic, tp.partition, position, ends[tp])
                    todo.discard(tp)
    finally:
        await stop_client(consumer, 10)
    return n
