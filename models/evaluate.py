"""Metrics, thresholds at a target false-positive rate, ONNX scoring, and the baselines.

Why FPR-based thresholds: an alert queue is sized by how many false alarms
analysts can take, so the alert threshold is the score at which the validation
split's false-positive rate reaches the target (0.1% by default), and severity
bands are stricter FPR targets. Recall at 0.1% and 0.02% FPR is reported because
ROC AUC hides exactly that corner.

Every report puts the DeepSeek model beside two baselines on the same rows:
scikit-learn's HistGradientBoostingClassifier and River's HalfSpaceTrees, both on
``encoding.vector`` features (raw numbers, not buckets). The GBT gets a small
hyper-parameter search on the same validation split the model's thresholds use,
so it is not handicapped. The model itself is scored through onnxruntime and the
bundle's ``TokenEncoder``: the worker's own path.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from models.export import run_logits, session, softmax1

SEVERITY_FPR = {"low": 1e-3, "medium": 5e-4, "high": 2e-4, "critical": 5e-5}
REPORT_FPRS = (1e-3, 2e-4)


def threshold_for_fpr(labels: Sequence[int], scores: Sequence[float], fpr: float) -> float:
    """Smallest threshold with FPR(score >= threshold) <= ``fpr`` on these rows.

    >>> threshold_for_fpr([0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9, 0.8], 0.25) > 0.3
    True
    >>> threshold_for_fpr([0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9, 0.8], 0.25) <= 0.9
    True
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    neg = np.sort(s[y == 0])[::-1]
    if not len(neg):
        return float(s.min()) if len(s) else 0.5
    k = int(np.floor(fpr * len(neg) + 1e-9))
    if k >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[k], np.inf))


