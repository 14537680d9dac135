"""The adaptive MicroBatcher with the real Scorer, in-process, under Poisson arrivals.

    python -m bench.batcher              # capacity, then every policy at 25/50/90/150% of it, then a defaults sweep
    python -m bench.batcher --quick      # smoke run
    python -m bench.batcher --threads-ab --repeats 6   # cores: intra-op threads vs batches in flight

What it answers: which batching policy gives the throughput the model can do
without paying for it in latency, and what the worker's defaults
(max_batch, max_wait_ms, inflight_batches, intra_op_threads) should be on CPU.

How: one asyncio loop feeds a ``MicroBatcher`` with events whose arrival times
are drawn from a Poisson process; a batch loop shaped like the worker's
(``Worker._batches``: ``next_batch``, a semaphore of ``inflight_batches``, the
Scorer in a thread pool of that size) scores them with ``Scorer.score_texts``
(tokenization included). Latency is measured from each event's *scheduled*
arrival time to the moment its batch's scores are back, so a stalled generator
cannot hide queueing (no coordinated omission). No Kafka here: bench/e2e.py
measures the whole worker.

Policies:
- ``batch 1``: every event alone;
- ``fixed N``: wait until N events are queued (no time bound);
- ``adaptive N/W ms``: flush at N events or W ms after the first (the worker's batcher).

Capacity is measured first, in the same run, by scoring a pre-filled queue with
the worker's default policy; rates are fractions of it. A run is *overloaded*
when, at the end of the arrival window, more events are still unscored than a
few batches' worth (and over 5% of the arrivals): its queue grew during the run,
so its latency grows with the length of the run and is reported but not
meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import bundle_info, fmt_range, print_table, resolve_bundle, spread, stream_texts, write_result
from streamer.batcher import MicroBatcher

NEVER = 3600.0  # "wait until full": a wait bound no run reaches


@dataclass(frozen=True)
class Policy:
    name: str
    max_batch: int
    max_wait_ms: float  # NEVER * 1000 for fixed batches
    inflight: int = 2
    threads: int = 1  # onnxruntime intra-op threads (0: one per core)

    @property
    def fixed(self) -> bool:
        return self.max_wait_ms >= NEVER * 1000


def adaptive(n: int, wait_ms: float, inflight: int = 2, threads: int = 1) -> Policy:
    extra = (f" inflight {inflight}" if inflight != 2 else "") + (f" threads {threads if threads else 'per core'}" if threads != 1 else "")
    return Policy(f"adaptive {n}/{wait_ms:g}ms" + extra, n, wait_ms, inflight, threads)


def fixed(n: int, threads: int = 1) -> Policy:
    return Policy(f"fixed {n}", n, NEVER * 1000, threads=threads)


def policies(threads: int) -> list[Policy]:
    """The policies compared at every load, all with the worker's default threads and batches in flight."""
    return [Policy("batch 1", 1, 0.0, threads=threads), fixed(16, threads), fixed(64, threads),
            adaptive(64, 2, threads=threads), adaptive(64, 5, threads=threads), adaptive(64, 10, threads=threads)]


def defaults_sweep(threads: int) -> list[Policy]:
    """Around the worker's defaults (64, 5 ms, 2 in flight, ``threads``), one knob at a time."""
    out = [adaptive(64, 5, 1, threads), adaptive(64, 5, 3, threads), adaptive(32, 5, 2, threads), adaptive(128, 5, 2, threads),
           adaptive(256, 10, 2, threads)]
    for t in sorted({0, 1} - {threads}):  # 0: one intra-op thread per core
        out += [adaptive(64, 5, 2, t), adaptive(64, 5, 1, t)]
    return out


