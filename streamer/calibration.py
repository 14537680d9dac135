"""How unusual a statistic is for normal running: its empirical survival, and a peaks-over-threshold tail.

A detector's raw statistics (a distance, a forecast error, a classifier logit,
a run of repeated readings) mean nothing to an operator until they are put on
the scale of normal operation: "a reading this far out happens once in 10,000
normal readings of this asset type". ``fit`` stores, from normal readings held
out of training, the statistic's empirical survival P(value >= x) up to a high
threshold ``u`` (the top 2% of the sample, or its top 30 values), and above it
a peaks-over-threshold tail: a generalised Pareto fit to the excesses, so that
``survival`` extrapolates past the largest normal value seen, which an alert
budget of one false alarm per asset-day always asks for, instead of saturating
at one over the sample size. Statistics with ties (a repeat count that is 0 for
almost every normal reading) keep their empirical frequencies: P(count >= 1) is
the share of normal readings with a repeat.

>>> rng = np.random.default_rng(0)
>>> cal = fit(rng.exponential(1.0, 20_000))
>>> [round(float(p), 4) for p in survival(np.array([0.0, 1.0, 3.0, 9.2, 12.0]), cal)]
[1.0, 0.3648, 0.0497, 0.0001, 0.0]

The exact values are e^-x: 1, 0.368, 0.050, 0.0001, 6e-6 (the fit: 1e-5).

>>> counts = fit(np.array([0.0] * 990 + [1.0] * 9 + [3.0]))
>>> [float(f"{p:.2g}") for p in survival(np.array([0.0, 1.0, 3.0]), counts)]
[1.0, 0.01, 7.1e-05]

(The single 3 in a thousand is one reading: the tail fit says it was luck to see it.)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01, 0.007, 0.005, 0.003,
          0.002, 0.001, 7e-4, 5e-4, 3e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5)
TAIL_POINTS = 30  # normal values the tail fit uses at least
TAIL_SHARE = (0.02, 0.3)  # ...as a share of the sample: at least the top 2%, at most the top 30%
MAX_SHAPE = 0.5  # heavier tails than this are not trusted from a few dozen points


def _gpd(exc: np.ndarray) -> tuple[float, float]:
    """(shape, scale) of a generalised Pareto fit to excesses, by moments; shape kept in [0, MAX_SHAPE].

    A shape of 0 is the exponential tail. Negative shapes (a bounded tail) are not
    used: past the data a lighter tail than the exponential is an optimism the
    alert threshold should not rest on.
    """
    m = float(exc.mean()) if len(exc) else 0.0
    v = float(exc.var()) if len(exc) > 1 else 0.0
    if m <= 0:
        return 0.0, 1.0
    xi = 0.5 * (1.0 - m * m / v) if v > 0 else 0.0
    xi = min(max(xi, 0.0), MAX_SHAPE)
    return xi, max(m * (1.0 - xi), 1e-12)


def fit(values: np.ndarray) -> dict[str, Any]:
    """Empirical survival of ``values`` (normal readings) and a peaks-over-threshold tail; JSON-ready."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 10:
        raise ValueError(f"{n} values: need at least 10 normal values to calibrate")
    share = min(max(TAIL_SHARE[0], TAIL_POINTS / n), TAIL_SHARE[1])
    u = float(np.quantile(v, 1.0 - share))
    above = v[v > u]
    s_u = len(above) / n  # ties at u make it smaller than ``share``
    qs, ss = [], []
    for lvl in LEVELS:
        k = min(n - 1, max(0, int(np.ceil(n * (1.0 - lvl)))))
        x = float(v[k])
        if x > u:
            break
        if qs and x <= qs[-1]:
            continue  # tied with the previous level, which already has the larger share
        qs.append(x)
        ss.append(float(np.mean(v >= x)))  # the true share at or above it
    spread = float(np.std(v)) or 1.0
    start = float(above.min()) if len(above) else u
    xi, sigma = _gpd(above - start) if len(above) >= 5 else (0.0, spread)
    return {"q": qs, "s": ss, "u": u, "s_u": s_u, "start": start, "shape": xi,
            "scale": max(sigma, 1e-3 * spread, 1e-12), "n": int(n)}


def _log_survival(x: np.ndarray, cal: Mapping[str, Any]) -> np.ndarray:
    q, s = np.asarray(cal["q"], dtype=np.float64), np.log(np.asarray(cal["s"], dtype=np.float64))
    body = np.interp(x, q, s, left=0.0, right=float(s[-1]))
    s_u = max(float(cal["s_u"]), 1e-300)
    y = np.maximum(x - cal["start"], 0.0) / cal["scale"]
    xi = float(cal["shape"])
    tail = np.log(s_u) - (np.log1p(xi * y) / xi if xi > 1e-9 else y)
    return np.where(x > cal["u"], tail, np.minimum(body, 0.0))


def survival(x: np.ndarray, cal: Mapping[str, Any]) -> np.ndarray:
    """P(normal statistic >= x): empirical below the tail threshold ``u``, generalised Pareto above it."""
    return np.clip(np.exp(_log_survival(np.asarray(x, dtype=np.float64), cal)), 1e-300, 1.0)


def surprise(x: np.ndarray, cal: Mapping[str, Any]) -> np.ndarray:
    """-log(survival): 0 for ordinary values, growing in the tail (sums like independent evidence)."""
    return -_log_survival(np.asarray(x, dtype=np.float64), cal)


SCORE_DECADES = 10.0  # score 1.0 = one in 10^10 normal readings
DAY_MS = 86_400_000  # alert budgets and false-alarm counts are per asset-day


def to_score(p: np.ndarray) -> np.ndarray:
    """Normal-tail probability -> score in [0, 1]: ``-log10(p) / 10``, so 0.3 is one in 1,000 normal readings.

    A log scale keeps the order of very unusual readings visible at six decimals
    (``score-file`` output), where ``1 - p`` would round them all to 1.0.

    >>> to_score(np.array([1.0, 1e-3, 1e-12])).round(3).tolist()
    [0.0, 0.3, 1.0]
    """
    return np.clip(np.log10(1.0 / np.clip(p, 1e-300, 1.0)) / SCORE_DECADES, 0.0, 1.0)


def p_of_score(score: float) -> float:
    """The normal-tail probability a score stands for (inverse of ``to_score``)."""
    return float(10.0 ** (-SCORE_DECADES * score))