def at_threshold(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, float]:
    """Precision (alert precision), recall, F1 and FPR of ``score >= threshold``.

    >>> at_threshold([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.4], 0.5)
    {'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'fpr': 0.5, 'alerts': 2}
    """
    y = np.asarray(labels).astype(bool)
    hit = np.asarray(scores, dtype=np.float64) >= threshold
    tp, fp = int((hit & y).sum()), int((hit & ~y).sum())
    fn, tn = int((~hit & y).sum()), int((~hit & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": fp / (fp + tn) if fp + tn else 0.0,
            "alerts": tp + fp}


def recall_at_fpr(labels: Sequence[int], scores: Sequence[float], fpr: float) -> float:
    """Recall at the threshold where this set's FPR reaches ``fpr`` (an oracle threshold)."""
    return at_threshold(labels, scores, threshold_for_fpr(labels, scores, fpr))["recall"]


def metrics(labels: Sequence[int], scores: Sequence[float], threshold: float | None = None) -> dict[str, Any]:
    """AUPRC, ROC AUC, recall at FPR 0.1% / 0.02%, and F1 / precision / recall at ``threshold``.

    >>> m = metrics([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9], threshold=0.5)
    >>> m["auprc"], m["roc_auc"], m["f1"], m["alert_precision"]
    (1.0, 1.0, 1.0, 1.0)
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {"rows": int(len(y)), "positives": int(y.sum())}
    both = 0 < y.sum() < len(y)
    out["auprc"] = float(average_precision_score(y, s)) if both else float("nan")
    out["roc_auc"] = float(roc_auc_score(y, s)) if both else float("nan")
    for f in REPORT_FPRS:
        out[f"recall_at_fpr_{f * 100:g}%"] = recall_at_fpr(y, s, f) if both else float("nan")
    if threshold is not None:
        at = at_threshold(y, s, threshold)
        out.update({"threshold": float(threshold), "f1": at["f1"], "alert_precision": at["precision"],
                    "recall": at["recall"], "fpr": at["fpr"], "alerts": at["alerts"]})
    return out


def choose_thresholds(labels: Sequence[int], scores: Sequence[float], alert_fpr: float = 1e-3,
                      bands: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Alert threshold and severity bands (monotonic) from a validation split."""
    bands = dict(bands or SEVERITY_FPR)
    bands["low"] = alert_fpr
    alert = threshold_for_fpr(labels, scores, alert_fpr)
    severity: dict[str, float] = {}
    floor = alert
    for name in ("low", "medium", "high", "critical"):
        t = max(floor, threshold_for_fpr(labels, scores, bands[name]))
        severity[name] = float(t)
        floor = t
    return {"alert": float(alert), "severity": severity, "target_fpr": alert_fpr,
            "severity_fpr": {k: bands[k] for k in ("low", "medium", "high", "critical")},
            "chosen_on": "validation split (see metrics.validation)"}


# -- scoring ----------------------------------------------------------------------

def score_onnx(path: Any, tokens: Any, texts: Sequence[str], batch: int = 256, threads: int = 1,
               workers: int | None = None) -> np.ndarray:
    """Scores of texts through onnxruntime + TokenEncoder: P(fraud) = softmax(logits)[:, 1].

    ``workers`` sessions (default: one per core, up to 4) score contiguous runs of whole batches
    in threads (onnxruntime and the tokenizer release the GIL), so the batches, and therefore
    the scores, are exactly those of one session: only the wall time changes. Evaluation is a
    large part of a build once training is done and the cores are free.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty(len(texts), dtype=np.float64)
    starts = list(range(0, len(texts), batch))
    workers = max(1, min(4, os.cpu_count() or 1)) if workers is None else max(1, workers)
    workers = min(workers, len(starts)) if starts else 1

    def run(chunk: Sequence[int]) -> None:
        sess = session(path, threads)
        for s in chunk:
            ids, mask = tokens.encode(texts[s : s + batch])
            out[s : s + len(ids)] = softmax1(run_logits(sess, ids, mask))

    if workers == 1:
        run(starts)
        return out
    per = -(-len(starts) // workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, [starts[i : i + per] for i in range(0, len(starts), per)]))
    return out


# -- baselines --------------------------------------------------------------------

GBT_GRID = (
    dict(learning_rate=0.1, max_iter=300, max_leaf_nodes=31, l2_regularization=0.0),
    dict(learning_rate=0.05, max_iter=600, max_leaf_nodes=63, l2_regularization=1.0),
)


def gbt_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seed: int = 0,
                 grid: Sequence[Mapping[str, Any]] = GBT_GRID,
                 categorical: Sequence[int] | None = None, threads: int = 1) -> tuple[Any, dict[str, Any]]:
    """HistGradientBoosting fitted on the training rows; the grid point with the best validation AUPRC wins.

    ``categorical``: columns holding category codes rather than numbers (the word slots of
    ``models.token_baseline``). ``threads``: OpenMP threads for the fit; the fitted trees
    were identical at 1 and 2 here (histograms are built per feature).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    best, best_ap, tried = None, -1.0, []
    extra = {} if categorical is None else {"categorical_features": list(categorical)}
    with threadpool_limits(threads):
        for params in grid:
            t0 = time.perf_counter()
            clf = HistGradientBoostingClassifier(random_state=seed, early_stopping=True, validation_fraction=0.1,
                                                 n_iter_no_change=30, **extra, **params)
            clf.fit(x_train, y_train)
            ap = float(average_precision_score(y_val, clf.predict_proba(x_val)[:, 1]))
            tried.append({**params, "val_auprc": ap, "iters": int(clf.n_iter_), "fit_s": round(time.perf_counter() - t0, 1)})
            if ap > best_ap:
                best, best_ap = clf, ap
    return best, {"model": "sklearn HistGradientBoostingClassifier", "grid": tried}


def gbt_scores(clf: Any, x: np.ndarray) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return clf.predict_proba(x)[:, 1].astype(np.float64)


class HSTBaseline:
    """River HalfSpaceTrees, streaming: warm up on training rows, then score-then-learn.

    Features are min-max scaled with training statistics (HST assumes [0, 1]).
    Unsupervised: it never sees a label, which is its role in the comparison:
    what a label-free streaming detector gets from the same features.
    """

    def __init__(self, names: Sequence[str], x_warm: np.ndarray, seed: int = 0, n_trees: int = 25, height: int = 12,
                 window_size: int = 1000):
        from river.anomaly import HalfSpaceTrees

        self.names = list(names)
        self.lo = np.percentile(x_warm, 0.5, axis=0)
        self.hi = np.percentile(x_warm, 99.5, axis=0)
        self.hi = np.where(self.hi > self.lo, self.hi, self.lo + 1.0)
        self.model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self.params = {"n_trees": n_trees, "height": height, "window_size": window_size, "warmup_rows": int(len(x_warm))}
        for row in self._scaled(x_warm):
            self.model.learn_one(row)

    def _scaled(self, x: np.ndarray):
        z = np.clip((x - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        names = self.names
        for r in z.tolist():
            yield dict(zip(names, r))

    def score_stream(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.float64)
        m = self.model
        for i, row in enumerate(self._scaled(x)):
            out[i] = m.score_one(row)
            m.learn_one(row)
        return out
