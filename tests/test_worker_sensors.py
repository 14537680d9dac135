"""The sensor lane end to end: both kinds in one worker; unknown sensors and wrong sensor sets dead-lettered with the names."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson

from streamer.bundle import load_bundle
from streamer.validation import reason_code
from streamer.worker import Worker
from tests.conftest import SENSOR_BUNDLE, TX_BUNDLE, create, events, read_until, send, settings_for


def test_one_worker_scores_transactions_and_sensors_and_rejects_unknown_sensors(broker, topics):
    sensors = events("sensor", 4000, seed=71, fault_rate=0.08, n_assets=6)
    txs = events("transaction", 500, seed=72, n_accounts=100)
    faults = {e["event_id"] for e in sensors if e["label"] == 1}
    assert faults
    first = sensors[0]
    unknown = {**first, "event_id": "unknown-sensor-1", "readings": {**first["readings"], "flux_capacitor_gw": 1.21}}
    dropped = sorted(first["readings"])[0]
    partial = {**first, "event_id": "partial-1", "readings": {k: v for k, v in first["readings"].items() if k != dropped}}
    other = next(e for e in sensors if len(e["readings"]) != len(first["readings"]))
    switched = {**other, "event_id": "switched-1", "asset_id": first["asset_id"]}  # another type's sensors, same asset
    bad = [unknown, partial, switched]

    async def main():
        await create(broker, topics)
        s = settings_for(broker, topics, sensors_topic=topics["sensors"], transactions_bundle=str(TX_BUNDLE), sensors_bundle=str(SENSOR_BUNDLE))
        worker = Worker(s)
        task = asyncio.create_task(worker.run())
        try:
            await send(broker, topics["sensors"], [orjson.dumps(e) for e in sensors] + [orjson.dumps(e) for e in bad])
            await send(broker, topics["transactions"], [orjson.dumps(e) for e in txs])
            got = await read_until(
                broker, [topics["scores"], topics["alerts"], topics["dead_letters"]],
                lambda g: len(g[topics["scores"]]) >= len(sensors) + len(txs) and len(g[topics["dead_letters"]]) >= len(bad),
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
    dls = {orjson.loads(d["raw"])["event_id"]: d["error"] for d in got[topics["dead_letters"]]}
    assert set(dls) == {"unknown-sensor-1", "partial-1", "switched-1"}
    assert reason_code(dls["unknown-sensor-1"]) == "unknown_sensor" and "flux_capacitor_gw" in dls["unknown-sensor-1"]
    assert reason_code(dls["partial-1"]) == "sensor_set" and f"missing {dropped!r}" in dls["partial-1"]
    assert reason_code(dls["switched-1"]) == "sensor_set" and "changed" in dls["switched-1"]
    alerted = {a["event_id"] for a in got[topics["alerts"]] if a["kind"] == "sensor"}
    assert alerted & faults, "no injected sensor fault raised an alert"
    for a in got[topics["alerts"]]:
        assert a["reasons"] and a["severity"] in ("low", "medium", "high", "critical")
    sensor_scores = [r["score"] for r in got[topics["scores"]] if r["kind"] == "sensor"]
    assert all(0.0 <= x <= 1.0 for x in sensor_scores)
