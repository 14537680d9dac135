"""A Faust worker whose stop never finishes still ends, so its supervisor can restart it.

Seen in CI: after a broker freeze the Faust child crashed as it should, then its stop
waited on a Kafka client without end and /healthz said 'not consuming: stopping' for
minutes. These run the engine's own shutdown in a child process with a client whose
close never returns, and check that the process ends non-zero within its deadline.
"""

from __future__ import annotations

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