# ---------------------------------------------------------------- one run
async def _feed(batcher: MicroBatcher, texts: Sequence[str], arrivals: np.ndarray, t0: float) -> None:
    loop = asyncio.get_running_loop()
    i, n = 0, len(arrivals)
    while i < n:
        now = loop.time() - t0
        if arrivals[i] > now:
            await asyncio.sleep(arrivals[i] - now)
            continue
        while i < n and arrivals[i] <= now:  # everything due (sleep granularity is ~1 ms)
            batcher.put_nowait((texts[i % len(texts)], t0 + arrivals[i]))
            i += 1


async def run_policy(scorer_for: Any, texts: Sequence[str], policy: Policy, rate: float | None, seconds: float,
                     seed: int, prefill: int = 0) -> dict[str, Any]:
    """Score Poisson arrivals at ``rate`` events/s for ``seconds`` (or a pre-filled queue when rate is None)."""
    scorer = scorer_for(policy.threads)
    loop = asyncio.get_running_loop()
    batcher: MicroBatcher = MicroBatcher(policy.max_batch, policy.max_wait_ms / 1000.0)
    pool = ThreadPoolExecutor(max_workers=policy.inflight, thread_name_prefix="bench-scorer")
    slots = asyncio.Semaphore(policy.inflight)
    lat: list[tuple[float, float]] = []  # (arrival, done), loop clock
    sizes: list[int] = []
    pending: set[asyncio.Task] = set()
    t0 = loop.time() + 0.05
    if rate is None:
        arrivals = np.zeros(prefill)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 16)
        arrivals = np.cumsum(gaps)
        arrivals = arrivals[arrivals < seconds]

    async def finish(batch: list[tuple[str, float]], fut: asyncio.Future) -> None:
        try:
            await fut
        finally:
            slots.release()
        done = loop.time()
        lat.extend((arr, done) for _, arr in batch)

    async def batches() -> None:
        while True:
            batch = await batcher.next_batch()
            await slots.acquire()
            sizes.append(len(batch))
            fut = loop.run_in_executor(pool, scorer.score_texts, [t for t, _ in batch])
            task = asyncio.create_task(finish(batch, fut))
            pending.add(task)
            task.add_done_callback(pending.discard)

    feeder = asyncio.create_task(_feed(batcher, texts, arrivals, t0))
    worker = asyncio.create_task(batches())
    window_end = t0 + (seconds if rate is not None else 0.0)
    if rate is None:
        await feeder
        while len(lat) < len(arrivals):
            await asyncio.sleep(0.01)
        window_end = loop.time()
    else:
        await asyncio.sleep(max(0.0, window_end - loop.time()))
        await feeder
        drain_until = loop.time() + min(5.0, seconds)
        while len(lat) < len(arrivals) and loop.time() < drain_until and not policy.fixed:
            await asyncio.sleep(0.01)
    worker.cancel()
    for t in list(pending):
        await asyncio.gather(t, return_exceptions=True)
    pool.shutdown(wait=True)
    return _stats(policy, rate, arrivals, lat, sizes, t0, window_end, seconds if rate is not None else window_end - t0)


def _stats(policy: Policy, rate: float | None, arrivals: np.ndarray, lat: list[tuple[float, float]], sizes: list[int],
           t0: float, window_end: float, seconds: float) -> dict[str, Any]:
    arrived = len(arrivals)
    in_window = sum(1 for _, d in lat if d <= window_end)
    warm = t0 + 0.1 * seconds  # the first 10% of arrivals see an idle pipeline: not steady state
    ms = np.array([(d - a) * 1000 for a, d in lat if a >= warm]) if lat else np.array([])
    return {
        "policy": policy.name, "max_batch": policy.max_batch, "max_wait_ms": None if policy.fixed else policy.max_wait_ms,
        "inflight": policy.inflight, "threads": policy.threads, "offered_per_s": rate, "arrived": arrived,
        "scored": len(lat), "scored_in_window": in_window, "events_per_s": in_window / seconds if seconds > 0 else 0.0,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None, "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "mean_batch": statistics.fmean(sizes) if sizes else 0.0, "batches": len(sizes),
        "overloaded": rate is not None and arrived - in_window > max(2 * policy.max_batch * (policy.inflight + 1), 0.05 * arrived),
    }


