"""The study behind sensor-v7's lag-aware parts (``L``, ``Lbar``): relation residuals that know the sensors' lags.

Why: the shipped relation model is static (each sensor's best linear prediction
from the others *now*). Where one sensor lags another (the test mill's coolant
follows spindle speed), a fast change of load looks like a relation broken for
a while; ``Rbar`` (a residual averaged over the window) holds that, so the
window parts raise false alarms there and the automatic choice of parts cannot
use them safely (docs/model-card.md, Limits). Here each sensor is predicted from
the *other* sensors now and from their exponentially weighted recent history
(never from its own history, which would explain a lasting offset away), by
ridge regression on normal running, and the window statistic is compared with
the static one: its false alarms on fresh normal running at a threshold set on
a calibration run, and how much of a lasting offset it catches.

Not the product's code path (that is ``streamer.encoding.relations.lagged``, fitted by
``models.sensor_fit.fit_lag``): here readings are standardised by each asset's first
128 readings and the type's spread, thresholds are empirical quantiles.

    python -m bench.lag_relations            # a few seconds
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import numpy as np

from bench.common import write_result
from bench.sensor_model import SENSORS, machine_events
from tests.test_sensor_models import mill

WARMUP = 128
WINDOW = 16
MILL = ("spindle_hz", "coolant_c", "motor_a")


def by_asset(events: Sequence[dict], names: Sequence[str]) -> list[np.ndarray]:
    """Each asset's readings as a [T, S] array, in stream order."""
    out: dict[str, list[list[float]]] = {}
    for e in events:
        out.setdefault(e["asset_id"], []).append([e["readings"][k] for k in names])
    return [np.asarray(v) for v in out.values()]


def history(z: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """[T, S x (1 + len(alphas))]: the readings and their exponentially weighted means (weight ``a`` per step).

    >>> history(np.array([[0.0], [1.0], [1.0]]), [0.5]).tolist()
    [[0.0, 0.0], [1.0, 0.5], [1.0, 0.75]]
    """
    cols = [z]
    for a in alphas:
        m, e = z[0].copy(), np.empty_like(z)
        for t in range(len(z)):
            m = (1 - a) * m + a * z[t]
            e[t] = m
        cols.append(e)
    return np.concatenate(cols, 1)


def others(h: np.ndarray, sensors: int, k: int) -> np.ndarray:
    """``history``'s columns without sensor ``k``'s own (its value and its means)."""
    return h[:, [j for j in range(h.shape[1]) if j % sensors != k]]


def fit(runs: Sequence[np.ndarray], alphas: Sequence[float], ridge: float = 1e-2) -> list[tuple[np.ndarray, float]]:
    """Per sensor: ridge coefficients on the others' history (and a constant), and the residual σ."""
    s = runs[0].shape[1]
    hs = [history(z, alphas) for z in runs]
    models = []
    for k in range(s):
        x = np.concatenate([others(h[WARMUP:], s, k) for h in hs])
        x = np.c_[x, np.ones(len(x))]
        y = np.concatenate([z[WARMUP:, k] for z in runs])
        b = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
        models.append((b, float(np.std(y - x @ b))))
    return models


def residuals(z: np.ndarray, models: Sequence[tuple[np.ndarray, float]], alphas: Sequence[float]) -> np.ndarray:
    """[T, S]: each sensor's distance from what the others predict, in that prediction's σ."""
    h = history(z, alphas)
    s = z.shape[1]
    return np.stack([(z[:, k] - np.c_[others(h, s, k), np.ones(len(z))] @ b) / sd for k, (b, sd) in enumerate(models)], 1)


def window_stat(r: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """``Rbar``: the largest per-sensor mean squared residual over the last ``window`` steps."""
    c = np.cumsum(np.r_[np.zeros((1, r.shape[1])), r * r], 0)
    t = np.arange(len(r))
    lo = np.maximum(0, t - window + 1)
    return ((c[t + 1] - c[lo]) / (t + 1 - lo)[:, None]).max(1)


def study(name: str, make: Callable[[int, int, int], list[np.ndarray]], offsets: Sequence[tuple[int, float]],
          labels: Sequence[str]) -> list[dict]:
    """Static against lag-aware residuals on one machine kind; prints and returns one row per model and threshold."""
    train = make(1200, 3, 0)
    std = np.concatenate(train).std(0)

    def standard(x: np.ndarray) -> np.ndarray:
        return (x - x[:WARMUP].mean(0)) / std

    calib, fresh = make(4000, 3, 5), make(3000, 3, 21)
    rows = []
    for alphas in ((), (0.5, 0.1)):
        models = fit([standard(x) for x in train], alphas)
        stat = lambda x: window_stat(residuals(standard(x), models, alphas))  # noqa: E731
        ref = np.concatenate([stat(x)[WARMUP:] for x in calib])
        what = "static (others now)" if not alphas else f"others now + their means at {alphas}"
        for q in (1e-3, 1e-4):
            thr = float(np.quantile(ref, 1 - q))
            fa = float(np.mean(np.concatenate([stat(x)[WARMUP:] for x in fresh]) > thr))
            caught = {}
            for k, off in offsets:
                x = make(600, 1, 11)[0].copy()
                x[300:500, k] += off
                caught[f"{labels[k]} +{off}"] = round(float(np.mean(stat(x)[300 + WINDOW:500] > thr)), 4)
            print(f"{name:8s} {what:36s} q {q:g}: Rbar false alarms on fresh normal {fa:.5f}; lasting offset caught: "
                  + ", ".join(f"{k}: {v:.3f}" for k, v in caught.items()))
            rows.append({"machine": name, "history_weights": list(alphas), "quantile": q, "false_alarm_rate": round(fa, 6),
                         "offset_caught": caught, "residual_sigma": [round(sd, 4) for _, sd in models]})
        print(f"{name:8s} {what:36s} residual σ per sensor: {[round(sd, 3) for _, sd in models]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    rows = study("mill", lambda n, a, seed: by_asset(mill(n, a, seed=seed), MILL), [(2, 0.2)], MILL)
    rows += study("machine", lambda n, a, seed: by_asset(machine_events(n * a, seed=seed, assets=a), SENSORS),
                  [(3, 0.6)], SENSORS)
    print(f"wrote {write_result('lag_relations', {'rows': rows}, quick=False)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
