"""Throughput and latency against batch size, from the model and batcher results: one PNG for the docs.

    python -m bench.plot                                   # newest full model-*.json and batcher-*.json
    python -m bench.plot --model bench/results/model-X.json --batcher bench/results/batcher-Y.json

Top row, the model alone (bench/model.py): events/s and milliseconds per batch
against batch size, median with the min–max range of the rounds as a band.
Bottom row, the batcher in-process (bench/batcher.py): events/s and p99
latency of each policy at each offered load, against the mean batch size the
policy actually formed. Together they show the trade the batcher makes: larger
batches buy throughput (top left) with per-batch time (top right), and the
adaptive policy only forms large batches when the load needs them (bottom).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from bench.common import ROOT, latest_result

OUT = ROOT / "docs" / "img" / "batch_throughput_latency.png"


def _load(path: Path | None, name: str) -> dict[str, Any] | None:
    path = path or latest_result(name) or latest_result(name, include_quick=True)
    if path is None:
        return None
    doc = orjson.loads(path.read_bytes())
    doc["_path"] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return doc


def plot(model: dict[str, Any] | None, batcher: dict[str, Any] | None, out: Path, threads: int | None = 1) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_tp, ax_ms), (ax_btp, ax_blat) = axes
    if model:
        have = sorted({r.get("threads") for r in model["rows"]} - {None})
        pick = threads if threads in have else (have[0] if have else None)
        mrows = [r for r in model["rows"] if pick is None or r.get("threads") == pick]
        variants = list(dict.fromkeys(r["variant"] for r in mrows))
        for v in variants:
            rows = sorted((r for r in mrows if r["variant"] == v), key=lambda r: r["batch"])
            xs = [r["batch"] for r in rows]
            style = "--" if "torch" in v else "-"
            for ax, key in ((ax_tp, "events_per_s"), (ax_ms, "ms_per_batch")):
                med = [r[key]["median"] for r in rows]
                line, = ax.plot(xs, med, style, marker="o", label=v)
                ax.fill_between(xs, [r[key]["min"] for r in rows], [r[key]["max"] for r in rows], color=line.get_color(), alpha=0.12)
        tt = f", {pick} intra-op thread(s)" if pick else ""
        ax_tp.set_title(f"model alone{tt}: events/s (median, band = min–max)\n{model['_path']}", fontsize=9)
        ax_ms.set_title(f"model alone{tt}: time per batch (ms)", fontsize=9)
        for ax in (ax_tp, ax_ms):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.grid(True, which="both", alpha=0.3)
        ax_tp.legend(fontsize=7)
    if batcher:
        rows = [r for r in batcher["rows"] if isinstance(r.get("load"), float)]
        policies = list(dict.fromkeys(r["policy"] for r in rows))
        loads = sorted({r["load"] for r in rows})
        markers = dict(zip(policies, "os^vDP*Xh"))
        cmap = plt.get_cmap("viridis")
        colors = {ld: cmap(i / max(1, len(loads) - 1)) for i, ld in enumerate(loads)}
        for r in rows:
            x = r["mean_batch"]["median"]
            kw = dict(marker=markers[r["policy"]], color=colors[r["load"]], s=50, edgecolors="black" if r["overloaded"] else "none")
            ax_btp.scatter(x, r["events_per_s"]["median"], **kw)
            if r["p99_ms"]:
                ax_blat.scatter(x, r["p99_ms"]["median"], **kw)
        for p in policies:
            ax_blat.scatter([], [], marker=markers[p], color="grey", label=p)
        for ld in loads:
            ax_blat.scatter([], [], marker="s", color=colors[ld], label=f"{ld:.0%} of capacity")
        ax_blat.scatter([], [], marker="o", facecolors="none", edgecolors="black", label="overloaded (queue grew)")
        cap = batcher["capacity"]["events_per_s"]["median"]
        ax_btp.axhline(cap, color="grey", linestyle=":", label=f"capacity {cap:,.0f}/s")
        ax_btp.set_title(f"batcher + Scorer, Poisson arrivals: events/s\n{batcher['_path']}", fontsize=9)
        ax_blat.set_title("batcher + Scorer: p99 latency (ms), arrival to score", fontsize=9)
        for ax in (ax_btp, ax_blat):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("mean batch size formed")
            ax.grid(True, which="both", alpha=0.3)
        ax_blat.set_yscale("log")
        ax_blat.legend(fontsize=7, ncol=2)
        ax_btp.legend(fontsize=7)
    src = (model or batcher or {}).get("machine", {})
    fig.suptitle(f"{src.get('cpu', '?')}, {src.get('cores', '?')} cores (shared); commit {(model or batcher or {}).get('commit', '?')}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="model results JSON (default: newest full run)")
    ap.add_argument("--batcher", type=Path, help="batcher results JSON (default: newest full run)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=1, help="which intra-op thread count of the model results to plot")
    args = ap.parse_args(argv)
    model, batcher = _load(args.model, "model"), _load(args.batcher, "batcher")
    if not model and not batcher:
        raise SystemExit("no results yet: run python -m bench.model and python -m bench.batcher first")
    path = plot(model, batcher, args.out, args.threads)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
