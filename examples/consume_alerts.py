"""A downstream consumer: join each alert with its score record and print the pair.

    python examples/consume_alerts.py --brokers localhost:9094 --from-beginning

The worker publishes one score per event to ``scores`` and, for risky events, an
alert to ``alerts`` (docs/contract.md). Both are keyed by entity, but they are
separate topics, so nothing orders an alert against its score: either may arrive
first. The join therefore buffers each side by ``event_id`` until the other side
arrives, and bounds the buffers, because most scores never get an alert.

Delivery is at least once: after a worker crash a replayed event yields the same
``alert_id`` again, so a real consumer deduplicates on it (done here too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import OrderedDict
from typing import Any, Callable

import orjson
from aiokafka import AIOKafkaConsumer


class Bounded(OrderedDict):
    """An insertion-ordered dict that forgets its oldest entries past ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.limit:
            self.popitem(last=False)


class AlertJoin:
    """Pairs alerts with scores by event_id; ``add`` returns the joined records it completes."""

    def __init__(self, limit: int = 100_000):
        self.scores: Bounded = Bounded(limit)  # event_id -> score record still waiting for an alert
        self.alerts: Bounded = Bounded(limit)  # event_id -> alert still waiting for its score
        self.seen: Bounded = Bounded(limit)  # alert_ids already emitted (replays after a crash)

    def add_score(self, rec: dict) -> list[dict]:
        alert = self.alerts.pop(rec["event_id"], None)
        if alert is None:
            self.scores[rec["event_id"]] = rec
            return []
        return self._emit(alert, rec)

    def add_alert(self, rec: dict) -> list[dict]:
        if rec["alert_id"] in self.seen:
            return []
        score = self.scores.pop(rec["event_id"], None)
        if score is None:
            self.alerts[rec["event_id"]] = rec
            return []
        return self._emit(rec, score)

    def _emit(self, alert: dict, score: dict) -> list[dict]:
        if alert["alert_id"] in self.seen:
            return []
        self.seen[alert["alert_id"]] = True
        return [{
            "event_id": alert["event_id"],
            "alert_id": alert["alert_id"],
            "entity": alert["entity"],
            "kind": alert["kind"],
            "severity": alert["severity"],
            "score": alert["score"],
            "threshold": alert["threshold"],
            "reasons": alert["reasons"],
            "model": alert["model"],
            "ts": alert["ts"],
            "latency_ms": score["latency_ms"],  # only the score record carries it
        }]


def describe(joined: dict) -> str:
    reasons = "; ".join(joined["reasons"]) or "-"
    return f"{joined['severity'].upper():8} {joined['kind']:11} {joined['entity']:<14} score {joined['score']:.3f} ({joined['latency_ms']:.1f} ms)  {reasons}"


async def join_alerts(
    brokers: str,
    scores_topic: str = "scores",
    alerts_topic: str = "alerts",
    emit: Callable[[dict], None] = lambda j: print(describe(j), flush=True),
    count: int = 0,
    from_beginning: bool = False,
    idle_exit_s: float = 0.0,
    group_id: str | None = None,
    **kafka: Any,
) -> int:
    """Consume both topics and ``emit`` each alert joined with its score; returns how many were emitted.

    Stops after ``count`` joined alerts (0: never) or ``idle_exit_s`` seconds without
    any record (0: never). With ``group_id`` the consumer commits its position, so a
    restart resumes where it stopped instead of at the start or the end.
    """
    consumer = AIOKafkaConsumer(
        scores_topic, alerts_topic, bootstrap_servers=brokers, group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest", enable_auto_commit=group_id is not None, **kafka,
    )
    await consumer.start()
    join = AlertJoin()
    emitted = 0
    last_record = time.monotonic()
    try:
        while not count or emitted < count:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                if idle_exit_s and time.monotonic() - last_record > idle_exit_s:
                    break
                continue
            last_record = time.monotonic()
            for tp, msgs in batches.items():
                add = join.add_alert if tp.topic == alerts_topic else join.add_score
                for msg in msgs:
                    for joined in add(orjson.loads(msg.value)):
                        emit(joined)
                        emitted += 1
    finally:
        await consumer.stop()
    return emitted


def main() -> None:
    p = argparse.ArgumentParser(description="Print each alert joined with its score record.")
    p.add_argument("--brokers", default=os.environ.get("STREAMER_BROKERS", "127.0.0.1:9092"))
    p.add_argument("--scores-topic", default="scores")
    p.add_argument("--alerts-topic", default="alerts")
    p.add_argument("--from-beginning", action="store_true", help="Start at the oldest records instead of new ones.")
    p.add_argument("--count", type=int, default=0, help="Stop after this many joined alerts (default: follow).")
    p.add_argument("--group-id", default=None, help="Commit progress under this consumer group.")
    a = p.parse_args()
    try:
        asyncio.run(join_alerts(a.brokers, a.scores_topic, a.alerts_topic, count=a.count, from_beginning=a.from_beginning, group_id=a.group_id))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
