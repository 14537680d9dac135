"""A tree on the classifier's own token slots as a teacher: soft training targets.

Why: at the CPU budget of the default bundles (about half a million rows seen
once) the transformer extracts less from its words than a gradient-boosted tree
fitted on exactly those words does (docs/model-card.md, "Reading the numbers").
Training against a mix of the label and the tree's probability gives the model
the tree's graded ranking of every row (which legitimate rows look like fraud,
which fraud looks ordinary) in the same steps, instead of leaving it to be
discovered from a few thousand positives.

The teacher sees token ids, one categorical feature per slot counted from the
end (an event's own words sit at fixed slots there, the summary of earlier
events further back), and is fitted on the curriculum's training rows only
(early stopping on 10% of them); the validation split picks among grid points
when there are several and is scored for the card. It is a training aid: it is
neither shipped nor used at scoring time, and the card's baselines are separate
trees.

>>> slot_matrix([[5, 6, 1], [6, 1]], width=4).tolist()
[[1, 6, 5, -1], [1, 6, -1, -1]]
>>> soft_targets([0, 1, 1], [0.5, 0.5, 1.0], alpha=0.2).round(2).tolist()
[0.4, 0.6, 1.0]
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

MAX_CATEGORIES = 254  # HistGradientBoosting's categorical limit (255 bins, one kept for "missing")
# The card's larger GBT grid point (the one that won on validation for both the
# exact-number and the word-slot trees).
TEACHER_GRID = (dict(learning_rate=0.05, max_iter=600, max_leaf_nodes=63, l2_regularization=1.0),)


def slot_matrix(ids: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """Token ids right-aligned and reversed: column j is the j-th token from the end, -1 where a row is shorter."""
    out = np.full((len(ids), width), -1, dtype=np.int64)
    for i, row in enumerate(ids):
        tail = row[-width:]
        if len(tail):
            out[i, : len(tail)] = tail[::-1]
    return out


def soft_targets(labels: Sequence[int], teacher: Sequence[float], alpha: float) -> np.ndarray:
    """``alpha * label + (1 - alpha) * teacher``: cross-entropy against it mixes the two losses in that ratio."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(teacher, dtype=np.float64)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha must be in [0, 1], got {alpha}")
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} teacher probabilities")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("teacher probabilities must be finite and in [0, 1]")
    return alpha * y + (1.0 - alpha) * p


class SlotCodes:
    """Token id -> category code per slot (counted from the end), fitted on training rows.

    Code 0 is an empty slot (a row shorter than ``width``), 1.. the ids seen in that
    slot in ``fit`` (in id order), NaN (missing to the tree) an id never seen there.

    >>> SlotCodes(width=2).fit([[7, 3], [3]]).transform([[7, 3], [3], [9, 3]]).tolist()
    [[1.0, 1.0], [1.0, 0.0], [1.0, nan]]
    """

    def __init__(self, width: int):
        self.width = width
        self.luts: np.ndarray | None = None  # [slot, id + 1] -> code; the last column: unseen ids

    def fit(self, ids: Sequence[Sequence[int]]) -> "SlotCodes":
        m = slot_matrix(ids, self.width) + 1  # an empty slot (-1) looks up column 0
        vocab = (int(m.max()) if m.size else 0) + 2  # one spare column for ids never seen in training
        self.luts = np.full((self.width, vocab), np.nan)
        self.luts[:, 0] = 0.0
        for j in range(self.width):
            seen = np.unique(m[:, j][m[:, j] > 0])
            if len(seen) >= MAX_CATEGORIES:
                raise ValueError(f"slot {j} (from the end) holds {len(seen)} distinct tokens; at most "
                                 f"{MAX_CATEGORIES - 1} fit a categorical tree feature")
            self.luts[j, seen] = np.arange(1, len(seen) + 1)
        return self

    def transform(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        if self.luts is None:
            raise RuntimeError("SlotCodes.transform before fit")
        m = np.minimum(slot_matrix(ids, self.width) + 1, self.luts.shape[1] - 1)  # unknown ids: the spare column
        return self.luts[np.arange(self.width)[None, :], m]


class SlotTeacher:
    """HistGradientBoosting on token slots (``SlotCodes``); ``fit`` then ``predict`` P(positive) for id rows."""

    def __init__(self, seed: int = 0, grid: Sequence[dict[str, Any]] = TEACHER_GRID, threads: int = 1):
        self.seed = seed
        self.threads = threads
        self.grid = tuple(grid)
        self.slots: SlotCodes | None = None
        self.clf: Any = None
        self.info: dict[str, Any] = {}

    def fit(self, ids: Sequence[Sequence[int]], labels: Sequence[int], val_ids: Sequence[Sequence[int]],
            val_labels: Sequence[int]) -> "SlotTeacher":
        from models.evaluate import gbt_baseline

        t0 = time.perf_counter()
        if not len(ids):
            raise ValueError("the teacher needs training rows")
        width = max(len(r) for r in ids)
        self.slots = SlotCodes(width).fit(ids)
        x = self.slots.transform(ids)
        self.clf, fit_info = gbt_baseline(x, np.asarray(labels), self.slots.transform(val_ids), np.asarray(val_labels),
                                          seed=self.seed, grid=self.grid, categorical=range(width),
                                          threads=self.threads)
        best = max(fit_info["grid"], key=lambda g: g["val_auprc"])
        self.info = {"model": "sklearn HistGradientBoostingClassifier on token slots (categorical, counted from the end)",
                     "slots": width, "rows": len(ids), "grid": fit_info["grid"],
                     "val_auprc": round(float(best["val_auprc"]), 6), "fit_s": round(time.perf_counter() - t0, 1)}
        return self

    def predict(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        if self.clf is None or self.slots is None:
            raise RuntimeError("SlotTeacher.predict before fit")
        return self.clf.predict_proba(self.slots.transform(ids))[:, 1]
