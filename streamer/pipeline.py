"""The engine-independent core of one worker incarnation: what both drivers feed.

A driver (the direct aiokafka loop in ``streamer.direct``, or the Faust agents in
``streamer.faust_app``) consumes records and hands them to :meth:`Pipeline.accept`
in consumption order, one partition's records at a time. From there the core owns
everything: the intake (validate, window, encode; rejections become dead letters
at once), the lanes' batchers and scorers, the publisher, the offset bookkeeping,
backpressure (``inflight`` against ``queue_events``), window restore on
assignment, the revoke sequence, and the checkpoint. What the driver supplies is
a :class:`~streamer.sinks.Sink` for outputs and a
:class:`~streamer.checkpoint.Committer` for offsets.

A pipeline is built per incarnation: after a delivery failure the driver throws it
away with its Kafka clients and builds a new one, which resumes from the last
commit (the lanes, with their loaded models, outlive it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor
from typing import Any, Collection, Iterable

from streamer.batcher import MicroBatcher
from streamer.checkpoint import TP, Checkpoint, Committer, Offsets
from streamer.intake import Item
from streamer.lane import Lane
from streamer.metrics import Metrics
from streamer.publisher import Publisher
from streamer.settings import Settings
from streamer.sinks import DeliveryFailed, Sink
from streamer.state.restore import restore_windows
from streamer.stats import LiveStats

log = logging.getLogger("streamer.pipeline")

Record = tuple[int, bytes | None, bytes | None]  # (offset, value, key)


class Pipeline:
    """Intake -> lanes -> publisher, with the offsets, windows and checkpoint of one incarnation."""

    def __init__(self, lanes: dict[str, Lane], settings: Settings, metrics: Metrics, stats: LiveStats,
                 executor: Executor, sink: Sink, committer: Committer):
        s = self.s = settings
        self.lanes = lanes
        self.by_topic = {lane.topic: lane for lane in lanes.values()}
        self.metrics, self.stats, self.executor, self.sink = metrics, stats, executor, sink
        for lane in lanes.values():
            lane.intake.store = lane.intake.store.fresh(replays=True)  # keeps what uncommitted events saw (exact replays)
            lane.batcher = MicroBatcher(s.max_batch, s.max_wait_ms / 1000.0)
        self.offsets = Offsets()
        topics = {"scores": s.scores_topic, "alerts": s.alerts_topic, "dead_letters": s.dead_letters_topic}
        self.publisher = Publisher(sink, topics, metrics, stats, self._finish)
        self.checkpoint = Checkpoint(self.offsets, sink, committer, {lane.topic: (lane.changelog, lane.intake.store) for lane in lanes.values()})
        self.inflight = 0
        self._low_water = s.queue_events // 2
        self._space = asyncio.Event()
        self._space.set()
        self.assigned: set[TP] = set()
        self.last_progress = self.last_roundtrip = time.monotonic()

    # ---------------------------------------------------------------- running
    def start(self) -> list[asyncio.Task]:
        """The lanes' batch loops (they run until cancelled)."""
        return [asyncio.create_task(lane.run(self.executor, self.s.inflight_batches, self.publisher), name=f"batch-{lane.kind}")
                for lane in self.lanes.values()]

    async def accept(self, tp: TP, records: Iterable[Record], received: float | None = None) -> None:
        """Records of one partition, in consumption order: each becomes a batched item or a dead letter."""
        lane = self.by_topic[tp[0]]
        intake, batcher, partition = lane.intake, lane.batcher, tp[1]
        received = time.time() if received is None else received
        n = 0
        for offset, value, key in records:
            n += 1
            self.offsets.track(tp, offset)
            self.inflight += 1
            out = intake.accept(tp, partition, offset, value, received)
            if isinstance(out, Item):
                batcher.put_nowait(out)
            else:
                await self.publisher.rejected(lane.kind, out, key)
        self.metrics.events_in.labels(lane.kind).inc(n)
        self.stats.count("in", n)
        self.metrics.queue_depth.set(self.inflight)

    def _finish(self, tp: Any, offset: int) -> None:
        self.offsets.done(tp, offset)
        self.inflight -= 1
        self.last_progress = time.monotonic()
        if self.inflight <= self._low_water:
            self._space.set()

    @property
    def full(self) -> bool:
        """At ``queue_events`` in flight: the driver stops fetching until :meth:`wait_for_space` returns."""
        return self.inflight >= self.s.queue_events

    async def wait_for_space(self) -> None:
        """Until the events in flight fell to half of ``queue_events``."""
        self.metrics.paused.set(1)
        try:
            while self.inflight > self._low_water:
                self._space.clear()
                await self._space.wait()
        finally:
            self.metrics.paused.set(0)

    async def drain(self, timeout: float) -> bool:
        """Wait until every accepted event is published; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.inflight:
            log.warning("%d events still in flight after %.0fs; they will be replayed", self.inflight, timeout)
        return not self.inflight

    # ---------------------------------------------------------------- checkpoint
    async def commit(self, timeout: float) -> dict[TP, int]:
        """:meth:`Checkpoint.commit` within ``timeout``; DeliveryFailed when it failed or did not finish."""
        try:
            committed = await asyncio.wait_for(self.checkpoint.commit(self.assigned), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.metrics.commit_failures.inc()
            raise DeliveryFailed(f"checkpoint did not complete within {timeout:.0f}s (broker unreachable?)") from None
        except DeliveryFailed:
            self.metrics.commit_failures.inc()
            raise
        if committed:
            self.metrics.commits.inc()
        for lane in self.lanes.values():
            self.metrics.windows.labels(lane.kind).set(len(lane.intake.store))
        self.last_roundtrip = time.monotonic()
        return committed

    # ---------------------------------------------------------------- rebalances
    async def assign(self, assigned: Collection[TP], kafka_kwargs: dict[str, Any]) -> None:
        """Restore the windows of newly assigned partitions from their changelog; then they may be consumed."""
        for lane in self.lanes.values():
            parts = sorted(tp[1] for tp in assigned if tp[0] == lane.topic)
            if parts:
                n = await restore_windows(kafka_kwargs, lane.changelog, parts, lane.intake.store)
                self.metrics.restored.labels(lane.kind).inc(n)
                log.info("%s: restored %d windows for partitions %s", lane.kind, n, parts)
        self.assigned |= set(assigned)
        for tp in assigned:
            self.metrics.consumer_lag.labels(tp[0], str(tp[1])).set(0)

    async def revoke(self, revoked: Collection[TP]) -> None:
        """Finish what is in flight for ``revoked`` (bounded), checkpoint, and forget their windows."""
        deadline = time.monotonic() + self.s.shutdown_timeout_s
        while any(self.offsets.pending(tp) for tp in revoked) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await self.checkpoint.commit(self.assigned)
        self.forget(revoked)

    def forget(self, revoked: Collection[TP]) -> None:
        """Drop the windows, offsets and lag series of partitions this worker no longer owns."""
        for tp in revoked:
            lane = self.by_topic.get(tp[0])
            if lane:
                lane.intake.store.drop(tp[1])
            with contextlib.suppress(KeyError):  # no stale per-partition lag after a rebalance
                self.metrics.consumer_lag.remove(tp[0], str(tp[1]))
        self.offsets.forget(list(revoked))
        self.assigned -= set(revoked)


def health(pipeline: Pipeline | None, state: str, stall_s: float) -> tuple[bool, str]:
    """What /healthz answers for either engine: healthy while running, with a broker round trip and (when
    events wait) a publication within ``stall_s``; the reason otherwise (``pipeline`` None: not started)."""
    if pipeline is None or state != "running":
        return False, f"not consuming: {state}"
    now = time.monotonic()
    if now - pipeline.last_roundtrip > stall_s:
        return False, f"no broker round trip (commit) for {now - pipeline.last_roundtrip:.0f}s"
    if pipeline.inflight and now - pipeline.last_progress > stall_s:
        return False, f"{pipeline.inflight} events waiting, no batch published for {now - pipeline.last_progress:.0f}s"
    return True, "ok"
