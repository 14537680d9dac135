"""Worker processes in one consumer group: aggregate events/s for 1, 2, 4, 8 processes.

    python -m bench.scaling                    # real bundle, 1/2/4/8 processes, 2 repeats
    python -m bench.scaling --quick            # smoke run: 1 and 2 processes, small backlog
    python -m bench.scaling --bundle DIR --processes 1,2,4
    python -m bench.scaling --noop             # the worker without the model: host-side cost per event
    python -m bench.scaling --device cuda      # GPU host: processes sharing one GPU

Each run: an input topic with ``--partitions`` (>= 8) partitions on the
embedded broker, N worker processes (``python -m streamer.cli worker``, device
cpu, one consumer group) with the machine's cores split between them and their
batches in flight as intra-op threads (cores // (N x inflight_batches), at
least 1). Once every process holds its partitions (read from the workers' own
"restored ... windows for partitions" log lines, stable for a moment), the backlog is written in one burst (tens of thousands of events/s,
far above what the workers drain), so group joins and rebalances stay out of
the measurement. Aggregate events/s comes from the broker timestamps of the
score records: between the 10th and the 90th percentile record (steady state),
and first to last.

Each run also records the CPU seconds every worker process and the broker
used, and how busy the whole machine was (``/proc/stat``, every process,
other tenants' included), which is what explains the curve: once the machine's
cores are all busy, more processes cannot add throughput, only take a larger
share of the cores from whatever else runs there.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.common import ROOT, bundle_info, fmt_range, print_table, read_scores, resolve_bundle, spread, write_result
from streamer.broker import EmbeddedBroker, ensure_topics
from streamer.producer import produce

ASSIGNED = re.compile(r"restored \d+ windows for partitions \[([\d, ]*)\]")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, every process included (/proc/stat)."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals) - idle, sum(vals)


def events(n: int, seed: int) -> list[bytes]:
    from streamer.synth import for_kind

    return [orjson.dumps(e) for e in itertools.islice(for_kind("transaction").generate(n, seed, start_ms=int(time.time() * 1000) - 3_600_000), n)]


def worker_cmd(brokers: str, tag: str, topic_in: str, bundle: str, threads: int, partitions: int, extra: list[str],
               device: str = "cpu") -> list[str]:
    return [sys.executable, "-m", "streamer.cli", "worker", "--bundle", bundle, "--brokers", brokers, "--group-id", f"scale-{tag}",
            "--transactions-topic", topic_in, "--sensors-topic", "", "--scores-topic", f"scores-{tag}",
            "--alerts-topic", f"alerts-{tag}", "--dead-letters-topic", f"dlq-{tag}", "--partitions", str(partitions),
            "--device", device, "--intra-op-threads", str(threads), "--metrics-port", "0", "--reload-watch-s", "0",
            "--log-level", "INFO", *extra]


def assignments(logs: list[Path]) -> list[set[int]]:
    """Each worker's latest assignment, from its log."""
    out = []
    for log in logs:
        try:
            found = ASSIGNED.findall(log.read_text(errors="replace"))
        except OSError:
            found = []
        out.append({int(p) for p in found[-1].split(",") if p.strip()} if found else set())
    return out


def wait_stable(logs: list[Path], procs: list[subprocess.Popen], partitions: int, timeout: float, settle: float = 2.0) -> float:
    """Seconds until every worker holds a share and together they hold every partition, unchanged for ``settle`` s."""
    t0 = time.monotonic()
    last, since = None, None
    while time.monotonic() - t0 < timeout:
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a worker exited during start-up; see {logs[0].parent}")
        cur = assignments(logs)
        covered = set().union(*cur) == set(range(partitions)) and sum(len(a) for a in cur) == partitions
        ok = covered and all(cur[: min(len(cur), partitions)])
        if ok and cur == last:
            if time.monotonic() - since >= settle:
                return time.monotonic() - t0
        else:
            since = time.monotonic()
        last = cur if ok else None
        time.sleep(0.2)
    raise TimeoutError(f"group did not settle within {timeout:.0f}s: {assignments(logs)}")


