"""How an asset type's sensors move together: a Gaussian relation model, applied in closed form.

A fault often moves no single sensor far but breaks a relation between them
(more current for the same flow, a temperature that no longer follows the
load). For readings standardised by the asset's normal, the type's precision
matrix ``P`` (the inverse of their correlation, fitted on normal running and
regularised, ``models/sensor_fit.py``) answers, for every sensor at once,
"how far is it from what the *other* sensors predict?":

- the leave-one-out residual ``r_k = (P z)_k / sqrt(P_kk)``: sensor k minus its
  best linear prediction from all the others, in units of that prediction's σ;
- the squared Mahalanobis distance ``d2 = z' P z``: the whole reading's distance
  from normal, relations included (Hotelling's T² over every direction).

>>> P = np.linalg.inv(np.array([[1.0, 0.9], [0.9, 1.0]]))
>>> r, d2 = residuals(np.array([[[1.0, 1.0], [1.0, -1.0]]]), P)
>>> np.round(r[0], 2).tolist(), np.round(d2[0], 2).tolist()
([[0.23, 0.23], [4.36, -4.36]], [1.05, 20.0])

Both sensors one σ high together is ordinary for this pair; one high and one low
is 4.4σ off what the other predicts. ``predictors`` names, per sensor, the
sensors its prediction leans on most (for an alert's reasons).

That prediction is static: where one sensor lags another (a temperature that
follows the load), every fast change of load reads as a relation broken for a
while. ``lagged`` predicts each sensor from the *other* sensors now and from
their recent-history means (exponentially weighted, kept per asset by the
encoding), never from its own history, which would explain a lasting offset
away. Its coefficients are a ridge regression on normal running
(``models/sensor_fit.py``).

>>> coef = np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # sensor 0 follows sensor 1's recent mean
>>> z = np.array([[[0.0, 1.0], [1.0, 1.0]]])  # step 1: sensor 0 caught up with a step sensor 1 took
>>> h = np.array([[[0.0, 0.5], [0.5, 1.0]]])  # the recent means (one weight) after each step
>>> lagged(z, h, coef, np.zeros(2), np.ones(2))[0, :, 0].tolist()
[-0.5, 0.0]
"""

from __future__ import annotations

import numpy as np


def residuals(z: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out residuals [..., S] and squared Mahalanobis distances [...] of standardised readings."""
    pz = z @ precision
    r = pz / np.sqrt(np.diag(precision))
    return r, np.einsum("...k,...k->...", pz, z)


def predictors(precision: np.ndarray, top: int = 2, min_share: float = 0.1) -> list[list[int]]:
    """Per sensor, the (up to ``top``) other sensors with the largest weight in its prediction.

    The prediction of sensor k is ``-sum_j P_kj / P_kk * z_j``; a sensor whose weight
    is below ``min_share`` of the largest is not named.

    >>> predictors(np.linalg.inv(np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.1], [0.0, 0.1, 1.0]])), top=1)
    [[1], [0], [1]]
    """
    return _strongest(np.abs(precision / np.diag(precision)[:, None]), top, min_share)


def _strongest(weights: np.ndarray, top: int, min_share: float) -> list[list[int]]:
    """Per row k of ``weights`` [S, S]: the (up to ``top``) columns j != k with the largest weight, each at least
    ``min_share`` of the row's largest."""
    out = []
    for k in range(weights.shape[0]):
        w = weights[k].copy()
        w[k] = 0.0
        out.append([int(j) for j in np.argsort(-w)[:top] if w[j] > 0 and w[j] >= min_share * w.max()])
    return out


def lagged(z: np.ndarray, hist: np.ndarray, coef: np.ndarray, bias: np.ndarray, sigma: np.ndarray,
           kappa: np.ndarray | None = None) -> np.ndarray:
    """Lag-aware residuals [..., S]: each sensor minus its prediction from the others' now and recent history, in σ.

    ``z`` [..., S] standardised readings, ``hist`` [..., A*S] their recent-history means (one block of
    S per weight), ``coef`` [S, S(1+A)] with zeros on each sensor's own columns, ``bias`` and
    ``sigma`` [S] (the held-out residual spread of each prediction). With ``kappa`` [S], ``sigma``
    is the spread where the prediction sits at the asset's own normal, and it widens to
    ``sigma * sqrt(1 + kappa * p**2)`` as the prediction ``p`` moves away from it: units of one
    type differ in their gains, so the same relation misses by more far from the operating
    point an asset's normal was learned at.

    >>> lagged(np.array([[3.0, 0.0]]), np.zeros((1, 2)), np.array([[0.0, 1.0, 0.0, 0.0], [0.0] * 4]),
    ...        np.array([2.0, 0.0]), np.ones(2), np.array([0.75, 0.0])).tolist()
    [[0.5, 0.0]]
    """
    x = np.concatenate([z, hist], -1)
    p = x @ coef.T + bias
    scale = sigma if kappa is None else sigma * np.sqrt(1.0 + kappa * p * p)
    return (z - p) / scale


def lag_predictors(coef: np.ndarray, top: int = 2, min_share: float = 0.1) -> list[list[int]]:
    """Per sensor, the other sensors whose readings and history weigh most in its lag-aware prediction.

    >>> lag_predictors(np.array([[0.0, 0.1, 0.0, 0.9], [0.2, 0.0, 0.0, 0.0]]))
    [[1], [0]]
    """
    s = coef.shape[0]
    return _strongest(np.abs(coef).reshape(s, -1, s).sum(1), top, min_share)
