"""End to end through Kafka: the worker against a per-event Faust agent and a raw aiokafka loop.

All contenders run as separate processes against one embedded broker, each
reading the same pre-filled input topic and writing to its own output topic.
Throughput is measured from the output records' broker timestamps (first to
last), so start-up and group joins are excluded for every contender alike.

    python -m bench.e2e                 # default bundle, 20k events
    python -m bench.e2e --quick         # smoke run
    python -m bench.e2e --events 50000 --latency-seconds 30

Prints, in one run:
- worker (ONNX model, micro-batches) vs Faust agent scoring each event on its own: ratio (bar >= 5x);
- worker with a no-op scorer vs raw aiokafka consume -> produce: ratio (bar >= 0.3);
- p50/p99 produce-to-score latency of the worker at half its measured maximum rate.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import read_scores
from streamer.broker import EmbeddedBroker, ensure_topics
from streamer.bundle import DEFAULT_BUNDLES
from streamer.producer import produce

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _events(n: int, seed: int) -> list[bytes]:
    from streamer.synth import for_kind

    return [orjson.dumps(e) for e in itertools.islice(for_kind("transaction").generate(n, seed), n)]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    return subprocess.Popen([sys.executable, *args], env={**os.environ, **env}, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _measure(brokers: str, topic: str, n: int, timeout: float) -> dict[str, float]:
    """Read ``n`` records from ``topic``; rate from the broker timestamps of the first and last."""
    stamps = await read_scores(brokers, topic, n, timeout)
    if len(stamps) < 2:
        return {"records": len(stamps), "events_per_s": 0.0}
    span = max(1e-3, (stamps[-1] - stamps[0]) / 1000.0)
    return {"records": len(stamps), "events_per_s": (len(stamps) - 1) / span, "span_s": span, "complete": len(stamps) >= n}


def _worker_args(brokers: str, tag: str, topic_in: str, topic_out: str, bundle: str, extra: list[str]) -> list[str]:
    return [
        "-m", "streamer.cli", "worker", "--brokers", brokers, "--group-id", f"w-{tag}", "--transactions-topic", topic_in,
        "--sensors-topic", "", "--scores-topic", topic_out, "--alerts-topic", f"alerts-{tag}", "--dead-letters-topic", f"dlq-{tag}",
        "--bundle", bundle, "--metrics-port", "0", "--device", "cpu", "--log-level", "WARNING", "--reload-watch-s", "0", *extra,
    ]


def run_contender(name: str, broker: EmbeddedBroker, topic_in: str, n: int, bundle: str, partitions: int, logs: Path, timeout: float, worker_extra: list[str] | None = None) -> dict:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    out = f"out-{tag}"
    asyncio.run(ensure_topics(broker.bootstrap, [out, f"alerts-{tag}", f"dlq-{tag}"], partitions))
    env = {"BENCH_DATADIR": str(logs / f"{tag}-data"), "BENCH_BROKERS": broker.bootstrap, "BENCH_IN": topic_in, "BENCH_OUT": out, "BENCH_ALERTS": f"alerts-{tag}", "BENCH_DLQ": f"dlq-{tag}", "BENCH_BUNDLE": bundle, "BENCH_APP": tag, "BENCH_PARTITIONS": str(partitions)}
    if name == "faust":
        proc = _spawn(["-m", "bench.faust_agent", "worker", "-l", "warn"], env, logs / f"{tag}.log")
    elif name == "raw":
        proc = _spawn(["-m", "bench.raw_loop"], env, logs / f"{tag}.log")
    else:
        proc = _spawn(_worker_args(broker.bootstrap, tag, topic_in, out, bundle, worker_extra or []), env, logs / f"{tag}.log")
    try:
        res = asyncio.run(_measure(broker.bootstrap, out, n, timeout))
    finally:
        _stop(proc)
    res["name"] = name
    print(f"  {name:12s} {res['events_per_s']:>10,.0f} events/s  ({res['records']:,} records)", flush=True)
    return res


async def _latency(brokers: str, topic_in: str, topic_out: str, rate: float, seconds: float, seed: int) -> dict[str, float]:
    """Produce at ``rate`` with the send time inside each event; latency = score seen - sent."""
    from streamer.synth import for_kind

    n = int(rate * seconds)
    gen = itertools.islice(for_kind("transaction").generate(n, seed, start_ms=int(time.time() * 1000)), n)
    sent: dict[str, float] = {}

    def values():
        for e in gen:
            sent[e["event_id"]] = time.time()
            yield orjson.dumps(e)

    c = AIOKafkaConsumer(topic_out, bootstrap_servers=brokers, group_id=None, auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=10)
    await c.start()
    await c.seek_to_end()
    lat: list[float] = []
    prod = asyncio.create_task(produce(brokers, topic_in, values(), rate))
    deadline = time.monotonic() + seconds + 30
    try:
        while len(lat) < n and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=200)).values():
                now = time.time()
                for m in msgs:
                    t = sent.get(orjson.loads(m.value)["event_id"])
                    if t is not None:
                        lat.append((now - t) * 1000)
    finally:
        await prod
        await c.stop()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    return {"rate": rate, "events": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": lat[-1] if lat else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="Events pre-filled for the throughput runs (default 20000).")
    ap.add_argument("--faust-events", type=int, default=0, help="Events the Faust baseline must score (default: --events).")
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLES["transaction"]), help="Bundle (default: the shipped transactions bundle).")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--latency-seconds", type=float, default=20.0, help="Duration of the latency run at half the max rate.")
    ap.add_argument("--skip", default="", help="Comma-separated contenders to skip: faust,raw,noop,latency.")
    ap.add_argument("--worker-args", default="", help="Extra flags for the worker, e.g. '--max-batch 128'.")
    ap.add_argument("--quick", action="store_true", help="Smoke run: 3000 events, 5 s latency run.")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.latency_seconds = 3000, 5.0
    skip = set(filter(None, args.skip.split(",")))
    faust_n = args.faust_events or args.events
    extra = args.worker_args.split()
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = RESULTS / "logs"
    logs.mkdir(exist_ok=True)
    results: dict = {"events": args.events, "bundle": args.bundle, "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()}
    with EmbeddedBroker(port=0) as broker:
        topic_in = f"bench-in-{uuid.uuid4().hex[:6]}"
        asyncio.run(ensure_topics(broker.bootstrap, [topic_in], args.partitions))
        t0 = time.monotonic()
        asyncio.run(produce(broker.bootstrap, topic_in, _events(args.events, args.seed)))
        print(f"pre-filled {args.events:,} events in {time.monotonic() - t0:.1f}s on {broker.bootstrap}", flush=True)
        timeout = max(120.0, args.events / 200)
        results["worker"] = run_contender("worker", broker, topic_in, args.events, args.bundle, args.partitions, logs, timeout, extra)
        if "faust" not in skip:
            results["faust"] = run_contender("faust", broker, topic_in, faust_n, args.bundle, args.partitions, logs, max(180.0, faust_n / 50))
        if "noop" not in skip:
            results["worker_noop"] = run_contender("worker-noop", broker, topic_in, args.events, args.bundle, args.partitions, logs, timeout, extra + ["--noop-scorer"])
        if "raw" not in skip:
            results["raw"] = run_contender("raw", broker, topic_in, args.events, args.bundle, args.partitions, logs, timeout)
        if "latency" not in skip and results["worker"]["events_per_s"] > 0:
            tag = uuid.uuid4().hex[:6]
            lat_in, lat_out = f"lat-in-{tag}", f"lat-out-{tag}"
            asyncio.run(ensure_topics(broker.bootstrap, [lat_in, lat_out, f"alerts-{tag}", f"dlq-{tag}"], args.partitions))
            proc = _spawn(_worker_args(broker.bootstrap, tag, lat_in, lat_out, args.bundle, extra), {}, logs / f"latency-{tag}.log")
            try:
                asyncio.run(_wait_group(broker.bootstrap, f"w-{tag}", lat_in))
                rate = results["worker"]["events_per_s"] / 2
                results["latency"] = asyncio.run(_latency(broker.bootstrap, lat_in, lat_out, rate, args.latency_seconds, args.seed + 1))
            finally:
                _stop(proc)
    w = results["worker"]["events_per_s"]
    print("\nresults")
    print(f"  worker (model, micro-batches)   {w:>10,.0f} events/s")
    if "faust" in results and results["faust"]["events_per_s"]:
        r = w / results["faust"]["events_per_s"]
        results["ratio_worker_vs_faust"] = r
        print(f"  Faust agent, one event at a time {results['faust']['events_per_s']:>9,.0f} events/s   worker/faust = {r:.2f}x (bar >= 5x)")
    if "worker_noop" in results and "raw" in results and results["raw"]["events_per_s"]:
        r = results["worker_noop"]["events_per_s"] / results["raw"]["events_per_s"]
        results["ratio_noop_vs_raw"] = r
        print(f"  worker, no-op scorer            {results['worker_noop']['events_per_s']:>10,.0f} events/s")
        print(f"  raw aiokafka consume->produce   {results['raw']['events_per_s']:>10,.0f} events/s   noop/raw = {r:.2f} (bar >= 0.3)")
    if "latency" in results:
        L = results["latency"]
        print(f"  latency at {L['rate']:,.0f} events/s (half max): p50 {L['p50_ms']:.1f} ms, p99 {L['p99_ms']:.1f} ms over {L['events']:,} events")
    out = RESULTS / f"e2e-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


async def _wait_group(brokers: str, group: str, topic: str, timeout: float = 60.0) -> None:
    """Wait until the worker's group owns the topic's partitions (tests and benches wait, never guess)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                desc = await admin.describe_consumer_groups([group])
                members = desc[0].members if hasattr(desc[0], "members") else desc[0][4] if desc else []
                if members:
                    await asyncio.sleep(1.0)  # assignment done; restore of empty changelogs follows immediately
                    return
            except Exception:  # noqa: BLE001 - group not known yet
                pass
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


if __name__ == "__main__":
    sys.exit(main())