# ---------------------------------------------------------------- the suite
class Scorers:
    """One Scorer per intra-op thread count, built once (sessions are expensive to create)."""

    def __init__(self, bundle: Any, device: str, precision: str):
        self.bundle, self.device, self.precision = bundle, device, precision
        self._by_threads: dict[int, Any] = {}

    def __call__(self, threads: int) -> Any:
        from streamer.scorer import Scorer

        if threads not in self._by_threads:
            s = Scorer(self.bundle, self.device, self.precision, threads)
            s.score_texts(["warm up"] * 8)
            self._by_threads[threads] = s
        return self._by_threads[threads]


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Repeats of one (policy, load) pair -> median [range] rows."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["policy"], r.get("load")), []).append(r)
    rows = []
    for (name, load), rs in groups.items():
        row = {k: rs[0][k] for k in ("policy", "max_batch", "max_wait_ms", "inflight", "threads")}
        row.update(load=load, offered_per_s=rs[0]["offered_per_s"], repeats=len(rs),
                   overloaded=sum(r["overloaded"] for r in rs), events_per_s=spread([r["events_per_s"] for r in rs]),
                   mean_batch=spread([r["mean_batch"] for r in rs]))
        for k in ("p50_ms", "p99_ms"):
            vals = [r[k] for r in rs if r[k] is not None]
            row[k] = spread(vals) if vals else None
        rows.append(row)
    return rows


def _fmt_ms(s: dict[str, float] | None) -> str:
    return fmt_range(s, 1) if s else "-"


def show(rows: list[dict[str, Any]], title: str) -> None:
    print_table(["policy", "load", "offered/s", "events/s", "p50 ms", "p99 ms", "mean batch", "overloaded"],
                [[r["policy"], f"{r['load']:.0%}" if isinstance(r["load"], float) else r["load"], f"{r['offered_per_s']:,.0f}" if r["offered_per_s"] else "-",
                  fmt_range(r["events_per_s"]), _fmt_ms(r["p50_ms"]), _fmt_ms(r["p99_ms"]), fmt_range(r["mean_batch"], 1),
                  f"{r['overloaded']}/{r['repeats']}"] for r in rows], title=title)


