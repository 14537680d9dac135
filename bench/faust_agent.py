"""Baseline for bench/e2e.py: a plain Faust agent doing the worker's work one event at a time.

Same validation, same windows (a Faust table with a changelog), same encoding,
same ONNX model and tokenizer, same output records; the only difference is the
shape: one event per iteration and one model call per event, the way a
hand-written Faust app usually scores. Run as ``python -m bench.faust_agent worker``
with BENCH_* environment variables (see bench/e2e.py).
"""

from __future__ import annotations

import os
import time

import faust
import orjson

from streamer.bundle import load_bundle
from streamer.records import alert_record, dead_letter, score_record
from streamer.scorer import Scorer
from streamer.validation import validate_transaction
from streamer.windows import context, push

BROKERS = os.environ.get("BENCH_BROKERS", "127.0.0.1:9092")
bundle = load_bundle(os.environ["BENCH_BUNDLE"])
scorer = Scorer(bundle, "cpu", "fp32", int(os.environ.get("BENCH_THREADS", "0")))
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
source = app.topic(os.environ["BENCH_IN"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
scores = app.topic(os.environ["BENCH_OUT"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
alerts = app.topic(os.environ["BENCH_ALERTS"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
dlq = app.topic(os.environ["BENCH_DLQ"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
windows = app.Table("windows", default=list, partitions=int(os.environ.get("BENCH_PARTITIONS", "4")))


@app.agent(source)
async def score_each(stream):  # noqa: ANN001 - Faust API
    async for event in stream.events():
        received = time.time()
        ev, err = validate_transaction(event.value)
        if err is not None:
            await dlq.send(key=event.key, value=orjson.dumps(dead_letter(event.message.topic, event.message.partition, event.message.offset, err, event.value)))
            continue
        entity = ev["account_id"]
        win = windows[entity]
        ctx = context(win, ev["ts"], MAX_EVENTS, MAX_AGE)
        feats = enc.features(ev, ctx, bundle.card)
        s = float(scorer.score_texts([enc.text(ev, ctx, feats)])[0][0])
        rec = enc.record(ev)
        rec["o"] = event.message.offset
        windows[entity] = push(win, rec, 2 * MAX_EVENTS, MAX_AGE)
        now = int(time.time() * 1000)
        await scores.send(key=entity.encode(), value=orjson.dumps(score_record(ev, "transaction", s, bundle.model_id, now, now - received * 1000)))
        sev = bundle.severity(s)
        if sev is not None:
            await alerts.send(key=entity.encode(), value=orjson.dumps(alert_record(ev, "transaction", s, sev, bundle.alert_threshold, enc.reasons(feats), bundle.model_id, now)))


if __name__ == "__main__":
    app.main()
