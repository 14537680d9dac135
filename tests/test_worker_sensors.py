"""The sensor lane end to end: both kinds in one worker, unknown sensors dead-lettered with the name."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson

from streamer.bundle import load_bundle
from streamer.validation import reason_code
from streamer.worker import Worker
from tests.conftest import SENSOR_BUNDLE, TX_BUNDLE, create, events, read_until, send, settings_for


def test_one_worker_scores_transactions_and_sensors_and_rejects_unknown_sensors(broker, topics):
    sensors = events("sensor", 2000, seed=71, fault_rate=0.03, n_assets=10)
    txs = events("transaction", 500, seed=72, n_accounts=100)
    faults = {e["event_id"] for e in sensors if e["label"] == 1}
    assert faults
    first = sensors[0]
    unknown = {**first, "event_id": "unknown-sensor-1", "readings": {**first["readings"], "flux_capacitor_gw": 1.21}}

    async def main():
        await create(broker, topics)
        s = settings_for(broker, topics, sensors_topic=topics["sensors"], transactions_bundle=str(TX_BUNDLE), sensors_bundle=str(SENSOR_BUNDLE))
        worker = Worker(s)
        task = asyncio.create_task(worker.run())
        try:
            await send(broker, topics["sensors"], [orjson.dumps(e) for e in sensors] + [orjson.dumps(unknown)])
            await send(broker, topics["transactions"], [orjson.dumps(e) for e in txs])
            got = await read_until(
                broker, [topics["scores"], topics["alerts"], topics["dead_letters"]],
                lambda g: len(g[topics["scores"]]) >= len(sensors) + len(txs) and g[topics["dead_letters"]],
                timeout=120,
            )
        finally:
            worker.stop()
            await task
        return got

    got = asyncio.run(main())
    by_kind = Counter(r["kind"] for r in got[topics["scores"]])
    assert by_kind == {"sensor": len(sensors), "transaction": len(txs)}
    sensor_model = load_bundle(SENSOR_BUNDLE).model_id
    assert {r["model"] for r in got[topics["scores"]] if r["kind"] == "sensor"} == {sensor_model}
    [dl] = got[topics["dead_letters"]]
    assert reason_code(dl["error"]) == "unknown_sensor" and "flux_capacitor_gw" in dl["error"]
    alerted = {a["event_id"] for a in got[topics["alerts"]] if a["kind"] == "sensor"}
    assert alerted & faults, "no injected sensor fault raised an alert"
    for a in got[topics["alerts"]]:
        assert a["reasons"] and a["severity"] in ("low", "medium", "high", "critical")
