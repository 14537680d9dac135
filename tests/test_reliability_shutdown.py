"""Graceful shutdown: SIGTERM a real worker process in the middle of a stream.

It stops fetching, finishes the batches in flight, publishes them, commits, and
exits 0 within ``shutdown_timeout_s``. Everything it published is committed, so
the worker that takes over scores nothing twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson

from tests.conftest import create, events
from tests.reliability import Collector, WorkerProcess, committed_offsets, produce, wait_until, worker_cmd

N_EVENTS = 8000
RATE = 2000.0
PARTITIONS = 4
SHUTDOWN_TIMEOUT_S = 10.0


def test_sigterm_drains_commits_and_exits_zero_then_nothing_is_rescored(broker, topics, tiny_tx_bundle, tmp_path, engine):
    evs = events("transaction", N_EVENTS, seed=101, n_accounts=300)
    values = [orjson.dumps(e) for e in evs]
    cmd = worker_cmd(broker, topics, tiny_tx_bundle, engine=engine, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S, commit_interval_s=1.0)
    log = tmp_path / "worker.log"
    scores_t = topics["scores"]

    async def main():
        await create(broker, topics, PARTITIONS)
        async with Collector(broker.bootstrap, [scores_t]) as out:
            first = WorkerProcess(cmd, log)
            try:
                await wait_until(lambda: "restored" in log.read_text(), 60, "the first worker to be assigned its partitions")
                sending = asyncio.create_task(produce(broker.bootstrap, topics["transactions"], values, rate=RATE))
                await wait_until(lambda: len(out.records[scores_t]) >= 1000, 60, "the first worker to score")
                assert not sending.done(), "the stream ended before SIGTERM: not mid-stream"
                rc, took = first.terminate(SHUTDOWN_TIMEOUT_S + 5)
                stopped_at = time.time() * 1000
            finally:
                first.close()
            committed = await committed_offsets(broker.bootstrap, topics["group"], topics["transactions"], PARTITIONS)
            await out.drain()  # the collector reads what the first worker published before it exited
            by_first = [r for r in out.records[scores_t] if r["scored_at"] <= stopped_at]
            where = await sending
            ends = {p: max(o for q, o in where if q == p) + 1 for p in range(PARTITIONS)}
            second = WorkerProcess(cmd, log)
            try:
                caught_up = {}

                async def done():
                    caught_up.update(await committed_offsets(broker.bootstrap, topics["group"], topics["transactions"], PARTITIONS))
                    return caught_up == ends and len({r["event_id"] for r in out.records[scores_t]}) >= N_EVENTS

                deadline = time.monotonic() + 90
                while not await done():
                    assert time.monotonic() < deadline, f"second worker did not catch up: committed {caught_up}, ends {ends}"
                    await asyncio.sleep(0.2)
                rc2, took2 = second.terminate(SHUTDOWN_TIMEOUT_S + 5)
            finally:
                second.close()
            return rc, took, committed, by_first, where, list(out.records[scores_t]), rc2, took2

    rc, took, committed, by_first, where, scores, rc2, took2 = asyncio.run(main())
    assert rc == 0, f"SIGTERM exit code {rc}; see {log}"
    assert took <= SHUTDOWN_TIMEOUT_S, f"took {took:.1f}s to exit (shutdown_timeout_s {SHUTDOWN_TIMEOUT_S})"
    assert rc2 == 0
    pos = {e["event_id"]: where[i] for i, e in enumerate(evs)}
    # everything the first worker published was committed by its drain
    uncommitted = [r["event_id"] for r in by_first if pos[r["event_id"]][1] >= committed[pos[r["event_id"]][0]]]
    assert not uncommitted, f"{len(uncommitted)} published events were left uncommitted by the drain"
    ids = Counter(r["event_id"] for r in scores)
    duplicated = sum(ids.values()) - len(ids)
    assert set(ids) == {e["event_id"] for e in evs}
    assert duplicated == 0, f"{duplicated} events scored twice after a graceful stop"
    log_text = log.read_text()
    assert "still in flight" not in log_text
    print(f"\ngraceful shutdown: SIGTERM mid-stream after {len(by_first)} scores: exit 0 in {took:.2f}s (bound {SHUTDOWN_TIMEOUT_S:.0f}s), "
          f"all published offsets committed; restart: sent {len(evs)}, scored {len(ids)}, duplicated {duplicated}, lost 0; second stop {took2:.2f}s")
