"""examples/faust_case_agent.py: a user's own agent in the detector's Faust app, run with Faust's CLI.

`faust -A examples.faust_case_agent worker` runs the detector's agents and the
user's in one app: every event is scored as ``score-file`` scores it, and every
alert of the configured severities (and only those) becomes a case on the case topic.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import orjson

from streamer.faust_app import settings_env
from streamer.score_file import score_lines
from tests.conftest import create, events, settings_for
from tests.reliability import REPO, Collector, produce, wait_until


def test_users_agent_forwards_critical_alerts_to_cases(broker, topics, tiny_tx_bundle, tmp_path):
    evs = events("transaction", 3000, seed=5, n_accounts=200)
    values = [orjson.dumps(e) for e in evs]
    reference = {r["event_id"]: r for r in score_lines(values, tiny_tx_bundle)}
    critical = {eid for eid, r in reference.items() if r["severity"] == "high"}  # the tiny model's top band
    assert critical, "the data should produce alerts of that severity"
    cases_topic = f"cases-{topics['group']}"
    s = settings_for(broker, topics, transactions_bundle=str(tiny_tx_bundle), device="cpu", intra_op_threads=1, reload_watch_s=0)
    env = dict(os.environ, **settings_env(s), CASES_TOPIC=cases_topic, CASE_SEVERITIES="high", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "faust", "-A", "examples.faust_case_agent", "worker", "--loglevel", "info", "--without-web"]

    async def main():
        await create(broker, dict(topics, cases=cases_topic))
        with open(tmp_path / "app.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                async with Collector(broker.bootstrap, [topics["scores"], topics["alerts"], cases_topic]) as out:
                    await produce(broker.bootstrap, topics["transactions"], values)
                    await wait_until(lambda: len({r["event_id"] for r in out.records[topics["scores"]]}) >= len(evs)
                                     and len({c["case_id"] for c in out.records[cases_topic]}) >= len(critical), 120, "scores and cases")
                    time.sleep(1.0)  # nothing more should arrive: no case for a non-critical alert
                    await out.drain()
                    return {t: list(v) for t, v in out.records.items()}
            finally:
                proc.terminate()
                assert proc.wait(30) == 0, (tmp_path / "app.log").read_text()[-3000:]

    got = asyncio.run(main())
    scores = {r["event_id"]: r["score"] for r in got[topics["scores"]]}
    assert all(abs(scores[k] - reference[k]["score"]) < 1e-6 for k in reference), "the detector's agents score as score-file does"
    cases = got[cases_topic]
    assert {c["alert"]["event_id"] for c in cases} == critical
    alert_ids = {a["event_id"]: a["alert_id"] for a in got[topics["alerts"]]}
    assert all(c["case_id"] == alert_ids[c["alert"]["event_id"]] and c["queue"] == "transaction-high" for c in cases)
