"""Baselines for bench/e2e.py and bench/engines.py: the worker's work written as plain Faust agents.

Same validation, same windows, same encoding, same ONNX model and tokenizer, same
output records; the difference is the shape, the way a hand-written Faust app
usually scores. ``BENCH_MODE`` picks it:

- ``event`` (default): one event per iteration, windows in a Faust table (with its
  changelog), one model call and one ``topic.send`` per event;
- ``take``: ``stream.take(max_batch, 5 ms)`` batches, windows in a dict (a table
  cannot be written from a batch), one model call per batch, one ``topic.send``
  per event.

``BENCH_NOOP=1`` replaces the model with a no-op scorer (the stream path alone).
Run as ``python -m bench.faust_agent worker`` with BENCH_* environment variables.
"""

from __future__ import annotations

import os
import time

import faust
import orjson

from streamer.bundle import load_bundle
from streamer.records import alert_record, dead_letter, score_record
from streamer.scorer import NoopScorer, Scorer
from streamer.validation import validate_transaction
from streamer.windows import context, push

BROKERS = os.environ.get("BENCH_BROKERS", "127.0.0.1:9092")
MODE = os.environ.get("BENCH_MODE", "event")
MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "64"))
bundle = load_bundle(os.environ["BENCH_BUNDLE"])
scorer = NoopScorer(bundle) if os.environ.get("BENCH_NOOP") == "1" else Scorer(bundle, "cpu", "fp32", int(os.environ.get("BENCH_THREADS", "1")))
enc = bundle.encoding
win_cfg = bundle.card.get("window") or enc.WINDOW
MAX_EVENTS, MAX_AGE = int(win_cfg["max_events"]), int(win_cfg["max_age_ms"])

app = faust.App(
    os.environ.get("BENCH_APP", "bench-faust"),
    broker=f"kafka://{BROKERS}",
    store="memory://",
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "4")),
    web_enabled=False,
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/bench-faust-data"),
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=10.0,
    broker_heartbeat_interval=1.0,
)
raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
source = app.topic(os.environ["BENCH_IN"], **raw)
scores = app.topic(os.environ["BENCH_OUT"], **raw)
alerts = app.topic(os.environ["BENCH_ALERTS"], **raw)
dlq = app.topic(os.environ["BENCH_DLQ"], **raw)
table = app.Table("windows", default=list, partitions=int(os.environ.get("BENCH_PARTITIONS", "4"))) if MODE == "event" else None
windows: dict[str, list] = {}


async def publish(ev: dict, feats: dict, score: float, received: float) -> None:
    entity = ev["account_id"]
    now = int(time.time() * 1000)
    await scores.send(key=entity.encode(), value=orjson.dumps(score_record(ev, "transaction", score, bundle.model_id, now, now - received * 1000)))
    sev = bundle.severity(score)
    if sev is not None:
        await alerts.send(key=entity.encode(), value=orjson.dumps(alert_record(ev, "transaction", score, sev, bundle.alert_threshold, enc.reasons(feats), bundle.model_id, now)))


def encode(ev: dict, win: list, offset: int) -> tuple[dict, str, list]:
    ctx = context(win, ev["ts"], MAX_EVENTS, MAX_AGE)
    feats = enc.features(ev, ctx, bundle.card)
    rec = enc.record(ev)
    rec["o"] = offset
    return feats, enc.text(ev, ctx, feats), push(win, rec, 2 * MAX_EVENTS, MAX_AGE)


if MODE == "event":

    @app.agent(source)
    async def score_each(stream):  # noqa: ANN001 - Faust API
        async for event in stream.events():
            received = time.time()
            ev, err = validate_transaction(event.value)
            if err is not None:
                await dlq.send(key=event.key, value=orjson.dumps(dead_letter(event.message.topic, event.message.partition, event.message.offset, err, event.value)))
                continue
            feats, text, table[ev["account_id"]] = encode(ev, table[ev["account_id"]], event.message.offset)
            await publish(ev, feats, float(scorer.score_texts([text])[0][0]), received)

else:

    @app.agent(source)
    async def score_taken(stream):  # noqa: ANN001 - Faust API
        async for values in stream.take(MAX_BATCH, within=0.005):
            received = time.time()
            ok = []
            for value in values:
                ev, err = validate_transaction(value)
                if err is not None:
                    await dlq.send(value=orjson.dumps(dead_letter(os.environ["BENCH_IN"], -1, -1, err, value)))
                    continue
                feats, text, windows[ev["account_id"]] = encode(ev, windows.get(ev["account_id"], []), -1)
                ok.append((ev, feats, text))
            if ok:
                batch_scores = scorer.score_texts([t for _, _, t in ok])[0]
                for (ev, feats, _), s in zip(ok, batch_scores):
                    await publish(ev, feats, float(s), received)


if __name__ == "__main__":
    app.main()
