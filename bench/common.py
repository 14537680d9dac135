"""Shared pieces of the model, batcher and scaling benchmarks: inputs, machine facts, tables, results.

Why a shared module: every figure in docs/benchmarks.md has to say which
machine, commit, bundle and command produced it, and every benchmark must feed
the model the texts the worker would build (synthetic events through the
bundle's own encoding, windows and TokenEncoder), not random token ids.
"""

from __future__ import annotations

import itertools
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def default_bundle() -> Path:
    """The shipped transaction bundle (the one the worker serves by default)."""
    from streamer.bundle import DEFAULT_BUNDLES

    return DEFAULT_BUNDLES["transaction"]


def resolve_bundle(path: str | None) -> Path:
    """``--bundle`` or the shipped bundle; a clear error when neither exists."""
    p = Path(path) if path else default_bundle()
    if not (p / "card.json").is_file():
        sys.exit(f"no bundle at {p}: pass --bundle DIR (e.g. build one with `python -m models.cli train --out DIR "
                 f"--steps-scale 0.05 --data-scale 0.05 --no-baselines`)")
    return p


def stream_texts(bundle: Any, n: int, seed: int, skip: int = 0, fraud_rate: float | None = None) -> tuple[list[str], list[int]]:
    """Texts and labels of ``n`` synthetic events as the worker encodes them (windows included).

    ``skip`` drops the first events of the stream, whose windows are still
    empty and whose texts are therefore shorter than in steady state.
    """
    from models.dataset import rows
    from streamer.synth import for_kind

    kw: dict[str, Any] = {"n_events": n + skip, "seed": seed}
    if fraud_rate is not None:
        kw["fraud_rate"] = fraud_rate
    evs = for_kind(bundle.kind).generate(**kw)
    out = list(itertools.islice(rows(evs, bundle.encoding, bundle.card, require_label=False), skip, skip + n))
    return [r.text for r in out], [int(r.label or 0) for r in out]


def cpu_model() -> str:
    """``lscpu``'s model name (the docs cite it next to every CPU figure)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """Where a figure was measured: CPU, cores, load, GPU, library versions."""
    import numpy
    import onnxruntime

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "gpu": gpu_name(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(), "numpy": numpy.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def bundle_info(bundle: Any) -> dict[str, Any]:
    arch = bundle.card.get("architecture") or {}
    return {"path": str(bundle.path), "model": bundle.model_id, "digest": bundle.digest(), "parameters": arch.get("parameters"),
            "max_seq_len": bundle.tokens.max_len, "buckets": list(bundle.tokens.buckets),
            "variants": sorted((bundle.card.get("variants") or {"fp32": ""}).keys())}


def command_line() -> str:
    return "python -m bench." + Path(sys.argv[0]).stem + "".join(" " + shlex.quote(a) for a in sys.argv[1:])


def write_result(name: str, payload: Mapping[str, Any], quick: bool) -> Path:
    """bench/results/NAME[-quick]-YYYYmmdd-HHMMSS.json, with machine, commit and command."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}{'-quick' if quick else ''}-{stamp}.json"
    doc = {"bench": name, "quick": quick, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(),
           "command": command_line(), "machine": machine(), **payload}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    return path


def latest_result(name: str, include_quick: bool = False) -> Path | None:
    """Newest results file of a benchmark (full runs unless ``include_quick``); "scaling" never matches "scaling-noop"."""
    pattern = re.compile(rf"^{re.escape(name)}(-quick)?-\d{{8}}-\d{{6}}\.json$")
    files = sorted((f for f in RESULTS.glob(f"{name}-*.json") if pattern.match(f.name)), key=lambda f: f.name.rsplit("-", 2)[-2:])
    if not include_quick:
        files = [f for f in files if not f.name.startswith(f"{name}-quick-")]
    return files[-1] if files else None


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of repeated measurements (the machine is shared: one number would mislead)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt_range(s: Mapping[str, float], digits: int = 0, unit: str = "") -> str:
    if digits == 0:
        return f"{s['median']:,.0f}{unit} [{s['min']:,.0f}–{s['max']:,.0f}]"
    return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A plain-text table (copied into docs/benchmarks.md as Markdown by hand or by --markdown)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def timed_rate(fn: Callable[[int], int], seconds: float, min_calls: int = 3) -> tuple[float, int, float]:
    """Call ``fn(i)`` (returns events done) for ``seconds``; (events/s, calls, seconds)."""
    done = calls = 0
    t0 = time.perf_counter()
    while True:
        done += fn(calls)
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and calls >= min_calls:
            return done / dt, calls, dt


async def read_scores(brokers: str, topic: str, n: int, timeout: float) -> list[int]:
    """Broker timestamps (ms) of the first ``n`` records of ``topic`` (or as many as arrive before the timeout), sorted.

    Throughput in the Kafka benches is read from these, so start-up and group joins count for no contender.
    """
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=brokers, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < n and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                stamps.extend(m.timestamp for m in msgs)
    finally:
        await c.stop()
    return sorted(stamps)
