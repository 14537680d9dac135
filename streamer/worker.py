"""The worker process: the supervisor of one engine.

It loads the bundles once (the lanes), then runs the configured engine's
incarnations one after the other: when delivery breaks (a broker that froze or
restarted, an output that was not acknowledged, a window restore that failed) the
incarnation ends with an exception, and the worker backs off (1 s doubling to
15 s) and starts a new one, which resumes from the last commit. A watchdog tears
down an incarnation that made no broker round trip for ``3 x health_stall_s``.
The worker also owns the health answer (``/healthz``), hot reload, and signals.

The pipeline itself (intake, batcher, scorer, publisher, checkpoint, windows) is
``streamer.pipeline``; the engines that feed it are ``streamer.direct`` (an
aiokafka loop, run here) and ``streamer.faust_app`` (Faust agents, run as a Faust
worker under :func:`streamer.faust_app.supervise`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from aiokafka.errors import KafkaError

from streamer.bundle import Bundle
from streamer.direct import DirectEngine
from streamer.lane import build_lanes
from streamer.metrics import Metrics
from streamer.pipeline import Pipeline, health
from streamer.settings import Settings
from streamer.sinks import DeliveryFailed
from streamer.stats import LiveStats

log = logging.getLogger("streamer.worker")

RESTARTABLE = (KafkaError, DeliveryFailed, OSError, asyncio.TimeoutError, TimeoutError)


class Worker:
    """A consumer-group member. ``await run()`` until ``stop()``; restarts its engine on broker errors."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None, noop_scorer: bool = False):
        self.s = settings
        self.metrics = metrics or Metrics()
        self.stats = LiveStats()
        self._executor = ThreadPoolExecutor(max_workers=max(1, settings.inflight_batches), thread_name_prefix="scorer")
        self.lanes = build_lanes(settings, self.metrics, noop_scorer)
        self.engine = DirectEngine(settings, self.lanes, self.metrics, self.stats, self._executor)
        self._stop: asyncio.Event | None = None  # created inside the running loop
        self._state = "starting"

    @property
    def pipeline(self) -> Pipeline | None:
        """The running incarnation's pipeline (None before the first start)."""
        return self.engine.pipeline

    @property
    def assigned(self) -> set:
        """The input partitions this worker owns now, windows restored."""
        return self.pipeline.assigned if self.pipeline is not None else set()

    # ---------------------------------------------------------------- health
    def health(self) -> tuple[bool, str]:
        """Healthy while the worker can consume and score; the reason otherwise (for /healthz)."""
        return health(self.pipeline, self._state, self.s.health_stall_s)

    def _set_state(self, state: str) -> None:
        self._state = state
        self.metrics.healthy.set(1 if self.health()[0] else 0)

    # ---------------------------------------------------------------- run
    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

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
                except RESTARTABLE as exc:
                    self.metrics.reconnects.inc()
                    self._set_state(f"reconnecting after {type(exc).__name__}: {exc}"[:200])
                    log.warning("pipeline restarting in %.0fs: %s", backoff, self._state)
                    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), backoff)
                    backoff = min(backoff * 2, 15.0)
        except BaseException as exc:
            # /healthz must not keep reporting the last running pipeline of a worker that has ended
            self._set_state(f"ended by {type(exc).__name__}: {exc}"[:200])
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            self._executor.shutdown(wait=False)
        self._set_state("stopped")

    async def _run_guarded(self) -> None:
        """One engine incarnation under a watchdog: an incarnation that has made no broker round trip for a
        long time (a client stuck after a broker freeze, a flush that never returns) is torn down and
        restarted instead of staying unhealthy forever."""
        inner = asyncio.create_task(self.engine.run_once(self._stop, self._set_state))
        limit = max(3 * self.s.health_stall_s, 30.0)
        try:
            while not inner.done():
                await asyncio.wait([inner], timeout=1.0)
                self._set_state(self._state)  # refresh the healthy gauge
                pipeline = self.pipeline
                if not inner.done() and self._state == "running" and pipeline is not None and time.monotonic() - pipeline.last_roundtrip > limit:
                    inner.cancel()
                    await asyncio.wait([inner], timeout=30.0)  # its finally stops the clients (bounded)
                    raise DeliveryFailed(f"no broker round trip for {limit:.0f}s; restarting the Kafka clients")
        finally:
            if self.stopping:
                self._state = "stopping"
        if inner.cancelled():
            # Nothing here cancelled it: the watchdog raised above, and a cancellation of this task
            # raises out of the wait. A client library let a cancellation of its own escape.
            raise DeliveryFailed("the pipeline ended cancelled although nothing cancelled it; restarting the Kafka clients")
        inner.result()

    # ---------------------------------------------------------------- hot reload
    def swap_bundle(self, kind: str, bundle: Bundle, scorer: object) -> None:
        """Switch a lane to a new, already-verified model; in-flight batches finish on the old one."""
        lane = self.lanes[kind]
        old_bundle, old_scorer = lane.bundle, lane.scorer
        lane.swap(bundle, scorer)
        self.metrics.model_changed(kind, old_bundle.model_id, old_scorer, bundle.model_id, scorer)
        log.info("%s: now serving %s (was %s)", kind, bundle.model_id, old_bundle.model_id)


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM and SIGINT drain and commit, then exit; SIGHUP reloads the bundles."""
    from streamer.reload import install_sighup

    install_sighup(worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stop)
