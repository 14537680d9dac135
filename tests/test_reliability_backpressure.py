"""Backpressure: events arrive at twice what a deliberately slow model sustains.

The backlog must stay in the broker, not in the worker: the in-flight count never
exceeds ``queue_events`` plus one fetch, fetching pauses (``streamer_fetch_paused``)
and resumes, and memory (RSS and Python allocations) stays flat. Afterwards the
model speeds up again and every event is scored exactly once.

``STREAMER_SOAK_S`` sets how long the overload lasts (default 30 s, the CI
version); ``STREAMER_SOAK_S=180`` is the "few minutes" soak recorded in
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import tracemalloc
from collections import Counter

import orjson

from streamer.worker import Worker
from tests.conftest import create, events, read_until, settings_for
from tests.reliability import produce, rss_bytes, wait_until

SOAK_S = float(os.environ.get("STREAMER_SOAK_S", "30"))
MAX_BATCH = 32
QUEUE_EVENTS = 512
DELAY_S = 0.1  # per batch: the lane sustains MAX_BATCH / DELAY_S = 320 events/s
RATE = 2 * MAX_BATCH / DELAY_S  # arrivals: 640 events/s


class SlowScorer:
    """The lane's scorer with a fixed sleep per batch (in the scorer thread, like a slow model)."""

    def __init__(self, inner, delay_s: float):
        self.inner, self.delay_s = inner, delay_s

    def score_batch(self, inputs):
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner.score_batch(inputs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_overload_keeps_memory_bounded_and_pauses_fetching(broker, topics, tiny_tx_bundle):
    n = int(SOAK_S * RATE)
    evs = events("transaction", n, seed=81, n_accounts=20)  # windows fill (20 x 64 records) within seconds: later growth would be queueing
    values = [orjson.dumps(e) for e in evs]
    fetch = max(MAX_BATCH * 4, 256)  # records one getmany may add past the bound (DirectEngine._consume)

    async def main():
        await create(broker, topics)
        s = settings_for(broker, topics, transactions_bundle=str(tiny_tx_bundle), device="cpu", intra_op_threads=1, reload_watch_s=0,
                         max_batch=MAX_BATCH, inflight_batches=1, queue_events=QUEUE_EVENTS, max_wait_ms=5.0)
        worker = Worker(s)
        lane = worker.lanes["transaction"]
        slow = lane.scorer = SlowScorer(lane.scorer, DELAY_S)
        samples: list[tuple[float, int, int, int, int, int]] = []  # t, inflight, paused, batcher queue, rss, traced
        task = asyncio.create_task(worker.run())
        await wait_until(lambda: len(worker.assigned) == 4, 60, "the worker to join")
        tracemalloc.start()

        async def sample():
            t0 = time.monotonic()
            while True:
                samples.append((time.monotonic() - t0, worker.pipeline.inflight, int(worker.metrics.paused._value.get()), len(lane.batcher), rss_bytes(), tracemalloc.get_traced_memory()[0]))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        try:
            # nothing on the test's side grows meanwhile (no collector, no offsets kept): memory is the worker's
            t0 = time.monotonic()
            await produce(broker.bootstrap, topics["transactions"], values, rate=RATE, record=False)
            overload_s = time.monotonic() - t0
            scored_during = worker.stats.counts["scored"]
            sampler.cancel()
            tracemalloc.stop()
            slow.delay_s = 0.0  # the model recovers: the backlog drains (in bigger batches, to keep the test short)
            lane.batcher.max_batch = 256
            t1 = time.monotonic()
            await wait_until(lambda: worker.stats.counts["scored"] >= n, 60 + (n - scored_during) / 200, "the backlog to drain")
            drain_s = time.monotonic() - t1
            got = await read_until(broker, [topics["scores"]], lambda g: len(g[topics["scores"]]) >= n, 60)
            ids = Counter(r["event_id"] for r in got[topics["scores"]])
        finally:
            sampler.cancel()
            tracemalloc.stop()
            worker.stop()
            await task
        return samples, overload_s, scored_during, drain_s, ids

    samples, overload_s, scored_during, drain_s, ids = asyncio.run(main())
    assert set(ids) == {e["event_id"] for e in evs} and max(ids.values()) == 1

    inflight = [x[1] for x in samples]
    paused = [x[2] for x in samples]
    pauses = sum(1 for a, b in zip(paused, paused[1:]) if a == 0 and b == 1)
    assert max(inflight) <= QUEUE_EVENTS + fetch, f"in flight reached {max(inflight)} > queue_events {QUEUE_EVENTS} + one fetch {fetch}"
    assert max(x[3] for x in samples) <= QUEUE_EVENTS + fetch
    assert sum(paused) / len(paused) > 0.3 and pauses >= 1, f"fetching paused {sum(paused) / len(paused):.0%} of the time, {pauses} times"
    # the backlog is in the broker: arrivals outran the model by far more than the worker holds
    backlog = len(evs) - scored_during
    assert backlog > 2 * (QUEUE_EVENTS + fetch), f"the overload left a backlog of only {backlog}"

    # memory flat: after the first quarter (windows filled, fetches at full size) nothing may keep growing.
    # What legitimately still grows then is one fetch response as the broker's backlog passes
    # max_partition_fetch_bytes (1 MiB) per partition: raw and decoded, at most 2 x 4 partitions x 1 MiB.
    q = len(samples) // 4
    quarters = [samples[i * q : (i + 1) * q] for i in range(4)]
    rss = [statistics.median(x[4] for x in part) for part in quarters]
    heap = [statistics.median(x[5] for x in part) for part in quarters]
    mb = 1 << 20
    fetch_bound = 2 * 4 * mb
    print(
        f"\nbackpressure: {len(evs)} events at {RATE:.0f}/s for {overload_s:.0f}s against a model sustaining {MAX_BATCH / DELAY_S:.0f}/s; "
        f"in flight max {max(inflight)} (queue_events {QUEUE_EVENTS} + fetch {fetch}); fetching paused {sum(paused) / len(paused):.0%} of the time ({pauses} pauses seen); "
        f"backlog left in the broker {backlog}; RSS by quarter {' '.join(f'{x / mb:.0f}' for x in rss)} MiB (max {max(x[4] for x in samples) / mb:.0f}); "
        f"Python heap by quarter {' '.join(f'{x / mb:.1f}' for x in heap)} MiB (max {max(x[5] for x in samples) / mb:.1f}); drained in {drain_s:.1f}s, every event scored once"
    )
    assert rss[3] - rss[1] < 30 * mb, f"RSS grew {(rss[3] - rss[1]) / mb:.0f} MiB during the overload"
    assert heap[3] - heap[1] < fetch_bound + 2 * mb, f"Python allocations grew {(heap[3] - heap[1]) / mb:.1f} MiB during the overload"
