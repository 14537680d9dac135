"""Hot reload: a good bundle is switched in after shadow scoring; bad ones are refused and the old model keeps serving."""

from __future__ import annotations

import asyncio
import shutil

import orjson

from streamer.reload import reload_lane
from streamer.worker import Worker
from tests.conftest import create, events, read_until, send, settings_for, wait_for
from tests.tiny_bundle import make_tiny_bundle


def test_reload_switches_good_bundle_and_refuses_bad_ones(broker, topics, tmp_path):
    live = make_tiny_bundle(tmp_path / "live", "transaction", risky=("dnew",), version="1.0.0", name="tx")
    evs = events("transaction", 600, seed=51)
    first, second = evs[:300], evs[300:]

    async def main():
        await create(broker, topics)
        worker = Worker(settings_for(broker, topics, transactions_bundle=str(live), reload_watch_s=0.2))
        task = asyncio.create_task(worker.run())
        try:
            await send(broker, topics["transactions"], [orjson.dumps(e) for e in first])
            await read_until(broker, [topics["scores"]], lambda g: len(g[topics["scores"]]) >= len(first), 60)

            # corrupt graph: refused, still serving 1.0.0
            corrupt = make_tiny_bundle(tmp_path / "corrupt", "transaction", version="9.9.9", name="tx")
            (corrupt / "model.onnx").write_bytes(b"not an onnx graph")
            bad = await reload_lane(worker, "transaction", corrupt)
            assert not bad.ok and "graph" in bad.reason
            # incompatible: a sensor bundle for the transaction lane
            other = make_tiny_bundle(tmp_path / "sensor", "sensor", version="9.9.8", name="sn")
            bad2 = await reload_lane(worker, "transaction", other)
            assert not bad2.ok and "sensor" in bad2.reason
            # wrong encoding version
            wrong = make_tiny_bundle(tmp_path / "wrong", "transaction", version="9.9.7", name="tx")
            card = orjson.loads((wrong / "card.json").read_bytes())
            card["encoding_version"] = "tx-0"
            (wrong / "card.json").write_bytes(orjson.dumps(card))
            bad3 = await reload_lane(worker, "transaction", wrong)
            assert not bad3.ok and "encoding" in bad3.reason
            assert worker.lanes["transaction"].bundle.model_id == "tx@1.0.0"

            # the watched directory is replaced by a good 2.0.0 bundle: shadow-scored, then switched
            new = make_tiny_bundle(tmp_path / "new", "transaction", risky=("dnew", "cnew"), version="2.0.0", name="tx")
            for f in ("tokenizer.json", "model.onnx", "card.json"):
                shutil.copy(new / f, live / f)
            await wait_for(lambda: worker.lanes["transaction"].bundle.model_id == "tx@2.0.0", 20, "the watcher to switch to 2.0.0")
            await send(broker, topics["transactions"], [orjson.dumps(e) for e in second])
            got = await read_until(broker, [topics["scores"]], lambda g: len(g[topics["scores"]]) >= len(evs), 60)
        finally:
            worker.stop()
            await task
        return got, worker

    got, worker = asyncio.run(main())
    by_id = {r["event_id"]: r["model"] for r in got[topics["scores"]]}
    assert {by_id[e["event_id"]] for e in first} == {"tx@1.0.0"}
    assert {by_id[e["event_id"]] for e in second} == {"tx@2.0.0"}
    refused = worker.metrics.reloads.labels("transaction", "refused")._value.get()
    accepted = worker.metrics.reloads.labels("transaction", "accepted")._value.get()
    assert (refused, accepted) == (3, 1)


def test_reload_refuses_a_slower_bundle(broker, topics, tmp_path):
    live = make_tiny_bundle(tmp_path / "live", "transaction", version="1.0.0", name="tx")

    class Slow:
        """Wraps a scorer to run far slower than the serving one."""

        def __init__(self, inner):
            self.inner, self.bundle, self.provider, self.precision = inner, inner.bundle, inner.provider, inner.precision

        def score_batch(self, inputs):
            import time

            time.sleep(0.05)
            return self.inner.score_batch(inputs)

    async def main():
        import streamer.reload as reload

        worker = Worker(settings_for(broker, topics, transactions_bundle=str(live), reload_max_slowdown=2.0))
        worker.lanes["transaction"].sample.extend(["amt3 rel2"] * 64)
        real = reload.make_scorer
        reload.make_scorer = lambda *a, **k: Slow(real(*a, **k))
        try:
            return await reload_lane(worker, "transaction", make_tiny_bundle(tmp_path / "slow", "transaction", version="3.0.0", name="tx"))
        finally:
            reload.make_scorer = real

    res = asyncio.run(main())
    assert not res.ok and "slower" not in res.reason and "limit" in res.reason
