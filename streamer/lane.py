"""One lane per kind of event: intake -> micro-batcher -> scorer -> publisher.

A lane owns what serving one kind needs (its topic, bundle, scorer, windows and
batcher) and runs the batch loop: form a batch, score it in the thread pool while
the next one fills (up to ``inflight_batches`` at once), publish batches in the
order they were formed so each partition's outputs keep their order. Either
engine feeds the lane through ``Pipeline.accept``; nothing here knows Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from streamer.batcher import MicroBatcher
from streamer.broker import ensure_changelogs, ensure_topics
from streamer.bundle import DEFAULT_BUNDLES, Bundle, load_bundle
from streamer.intake import Intake, Item
from streamer.metrics import Metrics
from streamer.publisher import Publisher
from streamer.scorer import NoopScorer, make_scorer
from streamer.settings import Settings

log = logging.getLogger("streamer.lane")


@dataclass
class Lane:
    """Everything for one kind of event: topic, bundle, scorer, windows, batcher."""

    kind: str
    topic: str
    changelog: str
    intake: Intake
    scorer: Any
    batcher: MicroBatcher
    bundle_dir: str = ""
    sample: deque = field(default_factory=lambda: deque(maxlen=256))  # recent inputs, for shadow scoring on reload

    @property
    def bundle(self) -> Bundle:
        return self.intake.bundle

    def swap(self, bundle: Bundle, scorer: Any) -> None:
        """Serve a new, already-verified model; batches already scoring finish on the old one."""
        self.intake.rebind(bundle)
        self.scorer = scorer

    async def run(self, executor: Executor, inflight_batches: int, publisher: Publisher) -> None:
        """Form batches and keep up to ``inflight_batches`` of them scoring while the next one fills."""
        slots = asyncio.Semaphore(inflight_batches)
        loop = asyncio.get_running_loop()
        tail: asyncio.Task | None = None  # the previous batch's publication (keeps outputs in order)
        while True:
            batch = await self.batcher.next_batch()
            await slots.acquire()
            started = time.time()
            scorer = self.scorer
            inputs = [it.inputs for it in batch]
            self.sample.extend(inputs)
            fut = loop.run_in_executor(executor, scorer.score_batch, inputs)
            tail = asyncio.create_task(self._publish(scorer, batch, fut, started, tail, slots, publisher))

    async def _publish(self, scorer: Any, batch: list[Item], fut: asyncio.Future, started: float,
                       prev: asyncio.Task | None, slots: asyncio.Semaphore, publisher: Publisher) -> None:
        try:
            try:
                scored = await fut
            finally:
                slots.release()
            if prev is not None:
                await prev  # publish in consumption order
            await publisher.scored(self.kind, scorer.bundle or self.bundle, self.intake.encoding, batch, scored, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a batch that did not publish: the checkpoint must not commit past it
            if publisher.sink.error is None:
                log.error("%s batch of %d failed: %r", self.kind, len(batch), exc)
            publisher.sink.fail(exc)
            raise


def lanes_config(settings: Settings) -> dict[str, tuple[str, str]]:
    """kind -> (input topic, bundle dir) for the kinds this worker serves."""
    out = {}
    if settings.transactions_topic:
        out["transaction"] = (settings.transactions_topic, settings.transactions_bundle or str(DEFAULT_BUNDLES["transaction"]))
    if settings.sensors_topic:
        out["sensor"] = (settings.sensors_topic, settings.sensors_bundle or str(DEFAULT_BUNDLES["sensor"]))
    if not out:
        raise ValueError("no input topic configured: set --transactions-topic and/or --sensors-topic")
    return out


def build_lanes(settings: Settings, metrics: Metrics, noop_scorer: bool = False) -> dict[str, Lane]:
    """Load every configured bundle and its scorer (the expensive part of start-up, done once per process),
    and create the lanes' metric series."""
    s = settings
    lanes = {}
    for kind, (topic, bundle_dir) in lanes_config(s).items():
        bundle = load_bundle(bundle_dir)
        if bundle.kind != kind:
            raise ValueError(f"{bundle_dir} is a {bundle.kind} bundle, configured for {kind} events")
        scorer = NoopScorer(bundle) if noop_scorer else make_scorer(bundle, s.device, s.precision, s.intra_op_threads, s.trt_cache_dir)
        intake = Intake(bundle, s.window_events, s.window_age_s, s.max_message_bytes)
        lane = Lane(kind, topic, f"{s.group_id}-{kind}-windows", intake, scorer, MicroBatcher(s.max_batch, s.max_wait_ms / 1000.0), bundle_dir=bundle_dir)
        lane.sample = deque(maxlen=max(1, s.reload_shadow_events))
        lanes[kind] = lane
        choice = getattr(scorer, "choice", None)
        if choice and choice.fallback_reason:
            metrics.provider_fallback.labels(kind, choice.requested, choice.metric_labels()["reason"]).inc()
        metrics.model_info.labels(kind, bundle.model_id, scorer.provider, scorer.precision).set(1)
        log.info("%s: model %s on %s (%s), window %d events / %ds", kind, bundle.model_id, scorer.provider, scorer.precision, intake.max_events, intake.max_age_ms // 1000)
    metrics.init_series(lanes)
    return lanes


async def ensure_lane_topics(s: Settings, lanes: dict[str, Lane]) -> None:
    """Input and output topics, and each lane's changelog with its input's partition count (with ``create_topics``)."""
    if not s.create_topics:
        return
    outs = [s.scores_topic, s.alerts_topic, s.dead_letters_topic]
    await ensure_topics(s.brokers, [lane.topic for lane in lanes.values()] + outs, s.partitions, s.kafka_security(), replication=s.replication_factor)
    await ensure_changelogs(s.brokers, [(lane.topic, lane.changelog) for lane in lanes.values()], s.partitions, s.kafka_security(), s.replication_factor)
