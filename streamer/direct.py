"""The direct engine: an aiokafka consumer loop feeding the pipeline, for the highest rates.

One incarnation (:meth:`DirectEngine.run_once`) builds the Kafka clients and a
:class:`~streamer.pipeline.Pipeline`, consumes with ``getmany`` into it, runs the
checkpoint every ``commit_interval_s``, and on a graceful stop drains and commits.
Anything that breaks delivery ends the incarnation with an exception; the
supervisor (``streamer.worker``) backs off and starts a new one, which resumes
from the last commit.

Rebalances: the rebalance callbacks and the processing of a fetched batch exclude
each other, and a batch fetched before a rebalance is dropped (the positions are
rewound to the committed offsets): aiokafka keeps fetching while
``on_partitions_assigned`` runs, and an event accepted before its partition's
windows are restored would be scored without its history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor
from typing import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from streamer.kafka_adapter import AiokafkaCommitter, client_kwargs, new_consumer, new_producer, position, stop_client
from streamer.lane import Lane, ensure_lane_topics
from streamer.metrics import Metrics
from streamer.pipeline import Pipeline
from streamer.settings import Settings
from streamer.sinks import DeliveryFailed, Sink
from streamer.stats import LiveStats

log = logging.getLogger("streamer.direct")


class DirectEngine:
    """Drives the pipeline from one aiokafka consumer and producer per incarnation."""

    name = "direct"

    def __init__(self, settings: Settings, lanes: dict[str, Lane], metrics: Metrics, stats: LiveStats, executor: Executor):
        self.s, self.lanes, self.metrics, self.stats, self.executor = settings, lanes, metrics, stats, executor
        self.pipeline: Pipeline | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.running = False
        self._rebalance_lock = asyncio.Lock()
        self._generation = 0
        self._restore_error: BaseException | None = None

    async def run_once(self, stop: asyncio.Event, on_state: Callable[[str], None]) -> None:
        """One incarnation: until ``stop`` is set (drain, commit, return) or delivery breaks (raise)."""
        s = self.s
        await ensure_lane_topics(s, self.lanes)
        self._rebalance_lock = asyncio.Lock()
        self._restore_error = None
        self.producer, self.consumer = new_producer(s), new_consumer(s)
        await self.producer.start()
        try:
            sink = Sink(self.producer.send, self.producer.flush)
            pipeline = self.pipeline = Pipeline(self.lanes, s, self.metrics, self.stats, self.executor, sink, AiokafkaCommitter(self.consumer))
            await self.consumer.start()
            self.consumer.subscribe(topics=list(pipeline.by_topic), listener=_Rebalance(self))
            self.running = True
            on_state("running")
            tasks = [asyncio.create_task(self._consume(pipeline), name="consume"), asyncio.create_task(self._checkpoints(pipeline, on_state), name="checkpoint")]
            tasks += pipeline.start()
            stop_wait = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(tasks + [stop_wait], return_when=asyncio.FIRST_COMPLETED)
            failure = next((t.exception() for t in done if t is not stop_wait and not t.cancelled() and t.exception()), None)
            if failure is None:
                on_state("draining")
                await self._drain_and_commit(pipeline, tasks)
            for t in tasks + [stop_wait]:
                t.cancel()
            await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
            if failure is not None:
                raise failure
        finally:
            self.running = False
            await stop_client(self.consumer, 10)
            await stop_client(self.producer, 10)

    async def _drain_and_commit(self, pipeline: Pipeline, tasks: list[asyncio.Task]) -> None:
        """Graceful stop: no new fetches, finish in-flight batches, publish, commit."""
        consume = next(t for t in tasks if t.get_name() == "consume")
        consume.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consume
        deadline = time.monotonic() + self.s.shutdown_timeout_s
        await pipeline.drain(self.s.shutdown_timeout_s)
        await pipeline.commit(timeout=max(1.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------- intake
    async def _consume(self, pipeline: Pipeline) -> None:
        consumer, s = self.consumer, self.s
        while True:
            if pipeline.full:
                parts = list(consumer.assignment())
                consumer.pause(*parts)
                await pipeline.wait_for_space()
                consumer.resume(*parts)
            if self._restore_error is not None:  # never score without the windows: restart and restore again
                raise DeliveryFailed(f"window restore failed: {self._restore_error!r}"[:200])
            generation = self._generation
            batches = await consumer.getmany(timeout_ms=100, max_records=max(s.max_batch * 4, 256))
            if not batches:
                continue
            async with self._rebalance_lock:
                if self._restore_error is not None:
                    raise DeliveryFailed(f"window restore failed: {self._restore_error!r}"[:200])
                if generation != self._generation:
                    # Fetched across a rebalance: the consumer's position already moved past these
                    # records, so rewind to the committed offset or they would never be seen again.
                    for tp in batches:
                        if tp in pipeline.assigned:
                            committed = await consumer.committed(tp)
                            consumer.seek(tp, committed if committed is not None else batches[tp][0].offset)
                    continue
                received = time.time()
                for tp, msgs in batches.items():
                    await pipeline.accept(tp, ((m.offset, m.value, m.key) for m in msgs), received)

    # ---------------------------------------------------------------- checkpoints
    async def _checkpoints(self, pipeline: Pipeline, on_state: Callable[[str], None]) -> None:
        while True:
            await asyncio.sleep(self.s.commit_interval_s)
            await pipeline.commit(timeout=max(10.0, self.s.health_stall_s))
            self._update_lag(pipeline)
            on_state("running")

    def _update_lag(self, pipeline: Pipeline) -> None:
        for tp in list(pipeline.assigned):
            with contextlib.suppress(Exception):
                hw = self.consumer.highwater(tp)
                if hw is not None:
                    pos = position(self.consumer, tp)
                    self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - (hw if pos is None else pos)))

    # ---------------------------------------------------------------- rebalances
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        if not self.running or not revoked or self.pipeline is None:
            return
        async with self._rebalance_lock:
            await self.pipeline.revoke(revoked)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        async with self._rebalance_lock:  # nothing is accepted until the windows are restored
            try:
                await self.pipeline.assign(assigned, client_kwargs(self.s))
            except Exception as exc:  # noqa: BLE001 - aiokafka would log it and let us consume without windows
                log.error("restoring the windows of %s failed: %r", sorted(assigned), exc)
                self._restore_error = exc


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, engine: DirectEngine):
        self.engine = engine

    async def on_partitions_revoked(self, revoked):  # noqa: ANN001 - aiokafka API
        await self.engine.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):  # noqa: ANN001 - aiokafka API
        await self.engine.on_assigned(set(assigned))

