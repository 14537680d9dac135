"""Baseline for bench/e2e.py: the fastest honest Kafka loop, aiokafka consume -> produce, no work.

Consumes the input topic in a group, sends every value unchanged to the output
topic, commits after the sends are acknowledged. Run as ``python -m bench.raw_loop``
with BENCH_* environment variables.
"""

from __future__ import annotations

import asyncio
import os
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main() -> None:
    brokers = os.environ["BENCH_BROKERS"]
    consumer = AIOKafkaConsumer(os.environ["BENCH_IN"], bootstrap_servers=brokers, group_id=os.environ.get("BENCH_APP", "bench-raw"), enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=2, max_batch_size=256 * 1024)
    out = os.environ["BENCH_OUT"]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=2048)
            futs = []
            for msgs in batches.values():
                for m in msgs:
                    futs.append(await producer.send(out, m.value, key=m.key))
            if futs:
                await asyncio.gather(*futs)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
