"""The worker: Kafka in, windows, micro-batched model, scores/alerts/dead letters out.

Data flow (one asyncio loop, the model in a thread pool)::

    consumer.getmany ─▶ Intake (validate, window, encode) ─▶ MicroBatcher ─▶ Scorer (thread)
          │                      │ rejections                                   │
          │                      ▼                                              ▼
          │                 dead-letters                              scores + alerts
          ▼
    checkpoint every commit_interval_s: producer.flush() (all outputs acknowledged)
    ─▶ changed windows to the changelog ─▶ flush ─▶ commit the offsets whose outputs were sent

Delivery is at-least-once: an input offset is committed only after the broker
acknowledged every output that depends on it. After a crash the uncommitted tail
is replayed; its alerts carry the same ``alert_id`` and its windows are rebuilt
from the offsets recorded in them, so a replayed event sees the context it saw
the first time.

The worker drives aiokafka directly rather than through Faust agents: the hot
path has to be batch-shaped end to end, and Faust tables cannot be written from
``stream.take()`` batches (see docs/architecture.md for the measurements).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamer.batcher import MicroBatcher
from streamer.broker import ensure_topics
from streamer.bundle import DEFAULT_BUNDLES, Bundle, load_bundle
from streamer.checkpoint import Checkpoint
from streamer.intake import Intake, Item, Rejection
from streamer.metrics import Metrics
from streamer.records import alert_record, dead_letter, now_ms, score_record
from streamer.scorer import NoopScorer, Scored, make_scorer
from streamer.settings import Settings
from streamer.state import decode_state
from streamer.validation import reason_code

log = logging.getLogger("streamer.worker")


class DeliveryFailed(RuntimeError):
    """An output was not acknowledged: nothing after the last commit may be committed."""


@dataclass
class Lane:
    """Everything for one kind of event: topic, bundle, scorer, windows, batcher."""

    kind: str
    topic: str
    changelog: str
    intake: Intake
    scorer: Any
    batcher: MicroBatcher
    tail: asyncio.Task | None = None  # the previous batch's publication (keeps outputs in order)
    bundle_dir: str = ""
    sample: deque = field(default_factory=lambda: deque(maxlen=256))  # recent texts, for shadow scoring on reload
    tasks: set = field(default_factory=set)

    @property
    def bundle(self) -> Bundle:
        return self.intake.bundle


def load_lanes_config(settings: Settings) -> dict[str, tuple[str, str]]:
    """kind -> (input topic, bundle dir) for the kinds this worker serves."""
    out = {}
    if settings.transactions_topic:
        out["transaction"] = (settings.transactions_topic, settings.transactions_bundle or str(DEFAULT_BUNDLES["transaction"]))
    if settings.sensors_topic:
        out["sensor"] = (settings.sensors_topic, settings.sensors_bundle or str(DEFAULT_BUNDLES["sensor"]))
    if not out:
        raise ValueError("no input topic configured: set --transactions-topic and/or --sensors-topic")
    return out


class Worker:
    """A consumer-group member. ``await run()`` until ``stop()``; restarts its clients on broker errors."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None, noop_scorer: bool = False):
        self.s = settings
        self.metrics = metrics or Metrics()
        self.noop_scorer = noop_scorer
        self.lanes: dict[str, Lane] = {}
        self.by_topic: dict[str, Lane] = {}
        self._stop: asyncio.Event | None = None  # created inside the running loop
        self._executor = ThreadPoolExecutor(max_workers=max(1, settings.inflight_batches), thread_name_prefix="scorer")
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.checkpoint = Checkpoint()
        self._delivery_error: BaseException | None = None
        self._state = "starting"
        self._last_progress = time.monotonic()
        self._last_roundtrip = time.monotonic()
        self._inflight = 0
        self._space = None
        # Rebalance callbacks and the processing of a fetched batch exclude each other, and a batch
        # fetched before a rebalance is dropped (positions restart from the committed offsets):
        # aiokafka keeps fetching while on_partitions_assigned runs, and an event accepted before its
        # partition's windows are restored would be scored without its history.
        self._rebalance_lock = asyncio.Lock()
        self._generation = 0
        self._restore_error: BaseException | None = None
        self.assigned: set[TopicPartition] = set()
        self.counts = {"in": 0, "scored": 0, "rejected": 0, "alerts": 0}
        self.recent_alerts: list[dict] = []  # for the demo's live view
        self.recent_latency_ms: deque[float] = deque(maxlen=4096)
        self.recent_batches: deque[int] = deque(maxlen=256)
        self._build_lanes()

    # ---------------------------------------------------------------- set-up
    def _build_lanes(self) -> None:
        for kind, (topic, bundle_dir) in load_lanes_config(self.s).items():
            bundle = load_bundle(bundle_dir)
            if bundle.kind != kind:
                raise ValueError(f"{bundle_dir} is a {bundle.kind} bundle, configured for {kind} events")
            scorer = NoopScorer(bundle) if self.noop_scorer else make_scorer(bundle, self.s.device, self.s.precision, self.s.intra_op_threads, self.s.trt_cache_dir)
            intake = Intake(bundle, self.s.window_events, self.s.window_age_s, self.s.max_message_bytes)
            lane = Lane(kind, topic, f"{self.s.group_id}-{kind}-windows", intake, scorer, MicroBatcher(self.s.max_batch, self.s.max_wait_ms / 1000.0), bundle_dir=bundle_dir)
            lane.sample = deque(maxlen=max(1, self.s.reload_shadow_events))
            self.lanes[kind] = lane
            self.by_topic[topic] = lane
            if getattr(scorer, "choice", None) and scorer.choice.fallback_reason:
                self.metrics.provider_fallback.labels(kind, scorer.choice.requested, scorer.choice.metric_labels()["reason"]).inc()
            self.metrics.model_info.labels(kind, bundle.model_id, scorer.provider, scorer.precision).set(1)
            log.info("%s: model %s on %s (%s), window %d events / %ds", kind, bundle.model_id, scorer.provider, scorer.precision, intake.max_events, intake.max_age_ms // 1000)

    # ---------------------------------------------------------------- health
    def health(self) -> tuple[bool, str]:
        """Healthy while the worker can consume and score; the reason otherwise (for /healthz)."""
        now = time.monotonic()
        if self._state != "running":
            return False, f"not consuming: {self._state}"
        if now - self._last_roundtrip > self.s.health_stall_s:
            return False, f"no broker round trip (commit) for {now - self._last_roundtrip:.0f}s"
        if self._inflight and now - self._last_progress > self.s.health_stall_s:
            return False, f"{self._inflight} events waiting, no batch published for {now - self._last_progress:.0f}s"
        return True, "ok"

    def _set_health(self) -> None:
        self.metrics.healthy.set(1 if self.health()[0] else 0)

    # ---------------------------------------------------------------- run
    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Run until ``stop()``; on broker trouble, back off, reconnect and resume from the last commit."""
        from streamer import reload

        self._stop = asyncio.Event()
        watcher = asyncio.create_task(reload.watch(self, self.s.reload_watch_s)) if self.s.reload_watch_s > 0 else None
        backoff = 1.0
        try:
            while not self._stop.is_set():
                try:
                    await self._run_guarded()
                    backoff = 1.0
                except (KafkaError, DeliveryFailed, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                    self.metrics.reconnects.inc()
                    self._state = f"reconnecting after {type(exc).__name__}: {exc}"[:200]
                    self._set_health()
                    log.warning("pipeline restarting in %.0fs: %s", backoff, self._state)
                    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), backoff)
                    backoff = min(backoff * 2, 15.0)
        except BaseException as exc:
            # /healthz must not keep reporting the last running pipeline of a worker that has ended
            self._state = f"ended by {type(exc).__name__}: {exc}"[:200]
            self._set_health()
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            self._executor.shutdown(wait=False)
        self._state = "stopped"

    async def _run_guarded(self) -> None:
        """``_run_once`` under a watchdog: a pipeline that has made no broker round trip for a long time
        (a client stuck after a broker freeze, a flush that never returns) is torn down and restarted
        instead of staying unhealthy forever."""
        inner = asyncio.create_task(self._run_once())
        limit = max(3 * self.s.health_stall_s, 30.0)
        while not inner.done():
            await asyncio.wait([inner], timeout=1.0)
            if not inner.done() and self._state == "running" and time.monotonic() - self._last_roundtrip > limit:
                inner.cancel()
                await asyncio.wait([inner], timeout=30.0)  # its finally stops the clients (bounded)
                raise DeliveryFailed(f"no broker round trip for {limit:.0f}s; restarting the Kafka clients")
        if inner.cancelled():
            # Nothing here cancelled it: the watchdog raised above, and a cancellation of this task
            # raises out of the wait. A client library let a cancellation of its own escape.
            raise DeliveryFailed("the pipeline ended cancelled although nothing cancelled it; restarting the Kafka clients")
        inner.result()

    def _kafka_kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.s.brokers, "client_id": self.s.client_id, **self.s.kafka_security()}

    async def _run_once(self) -> None:
        s = self.s
        if s.create_topics:
            inputs = [lane.topic for lane in self.lanes.values()]
            outs = [s.scores_topic, s.alerts_topic, s.dead_letters_topic]
            await ensure_topics(s.brokers, inputs + outs, s.partitions, s.kafka_security(), replication=s.replication_factor)
            await self._ensure_changelogs()
        self.checkpoint = Checkpoint()
        self._delivery_error = None
        self._inflight = 0
        self._space = asyncio.Event()
        self._space.set()
        self._rebalance_lock = asyncio.Lock()
        self._restore_error = None
        for lane in self.lanes.values():
            lane.intake.store = lane.intake.store.fresh(replays=True)  # keeps what uncommitted events saw (exact replays)
            lane.batcher = MicroBatcher(s.max_batch, s.max_wait_ms / 1000.0)
            lane.tail = None
        self.producer = AIOKafkaProducer(
            **self._kafka_kwargs(), acks="all", linger_ms=2, max_batch_size=256 * 1024, max_request_size=2 * 1024 * 1024,
            request_timeout_ms=s.request_timeout_ms, enable_idempotence=False,
        )
        self.consumer = AIOKafkaConsumer(
            **self._kafka_kwargs(), group_id=s.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=min(1000, s.session_timeout_ms // 3), max_poll_interval_ms=300000,
            max_partition_fetch_bytes=1 << 20, request_timeout_ms=s.request_timeout_ms, fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        await self.producer.start()
        try:
            await self.consumer.start()
            self.consumer.subscribe(topics=list(self.by_topic), listener=_Rebalance(self))
            self._state = "running"
            self._last_roundtrip = self._last_progress = time.monotonic()
            tasks = [asyncio.create_task(self._consume(), name="consume"), asyncio.create_task(self._checkpoints(), name="checkpoint")]
            tasks += [asyncio.create_task(self._batches(lane), name=f"batch-{lane.kind}") for lane in self.lanes.values()]
            stop_wait = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait(tasks + [stop_wait], return_when=asyncio.FIRST_COMPLETED)
            failure = next((t.exception() for t in done if t is not stop_wait and not t.cancelled() and t.exception()), None)
            if failure is None:
                await self._drain_and_commit(tasks)
            for t in tasks + [stop_wait]:
                t.cancel()
            await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
            if failure is not None:
                raise failure
        finally:
            self._state = "stopping" if self._stop.is_set() else self._state
            await stop_client(self.consumer, 10)
            await stop_client(self.producer, 10)
            self._set_health()

    async def _ensure_changelogs(self) -> None:
        """Changelog topics with as many partitions as their input topic (window partition = event partition)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.s.brokers, **self.s.kafka_security())
        await admin.start()
        try:
            for lane in self.lanes.values():
                desc = await admin.describe_topics([lane.topic])
                n = len(desc[0]["partitions"]) if desc and desc[0].get("partitions") else self.s.partitions
                # grown when the input grew: a window's changelog partition is its event's partition
                await ensure_topics(self.s.brokers, [lane.changelog], n, self.s.kafka_security(), compact=[lane.changelog], replication=self.s.replication_factor, grow=[lane.changelog])
        finally:
            await admin.close()

    async def _drain_and_commit(self, tasks: list[asyncio.Task]) -> None:
        """Graceful stop: no new fetches, finish in-flight batches, publish, commit."""
        self._state = "draining"
        consume = next(t for t in tasks if t.get_name() == "consume")
        consume.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consume
        deadline = time.monotonic() + self.s.shutdown_timeout_s
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._inflight:
            log.warning("shutdown: %d events still in flight after %.0fs; they will be replayed", self._inflight, self.s.shutdown_timeout_s)
        await self._checkpoint(timeout=max(1.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------- intake
    async def _consume(self) -> None:
        consumer, s = self.consumer, self.s
        low_water = s.queue_events // 2
        while True:
            if self._inflight >= s.queue_events:
                parts = list(consumer.assignment())
                consumer.pause(*parts)
                self.metrics.paused.set(1)
                self._space.clear()
                while self._inflight > low_water:
                    await self._space.wait()
                    self._space.clear()
                consumer.resume(*parts)
                self.metrics.paused.set(0)
            if self._restore_error is not None:  # never score without the windows: restart and restore again
                raise DeliveryFailed(f"window restore failed: {self._restore_error!r}"[:200])
            generation = self._generation
            batches = await consumer.getmany(timeout_ms=100, max_records=max(s.max_batch * 4, 256))
            if not batches:
                self._set_health()
                continue
            async with self._rebalance_lock:
                if self._restore_error is not None:
                    raise DeliveryFailed(f"window restore failed: {self._restore_error!r}"[:200])
                if generation != self._generation:
                    # Fetched across a rebalance: the consumer's position already moved past these
                    # records, so rewind to the committed offset or they would never be seen again.
                    for tp in batches:
                        if tp in self.assigned:
                            committed = await consumer.committed(tp)
                            consumer.seek(tp, committed if committed is not None else batches[tp][0].offset)
                    continue
                received = time.time()
                for tp, msgs in batches.items():
                    lane = self.by_topic[tp.topic]
                    intake, batcher, m = lane.intake, lane.batcher, self.metrics
                    m.events_in.labels(lane.kind).inc(len(msgs))
                    self.counts["in"] += len(msgs)
                    for msg in msgs:
                        self.checkpoint.track(tp, msg.offset)
                        self._inflight += 1
                        out = intake.accept(tp, tp.partition, msg.offset, msg.value, received)
                        if isinstance(out, Item):
                            batcher.put_nowait(out)
                        else:
                            await self._reject(lane, out, msg.key)
            self.metrics.queue_depth.set(self._inflight)

    async def _reject(self, lane: Lane, rej: Rejection, key: bytes | None) -> None:
        rec = dead_letter(rej.tp.topic, rej.tp.partition, rej.offset, rej.error, rej.raw)
        fut = await self.producer.send(self.s.dead_letters_topic, orjson.dumps(rec), key=key)
        fut.add_done_callback(self._on_delivery)
        self.metrics.events_rejected.labels(lane.kind, reason_code(rej.error)).inc()
        self.counts["rejected"] += 1
        self._finish(rej.tp, rej.offset)

    def _finish(self, tp: Any, offset: int) -> None:
        self.checkpoint.done(tp, offset)
        self._inflight -= 1
        self._last_progress = time.monotonic()
        if self._inflight <= self.s.queue_events // 2:
            self._space.set()

    def _on_delivery(self, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None and self._delivery_error is None:
            self._delivery_error = fut.exception()

    # ---------------------------------------------------------------- model
    async def _batches(self, lane: Lane) -> None:
        """Form batches and keep up to ``inflight_batches`` of them scoring while the next one fills."""
        slots = asyncio.Semaphore(self.s.inflight_batches)
        loop = asyncio.get_running_loop()
        while True:
            batch = await lane.batcher.next_batch()
            await slots.acquire()
            started = time.time()
            scorer = lane.scorer
            inputs = [it.inputs for it in batch]
            lane.sample.extend(inputs)
            fut = loop.run_in_executor(self._executor, scorer.score_batch, inputs)
            lane.tail = asyncio.create_task(self._publish(lane, scorer, batch, fut, started, lane.tail, slots))

    async def _publish(self, lane: Lane, scorer: Any, batch: list[Item], fut: asyncio.Future, started: float, prev: asyncio.Task | None, slots: asyncio.Semaphore) -> None:
        try:
            try:
                scored = await fut
            finally:
                slots.release()
            if prev is not None:
                await prev  # publish in consumption order
            await self._publish_scores(lane, scorer, batch, scored, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - surfaces at the next checkpoint, which restarts the pipeline
            if self._delivery_error is None:
                log.error("%s batch of %d failed: %r", lane.kind, len(batch), exc)
                self._delivery_error = exc
            raise

    async def _publish_scores(self, lane: Lane, scorer: Any, batch: list[Item], scored: Scored, started: float) -> None:
        m, kind, bundle = self.metrics, lane.kind, scorer.bundle or lane.bundle
        secs, details = scored.seconds, scored.details or itertools.repeat(None)
        m.batch_size.labels(kind).observe(len(batch))
        self.recent_batches.append(len(batch))
        m.inference.labels(kind).observe(secs)
        m.model_busy.labels(kind, scorer.provider).inc(secs)
        model = bundle.model_id
        threshold = bundle.alert_threshold
        send = self.producer.send
        scores_topic, alerts_topic = self.s.scores_topic, self.s.alerts_topic
        e2e = m.end_to_end.labels(kind)
        qwait = m.queue_wait.labels(kind)
        for item, score, detail in zip(batch, scored.scores.tolist(), details):
            qwait.observe(max(0.0, started - item.received))
            scored_at = now_ms()
            latency = scored_at - item.received * 1000.0
            key = item.entity.encode()
            rec = score_record(item.event, kind, score, model, scored_at, latency)
            (await send(scores_topic, orjson.dumps(rec), key=key)).add_done_callback(self._on_delivery)
            severity = bundle.severity(score)
            if severity is not None:
                alert = alert_record(item.event, kind, score, severity, threshold, lane.intake.encoding.reasons(item.feats, detail), model, scored_at)
                (await send(alerts_topic, orjson.dumps(alert), key=key)).add_done_callback(self._on_delivery)
                m.alerts.labels(kind, severity).inc()
                self.counts["alerts"] += 1
                self.recent_alerts.append(alert)
                if len(self.recent_alerts) > 50:
                    del self.recent_alerts[:25]
            e2e.observe(latency / 1000.0)
            self.recent_latency_ms.append(latency)
            self._finish(item.tp, item.offset)
        m.events_scored.labels(kind).inc(len(batch))
        self.counts["scored"] += len(batch)

    # ---------------------------------------------------------------- checkpoints
    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.s.commit_interval_s)
            await self._checkpoint(timeout=max(10.0, self.s.health_stall_s))
            self._update_lag()
            self._set_health()

    async def _checkpoint(self, timeout: float) -> None:
        """Outputs acknowledged -> windows saved -> offsets committed, in that order."""
        try:
            await asyncio.wait_for(self._checkpoint_once(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.metrics.commit_failures.inc()
            raise DeliveryFailed(f"checkpoint did not complete within {timeout:.0f}s (broker unreachable?)") from None

    async def _checkpoint_once(self) -> None:
        member = membership(self.consumer)  # before the offsets: a re-join while flushing voids them
        offsets = self.checkpoint.committable()
        producer = self.producer
        for lane in self.lanes.values():
            for partition, key, value in lane.intake.store.take_dirty():
                fut = await producer.send(lane.changelog, value, key=key, partition=partition)
                fut.add_done_callback(self._on_delivery)
            self.metrics.windows.labels(lane.kind).set(len(lane.intake.store))
        await producer.flush()
        if self._delivery_error is not None:
            self.metrics.commit_failures.inc()
            raise DeliveryFailed(f"an output was not acknowledged: {self._delivery_error!r}")
        offsets = {tp: o for tp, o in offsets.items() if tp in self.assigned}
        if offsets and not await commit_in_generation(self.consumer, offsets, member):
            offsets = {}  # retried at the next checkpoint, or forgotten at the revoke that follows
        if offsets:
            self.checkpoint.committed(offsets)
            for tp, o in offsets.items():
                self.by_topic[tp.topic].intake.store.advance(tp.partition, o)  # below o nothing is replayed
            self.metrics.commits.inc()
        else:
            # a cheap round trip proves the coordinator is reachable (feeds /healthz)
            await self.consumer._client.fetch_all_metadata()  # noqa: SLF001
        self._last_roundtrip = time.monotonic()

    def _update_lag(self) -> None:
        for tp in list(self.assigned):
            with contextlib.suppress(Exception):
                hw = self.consumer.highwater(tp)
                if hw is not None:
                    pos = self.consumer._subscription.subscription.assignment.state_value(tp)  # noqa: SLF001
                    position = pos.position if pos is not None and pos.has_valid_position else hw
                    self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - position))

    # ---------------------------------------------------------------- rebalances
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        if self._state != "running" or not revoked:
            return
        async with self._rebalance_lock:
            await self._revoke(revoked)

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        deadline = time.monotonic() + self.s.shutdown_timeout_s
        while any(self.checkpoint.pending(tp) for tp in revoked) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await self._checkpoint_once()
        for tp in revoked:
            lane = self.by_topic.get(tp.topic)
            if lane:
                lane.intake.store.drop(tp.partition)
        self.checkpoint.forget(list(revoked))
        self.assigned -= set(revoked)
        for tp in revoked:  # no stale per-partition lag after a rebalance
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        async with self._rebalance_lock:  # nothing is accepted until the windows are restored
            await self._assign(assigned)

    async def _assign(self, assigned: set[TopicPartition]) -> None:
        self.assigned |= set(assigned)
        for lane in self.lanes.values():
            parts = sorted(tp.partition for tp in assigned if tp.topic == lane.topic)
            if parts:
                try:
                    n = await restore_windows(self._kafka_kwargs(), lane.changelog, parts, lane.intake.store)
                except Exception as exc:  # noqa: BLE001 - aiokafka would log it and let us consume without windows
                    log.error("%s: restoring windows of partitions %s from %s failed: %r", lane.kind, parts, lane.changelog, exc)
                    self._restore_error = exc
                    return
                self.metrics.restored.labels(lane.kind).inc(n)
                log.info("%s: restored %d windows for partitions %s", lane.kind, n, parts)

    # ---------------------------------------------------------------- hot reload
    def swap_bundle(self, kind: str, bundle: Bundle, scorer: Any) -> None:
        """Switch a lane to a new, already-verified model; in-flight batches finish on the old one."""
        lane = self.lanes[kind]
        old_bundle, old_scorer = lane.bundle, lane.scorer
        lane.intake.rebind(bundle)
        lane.scorer = scorer
        with contextlib.suppress(KeyError):
            self.metrics.model_info.remove(kind, old_bundle.model_id, old_scorer.provider, old_scorer.precision)
        self.metrics.model_info.labels(kind, bundle.model_id, scorer.provider, scorer.precision).set(1)
        log.info("%s: now serving %s (was %s)", kind, bundle.model_id, old_bundle.model_id)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked):  # noqa: ANN001 - aiokafka API
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):  # noqa: ANN001 - aiokafka API
        await self.worker.on_assigned(set(assigned))


async def restore_windows(kafka_kwargs: dict[str, Any], topic: str, partitions: list[int], store: Any, idle_s: float = 5.0) -> int:
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


async def stop_client(client: Any, timeout: float) -> None:
    """Stop an aiokafka consumer or producer within ``timeout``; never raises unless this task is being cancelled.

    Why: stopping a client is cleanup on the way to a restart, and a failure there must not
    end the worker. aiokafka's fetcher ``close()`` cancels its pending fetch tasks and awaits
    them without catching the cancellation (aio-libs/aiokafka#647), so a consumer stopped while
    a fetch sits in its retry back-off (after a request timed out on a frozen broker) raises
    ``CancelledError`` into the caller although nobody cancelled the caller. Propagated, that
    ended ``Worker.run`` as if it had been cancelled: no restart, /healthz at 503 for good.
    The close is left half done then, so the client's connections are closed here.
    """
    name = type(client).__name__
    try:
        await asyncio.wait_for(client.stop(), timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # a real cancellation of this task
        log.warning("%s.stop() raised a stray CancelledError (a pending fetch was cancelled); closing its connections", name)
        inner = getattr(client, "_client", None)
        if inner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(inner.close(), timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup: the restart that follows reconnects anyway
        log.warning("%s did not stop cleanly: %r", name, exc)


def membership(consumer: AIOKafkaConsumer) -> tuple[int, str] | None:
    """(generation, member id) of the consumer in its group now; None without a group coordinator."""
    coord = getattr(consumer, "_coordinator", None)
    return None if coord is None else (coord.generation, coord.member_id)


async def commit_in_generation(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                               member: tuple[int, str] | None = None) -> bool:
    """Commit ``offsets`` once, as the group member that read them; False (nothing sent) otherwise.

    ``consumer.commit()`` retries a failed request after finding the coordinator again, and the
    retry goes out with whatever membership the consumer holds by then: -1 mid re-join (a
    standalone commit, which brokers accept into a group they no longer know) or the new
    group's. After a broker restart with its data gone, that wrote the old log's offsets into
    the new, empty group; the re-joined consumer started at them and skipped every new record
    below (reproduced with the embedded broker). Here the membership the offsets were read
    under (``member``, from :func:`membership`; default: the current one) must still hold when
    the one request is built, and a retriable failure returns False: the next checkpoint commits.
    """
    from aiokafka import errors as kerr
    from aiokafka.structs import OffsetAndMetadata

    coord = consumer._coordinator  # noqa: SLF001 - aiokafka has no public "commit only as this member"
    if coord is None:
        return False
    member = membership(consumer) if member is None else member
    await coord.ensure_coordinator_known()
    async with coord._commit_lock:  # noqa: SLF001 - the lock aiokafka's own commits take
        subscription = consumer._subscription.subscription  # noqa: SLF001
        assignment = subscription.assignment if subscription is not None else None
        if (assignment is None or member is None or member[0] < 0 or membership(consumer) != member
                or any(tp not in assignment.tps for tp in offsets)):
            return False
        try:  # the request is built from the membership checked above, before its first await
            await coord._do_commit_offsets(assignment, {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})  # noqa: SLF001
        except (kerr.UnknownMemberIdError, kerr.IllegalGenerationError, kerr.RebalanceInProgressError) as exc:
            log.info("commit skipped, the group is rebalancing: %r", exc)
            return False
        except kerr.KafkaError as exc:
            if not exc.retriable:
                raise
            log.info("commit deferred to the next checkpoint: %r", exc)
            return False
    return True


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM and SIGINT drain and commit, then exit; SIGHUP reloads the bundles."""
    from streamer.reload import install_sighup

    install_sighup(worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stop)
