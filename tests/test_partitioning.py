"""Windows follow their partition whatever partitioner the input's producer used.

A librdkafka producer (confluent-kafka, CRC32 partitioner by default) places keys
differently from aiokafka's murmur2. The worker writes each window to the
changelog partition its events came from, so after a rebalance the worker that
owns an input partition restores exactly that partition's windows. The proof:
scores after the rebalance equal one uninterrupted pass through score-file.
Both engines, each as two real worker processes.
"""

from __future__ import annotations

import asyncio

import orjson
from confluent_kafka import Producer

from streamer.score_file import score_lines
from tests.conftest import create, events, read_until
from tests.reliability import wait_until, worker_process


def _librdkafka_send(bootstrap: str, topic: str, evs: list[dict]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "consistent_random", "linger.ms": 5})
    for e in evs:
        p.produce(topic, orjson.dumps(e), key=e["account_id"].encode())
    assert p.flush(30) == 0


def test_windows_restore_on_the_partition_their_events_arrive_on(broker, topics, tiny_tx_bundle, engine, tmp_path):
    evs = events("transaction", 2400, seed=61, n_accounts=30)
    first, second = evs[:1200], evs[1200:]
    topic = topics["transactions"]

    async def main():
        await create(broker, topics, partitions=4)
        with worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path / "a.log", commit_interval_s=0.5) as a:
            await wait_until(lambda: len(a.assigned(topic)) == 4, 60, "the first worker's assignment")
            await asyncio.to_thread(_librdkafka_send, broker.bootstrap, topic, first)
            await read_until(broker, [topics["scores"]], lambda g: len(g[topics["scores"]]) >= len(first), 60)
            with worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path / "b.log", commit_interval_s=0.5) as b:

                def split() -> bool:
                    pa, pb = a.assigned(topic), b.assigned(topic)
                    return bool(pa and pb) and len(pa | pb) == 4 and not (pa & pb)

                await wait_until(split, 90, "the rebalance")
                await asyncio.to_thread(_librdkafka_send, broker.bootstrap, topic, second)
                got = await read_until(broker, [topics["scores"]], lambda g: len({r["event_id"] for r in g[topics["scores"]]}) >= len(evs), 60)
                restored = b.metric("streamer_windows_restored_total", kind="transaction")
        return got, restored

    got, restored = asyncio.run(main())
    scores = {r["event_id"]: r["score"] for r in got[topics["scores"]]}
    assert set(scores) == {e["event_id"] for e in evs}
    assert restored > 0, "the joining worker restored no windows"
    reference = {r["event_id"]: r["score"] for r in score_lines((orjson.dumps(e) for e in evs), tiny_tx_bundle)}
    wrong = [k for k in reference if abs(scores[k] - reference[k]) > 1e-5]
    assert not wrong, f"{len(wrong)} events scored with a wrong window after the rebalance"
