"""The Faust engine: the detector as a Faust app, one agent per input topic, feeding the same pipeline.

Run it either way, with the same ``STREAMER_*`` settings (docs/configuration.md)::

    streamer worker --engine faust            # supervised: restarted after a crash, like the direct engine
    faust -A streamer.faust_app worker -l info

and add agents of your own to the app (docs/architecture.md, "Your own agents").

How it keeps the hot path batch-shaped and the delivery guarantee:

- Each agent takes events with ``stream.noack_take(4 x max_batch, max_wait)``: a list
  of events that keep their partition and offset, never acknowledged by Faust. The
  agent only hands them to :class:`~streamer.pipeline.Pipeline` (validate, window,
  encode; rejections become dead letters); batching for the model, scoring and
  publishing happen in the pipeline's own tasks, exactly as in the direct engine.
- Outputs go through Faust's producer, and the checkpoint (every
  ``commit_interval_s``) awaits every output's delivery future, writes the changed
  windows to their changelog partition, and only then acknowledges the events, in
  consumption order, and asks Faust to commit. Faust's own flush before a commit
  does not raise on a failed delivery; the sink does. A failed batch or checkpoint
  crashes the app (nothing after the last commit is acknowledged); the supervisor
  starts a new one, which resumes from the last commit.
- Windows are the project's own changelog (``<group>-<kind>-windows``, written to the
  partition number of their events), restored in the ``on_partitions_assigned``
  signal. An agent holds an event of a partition until that partition's windows
  are restored, and drops (unacknowledged) events of partitions it no longer owns.
  Faust tables are not used: they cannot be written from a batch (no current
  event), and their changelog partition comes from the producer's partitioner, not
  from the event's partition (docs/architecture.md says more).
- Concurrency 1 per agent, and acknowledgements strictly in consumption order:
  with out-of-order acks Faust can commit past an unacknowledged offset
  (faust-streaming issue 606).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

import faust

from streamer.faust_adapter import QuietMonitor, deliver_eagerly, resume_promptly, use_fetch_max_wait
from streamer.fetch_watch import FetchWatch
from streamer.kafka_adapter import MetadataProbe, client_kwargs, quiet_client_logs
from streamer.lane import build_lanes, ensure_lane_topics
from streamer.metrics import Metrics, MetricsServer
from streamer.pipeline import Pipeline, health
from streamer.settings import ENV_PREFIX, Settings
from streamer.sinks import DeliveryFailed, Sink
from streamer.stats import LiveStats

log = logging.getLogger("streamer.faust")

NOOP_SCORER_ENV = "STREAMER_NOOP_SCORER"  # benchmarks only: the host side without the model
USAGE_ERROR = 2  # the Faust command line refused its arguments: restarting would not help
CRASHED = 1  # the exit status of a child that crashed, or whose shutdown overran its deadline
SHUTDOWN_MARGIN_S = 15.0  # beyond the checkpoint's own bound: Faust's stop of its consumer and producer


def exit_by(deadline_s: float, reason: str, status: int = CRASHED) -> threading.Timer:
    """End the process with ``status`` if it is still alive after ``deadline_s``.

    Why: Faust's stop awaits the Kafka clients, and a client talking to a broker that has
    just come back (or never answers) can keep that stop waiting without end; the process
    then serves 503 forever and the supervisor never restarts it. Nothing after the last
    commit was acknowledged, so ending the process loses nothing: its successor reads those
    events again. A timer thread, because the event loop is what may be stuck.
    """

    def _end() -> None:
        log.error("faust engine: %s did not finish within %.0fs; exiting with status %d", reason, deadline_s, status)
        logging.shutdown()
        os._exit(status)

    timer = threading.Timer(deadline_s, _end)
    timer.daemon = True
    timer.start()
    return timer


class FaustCommitter:
    """The checkpoint's last step in the Faust engine: acknowledge the events below the offsets, then commit."""

    def __init__(self, app: faust.App, unacked: dict[Any, deque], probe: MetadataProbe):
        self.app, self.unacked, self.probe = app, unacked, probe

    def snapshot(self) -> None:
        return None

    async def commit(self, offsets: dict[Any, int], snapshot: None) -> bool:
        for tp, next_offset in offsets.items():
            q = self.unacked.get(tp)
            while q and q[0][0] < next_offset:
                q.popleft()[1].ack()  # in consumption order: Faust commits the contiguous acked prefix
        return bool(await self.app.consumer.commit())

    async def round_trip(self) -> None:
        await self.probe.round_trip()