async def suite(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.bundle import load_bundle
    from streamer.settings import Settings

    bundle = load_bundle(resolve_bundle(args.bundle))
    texts, _ = stream_texts(bundle, 4096, seed=5151, skip=1000)
    scorers = Scorers(bundle, args.device, args.precision)
    defaults = Settings.from_env({})
    default_policy = adaptive(defaults.max_batch, defaults.max_wait_ms, defaults.inflight_batches, defaults.intra_op_threads)
    print(f"bundle {bundle.model_id}; worker defaults: max_batch {defaults.max_batch}, max_wait_ms {defaults.max_wait_ms}, "
          f"inflight_batches {defaults.inflight_batches}, intra_op_threads {defaults.intra_op_threads}")

    caps = []
    for r in range(args.repeats):
        caps.append((await run_policy(scorers, texts, default_policy, None, 0, r, prefill=args.prefill))["events_per_s"])
    capacity = statistics.median(caps)
    print(f"capacity (pre-filled queue, {default_policy.name}): {fmt_range(spread(caps))} events/s")

    runs = []
    loads = [float(x) for x in args.loads.split(",")]
    for rep in range(args.repeats):
        for load in loads:
            for pol in policies(defaults.intra_op_threads):
                res = await run_policy(scorers, texts, pol, capacity * load, args.seconds, seed=1000 * rep + int(load * 100))
                res["load"] = load
                runs.append(res)
        print(f"repeat {rep + 1}/{args.repeats}: policies done")
    policy_rows = summarise(runs)
    for load in loads:
        show([r for r in policy_rows if r["load"] == load], f"load {load:.0%} of capacity ({capacity * load:,.0f} events/s offered)")

    sweep_runs = []
    sweep = [default_policy] + defaults_sweep(defaults.intra_op_threads)
    for rep in range(args.repeats):
        for pol in sweep:
            cap = await run_policy(scorers, texts, pol, None, 0, rep, prefill=args.prefill)
            cap["load"] = "saturated"
            sweep_runs.append(cap)
            for load in (0.5, 0.9):
                res = await run_policy(scorers, texts, pol, capacity * load, args.seconds, seed=7000 + rep)
                res["load"] = load
                sweep_runs.append(res)
    sweep_rows = summarise(sweep_runs)
    show(sweep_rows, "defaults sweep: saturated capacity, then 50% and 90% of the default policy's capacity")
    return {"bundle": bundle_info(bundle), "settings": vars(args),
            "worker_defaults": {"max_batch": defaults.max_batch, "max_wait_ms": defaults.max_wait_ms,
                                "inflight_batches": defaults.inflight_batches, "intra_op_threads": defaults.intra_op_threads},
            "capacity": {"policy": default_policy.name, "events_per_s": spread(caps)},
            "policies": [asdict(p) for p in policies(defaults.intra_op_threads)], "rows": policy_rows, "sweep": sweep_rows,
            "runs": runs + sweep_runs}


async def threads_ab(args: argparse.Namespace) -> dict[str, Any]:
    """Saturated capacity of the thread/in-flight splits of the cores, interleaved, ``--repeats`` times.

    The question behind the ``intra_op_threads`` default: is a core better
    spent on a second intra-op thread of one batch or on a second batch in
    flight? Each repeat runs every split back to back on a pre-filled queue.
    """
    from streamer.bundle import load_bundle

    bundle = load_bundle(resolve_bundle(args.bundle))
    texts, _ = stream_texts(bundle, 4096, seed=5151, skip=1000)
    scorers = Scorers(bundle, args.device, args.precision)
    cores = os.cpu_count() or 1
    splits = [adaptive(64, 5, 2, 0), adaptive(64, 5, 2, 1), adaptive(64, 5, 1, 0), adaptive(64, 5, 1, 1), adaptive(64, 5, cores, 1)]
    splits = list({p.name: p for p in splits}.values())
    runs = []
    for rep in range(args.repeats):
        for pol in splits:
            res = await run_policy(scorers, texts, pol, None, 0, rep, prefill=args.prefill)
            res["load"] = "saturated"
            runs.append(res)
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    rows = summarise(runs)
    base = [r["events_per_s"] for r in runs if r["policy"] == splits[0].name]
    for row in rows:
        mine = [r["events_per_s"] for r in runs if r["policy"] == row["policy"]]
        row["x_default"] = spread([m / b for m, b in zip(mine, base)])
    print_table(["policy", "inflight", "threads (0 = one per core)", "events/s", f"× {splits[0].name}"],
                [[r["policy"], r["inflight"], r["threads"], fmt_range(r["events_per_s"]), fmt_range(r["x_default"], 2, "×")] for r in rows],
                title=f"saturated capacity by thread split, {cores} cores, median [min–max] of {args.repeats} interleaved repeats")
    return {"bundle": bundle_info(bundle), "settings": vars(args), "rows": rows, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", help="bundle directory (default: the shipped transaction bundle)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--loads", default="0.25,0.5,0.9,1.5", help="offered rates as fractions of the measured capacity")
    ap.add_argument("--seconds", type=float, default=4.0, help="arrival window per run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=4096, help="events in the pre-filled queue of a capacity run")
    ap.add_argument("--threads-ab", action="store_true",
                    help="only compare the splits of the cores between intra-op threads and batches in flight (saturated, interleaved)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1.5 s windows")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.prefill = 1.5, 1, 1024
    if args.threads_ab:
        path = write_result("batcher_threads", asyncio.run(threads_ab(args)), args.quick)
        print(f"\nresults: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
        return 0
    payload = asyncio.run(suite(args))
    path = write_result("batcher", payload, args.quick)
    print(f"\nresults: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
