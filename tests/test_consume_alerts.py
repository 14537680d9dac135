"""examples/consume_alerts.py: the downstream join, against the embedded broker."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import orjson

from streamer.records import alert_record, score_record
from tests.conftest import create, send

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "consume_alerts.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("consume_alerts", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()
MODEL = "transactions@1.0.0"


def _event(i: int) -> dict:
    return {"event_id": f"e{i}", "ts": 1_700_000_000_000 + i, "account_id": f"acct-{i % 3}"}


def _score(i: int, score: float) -> dict:
    return score_record(_event(i), "transaction", score, MODEL, 1_700_000_001_000 + i, 3.5 + i)


def _alert(i: int, score: float) -> dict:
    return alert_record(_event(i), "transaction", score, "high", 0.5, [f"reason {i}"], MODEL, 1_700_000_001_000 + i)


def test_join_pairs_alerts_with_scores_in_either_order_and_drops_replays():
    join = example.AlertJoin(limit=10)
    assert join.add_score(_score(1, 0.9)) == []
    first = join.add_alert(_alert(1, 0.9))  # score came first
    assert [j["event_id"] for j in first] == ["e1"] and first[0]["latency_ms"] == 4.5
    assert join.add_alert(_alert(2, 0.8)) == []  # alert came first: waits for its score
    assert [j["event_id"] for j in join.add_score(_score(2, 0.8))] == ["e2"]
    assert join.add_alert(_alert(1, 0.9)) == [], "a replayed alert (same alert_id) is not emitted twice"
    assert join.add_score(_score(3, 0.1)) == []  # most scores never get an alert
    for i in range(100, 130):  # the buffers stay bounded
        join.add_score(_score(i, 0.1))
    assert len(join.scores) <= 10


def test_consumer_joins_records_from_kafka(broker, topics):
    """Scores and alerts on the real topics, alert-before-score included: one joined line per distinct alert."""
    scores = [_score(i, s) for i, s in [(1, 0.93), (2, 0.12), (3, 0.71), (4, 0.05)]]
    alerts = [_alert(1, 0.93), _alert(3, 0.71), _alert(5, 0.99), _alert(1, 0.93)]  # e1 replayed; e5's score comes later
    late_score = _score(5, 0.99)

    async def main() -> list[dict]:
        await create(broker, topics)
        key = lambda v: orjson.loads(v)["entity"].encode()  # noqa: E731 - the worker keys outputs by entity
        await send(broker, topics["alerts"], [orjson.dumps(a) for a in alerts], key=key)
        await send(broker, topics["scores"], [orjson.dumps(s) for s in scores + [late_score]], key=key)
        got: list[dict] = []
        n = await asyncio.wait_for(
            example.join_alerts(broker.bootstrap, topics["scores"], topics["alerts"], emit=got.append, from_beginning=True, idle_exit_s=3.0),
            timeout=60,
        )
        assert n == len(got)
        return got

    got = asyncio.run(main())
    assert sorted(j["event_id"] for j in got) == ["e1", "e3", "e5"]
    by_id = {j["event_id"]: j for j in got}
    assert by_id["e3"]["score"] == 0.71 and by_id["e3"]["latency_ms"] == 6.5 and by_id["e3"]["reasons"] == ["reason 3"]
    assert all(j["alert_id"] == _alert(int(j["event_id"][1:]), 0)["alert_id"] for j in got)
    assert "HIGH" in example.describe(by_id["e5"])
