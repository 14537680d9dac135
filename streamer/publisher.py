"""Scored batches and rejections become records on the output topics.

One score record per valid event, an alert for each event at or above the
bundle's alert threshold (with its severity band and reasons), one dead letter per
rejected message; all keyed by entity (dead letters by the original key) and sent
through the :class:`~streamer.sinks.Sink`, which tracks their acknowledgements for
the checkpoint. ``done(tp, offset)`` is called for every input once all its
outputs are handed to the sink: that is what lets the checkpoint commit it.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import orjson

from streamer.intake import Item, Rejection
from streamer.metrics import Metrics
from streamer.records import alert_record, dead_letter, now_ms, score_record
from streamer.scorer import Scored
from streamer.sinks import Sink
from streamer.stats import LiveStats
from streamer.validation import reason_code

Done = Callable[[Any, int], None]


class Publisher:
    """Writes one lane's outputs; shared by both engines."""

    def __init__(self, sink: Sink, topics: dict[str, str], metrics: Metrics, stats: LiveStats, done: Done):
        self.sink = sink
        self.scores_topic, self.alerts_topic, self.dead_letters_topic = topics["scores"], topics["alerts"], topics["dead_letters"]
        self.metrics = metrics
        self.stats = stats
        self.done = done

    async def scored(self, kind: str, bundle: Any, encoding: Any, batch: list[Item], scored: Scored, started: float) -> None:
        """Publish a batch in its order: score, then alert, per event."""
        m = self.metrics
        details = scored.details or itertools.repeat(None)
        m.batch_size.labels(kind).observe(len(batch))
        m.inference.labels(kind).observe(scored.seconds)
        model, threshold = bundle.model_id, bundle.alert_threshold
        send = self.sink.send
        e2e, qwait = m.end_to_end.labels(kind), m.queue_wait.labels(kind)
        latencies = []
        for item, score, detail in zip(batch, scored.scores.tolist(), details):
            qwait.observe(max(0.0, started - item.received))
            scored_at = now_ms()
            latency = scored_at - item.received * 1000.0
            key = item.entity.encode()
            await send(self.scores_topic, orjson.dumps(score_record(item.event, kind, score, model, scored_at, latency)), key)
            severity = bundle.severity(score)
            if severity is not None:
                alert = alert_record(item.event, kind, score, severity, threshold, encoding.reasons(item.feats, detail), model, scored_at)
                await send(self.alerts_topic, orjson.dumps(alert), key)
                m.alerts.labels(kind, severity).inc()
                self.stats.alert(alert)
            e2e.observe(latency / 1000.0)
            latencies.append(latency)
            self.done(item.tp, item.offset)
        m.events_scored.labels(kind).inc(len(batch))
        self.stats.count("scored", len(batch))
        self.stats.batch(len(batch), latencies)

    async def rejected(self, kind: str, rej: Rejection, key: bytes | None) -> None:
        """A dead letter with the reason; the input counts as handled once it is sent."""
        rec = dead_letter(rej.tp[0], rej.tp[1], rej.offset, rej.error, rej.raw)
        await self.sink.send(self.dead_letters_topic, orjson.dumps(rec), key)
        self.metrics.events_rejected.labels(kind, reason_code(rej.error)).inc()
        self.stats.count("rejected")
        self.done(rej.tp, rej.offset)