class FaustEngine:
    """The pipeline, fed by Faust agents, with restore on assignment and the checkpoint as an app task."""

    name = "faust"

    def __init__(self, settings: Settings, noop_scorer: bool = False):
        s = self.s = settings
        self.metrics = Metrics()
        self.stats = LiveStats()
        self.lanes = build_lanes(s, self.metrics, noop_scorer)
        self.executor = ThreadPoolExecutor(max_workers=max(1, s.inflight_batches), thread_name_prefix="scorer")
        self.unacked: dict[Any, deque] = {}  # tp -> deque[(offset, event)], in consumption order
        self.restoring: dict[Any, asyncio.Future] = {}
        self.pipeline: Pipeline | None = None
        self.started = asyncio.Event()
        self.state = "starting"
        self._assignment_changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._server: MetricsServer | None = None
        self._probe: MetadataProbe | None = None
        self._deadline: threading.Timer | None = None
        self.watch = FetchWatch(time.monotonic())  # is Faust's consumer still fetching?
        self._stall: tuple[int, float] = (0, 0.0)  # its last verdict: (events waiting, seconds since one arrived)
        self.app = self._build_app()

    # ---------------------------------------------------------------- the app
    def _build_app(self) -> faust.App:
        s = self.s
        security = s.kafka_security()
        credentials = None
        if "SASL" in s.security_protocol:
            credentials = faust.SASLCredentials(username=s.sasl_username, password=s.sasl_password, mechanism=s.sasl_mechanism, ssl_context=security.get("ssl_context"))
        elif "SSL" in s.security_protocol:
            credentials = faust.SSLCredentials(security["ssl_context"])
        datadir = Path(tempfile.gettempdir()) / "streamer-faust" / s.group_id  # Faust wants one; the worker keeps nothing there
        datadir.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            s.group_id,
            broker=[f"kafka://{h.strip()}" for h in s.brokers.split(",") if h.strip()],
            broker_credentials=credentials,
            broker_client_id=s.client_id,
            store="memory://",
            autodiscover=False,
            web_enabled=False,
            datadir=str(datadir),
            monitor=QuietMonitor(),
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            topic_allow_declare=False,  # the worker creates its topics (changelogs with the input's partition count)
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout_ms / 1000.0,
            broker_heartbeat_interval=min(1.0, s.session_timeout_ms / 3000.0),
            broker_request_timeout=max(s.request_timeout_ms, s.session_timeout_ms) / 1000.0,
            broker_commit_interval=s.commit_interval_s,
            broker_max_poll_records=max(s.max_batch * 4, 256),
            consumer_max_fetch_size=1 << 20,
            stream_buffer_maxsize=max(s.queue_events, 4096),
            stream_wait_empty=True,
            producer_acks=-1,
            producer_linger_ms=2,
            producer_max_batch_size=256 * 1024,
            producer_max_request_size=2 * 1024 * 1024,
            producer_request_timeout=s.request_timeout_ms / 1000.0,
        )
        use_fetch_max_wait(app, s.fetch_max_wait_ms)
        deliver_eagerly(app)
        resume_promptly(app)
        take, within = max(s.max_batch * 4, 256), max(s.max_wait_ms, 1.0) / 1000.0
        for lane in self.lanes.values():
            topic = app.topic(lane.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
            app.agent(topic, name=f"streamer.detect_{lane.kind}", concurrency=1)(self._agent(take, within))
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_worker_init.connect(self._on_worker_init)
        app.on_before_shutdown.connect(self._on_shutdown)
        app.task(self._start)
        return app

    def _agent(self, take: int, within: float) -> Any:
        async def detect(stream: Any) -> None:
            try:
                async for events in stream.noack_take(take, within):
                    await self.accept(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a restarted agent would never see its taken events again
                await self._crash(exc)
                raise

        return detect

    # ---------------------------------------------------------------- lifecycle
    def _on_worker_init(self, sender: Any = None, **kwargs: Any) -> None:
        """Serve /metrics and /healthz as soon as the process starts (healthz: 503 while joining)."""
        if self.s.metrics_port and self._server is None:
            self._server = MetricsServer(self.metrics, self.health, self.s.metrics_host, self.s.metrics_port).start()

    async def _start(self) -> None:
        """App task: topics, the pipeline on Faust's producer, and the checkpoint loop."""
        s = self.s
        self._on_worker_init()
        quiet_client_logs()  # also under `faust -A streamer.faust_app worker`, which never runs the CLI's set-up
        await ensure_lane_topics(s, self.lanes)
        self._probe = MetadataProbe(s)
        await self._probe.start()
        producer = self.app.producer

        async def send(topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> Any:
            return await producer.send(topic, key, value, partition, None, None)

        sink = Sink(send, producer.flush)
        self.pipeline = Pipeline(self.lanes, s, self.metrics, self.stats, self.executor, sink, FaustCommitter(self.app, self.unacked, self._probe))
        self._tasks = self.pipeline.start() + [asyncio.create_task(self._checkpoints(), name="checkpoint")]
        self.state = "running"
        self.started.set()
        log.info("faust engine running: agents %s", ", ".join(f"{lane.kind} <- {lane.topic}" for lane in self.lanes.values()))

    async def _on_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """After Faust waited for every event to be acknowledged: the last windows, then stop."""
        self.state = "stopping"
        self._set_deadline("the shutdown")
        if self.pipeline is not None:
            with contextlib.suppress(Exception):
                await self.pipeline.commit(timeout=max(1.0, self.s.shutdown_timeout_s))
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._probe is not None:
            await self._probe.close()
        self.executor.shutdown(wait=False)
        if self._server is not None:
            self._server.stop()

    async def _crash(self, exc: BaseException) -> None:
        """Nothing after the last commit is acknowledged; the app stops and the process exits non-zero."""
        self.state = f"crashed: {type(exc).__name__}: {exc}"[:200]
        self.metrics.healthy.set(0)
        log.error("faust engine: %s; stopping (the events since the last commit will be read again)", self.state)
        self._set_deadline("the stop after a crash")
        await self.app.crash(exc)

    def _set_deadline(self, what: str) -> None:
        """One deadline per process, from the first of crash and shutdown."""
        if self._deadline is None:
            self._deadline = exit_by(max(1.0, self.s.shutdown_timeout_s) + SHUTDOWN_MARGIN_S, what)

    # ---------------------------------------------------------------- intake
    async def accept(self, events: Iterable[Any]) -> None:
        """One take of events, possibly of several partitions, in consumption order."""
        await self.started.wait()
        pipeline = self.pipeline
        by_tp: dict[Any, list[Any]] = {}
        for ev in events:
            by_tp.setdefault(ev.message.tp, []).append(ev)
        received = time.time()
        for tp, evs in by_tp.items():
            if not await self._ready(tp):
                continue  # no longer ours: left unacknowledged, its new owner reads it from the commit
            self.unacked.setdefault(tp, deque()).extend((ev.message.offset, ev) for ev in evs)
            self.watch.received(tp, evs[-1].message.offset + 1, time.monotonic())
            await pipeline.accept(tp, [(ev.message.offset, ev.message.value, ev.message.key) for ev in evs], received)
        if pipeline.full:
            await pipeline.wait_for_space()

    async def _ready(self, tp: Any) -> bool:
        """True once ``tp``'s windows are restored; False for a partition this worker does not own."""
        while True:
            if tp in self.pipeline.assigned:
                return True
            fut = self.restoring.get(tp)
            if fut is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(fut)
                continue
            if tp not in self.app.consumer.assignment() and not self.app.rebalancing:
                return False
            self._assignment_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._assignment_changed.wait(), 0.1)

    # ---------------------------------------------------------------- rebalances
    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        await self.started.wait()
        pipeline = self.pipeline
        new = {tp for tp in assigned if tp.topic in pipeline.by_topic and tp not in pipeline.assigned}
        if not new:
            return
        fut = asyncio.ensure_future(pipeline.assign(new, client_kwargs(self.s)))
        for tp in new:
            self.restoring[tp] = fut
        try:
            await fut
        except Exception as exc:  # noqa: BLE001 - never score without the windows
            await self._crash(DeliveryFailed(f"window restore failed: {exc!r}"[:200]))
        finally:
            for tp in new:
                self.restoring.pop(tp, None)
            self.watch.idle_since(time.monotonic())
            self._assignment_changed.set()

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        if self.pipeline is None:
            return
        mine = {tp for tp in revoked if tp in self.pipeline.assigned}
        if mine:
            await self.pipeline.revoke(mine)  # Faust waited for the acks already: this writes the last windows
            for tp in mine:
                self.unacked.pop(tp, None)
            self.watch.forget(mine)
        self._assignment_changed.set()

    # ---------------------------------------------------------------- checkpoints
    async def _checkpoints(self) -> None:
        s, pipeline = self.s, self.pipeline
        while True:
            await asyncio.sleep(s.commit_interval_s)
            try:
                await pipeline.commit(timeout=max(10.0, s.health_stall_s))
            except DeliveryFailed as exc:
                await self._crash(exc)
                return
            waiting, secs = self._stall = await self._fetching()
            if waiting and secs > max(3 * s.health_stall_s, 30.0):
                await self._crash(DeliveryFailed(f"Faust's consumer received nothing for {secs:.0f}s while {waiting} events wait in the broker"))
                return
            await self._update_lag()
            self.metrics.healthy.set(1 if self.health()[0] else 0)

    async def _fetching(self) -> tuple[int, float]:
        """(events waiting in the broker on owned partitions, seconds since one arrived); (0, 0.0) when
        the consumer is caught up, busy, rebalancing or restoring, or the broker did not answer (the
        round-trip check covers that)."""
        now = time.monotonic()
        if self.pipeline.inflight or self.restoring or self.app.rebalancing:
            self.watch.idle_since(now)  # not receiving is expected now
            return 0, 0.0
        try:
            ends = await asyncio.wait_for(self._probe.end_offsets(self.pipeline.assigned), max(1.0, self.s.request_timeout_ms / 1000.0))
        except Exception:  # noqa: BLE001 - the checkpoint's round trip judges the broker
            self.watch.idle_since(time.monotonic())  # and no fetch is expected from a broker that does not answer
            return 0, 0.0
        return self.watch.stalled(ends, time.monotonic())

    async def _update_lag(self) -> None:
        tps = list(self.pipeline.assigned)
        if not tps:
            return
        with contextlib.suppress(Exception):
            highwaters = await self.app.consumer.highwaters(*tps)
            for tp in tps:
                hw = highwaters.get(tp)
                pos = await self.app.consumer.position(tp)
                if hw is not None and pos is not None:
                    self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - pos))

    def health(self) -> tuple[bool, str]:
        ok, why = health(self.pipeline, self.state, self.s.health_stall_s)
        waiting, secs = self._stall
        if ok and waiting and secs > self.s.health_stall_s:
            return False, f"{waiting} events wait in the broker, none received for {secs:.0f}s"
        return ok, why


