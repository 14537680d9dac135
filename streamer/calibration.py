"""How unusual a statistic is for normal running: an empirical body and a peaks-over-threshold tail.

A detector's raw statistics (a distance, a forecast error, a classifier logit)
mean nothing to an operator until they are put on the scale of normal
operation: "a reading this far out happens once in 10,000 normal readings of
this asset type". ``fit`` stores, from normal readings held out of training,
the statistic's quantiles up to a high threshold ``u`` and an exponential tail
beyond it (peaks over threshold: the excesses over ``u`` have mean ``beta``),
so that ``survival`` extrapolates past the largest normal value seen instead of
saturating at one over the sample size.

>>> rng = np.random.default_rng(0)
>>> cal = fit(rng.exponential(1.0, 20_000))
>>> [round(float(p), 4) for p in survival(np.array([0.0, 1.0, 3.0, 9.2]), cal)]
[1.0, 0.3666, 0.049, 0.0001]

the exact values are e^-x: 1, 0.368, 0.050, 0.0001.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

BODY_LEVELS = tuple(np.round(np.linspace(0.0, 0.9, 19), 3))  # survival levels stored for the body
TAIL = 0.1  # the top 10% of normal values are modelled by the tail fit


def fit(values: np.ndarray, tail: float = TAIL) -> dict[str, Any]:
    """Body quantiles and exponential tail of ``values`` (normal readings); JSON-ready."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    if len(v) < 10:
        raise ValueError(f"{len(v)} values: need at least 10 normal values to calibrate")
    probs = [1.0 - lvl for lvl in BODY_LEVELS]  # survival 1.0 (min) .. 0.1 (the 90th percentile)
    qs = np.quantile(v, [1.0 - p for p in probs])
    u = float(np.quantile(v, 1.0 - tail))
    exc = v[v > u] - u
    beta = float(exc.mean()) if len(exc) else 0.0
    scale = float(np.std(v)) or 1.0
    beta = max(beta, 1e-3 * scale, 1e-12)
    return {"q": [float(x) for x in qs], "s": [float(p) for p in probs], "u": u, "beta": beta, "tail": tail, "n": int(len(v))}


def survival(x: np.ndarray, cal: Mapping[str, Any]) -> np.ndarray:
    """P(normal statistic >= x): interpolated body below ``u``, exponential tail above."""
    x = np.asarray(x, dtype=np.float64)
    q, s = np.asarray(cal["q"]), np.asarray(cal["s"])
    body = np.interp(x, q, s, left=1.0, right=float(cal["tail"]))
    over = x > cal["u"]
    excess = np.where(over, x - cal["u"], 0.0)  # no overflow from the branch np.where discards
    out = np.where(over, cal["tail"] * np.exp(-excess / cal["beta"]), body)
    return np.clip(out, 1e-300, 1.0)


def surprise(x: np.ndarray, cal: Mapping[str, Any]) -> np.ndarray:
    """-log(survival): 0 for ordinary values, growing linearly in the tail (sums like independent evidence)."""
    x = np.asarray(x, dtype=np.float64)
    over = x > cal["u"]
    q, s = np.asarray(cal["q"]), np.asarray(cal["s"])
    body = -np.log(np.interp(x, q, s, left=1.0, right=float(cal["tail"])))
    return np.where(over, -np.log(cal["tail"]) + (x - cal["u"]) / cal["beta"], body)


SCORE_DECADES = 10.0  # score 1.0 = one in 10^10 normal readings


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
