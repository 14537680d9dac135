"""Windows follow their partition whatever partitioner the input's producer used.

A librdkafka producer (confluent-kafka, CRC32 partitioner by default) places keys
differently from aiokafka's murmur2. The worker writes each window to the
changelog partition its events came from, so after a rebalance the worker that
owns an input partition restores exactly that partition's windows. The proof:
scores after the rebalance equal one uninterrupted pass through score-file.
Then one of the two workers is SIGKILLed mid-stream: the other takes its
partitions over, restores their windows and replays what was not committed, and
every score record, replays included, still equals score-file's. Both engines,
each as two real worker processes.
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
    """Two workers, then one of them SIGKILLed mid-stream: every score record, replays included, equals score-file's."""
    evs = events("transaction", 3600, seed=61, n_accounts=30)
    first, second, third = evs[:1200], evs[1200:2400], evs[2400:]
    topic, scores_t = topics["transactions"], topics["scores"]
    flags = {"commit_interval_s": 0.5, "session_timeout_ms": 6000}

    async def main():
        await create(broker, topics, partitions=4)
        with worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path / "a.log", **flags) as a:
            await wait_until(lambda: len(a.assigned(topic)) == 4, 60, "the first worker's assignment")
            await asyncio.to_thread(_librdkafka_send, broker.bootstrap, topic, first)
            await read_until(broker, [scores_t], lambda g: len(g[scores_t]) >= len(first), 60)
            with worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path / "b.log", **flags) as b:

                def split() -> bool:
                    pa, pb = a.assigned(topic), b.assigned(topic)
                    return bool(pa and pb) and len(pa | pb) == 4 and not (pa & pb)

                await wait_until(split, 90, "the rebalance")
                await asyncio.to_thread(_librdkafka_send, broker.bootstrap, topic, second)
                await read_until(broker, [scores_t], lambda g: len({r["event_id"] for r in g[scores_t]}) >= len(first) + len(second), 60)
                restored = b.metric("streamer_windows_restored_total", kind="transaction")
                b_before = b.metric("streamer_events_scored_total", kind="transaction")
                sending = asyncio.create_task(asyncio.to_thread(_librdkafka_send, broker.bootstrap, topic, third))
                await wait_until(lambda: b.metric("streamer_events_scored_total", kind="transaction") > b_before, 60, "the second worker to score the third part")
                b.kill()  # SIGKILL: whatever it published and did not commit is read again by the first worker
                await sending
                await wait_until(lambda: len(a.assigned(topic)) == 4, 60, "the first worker to take over every partition")
                got = await read_until(broker, [scores_t], lambda g: len({r["event_id"] for r in g[scores_t]}) >= len(evs), 90)
        return got, restored

    got, restored = asyncio.run(main())
    records = got[scores_t]
    assert {r["event_id"] for r in records} == {e["event_id"] for e in evs}
    assert restored > 0, "the joining worker restored no windows"
    reference = {r["event_id"]: r["score"] for r in score_lines((orjson.dumps(e) for e in evs), tiny_tx_bundle)}
    wrong = [r["event_id"] for r in records if abs(r["score"] - reference[r["event_id"]]) > 1e-5]
    assert not wrong, f"{len(wrong)} of {len(records)} score records differ from score-file after the rebalance and the SIGKILL"
    print(f"\n{engine}: two workers, one SIGKILLed: {len(records)} score records for {len(evs)} events "
          f"({len(records) - len(evs)} replayed), all equal to score-file")