# ---------------------------------------------------------------- the importable app
_engine: FaustEngine | None = None


def engine() -> FaustEngine:
    """The process's engine, built on first use from ``STREAMER_*`` settings."""
    global _engine
    if _engine is None:
        logging.getLogger("streamer").setLevel(os.environ.get(ENV_PREFIX + "LOG_LEVEL", "INFO"))
        _engine = FaustEngine(Settings.from_env(), noop_scorer=os.environ.get(NOOP_SCORER_ENV, "") not in ("", "0"))
    return _engine


def __getattr__(name: str) -> Any:
    """``streamer.faust_app.app`` is built when first asked for (``faust -A streamer.faust_app``), not at import."""
    if name == "app":
        return engine().app
    raise AttributeError(name)


# ---------------------------------------------------------------- the supervisor
def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``STREAMER_*`` variables, so a child process reads exactly these."""
    out = {}
    for f in fields(settings):
        v = getattr(settings, f.name)
        out[ENV_PREFIX + f.name.upper()] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return out


def faust_loglevel(level: str) -> str:
    """The worker's log level in the names Faust's command line takes.

    >>> [faust_loglevel(x) for x in ("DEBUG", "INFO", "WARNING", "ERROR")]
    ['debug', 'info', 'warn', 'error']
    """
    return {"WARNING": "warn", "CRITICAL": "crit"}.get(level, level.lower())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def supervise(settings: Settings, noop_scorer: bool = False) -> int:
    """``streamer worker --engine faust``: run the Faust worker in a child process; restart it after a crash.

    Why a child: a crashed Faust app cannot be restarted in the same process, and
    restarting from the last commit is what keeps the direct engine's guarantee (and its
    recovery after a broker freeze) for this engine too. SIGTERM and SIGINT are passed on
    (the child drains and commits); the child dies with this process (SIGKILL included).
    """
    env = dict(os.environ, **settings_env(settings), PYTHONUNBUFFERED="1")
    if noop_scorer:
        env[NOOP_SCORER_ENV] = "1"
    cmd = [sys.executable, "-m", "streamer.faust_app", "worker", "--loglevel", faust_loglevel(settings.log_level), "--without-web"]
    stopping = False
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    backoff = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
        rc = child.wait()
        if stopping or rc in (0, USAGE_ERROR):
            return rc
        log.warning("faust worker exited with %d; restarting in %.0fs", rc, backoff)
        time.sleep(backoff)
        backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 15.0)


if __name__ == "__main__":
    engine().app.main()
