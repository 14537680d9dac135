"""A sensor bundle on NAB, event by event through the worker's own path, and the card's NAB report.

``python -m models.sensor_nab --bundle DIR`` scores all 58 series (each its own
asset, from its first reading) through ``streamer.intake.Intake`` and the
bundle's scorer, exactly as the worker would, and applies NAB's rules
(``models.nab``). No NAB label is used anywhere but in this scoring.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from models import nab
from models.pipeline import default_workers, parallel_map

REPO = Path(__file__).resolve().parent.parent


def _job(job: tuple[str, list[Any], int, str]) -> dict[str, np.ndarray]:
    bundle_dir, corpus, threads, precision = job
    return nab_scores(bundle_dir, corpus, threads=threads, precision=precision, workers=1, log=lambda m: None)


def nab_scores(bundle_dir: str | Path, corpus: Sequence[Any] | None = None, threads: int = 1, batch: int = 256,
               precision: str = "fp32", workers: int | None = 1, log: Any = print) -> dict[str, np.ndarray]:
    """Per-series scores; ``workers`` > 1 scores disjoint sets of series in that many processes (same scores)."""
    from models.sensor_evaluate import score_stream
    from streamer.bundle import load_bundle
    from streamer.scorer import make_scorer

    corpus = list(corpus) if corpus is not None else nab.load_corpus()
    workers = default_workers() if workers is None else workers
    t0 = time.perf_counter()
    if workers > 1 and len(corpus) > 1:
        shares: list[list[Any]] = [[] for _ in range(workers)]
        sizes = [0] * workers
        for s in sorted(corpus, key=lambda s: -len(s.ts)):  # longest first, each to the lightest share
            k = sizes.index(min(sizes))
            shares[k].append(s)
            sizes[k] += len(s.ts)
        merged: dict[str, np.ndarray] = {}
        for part in parallel_map(_job, [(str(bundle_dir), sh, threads, precision) for sh in shares if sh], workers):
            merged.update(part)
        log(f"NAB: scored {sum(sizes)} events in {time.perf_counter() - t0:.0f}s ({workers} processes)")
        return {s.name: merged[s.name] for s in corpus}
    bundle = load_bundle(bundle_dir, precision=precision)
    scorer = make_scorer(bundle, "cpu", precision, threads)
    out: dict[str, np.ndarray] = {}
    for s in corpus:  # fresh windows per series: each is its own asset
        out[s.name] = score_stream(bundle, scorer, nab.to_events(s, with_labels=False), "nab", f"NAB {s.name}", batch)
    log(f"NAB: scored {sum(len(v) for v in out.values())} events in {time.perf_counter() - t0:.0f}s")
    return out


NAB_POLICY = ("no NAB label is used for training, fitting or calibration: the 'value' sensor's type is fitted on "
              "the probationary 15% of each series only (what NAB lets a detector learn from before scoring); "
              "thresholds are optimised per profile over the whole corpus, as NAB's protocol does for every detector")


def nab_report(scores: Mapping[str, Sequence[float]], corpus: Sequence[Any] | None = None) -> dict[str, Any]:
    """NAB results per profile (normalised score, raw, threshold) and the standard profile per series."""
    corpus = corpus if corpus is not None else nab.load_corpus()
    res = nab.score_all_profiles(corpus, scores)
    std = res["standard"]
    return {
        "profiles": {k: {"score": round(r.normalized, 2), "raw": round(r.raw, 3), "threshold": r.threshold,
                         "null_raw": round(r.null, 3), "perfect_raw": round(r.perfect, 3)} for k, r in res.items()},
        "standard_per_series": nab.series_breakdown(corpus, scores, "standard", std.threshold),
        "series": len(corpus), "windows": sum(len(s.windows) for s in corpus), "held_out": NAB_POLICY,
        "scoring": "models/nab.py: NAB v1 rules (scaled sigmoid, earliest detection per window, 15% probation capped "
                   "at 750 rows, per-profile corpus-wide threshold optimization, 0-100 between the null and perfect "
                   "detectors); scores from the worker's intake + scorer path; no detection post-processing",
        "command": "python -m models.sensor_nab --bundle streamer/bundles/sensors",
        "references_standard": {"Numenta HTM": 70.5, "ARTime": 74.9, "KNN CAD": 58.0, "Random Cut Forest": 51.7},
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.sensor_nab", description=(
        "Score a sensor bundle on the Numenta Anomaly Benchmark through the worker's own path (validation, window, "
        "encoding, model) and print the NAB score per profile. Corpus: --nab-dir, else $STREAMER_NAB_DIR, else "
        "../shared/data/nab."))
    p.add_argument("--bundle", default=str(REPO / "streamer" / "bundles" / "sensors"), help="sensor bundle directory")
    p.add_argument("--nab-dir", default=None, help="NAB corpus root (with data/ and labels/)")
    p.add_argument("--series", action="append", default=None, help="score only these series (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="graph variant")
    p.add_argument("--workers", type=int, default=None, help="processes scoring disjoint sets of series (default: one per core, up to 4)")
    p.add_argument("--output", default=None, help="also write the JSON report here")
    p.add_argument("--update-card", action="store_true", help="write the report into the bundle's card.json as metrics.nab")
    args = p.parse_args(argv)
    corpus = nab.load_corpus(args.nab_dir, args.series)
    scores = nab_scores(args.bundle, corpus, threads=args.threads, precision=args.precision, workers=args.workers)
    report = nab_report(scores, corpus)
    text = json.dumps(report, indent=2)
    if args.update_card:
        from models.bundle import read_card, write_card

        card = read_card(args.bundle)
        card.setdefault("metrics", {})["nab"] = report
        write_card(args.bundle, card)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print({k: v["score"] for k, v in report["profiles"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
