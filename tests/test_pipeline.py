"""The engine-independent core without Kafka: the checkpoint's order and its refusal to commit a failed batch.

Both engines rely on these properties; here they are checked with a recording sink
and committer, so a failure names the core, not a broker or a client library.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from streamer.lane import build_lanes
from streamer.metrics import Metrics
from streamer.pipeline import Pipeline
from streamer.settings import Settings
from streamer.sinks import DeliveryFailed, Sink
from streamer.stats import LiveStats
from tests.conftest import events


class Recorder:
    """A sink's producer and an engine's committer that write down what happens, in order."""

    def __init__(self):
        self.log: list[tuple] = []

    async def send(self, topic, value, key=None, partition=None):
        self.log.append(("send", topic, partition))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def snapshot(self):
        return "member"

    async def commit(self, offsets, snapshot):
        self.log.append(("commit", dict(offsets), snapshot))
        return True

    async def round_trip(self):
        self.log.append(("round_trip",))


class Failing:
    """A scorer whose every batch fails (an ONNX error, a GPU gone)."""

    def __init__(self, inner):
        self.inner, self.bundle, self.provider, self.precision = inner, inner.bundle, inner.provider, inner.precision

    def score_batch(self, inputs):
        raise RuntimeError("injected: the model failed")


def _run(tiny_tx_bundle, fail: bool):
    s = Settings.from_env({}, transactions_bundle=str(tiny_tx_bundle), sensors_topic="", device="cpu", max_wait_ms=1.0)
    metrics = Metrics()
    lanes = build_lanes(s, metrics)
    if fail:
        lanes["transaction"].scorer = Failing(lanes["transaction"].scorer)
    rec = Recorder()
    values = [orjson.dumps(e) for e in events("transaction", 50, seed=3, n_accounts=5)] + [b"{not json"]
    tp = (s.transactions_topic, 2)

    async def main():
        with ThreadPoolExecutor(2) as pool:
            p = Pipeline(lanes, s, metrics, LiveStats(), pool, Sink(rec.send), rec)
            p.assigned.add(tp)
            tasks = p.start()
            try:
                await p.accept(tp, [(100 + i, v, b"k") for i, v in enumerate(values)])
                for _ in range(200):
                    if not p.inflight or p.sink.error:
                        break
                    await asyncio.sleep(0.01)
                try:
                    return await p.commit(timeout=5), p
                except DeliveryFailed as exc:
                    return exc, p
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    result, pipeline = asyncio.run(main())
    return result, pipeline, rec.log, s


def test_checkpoint_acknowledges_outputs_then_windows_then_commits(tiny_tx_bundle):
    committed, pipeline, log, s = _run(tiny_tx_bundle, fail=False)
    assert committed == {(s.transactions_topic, 2): 151}, "every offset, dead letter included, committed"
    kinds = [(e[0], e[1] if e[0] == "send" else None) for e in log]
    first_window = next(i for i, (k, t) in enumerate(kinds) if k == "send" and t.endswith("-windows"))
    commit_at = next(i for i, (k, _) in enumerate(kinds) if k == "commit")
    outputs = [i for i, (k, t) in enumerate(kinds) if k == "send" and not t.endswith("-windows")]
    assert len(outputs) >= 51 and max(outputs) < first_window < commit_at, "outputs, then windows, then the commit"
    assert {e[2] for e in log if e[0] == "send" and e[1].endswith("-windows")} == {2}, "windows go to their events' partition"
    assert log[commit_at][2] == "member", "committed under the membership taken before the offsets"
    assert pipeline.offsets.pending() == 0


def test_a_failed_batch_is_never_committed(tiny_tx_bundle):
    result, pipeline, log, _ = _run(tiny_tx_bundle, fail=True)
    assert isinstance(result, DeliveryFailed) and "injected: the model failed" in str(result)
    assert not [e for e in log if e[0] == "commit"], "nothing may be committed after a batch failed"
    assert pipeline.offsets.pending() > 0, "the failed events stay open (they are read again after the restart)"


def test_faust_committer_acks_in_consumption_order_below_the_offsets():
    from collections import deque

    from streamer.faust_app import FaustCommitter

    acked: list[int] = []

    class Event:
        def __init__(self, o):
            self.o = o

        def ack(self):
            acked.append(self.o)

    class Consumer:
        async def commit(self):
            return True

    class App:
        consumer = Consumer()

    unacked = {("t", 0): deque((o, Event(o)) for o in range(10, 20)), ("t", 1): deque((o, Event(o)) for o in (5, 6))}
    c = FaustCommitter(App(), unacked, probe=None)
    assert asyncio.run(c.commit({("t", 0): 15}, None))
    assert acked == [10, 11, 12, 13, 14] and [o for o, _ in unacked[("t", 0)]] == [15, 16, 17, 18, 19]
    assert [o for o, _ in unacked[("t", 1)]] == [5, 6], "a partition not in the commit is not acknowledged"


@pytest.mark.parametrize("bad", [b"", b"\xff", b"[]"])
def test_rejections_count_as_done_without_a_score(tiny_tx_bundle, bad):
    """A dead letter completes its offset like a score does (nothing waits on it)."""
    s = Settings.from_env({}, transactions_bundle=str(tiny_tx_bundle), sensors_topic="", device="cpu")
    metrics = Metrics()
    lanes = build_lanes(s, metrics)
    rec = Recorder()

    async def main():
        with ThreadPoolExecutor(1) as pool:
            p = Pipeline(lanes, s, metrics, LiveStats(), pool, Sink(rec.send), rec)
            await p.accept((s.transactions_topic, 0), [(7, bad, None)])
            return p.inflight, p.offsets.committable()

    assert asyncio.run(main()) == (0, {(s.transactions_topic, 0): 8})
    assert [e[1] for e in rec.log] == [s.dead_letters_topic]