def rates(stamps: list[int]) -> dict[str, float]:
    n = len(stamps)
    if n < 10:
        return {"steady_events_per_s": 0.0, "first_to_last_events_per_s": 0.0}
    lo, hi = stamps[n // 10], stamps[(9 * n) // 10]
    return {"steady_events_per_s": ((9 * n) // 10 - n // 10) / max(1e-3, (hi - lo) / 1000),
            "first_to_last_events_per_s": (n - 1) / max(1e-3, (stamps[-1] - stamps[0]) / 1000),
            "span_s": (stamps[-1] - stamps[0]) / 1000}


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_once(broker: EmbeddedBroker, n_proc: int, args: argparse.Namespace, backlog: list[bytes], logdir: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    topic_in = f"scale-in-{tag}"
    asyncio.run(ensure_topics(broker.bootstrap, [topic_in, f"scores-{tag}", f"alerts-{tag}", f"dlq-{tag}"], args.partitions))
    cores = os.cpu_count() or 1
    # cores split between processes and their batches in flight (the worker's own rule, see settings.intra_op_threads);
    # on a GPU the CPU only does the host side
    threads = max(1, cores // (n_proc * args.inflight_batches)) if args.device == "cpu" else 1
    extra = args.worker_args.split() + ["--inflight-batches", str(args.inflight_batches)] + (["--noop-scorer"] if args.noop else [])
    logs = [logdir / f"{tag}-w{i}.log" for i in range(n_proc)]
    procs = []
    for log in logs:
        with open(log, "wb") as fh:
            procs.append(subprocess.Popen(worker_cmd(broker.bootstrap, tag, topic_in, args.bundle, threads, args.partitions, extra, args.device),
                                          stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True))
    try:
        settle_s = wait_stable(logs, procs, args.partitions, timeout=args.join_timeout)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        broker0 = cpu_seconds(broker.proc.pid) if broker.proc else 0.0
        busy0, _ = machine_jiffies()
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        asyncio.run(produce(broker.bootstrap, topic_in, iter(backlog)))
        produce_s = time.monotonic() - t0
        stamps = asyncio.run(read_scores(broker.bootstrap, f"scores-{tag}", len(backlog), timeout=max(120.0, len(backlog) / 100)))
        wall = time.monotonic() - t0
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0)]
        broker_cpu = (cpu_seconds(broker.proc.pid) - broker0) if broker.proc else 0.0
        busy1, _ = machine_jiffies()
        load1 = os.getloadavg()[0]
    finally:
        stop(procs)
    res = {"processes": n_proc, "intra_op_threads": threads, "events": len(backlog), "scored": len(stamps),
           "group_settle_s": settle_s, "produce_s": produce_s, "wall_s": wall, **rates(stamps),
           "worker_cpu_s": sum(cpu), "worker_cpu_s_each": cpu, "broker_cpu_s": broker_cpu}
    res["cores_busy"] = (res["worker_cpu_s"] + broker_cpu) / max(1e-3, wall)  # burst start to last score read
    res["machine_cores_busy"] = (busy1 - busy0) / TICK / max(1e-3, wall)  # every process on the machine, ours and others'
    res["load_avg_1m"] = [load0, load1]
    res["worker_cpu_ms_per_event"] = 1000 * res["worker_cpu_s"] / max(1, len(stamps))
    print(f"  {n_proc} process(es) x {threads} thread(s): {res['steady_events_per_s']:,.0f} events/s steady, "
          f"{res['first_to_last_events_per_s']:,.0f} first-to-last; {res['cores_busy']:.2f} cores busy "
          f"(machine {res['machine_cores_busy']:.2f}, load {load0:.1f}) "
          f"({res['worker_cpu_ms_per_event']:.2f} worker CPU-ms/event); group settled in {settle_s:.1f}s", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", help="bundle directory (default: the shipped transaction bundle)")
    ap.add_argument("--processes", default="1,2,4,8")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--events", type=int, default=20000, help="backlog per run")
    ap.add_argument("--repeats", type=int, default=2, help="repeats (the order of process counts alternates)")
    ap.add_argument("--join-timeout", type=float, default=120.0)
    ap.add_argument("--worker-args", default="", help="extra worker flags, e.g. '--max-batch 128'")
    ap.add_argument("--inflight-batches", type=int, default=2, help="the worker's inflight_batches (default: the worker's default)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: processes share the GPU (one intra-op thread each)")
    ap.add_argument("--noop", action="store_true", help="workers skip the model (--noop-scorer): the host side's cost alone, "
                                                         "which sets how many processes one GPU needs")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 and 2 processes, 2000 events, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.processes, args.events, args.repeats = "1,2", 2000, 1
    if args.partitions < 8 and not args.quick:
        sys.exit("use >= 8 partitions so 8 processes each get one")
    args.bundle = str(resolve_bundle(args.bundle))
    from streamer.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    counts = [int(x) for x in args.processes.split(",")]
    backlog = events(args.events, seed=99)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp, EmbeddedBroker(port=0) as broker:
        print(f"broker {broker.bootstrap}; {args.events:,} events per run, {args.partitions} partitions, bundle {bundle.model_id}", flush=True)
        for rep in range(args.repeats):
            order = counts if rep % 2 == 0 else counts[::-1]
            for n in order:
                runs.append(run_once(broker, n, args, backlog, Path(tmp)))
    rows = []
    base = [r["steady_events_per_s"] for r in runs if r["processes"] == counts[0]]
    for n in counts:
        rs = [r for r in runs if r["processes"] == n]
        rows.append({"processes": n, "intra_op_threads": rs[0]["intra_op_threads"],
                     "steady_events_per_s": spread([r["steady_events_per_s"] for r in rs]),
                     "first_to_last_events_per_s": spread([r["first_to_last_events_per_s"] for r in rs]),
                     "x_one_process": spread([r["steady_events_per_s"] / b for r, b in zip(rs, base)]) if base else None,
                     "cores_busy": spread([r["cores_busy"] for r in rs]),
                     "machine_cores_busy": spread([r["machine_cores_busy"] for r in rs]),
                     "worker_cpu_ms_per_event": spread([r["worker_cpu_ms_per_event"] for r in rs])})
    print_table(["processes", "threads each", "events/s (steady)", "first-to-last", f"× {counts[0]} process", "cores busy (workers+broker)", "machine cores busy", "worker CPU-ms/event"],
                [[r["processes"], r["intra_op_threads"], fmt_range(r["steady_events_per_s"]), fmt_range(r["first_to_last_events_per_s"]),
                  fmt_range(r["x_one_process"], 2, "×") if r["x_one_process"] else "", fmt_range(r["cores_busy"], 2), fmt_range(r["machine_cores_busy"], 2),
                  fmt_range(r["worker_cpu_ms_per_event"], 2)] for r in rows],
                title=f"scaling on {os.cpu_count()} cores ({'no-op scorer: host side only' if args.noop else args.device}): "
                      f"median [min–max] over {args.repeats} repeat(s)")
    path = write_result("scaling-noop" if args.noop else "scaling", {"bundle": bundle_info(bundle), "settings": vars(args), "rows": rows, "runs": runs}, args.quick)
    print(f"\nresults: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
