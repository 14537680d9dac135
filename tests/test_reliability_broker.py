"""Broker faults: a frozen broker (SIGSTOP past the request timeout) and a restarted one (data gone).

The worker must say it is unhealthy while it cannot make progress (/healthz 503),
recover by itself, and score every event the broker still holds. Each test runs
its own broker: freezing or restarting the session broker would break other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import orjson

from streamer.metrics import MetricsServer
from streamer.worker import Worker
from tests.conftest import create, events, settings_for
from tests.reliability import Collector, http_get, leak_a_cancellation_on_stop, produce, wait_until, worker_process

REQUEST_TIMEOUT_MS = 5000  # shortened (default 15 s) so the test stays short; the behaviour is the same
SESSION_TIMEOUT_MS = 6000  # default 10 s
STALL_S = 8.0  # longer than the request timeout and the session timeout


def _settings(broker, topics, bundle):
    return settings_for(
        broker, topics, transactions_bundle=str(bundle), device="cpu", intra_op_threads=1, health_stall_s=2.0, commit_interval_s=0.5, reload_watch_s=0,
        request_timeout_ms=REQUEST_TIMEOUT_MS, session_timeout_ms=SESSION_TIMEOUT_MS,
    )


@contextlib.asynccontextmanager
async def _worker_with_health(broker, topics, bundle):
    """A worker on ``broker`` with its /healthz served: (worker, server, run task); stopped and awaited on exit."""
    await create(broker, topics)
    worker = Worker(_settings(broker, topics, bundle))
    server = MetricsServer(worker.metrics, worker.health, "127.0.0.1", 0).start()
    task = asyncio.create_task(worker.run())
    try:
        yield worker, server, task
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):  # a worker that ended cancelled fails the test's own checks
            await task
        server.stop()


@contextlib.asynccontextmanager
async def _worker_process(broker, topics, bundle, engine, tmp_path):
    """A worker process of ``engine`` on ``broker``, with the settings above and /healthz on ``metrics_port``."""
    await create(broker, topics)
    with worker_process(broker, topics, bundle, engine, tmp_path / "worker.log", health_stall_s=2.0, commit_interval_s=0.5,
                        request_timeout_ms=REQUEST_TIMEOUT_MS, session_timeout_ms=SESSION_TIMEOUT_MS) as w:
        await _poll_health(w.metrics_port, 200, 90, "the worker to start")
        yield w


async def _healthz(port: int) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz", 1.0)


async def _poll_health(port: int, want: int, timeout: float, what: str, contains: str = "") -> tuple[float, str]:
    """Seconds until /healthz answers ``want`` (with ``contains`` in its body), and its body."""
    t0 = time.monotonic()
    while True:
        code, body = await _healthz(port)
        if code == want and contains in body:
            return time.monotonic() - t0, body.strip()
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"/healthz still {code} ({body.strip()!r}) after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def test_frozen_broker_unhealthy_then_recovers_and_scores_everything(own_broker, topics, tiny_tx_bundle, engine, tmp_path):
    broker = own_broker
    evs = events("transaction", 3000, seed=71, n_accounts=200)
    before, during, after = evs[:1000], evs[1000:2000], evs[2000:]

    async def main():
        figures = {}
        async with _worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path) as worker:
            async with Collector(broker.bootstrap, [topics["scores"]]) as out:
                ids = lambda: {r["event_id"] for r in out.records[topics["scores"]]}  # noqa: E731
                await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in before])
                await wait_until(lambda: len(ids()) >= len(before), 60, "the first events to be scored")
                await _poll_health(worker.metrics_port, 200, 10, "a healthy worker")
                # events in the broker, not yet consumed, when it freezes
                await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in during])
                broker.signal(signal.SIGSTOP)
                stopped = time.monotonic()
                try:
                    figures["unhealthy_after_s"], figures["unhealthy_reason"] = await _poll_health(worker.metrics_port, 503, STALL_S, "/healthz to report the stall")
                    while time.monotonic() - stopped < STALL_S:
                        code, _ = await _healthz(worker.metrics_port)
                        assert code != 200, "healthy while the broker is frozen"  # 503, or no answer while a crashed engine restarts
                        await asyncio.sleep(0.25)
                finally:
                    broker.signal(signal.SIGCONT)
                resumed = time.monotonic()
                figures["healthy_again_s"], _ = await _poll_health(worker.metrics_port, 200, 90, "recovery")
                await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in after])
                await wait_until(lambda: len(ids()) >= len(evs), 90, "every event to be scored after the stall")
                figures["all_scored_s"] = time.monotonic() - resumed
                figures["reconnects"] = worker.metric("streamer_reconnects_total")
                return ids(), figures

    got, figures = asyncio.run(main())
    assert got == {e["event_id"] for e in evs}
    print(f"\nbroker frozen {STALL_S:.0f}s (request timeout {REQUEST_TIMEOUT_MS / 1000:.0f}s, session timeout {SESSION_TIMEOUT_MS / 1000:.0f}s): /healthz 503 after {figures['unhealthy_after_s']:.1f}s ({figures['unhealthy_reason']}); "
          f"healthy again {figures['healthy_again_s']:.1f}s after SIGCONT; all {len(evs)} events scored {figures['all_scored_s']:.1f}s after SIGCONT; "
          f"pipeline restarts {figures['reconnects']:.0f}")


def test_restarted_broker_with_data_gone_worker_reconnects_and_scores_new_events(own_broker, topics, tiny_tx_bundle, engine, tmp_path):
    broker = own_broker
    evs = events("transaction", 2000, seed=73, n_accounts=200)
    first, second = evs[:1000], evs[1000:]

    async def main():
        figures = {}
        async with _worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path) as worker:
            async with Collector(broker.bootstrap, [topics["scores"]]) as out:
                await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in first])
                await wait_until(lambda: len({r["event_id"] for r in out.records[topics["scores"]]}) >= len(first), 60, "the first events to be scored")
            t0 = time.monotonic()
            broker.restart()  # memory storage: topics, offsets and groups are gone
            await create(broker, topics)
            seen = set()

            async def watch_health():
                while True:
                    seen.add((await _healthz(worker.metrics_port))[0])
                    await asyncio.sleep(0.1)

            watcher = asyncio.create_task(watch_health())
            try:
                await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in second])
                async with Collector(broker.bootstrap, [topics["scores"]]) as out:
                    await wait_until(lambda: {r["event_id"] for r in out.records[topics["scores"]]} >= {e["event_id"] for e in second}, 90, "the new events to be scored")
                    figures["scored_after_s"] = time.monotonic() - t0
                    figures["healthy_again_s"], _ = await _poll_health(worker.metrics_port, 200, 30, "recovery")
                    new_ids = [r["event_id"] for r in out.records[topics["scores"]]]
            finally:
                watcher.cancel()
            figures["saw_503"] = 503 in seen
            figures["reconnects"] = worker.metric("streamer_reconnects_total")
            return new_ids, figures

    new_ids, figures = asyncio.run(main())
    assert set(new_ids) == {e["event_id"] for e in second}
    print(f"\nbroker restarted (data gone): new events all scored {figures['scored_after_s']:.1f}s after the restart "
          f"(/healthz answered 503 meanwhile: {figures['saw_503']}); healthy at the end; pipeline restarts {figures['reconnects']:.0f}")


def test_failed_window_restore_restarts_instead_of_scoring_without_history(broker, topics, tiny_tx_bundle, monkeypatch):
    """A restore that fails (broker timeout, missing changelog partition) must not let events through without windows."""
    from aiokafka.errors import KafkaTimeoutError

    from streamer import pipeline as pipeline_mod
    from streamer.score_file import score_lines

    evs = events("transaction", 1200, seed=77, n_accounts=30)
    first, second = evs[:600], evs[600:]
    real = pipeline_mod.restore_windows
    calls = []

    async def flaky(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) == 2:  # the second worker's first restore fails
            raise KafkaTimeoutError("Failed to get offsets by times in 40000 ms")
        return await real(*args, **kwargs)

    monkeypatch.setattr(pipeline_mod, "restore_windows", flaky)

    async def main():
        await create(broker, topics)
        s = _settings(broker, topics, tiny_tx_bundle)
        w1 = Worker(s)
        t1 = asyncio.create_task(w1.run())
        await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in first])
        await wait_until(lambda: w1.stats.counts["scored"] >= len(first), 60, "the first worker")
        w1.stop()
        await t1
        w2 = Worker(s)
        server = MetricsServer(w2.metrics, w2.health, "127.0.0.1", 0).start()
        t2 = asyncio.create_task(w2.run())
        try:
            await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in second])
            _, why = await _poll_health(server.port, 503, 60, "/healthz to report the failed restore", contains="window restore failed")
            await wait_until(lambda: len(calls) >= 3, 60, "a second restore")
            await wait_until(lambda: w2.stats.counts["scored"] >= len(second), 60, "the second worker to score")
            got = await read_until_scores(broker, topics, len(evs))
        finally:
            w2.stop()
            await t2
            server.stop()
        return why, got

    why, got = asyncio.run(main())
    assert "window restore failed" in why
    reference = {r["event_id"]: r["score"] for r in score_lines((orjson.dumps(e) for e in evs), tiny_tx_bundle)}
    assert all(r["score"] == reference[r["event_id"]] for r in got), "an event was scored without its restored window"


async def read_until_scores(broker, topics, n):
    from tests.conftest import read_until

    got = await read_until(broker, [topics["scores"]], lambda g: len({r["event_id"] for r in g[topics["scores"]]}) >= n, 60)
    return got[topics["scores"]]


def test_stray_cancellation_while_restarting_restarts_instead_of_ending_the_worker(own_broker, topics, tiny_tx_bundle):
    broker = own_broker
    evs = events("transaction", 1200, seed=79, n_accounts=100)
    first, second = evs[:600], evs[600:]

    async def main():
        async with _worker_with_health(broker, topics, tiny_tx_bundle) as (worker, server, task):
            async with Collector(broker.bootstrap, [topics["scores"]]) as out:
                ids = lambda: {r["event_id"] for r in out.records[topics["scores"]]}  # noqa: E731
                await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in first])
                await wait_until(lambda: len(ids()) >= len(first), 60, "the first events to be scored")
                leak_a_cancellation_on_stop(worker.engine.consumer)
                # an unacknowledged output: the next checkpoint restarts the pipeline, stopping that consumer
                worker.pipeline.sink.fail(RuntimeError("injected: an output was not acknowledged"))
                await wait_until(lambda: worker.metrics.reconnects._value.get() >= 1 or task.done(), 30, "the pipeline to restart")
                assert not task.done(), f"the worker ended: {task.exception() if not task.cancelled() else 'cancelled'}"
                await _poll_health(server.port, 200, 60, "the restarted pipeline")
                await produce(broker.bootstrap, topics["transactions"], [orjson.dumps(e) for e in second])
                await wait_until(lambda: len(ids()) >= len(evs), 60, "every event to be scored after the restart")
                return ids(), worker.metrics.reconnects._value.get()

    got, reconnects = asyncio.run(main())
    assert got == {e["event_id"] for e in evs}
    assert reconnects >= 1
