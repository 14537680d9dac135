"""Crash safety: SIGKILL a real worker process at random moments while events stream in.

Nothing lost (every valid event has a score), duplicates only for events whose
offsets were not committed when the process died (and no more of them than the
broker saw as consumed-but-uncommitted), replayed alerts with identical ids, and
windows restored from the changelog so every score, replayed or not, equals a
single uninterrupted pass of ``score-file`` over the same events.

``STREAMER_CRASH_SEED`` picks the kill moments (printed, to replay a failure).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict

import orjson

from streamer.records import alert_id
from streamer.score_file import score_lines
from tests.conftest import create, events
from tests.reliability import Collector, WorkerProcess, committed_offsets, produce, wait_until, worker_cmd

N_EVENTS = 20_000
KILLS = 3
RATE = 1000.0  # events/s: the stream keeps arriving across kills and restarts
PARTITIONS = 4
QUEUE_EVENTS = 4096
COMMIT_INTERVAL_S = 0.5
SESSION_TIMEOUT_MS = 6000  # a killed member holds its partitions this long (default 10 s)


def test_sigkill_at_random_moments_loses_nothing_and_replays_identically(broker, topics, tiny_tx_bundle, tmp_path, engine):
    seed = int(os.environ.get("STREAMER_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\ncrash test seed {seed} (STREAMER_CRASH_SEED={seed} replays these kill moments)")
    evs = events("transaction", N_EVENTS, seed=61, n_accounts=300)  # ~67 events per account: windows matter
    values = [orjson.dumps(e) for e in evs]
    reference = {r["event_id"]: r for r in score_lines(values, tiny_tx_bundle)}
    cmd = worker_cmd(broker, topics, tiny_tx_bundle, engine=engine, commit_interval_s=COMMIT_INTERVAL_S, queue_events=QUEUE_EVENTS, session_timeout_ms=SESSION_TIMEOUT_MS)
    log = tmp_path / "worker.log"
    scores_t, alerts_t = topics["scores"], topics["alerts"]

    async def main():
        await create(broker, topics, PARTITIONS)
        kills: list[tuple[float, dict[int, int]]] = []  # (wall time of the kill, committed offsets right after)
        restarts: list[float] = []  # seconds from start of an incarnation to its first score
        async with Collector(broker.bootstrap, [scores_t, alerts_t]) as out:
            sending = asyncio.create_task(produce(broker.bootstrap, topics["transactions"], values, rate=RATE))
            for _ in range(KILLS):
                w = WorkerProcess(cmd, log)
                started_ms = w.started * 1000
                try:
                    # "a random moment": a short random delay after this incarnation's first scores,
                    # which lands between publishing outputs and committing them most of the time
                    restarts.append(await wait_until(lambda: any(r["scored_at"] >= started_ms for r in out.records[scores_t][-200:]), 60, "the worker's first scores"))
                    await asyncio.sleep(rng.uniform(0.05, 1.5))
                    at = w.kill()
                finally:
                    w.close()
                kills.append((at, await committed_offsets(broker.bootstrap, topics["group"], topics["transactions"], PARTITIONS)))
            where = await sending
            final_from = len(log.read_text())
            w = WorkerProcess(cmd, log)
            try:
                ends = {p: max(o for q, o in where if q == p) + 1 for p in range(PARTITIONS)}
                caught_up = {}

                async def final_commit():
                    caught_up.update(await committed_offsets(broker.bootstrap, topics["group"], topics["transactions"], PARTITIONS))
                    return caught_up == ends

                deadline = time.monotonic() + 120
                while not (len({r["event_id"] for r in out.records[scores_t]}) >= N_EVENTS and await final_commit()):
                    assert time.monotonic() < deadline, f"final worker did not catch up: committed {caught_up}, ends {ends}"
                    await asyncio.sleep(0.2)
                # the last killed incarnation may have committed everything: the final worker must still be
                # up (assigned, its windows restored, its signal handlers installed) before it is stopped
                await wait_until(lambda: " restored " in log.read_text()[final_from:], 60, "the final worker's assignment")
                rc, _ = w.terminate(30)
                assert rc == 0, f"final worker exited with {rc}; see {log}"
                await out.drain()  # let the collector read the last acknowledged records
            finally:
                w.close()
            return kills, restarts, where, {t: list(v) for t, v in out.records.items()}

    kills, restarts, where, got = asyncio.run(main())
    pos = {e["event_id"]: where[i] for i, e in enumerate(evs)}  # event_id -> (partition, offset)
    kill_times = [at for at, _ in kills]

    def incarnation(rec: dict) -> int:
        return sum(rec["scored_at"] > at * 1000 for at in kill_times)

    scores = got[scores_t]
    by_event: dict[str, list[dict]] = defaultdict(list)
    for r in scores:
        by_event[r["event_id"]].append(r)
    sent, scored = len(evs), len(by_event)
    lost = sent - len(set(by_event) & set(reference))
    duplicated = len(scores) - scored

    # 1. nothing lost
    assert lost == 0, f"{lost} events never scored"
    assert set(by_event) == set(reference)

    # 2. only uncommitted events are replayed: a record followed by a later one of the same
    #    event came from an incarnation that died before committing that event's offset
    uncommitted = Counter()  # per crash: events this incarnation published whose offsets were not committed
    for r in scores:
        k = incarnation(r)
        if k < len(kills):
            p, o = pos[r["event_id"]]
            if o >= kills[k][1][p]:
                uncommitted[k] += 1
    replayed_per_crash = Counter()
    for eid, recs in by_event.items():
        recs.sort(key=lambda r: r["scored_at"])
        p, o = pos[eid]
        for earlier, later in zip(recs, recs[1:]):
            k = incarnation(earlier)
            assert incarnation(later) > k, f"{eid} scored twice by one incarnation"
            assert o >= kills[k][1][p], f"{eid} (p{p} o{o}) was re-scored although offset {kills[k][1][p]} was committed"
            replayed_per_crash[k] += 1
    assert duplicated == sum(replayed_per_crash.values()) <= sum(uncommitted.values())
    assert sum(uncommitted.values()) > 0, "no kill landed between publishing and committing"

    # 3. windows restored: every score, first or replayed, equals one uninterrupted pass
    diffs = [abs(r["score"] - reference[r["event_id"]]["score"]) for r in scores]
    exact = sum(d == 0 for d in diffs)
    assert max(diffs) < 1e-5, f"{sum(d >= 1e-5 for d in diffs)} score records differ from the single pass"
    replay_diffs = [abs(r["score"] - reference[r["event_id"]]["score"]) for recs in by_event.values() for r in recs[1:]]
    log_text = log.read_text()
    restored = [int(line.split("restored ")[1].split()[0]) for line in log_text.splitlines() if "restored " in line]
    assert restored and max(restored[1:] or [0]) > 0, f"no later incarnation restored windows: {restored}"

    # 4. alerts: one id per event, deterministic, identical on replay; every alerting event alerted
    alerts = got[alerts_t]
    ids = defaultdict(set)
    for a in alerts:
        ids[a["event_id"]].add(a["alert_id"])
        assert a["alert_id"] == alert_id(a["event_id"], a["model"])
    assert all(len(v) == 1 for v in ids.values())
    assert set(ids) == {eid for eid, r in reference.items() if r["alert"]}
    replayed_alerts = len(alerts) - len(ids)

    print(
        f"crash safety: sent {sent}, scored {scored}, duplicated {duplicated} "
        f"(per crash {[replayed_per_crash[k] for k in range(len(kills))]}; consumed-published-uncommitted at each kill "
        f"{[uncommitted[k] for k in range(len(kills))]}; queue_events {QUEUE_EVENTS}), lost {lost}; "
        f"{len(kills)} SIGKILLs; restart to first score {[round(x, 1) for x in restarts[1:]]} s; "
        f"scores identical to one pass: {exact}/{len(scores)} exact, max diff {max(diffs):.1e} "
        f"(replayed: {len(replay_diffs)}, max diff {max(replay_diffs, default=0):.1e}); "
        f"alerts {len(alerts)} for {len(ids)} events ({replayed_alerts} replayed, same alert_id); windows restored per start {restored}"
    )
