"""Your own Faust agent beside the detector: open a case for every critical alert.

    STREAMER_BROKERS=localhost:9092 faust -A examples.faust_case_agent worker -l info

``streamer.faust_app.app`` is the detector itself (its agents score the input
topics; settings from ``STREAMER_*`` variables, docs/configuration.md). Importing
it and adding an agent gives one Faust app, one consumer group, one process: the
detector's agents and yours, run and operated with Faust's own tooling. Your agent
is an ordinary Faust agent: it consumes the alerts topic the detector writes and
is acknowledged per event as usual.

A case is the alert plus what a case system needs to route it, keyed by entity
(so one account's cases stay in order); replays after a crash carry the same
``alert_id``, which a case system uses to deduplicate.
"""

from __future__ import annotations

import os

import orjson

from streamer.faust_app import app, engine

CASES_TOPIC = os.environ.get("CASES_TOPIC", "cases")
CASE_SEVERITIES = set(os.environ.get("CASE_SEVERITIES", "critical").split(","))

alerts = app.topic(engine().s.alerts_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
cases = app.topic(CASES_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(alerts, name="examples.open_cases")
async def open_cases(stream):  # noqa: ANN001 - Faust API
    async for key, value in stream.items():
        alert = orjson.loads(value)
        if alert["severity"] in CASE_SEVERITIES:
            case = {"case_id": alert["alert_id"], "queue": f"{alert['kind']}-{alert['severity']}", "alert": alert}
            await cases.send(key=key, value=orjson.dumps(case))
