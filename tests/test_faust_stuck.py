"""A Faust worker stuck in its stop, or in its consumer, says so and ends, so its supervisor restarts it.

Two ways a broker freeze left the Faust engine stuck, seen in CI and under load:

- the child crashed as it should, then its stop waited on a Kafka client without end and
  /healthz said 'not consuming: stopping' for minutes. The first tests run the engine's own
  shutdown in a child process with a client whose close never returns, and check that the
  process ends non-zero within its deadline;
- Faust's consumer marked its coordinator dead and never fetched again, while the worker's
  own round trips succeeded, so /healthz said 200 with events waiting. The last test checks
  the engine's verdict on end offsets that grow while nothing arrives.

The end-to-end check is ``test_frozen_broker_unhealthy_then_recovers_and_scores_everything``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from streamer import faust_app
    from streamer.settings import Settings

    faust_app.SHUTDOWN_MARGIN_S = 0.5
    s = Settings(brokers="127.0.0.1:1", transactions_bundle=sys.argv[1], sensors_topic="", device="cpu",
                 metrics_port=0, shutdown_timeout_s=0.5)
    eng = faust_app.FaustEngine(s)

    class NeverCloses:
        async def close(self):
            await asyncio.Event().wait()

    eng._probe = NeverCloses()

    async def main():
        await eng.{how}
        print("shutdown returned", flush=True)

    asyncio.run(main())
    """
)


def _run(how: str, bundle) -> tuple[int, float, str]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", CHILD.format(how=how), str(bundle)], capture_output=True, text=True, timeout=60)
    return p.returncode, time.monotonic() - t0, p.stdout + p.stderr


def test_a_shutdown_that_hangs_ends_the_process_with_a_failure_status(tiny_tx_bundle):
    rc, took, out = _run("_on_shutdown()", tiny_tx_bundle)
    assert rc == 1, out
    assert "the shutdown did not finish within 2s; exiting with status 1" in out
    assert "shutdown returned" not in out
    assert took < 30, took


def test_a_crash_whose_stop_hangs_ends_the_process_too(tiny_tx_bundle):
    """``app.crash`` of an app that never started returns at once; the stop after it is what hangs here."""
    rc, took, out = _run("_crash(RuntimeError('broker gone')); await eng._on_shutdown()", tiny_tx_bundle)
    assert rc == 1, out
    assert "crashed: RuntimeError: broker gone" in out
    assert "the stop after a crash did not finish within 2s" in out  # the crash's deadline, not a second one
    assert took < 30, took


def test_events_waiting_in_the_broker_with_nothing_received_turn_healthz_red(tiny_tx_bundle):
    from streamer.faust_app import FaustEngine
    from streamer.settings import Settings

    eng = FaustEngine(Settings(brokers="127.0.0.1:1", transactions_bundle=str(tiny_tx_bundle), sensors_topic="", device="cpu", metrics_port=0, health_stall_s=2.0))
    tp = ("tx", 0)
    ends = {tp: 10}

    class Probe:
        async def end_offsets(self, tps):
            return {t: ends[t] for t in tps}

    class Pipeline:  # what health() and the watch read of the pipeline: running, a round trip just now
        inflight, assigned = 0, {tp}
        last_roundtrip = last_progress = time.monotonic()

    eng._probe, eng.pipeline, eng.state = Probe(), Pipeline(), "running"

    async def verdict() -> tuple[int, float]:
        eng._stall = await eng._fetching()
        return eng._stall

    async def main():
        eng.watch.received(tp, 10, time.monotonic() - 60)  # offsets 0-9 arrived a minute ago
        assert await verdict() == (0, 0.0) and eng.health() == (True, "ok")  # idle, not stuck
        ends[tp] = 11
        assert (await verdict())[0] == 0 and eng.health()[0]  # one offset: a transaction marker, perhaps
        ends[tp] = 510
        waiting, secs = await verdict()
        assert waiting == 500 and secs > 59
        ok, why = eng.health()
        assert not ok and why.startswith("500 events wait in the broker, none received for")
        Pipeline.inflight = 64  # busy (its own check covers a pipeline that stops publishing): no verdict
        assert await verdict() == (0, 0.0)
        Pipeline.inflight = 0
        eng.watch.received(tp, 510, time.monotonic())
        assert await verdict() == (0, 0.0) and eng.health() == (True, "ok")

    asyncio.run(main())
