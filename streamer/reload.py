"""Hot reload of model bundles, with shadow scoring before the switch.

A new bundle is loaded next to the serving one (on SIGHUP, or when its directory
changes), and must pass three gates before it serves a single event:

1. it loads: card, tokenizer and graph are valid, and its kind and encoding match
   the lane (a corrupt or incompatible bundle is refused);
2. it scores the lane's recent events (shadow scoring): finite scores in [0, 1];
3. it is not slower than ``reload_max_slowdown`` times the serving model on the
   same batch.

A refused bundle leaves the running model serving and is counted in
``streamer_model_reloads_total{result=...}``; the score records' ``model`` field
tells which model produced each score.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bundle import BundleError, load_bundle
from streamer.scorer import make_scorer

log = logging.getLogger("streamer.reload")


@dataclass
class ReloadResult:
    kind: str
    ok: bool
    reason: str
    model: str | None = None
    mean_abs_diff: float | None = None
    alert_agreement: float | None = None


def bundle_stamp(path: str | Path) -> tuple:
    """What changes when a bundle directory is replaced (mtimes and sizes of its files)."""
    p = Path(path)
    out = []
    for name in sorted(os.listdir(p)) if p.is_dir() else []:
        with_stat = p / name
        try:
            st = with_stat.stat()
        except FileNotFoundError:
            continue
        out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _timed(scorer: Any, texts: list[str], repeats: int = 3) -> tuple[np.ndarray, float]:
    best = float("inf")
    scores = np.zeros(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = scorer.score_batch(texts).scores
        best = min(best, time.perf_counter() - t0)
    return scores, best


def verify(worker: Any, kind: str, path: str | Path) -> tuple[ReloadResult, Any, Any]:
    """Load and gate a candidate bundle for ``kind``; returns (result, bundle, scorer)."""
    lane = worker.lanes[kind]
    s = worker.s
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        return ReloadResult(kind, False, f"refused: {exc}"), None, None
    if bundle.kind != kind:
        return ReloadResult(kind, False, f"refused: {path} is a {bundle.kind} bundle, this lane serves {kind}"), None, None
    try:
        scorer = make_scorer(bundle, s.device, s.precision, s.intra_op_threads, s.trt_cache_dir)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types for a bad graph
        return ReloadResult(kind, False, f"refused: the graph does not load: {str(exc)[:200]}"), None, None
    texts = list(lane.sample) or ["[UNK]"]
    texts = texts[-s.reload_shadow_events :]
    try:
        new_scores, new_t = _timed(scorer, texts)
        old_scores, old_t = _timed(lane.scorer, texts)
    except Exception as exc:  # noqa: BLE001
        return ReloadResult(kind, False, f"refused: shadow scoring failed: {str(exc)[:200]}"), None, None
    if new_scores.shape != (len(texts),) or not np.all(np.isfinite(new_scores)) or new_scores.min() < 0 or new_scores.max() > 1:
        return ReloadResult(kind, False, "refused: shadow scores are not finite probabilities"), None, None
    if old_t > 0 and new_t > s.reload_max_slowdown * old_t:
        return ReloadResult(kind, False, f"refused: {new_t * 1000:.1f} ms per shadow batch vs {old_t * 1000:.1f} ms serving (limit {s.reload_max_slowdown:.1f}x)"), None, None
    old_alert = old_scores >= lane.bundle.alert_threshold
    new_alert = new_scores >= bundle.alert_threshold
    res = ReloadResult(
        kind, True, "accepted", bundle.model_id,
        mean_abs_diff=float(np.mean(np.abs(new_scores - old_scores))) if len(old_scores) == len(new_scores) else None,
        alert_agreement=float(np.mean(old_alert == new_alert)) if len(old_scores) == len(new_scores) else None,
    )
    return res, bundle, scorer


async def reload_lane(worker: Any, kind: str, path: str | Path | None = None) -> ReloadResult:
    """Verify off the event loop, then switch; the running model keeps serving on refusal."""
    lane = worker.lanes[kind]
    path = path or lane.bundle_dir
    loop = asyncio.get_running_loop()
    res, bundle, scorer = await loop.run_in_executor(None, verify, worker, kind, path)
    if res.ok:
        worker.swap_bundle(kind, bundle, scorer)
        lane.bundle_dir = str(path)
        log.info("%s: reloaded %s (shadow: mean |diff| %.4f, alert agreement %.3f)", kind, res.model, res.mean_abs_diff or 0, res.alert_agreement or 0)
    else:
        log.warning("%s: bundle %s %s; still serving %s", kind, path, res.reason, lane.bundle.model_id)
    worker.metrics.reloads.labels(kind, "accepted" if res.ok else "refused").inc()
    return res


async def watch(worker: Any, interval_s: float) -> None:
    """Reload a lane when its bundle directory changes (operators swap it atomically, e.g. a symlink)."""
    stamps = {k: bundle_stamp(l.bundle_dir) for k, l in worker.lanes.items()}
    while True:
        await asyncio.sleep(interval_s)
        for kind, lane in worker.lanes.items():
            stamp = bundle_stamp(lane.bundle_dir)
            if stamp != stamps[kind]:
                stamps[kind] = stamp
                await asyncio.sleep(0.2)  # let a copy in progress finish
                stamps[kind] = bundle_stamp(lane.bundle_dir)
                await reload_lane(worker, kind)


def install_sighup(worker: Any) -> None:
    """SIGHUP reloads every lane from its configured directory."""
    loop = asyncio.get_running_loop()

    def _hup() -> None:
        for kind in worker.lanes:
            loop.create_task(reload_lane(worker, kind))

    try:
        loop.add_signal_handler(signal.SIGHUP, _hup)
    except (NotImplementedError, RuntimeError):
        pass
