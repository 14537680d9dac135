"""Baselines for sensor detectors, fitted on the same normal data: PCA T²+Q and an Isolation Forest.

- **PCA T²+Q** (the process-monitoring classic): readings standardised by the
  fit data's mean and spread, principal components up to 90% of the variance,
  Hotelling's T² on the kept scores and Q (squared prediction error) on the
  rest, each divided by its 99th percentile on the fit data; the score is the
  larger of the two. ``per_asset`` fits one on each asset's own first readings
  (what a site engineer does for one machine), ``per_type`` one on the asset
  type's normal training data (the Tennessee Eastman protocol).
- **Isolation Forest** (scikit-learn) on the same standardised readings.

Each detector's threshold is set on held-out normal readings at the target
false-alarm rate, like the model's, so alert F1 and false-alarm rates compare.

>>> rng = np.random.default_rng(0)
>>> load = rng.normal(size=(500, 1))
>>> x = np.hstack([load + 0.1 * rng.normal(size=(500, 1)), 2 * load + 0.1 * rng.normal(size=(500, 1))])
>>> pca = Pca.fit(x)
>>> bad = np.array([[1.0, -2.0]])  # each sensor ordinary alone, their relation broken
>>> bool(pca.score(bad)[0] > 5), bool(pca.score(x[:1])[0] < 2)
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

VARIANCE = 0.90
LIMIT_Q = 0.99


@dataclass
class Pca:
    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray  # [S, k]
    eig: np.ndarray  # [k]
    t2_limit: float
    q_limit: float

    @classmethod
    def fit(cls, x: np.ndarray, variance: float = VARIANCE) -> "Pca":
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(0)
        std = x.std(0, ddof=1)
        std = np.where(std > 1e-12 * (np.abs(mean) + 1.0), std, 1.0)
        z = (x - mean) / std
        if z.shape[1] == 1:
            lam, vec = np.array([float(z.var(ddof=1)) or 1.0]), np.ones((1, 1))
        else:
            lam, vec = np.linalg.eigh(np.cov(z, rowvar=False))
            order = np.argsort(lam)[::-1]
            lam, vec = np.maximum(lam[order], 1e-12), vec[:, order]
        k = int(np.searchsorted(np.cumsum(lam) / lam.sum(), variance) + 1)
        k = min(k, len(lam))
        model = cls(mean, std, vec[:, :k], lam[:k], 1.0, 1.0)
        t2, q = model.stats(x)
        model.t2_limit = float(np.quantile(t2, LIMIT_Q)) or 1.0
        model.q_limit = float(np.quantile(q, LIMIT_Q)) if k < len(lam) else 1.0
        model.q_limit = model.q_limit or 1.0
        return model

    def stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        t = z @ self.components
        t2 = (t * t / self.eig).sum(1)
        resid = z - t @ self.components.T
        return t2, (resid * resid).sum(1)

    def score(self, x: np.ndarray) -> np.ndarray:
        """max(T² / its limit, Q / its limit): above 1 is outside the fit data's 99% region on either."""
        t2, q = self.stats(x)
        return np.maximum(t2 / self.t2_limit, q / self.q_limit)


def per_asset_pca(x: np.ndarray, fit_rows: int = 400) -> np.ndarray:
    """Scores of one asset's stream by a PCA fitted on its own first ``fit_rows`` readings (at least 2 x sensors)."""
    n = max(2 * x.shape[1] + 2, min(fit_rows, len(x) // 2))
    return Pca.fit(x[:n]).score(x)


class IForest:
    """Isolation Forest on readings standardised by the fit data."""

    def __init__(self, x: np.ndarray, seed: int = 0, trees: int = 200):
        from sklearn.ensemble import IsolationForest

        x = np.asarray(x, dtype=np.float64)
        self.mean = x.mean(0)
        self.std = np.where(x.std(0) > 0, x.std(0), 1.0)
        self.model = IsolationForest(n_estimators=trees, random_state=seed).fit((x - self.mean) / self.std)
        self.params: dict[str, Any] = {"trees": trees, "seed": seed, "fit_rows": int(len(x))}

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples((np.asarray(x, dtype=np.float64) - self.mean) / self.std)
