"""The two engines against plain Faust agents and the model alone, in one run (issue 18's bars).

    python -m bench.engines                  # ~6 min here
    python -m bench.engines --quick          # smoke run

One embedded broker and one pre-filled input topic of synthetic transactions
(4 partitions). Every contender is its own process reading that topic from the
start into its own output topics; its rate comes from the broker timestamps of
its output records, first to last, so start-up and group joins count for none.

- ``direct`` / ``faust``: ``streamer worker --engine direct|faust`` with the
  bundle (default: the shipped transactions bundle), and each with
  ``--noop-scorer`` (the stream path alone);
- ``faust agent``: ``bench/faust_agent.py`` one event per iteration (a Faust table
  for the windows, one model call and one send per event), with the model and
  with a no-op scorer;
- ``faust take``: the same work in ``stream.take()`` batches (one model call per
  batch, one send per event), with the model and with a no-op scorer;
- ``model alone``: the bundle's scorer on the worker's own texts at batch 64,
  one intra-op thread, in this process (before and after the Kafka runs).

Bars: faust / model alone >= 0.8 (direct: 0.85 measured before, must not drop);
faust no-op / faust take no-op >= 2.

``--kind sensor`` runs the engines on 8-sensor machines instead (the shipped
sensor bundle with an 8-sensor asset type fitted on normal running, as
``bench.sensor_model`` builds it, written to a temporary bundle directory);
``model alone`` is then the sensor scorer (window stacking, relation statistics,
graph, calibration) at batch 64 and the graph alone (issue 17: the worker end to
end >= 0.8 of the model alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import machine, stream_texts
from bench.e2e import _events, _measure, _spawn, _stop, _worker_args
from streamer.broker import EmbeddedBroker, ensure_topics
from streamer.bundle import DEFAULT_BUNDLES, load_bundle
from streamer.producer import produce

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH = 64

# name -> (how to start it, extra flags or environment)
CONTENDERS = {
    "direct": ("worker", ["--engine", "direct"]),
    "faust": ("worker", ["--engine", "faust"]),
    "direct noop": ("worker", ["--engine", "direct", "--noop-scorer"]),
    "faust noop": ("worker", ["--engine", "faust", "--noop-scorer"]),
    "faust take": ("agent", {"BENCH_MODE": "take"}),
    "faust take noop": ("agent", {"BENCH_MODE": "take", "BENCH_NOOP": "1"}),
    "faust agent": ("agent", {"BENCH_MODE": "event"}),
    "faust agent noop": ("agent", {"BENCH_MODE": "event", "BENCH_NOOP": "1"}),
}
SLOW = {"faust agent"}  # one model call per event: measured on fewer events


def model_alone(bundle_dir: str, seconds: float, rounds: int, graph_only: bool = False) -> list[float]:
    """Events/s of the bundle's scorer at batch 64, one thread, on the worker's own inputs.

    Transactions: tokenize + ONNX on the worker's texts. Sensors: the lane's scorer on the
    windows the intake builds (``graph_only``: the ONNX graph on the stacked windows).
    """
    from streamer.scorer import make_scorer

    bundle = load_bundle(bundle_dir)
    scorer = make_scorer(bundle, "cpu", "fp32", 1)
    if bundle.kind == "sensor":
        import orjson

        from bench.sensor_model import machine_events
        from streamer.encoding import sensors as enc
        from streamer.intake import Intake, Item

        intake = Intake(bundle)
        items = [intake.accept("b", 0, i, orjson.dumps(e)) for i, e in enumerate(machine_events(BATCH * 16 + 500, seed=1))]
        inputs = [it.inputs for it in items if isinstance(it, Item)][500:]
        batches = [inputs[i:i + BATCH] for i in range(0, len(inputs) - BATCH + 1, BATCH)]
        if graph_only:
            stacked = [enc.stack(b, bundle.card) for b in batches]
            run_one = lambda k: scorer.run(stacked[k % len(stacked)])  # noqa: E731
        else:
            run_one = lambda k: scorer.score_batch(batches[k % len(batches)])  # noqa: E731
    else:
        texts, _ = stream_texts(bundle, BATCH * 16, seed=3, skip=200)
        batches = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]
        run_one = lambda k: scorer.score_batch(batches[k % len(batches)])  # noqa: E731
    run_one(0)
    out = []
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            run_one(n)
            n += 1
        out.append(n * BATCH / (time.perf_counter() - t0))
    return out


def eight_sensor_bundle_dir(base: str, into: Path) -> str:
    """The shipped sensor bundle plus an 8-sensor machine type, written as a bundle directory (for worker processes)."""
    import shutil

    from bench.sensor_model import eight_sensor_bundle

    b = eight_sensor_bundle(base)
    shutil.copytree(base, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".train", "checkpoint"))
    (into / "card.json").write_text(json.dumps(b.card, indent=1))
    return str(into)


def run(name: str, broker: EmbeddedBroker, topic_in: str, n: int, bundle: str, partitions: int, logs: Path, kind: str = "transaction") -> dict:
    how, extra = CONTENDERS[name]
    tag = f"{name.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
    out, alerts, dlq = f"out-{tag}", f"alerts-{tag}", f"dlq-{tag}"
    asyncio.run(ensure_topics(broker.bootstrap, [out, alerts, dlq], partitions))
    if how == "worker":
        args = _worker_args(broker.bootstrap, tag, topic_in, out, bundle, ["--intra-op-threads", "1", *extra])
        if kind == "sensor":  # the same worker, reading the topic as sensor events
            args[args.index("--transactions-topic") + 1], args[args.index("--sensors-topic") + 1] = "", topic_in
        proc = _spawn(args, {}, logs / f"{tag}.log")
    else:
        env = {"BENCH_DATADIR": str(logs / f"{tag}-data"), "BENCH_BROKERS": broker.bootstrap, "BENCH_IN": topic_in, "BENCH_OUT": out,
               "BENCH_ALERTS": alerts, "BENCH_DLQ": dlq, "BENCH_BUNDLE": bundle, "BENCH_APP": tag, "BENCH_PARTITIONS": str(partitions), **extra}
        proc = _spawn(["-m", "bench.faust_agent", "worker", "-l", "warn", "--without-web"], env, logs / f"{tag}.log")
    try:
        res = asyncio.run(_measure(broker.bootstrap, out, n, max(120.0, n / 50)))
    finally:
        _stop(proc)
    res["name"] = name
    print(f"  {name:18s} {res['events_per_s']:>9,.0f} events/s  ({res['records']:,} records)", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="events each fast contender scores (default 20000)")
    ap.add_argument("--slow-events", type=int, default=3000, help="events the per-event Faust agent with the model scores (default 3000)")
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLES["transaction"]))
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--only", default="", help="comma-separated contenders (default: all)")
    ap.add_argument("--kind", choices=("transaction", "sensor"), default="transaction", help="event kind (sensor: 8-sensor machines, engines only)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3000 events, 1000 for the slow one")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.slow_events = 3000, 1000
    if args.kind == "sensor":
        import tempfile

        if args.bundle == str(DEFAULT_BUNDLES["transaction"]):
            args.bundle = str(DEFAULT_BUNDLES["sensor"])
        args.bundle = eight_sensor_bundle_dir(args.bundle, Path(tempfile.mkdtemp()) / "sensors-8")
    names = [n for n in CONTENDERS if (not args.only or n in args.only.split(",")) and (args.kind == "transaction" or CONTENDERS[n][0] == "worker")]
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    results: dict = {"machine": machine(), "commit": commit, "kind": args.kind, "bundle": args.bundle, "events": args.events, "slow_events": args.slow_events, "batch": BATCH}
    print("model alone (batch 64, 1 thread) ...", flush=True)
    alone = model_alone(args.bundle, 2.0, 3)
    graph = model_alone(args.bundle, 2.0, 3, graph_only=True) if args.kind == "sensor" else []
    with EmbeddedBroker(port=0) as broker:
        topic_in = f"bench-in-{uuid.uuid4().hex[:6]}"
        asyncio.run(ensure_topics(broker.bootstrap, [topic_in], args.partitions))
        if args.kind == "sensor":
            import orjson

            from bench.sensor_model import machine_events

            values = [orjson.dumps(e) for e in machine_events(args.events, seed=5, assets=16)]
        else:
            values = _events(args.events, 3)
        asyncio.run(produce(broker.bootstrap, topic_in, values))
        print(f"pre-filled {args.events:,} events on {broker.bootstrap}", flush=True)
        for name in names:
            n = min(args.events, args.slow_events) if name in SLOW else args.events
            results[name] = run(name, broker, topic_in, n, args.bundle, args.partitions, logs, args.kind)
    alone += model_alone(args.bundle, 2.0, 3)
    results["model alone"] = {"events_per_s": statistics.median(alone), "rounds": alone}
    if graph:
        graph += model_alone(args.bundle, 2.0, 3, graph_only=True)
        results["graph alone"] = {"events_per_s": statistics.median(graph), "rounds": graph}
    rate = {k: v["events_per_s"] for k, v in results.items() if isinstance(v, dict) and "events_per_s" in v}
    ratios = {}

    def ratio(a: str, b: str, bar: str) -> None:
        if rate.get(a) and rate.get(b):
            ratios[f"{a} / {b}"] = r = rate[a] / rate[b]
            print(f"  {a + ' / ' + b:38s} {r:6.2f}   {bar}")

    print(f"\nmodel alone: {rate['model alone']:,.0f} events/s (median of {len(alone)} rounds, {min(alone):,.0f}-{max(alone):,.0f})")
    ratio("faust", "model alone", "bar >= 0.8")
    ratio("direct", "model alone", "0.85 before; must not drop")
    ratio("faust", "graph alone", "")
    ratio("direct", "graph alone", "")
    ratio("faust noop", "faust take noop", "bar >= 2")
    ratio("faust noop", "faust agent noop", "")
    ratio("faust", "faust take", "")
    ratio("faust", "faust agent", "")
    ratio("direct noop", "faust noop", "")
    results["ratios"] = ratios
    path = RESULTS / f"engines{'-sensor' if args.kind == 'sensor' else ''}-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
