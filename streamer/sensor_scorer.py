"""Scoring sensor windows: the ONNX model, the relation statistics, and their calibration per asset type.

Its parts, each put on the scale of normal running for its asset type
(``streamer.calibration``, fitted on held-out normal readings at fine-tune time):

- ``D``: the newest reading's squared Mahalanobis distance under the type's
  relation model, per sensor (``streamer.encoding.relations``): a level or a
  relation between sensors off normal;
- ``R``: the newest reading's largest squared leave-one-out residual: the one
  sensor furthest from what the others predict (``D`` dilutes it among many);
- ``Dbar``: ``D`` averaged over the window: a small offset that persists;
- ``Rbar``: the largest per-sensor mean squared residual over the window: one
  sensor that has stopped following the others, though no single reading shows it;
- ``L`` and ``Lbar``: as ``R`` and ``Rbar``, with each sensor predicted from the
  others now *and their recent history* (``relations.lagged``): a sensor that
  lags another (a temperature following the load) is expected to lag, so a
  fast change of load is not read as a broken relation, while an offset that
  lasts still is (types fitted before bundle 3.3 have no lag model: 0; from
  bundle 3.6 the residual's σ widens as the prediction moves away from the
  asset's own normal, where units of a type differ most);
- ``S``: the run of exactly repeated readings ending now, weighted per sensor by
  how rarely that sensor repeats a reading in normal running (a stuck sensor;
  ``streamer.encoding.sensors.repeat_weights``). From bundle 3.5 the run is
  counted in the asset's state, beyond the window, and a repeat at the edge of
  the type's normal range (a meter pinned at 0) does not count;
- ``E``: the model's standardised error forecasting the newest reading from
  the ones before (mean over sensors): what the dynamics did not lead to expect;
- ``logit``: the model's classifier, trained to tell injected faults from
  normal windows;
- ``N``: for one-sensor asset types, how far the reading lies beyond its own
  long-memory range (``streamer.encoding.novelty``): a lone sensor has no
  relations to break.

Each type's ``combine`` lists the parts the fine-tune chose for it (on
held-out normal readings with injected faults; ``N`` alone for one-sensor
types); their surprises
(``-log`` normal-tail probability) are added, and the sum is calibrated once
more, so the final score says how rare the reading is for the type:
``score = -log10(p) / 10`` (0.3: one in 1,000 normal readings), with ``p``
scaled per type so that the one alert threshold falls at each type's budget
of false alarms per asset-day (``budget_scale``). Severity bands are points
on the same scale. Each alerted event gets
``detail``: the sensors furthest from what the others predict, with the
sensors that predict them, for its reasons.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from streamer import calibration
from streamer.bundle import Bundle
from streamer.encoding import relations
from streamer.encoding import sensors as enc
from streamer.onnx_session import CPU, Scored, graph_precision, make_session

PARTS = ("D", "R", "Dbar", "Rbar", "L", "Lbar", "S", "E", "logit", "N")
REASON_SIGMA = 2.5  # a sensor is named in the reasons from this many σ off what the others predict
CAUSES = {
    "Dbar": "readings have sat off their normal relations for the last {n} readings",
    "Rbar": "a sensor has stopped following the others over the last {n} readings",
    "Lbar": "a sensor has stopped following the others, allowing for how it lags them, over the last {n} readings",
    "S": "a sensor has repeated the exact same value for {run} readings",
    "E": "a change the model did not expect from the readings before",
    "logit": "the window looks like a fault the model was trained to recognise",
    "N": "beyond anything this sensor did in its long history (overall or at this hour of the day)",
}


def score_components(a: Mapping[str, np.ndarray], logit: np.ndarray, mu: np.ndarray, log_sigma: np.ndarray,
                     need: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The raw parts per row from ``enc.stack`` arrays and the graph's outputs.

    ``need``: only these parts (the scorer's hot path asks for the ones its bundle combines);
    None: every part (training and calibration compare them all). ``e`` (the per-sensor
    forecast error, for the reasons) is always there, ``run`` with ``S``.
    """
    want = PARTS if need is None else need
    sm, tm = a["sensor_mask"], a["step_mask"]
    z = a["values"][:, -1, :, 0]
    e = (z - mu) * np.exp(-log_sigma) * sm
    steps = np.maximum(tm.sum(1), 1.0)
    out: dict[str, np.ndarray] = {"e": e, "logit": np.asarray(logit, dtype=np.float64), "N": a["nov"]}
    if "E" in want:
        out["E"] = (e * e).sum(1) / np.maximum(sm.sum(1), 1.0)
    if "D" in want:
        out["D"] = a["d2"][:, -1].astype(np.float64)
    if "Dbar" in want:
        out["Dbar"] = (a["d2"] * tm).sum(1) / steps
    if "R" in want:
        r = a["r"] * sm
        out["R"] = (r * r).max(1).astype(np.float64)
    if "Rbar" in want:
        rw = a["values"][:, :, :, 1] * sm[:, None, :]  # leave-one-out residual of every step
        out["Rbar"] = ((rw * rw) * tm[:, :, None]).sum(1).max(1) / steps
    if "L" in want or "Lbar" in want:
        lr = a["lr"] * sm[:, None, :] if "lr" in a else np.zeros(a["values"].shape[:3])
        out["L"] = (lr[:, -1] ** 2).max(1)
        out["Lbar"] = ((lr * lr) * tm[:, :, None]).sum(1).max(1) / steps
    if "S" in want:
        run = a["runs"] * sm  # [B, S]: exact repeats ending at the newest step (``enc.stack``: state or window)
        weighted = run * a["repeat_weight"] if "repeat_weight" in a else run
        out["S"] = weighted.max(1)
        out["run"] = run[np.arange(len(run)), np.argmax(weighted, axis=1)]
    return out


def combine(parts: Mapping[str, np.ndarray], calib: Mapping[str, Any], use: Sequence[str]) -> np.ndarray:
    """Normal-tail probability of the rows' combined surprise under one type's calibration."""
    total = np.zeros(len(next(iter(parts.values()))))
    for name in use:
        total += calibration.surprise(parts[name], calib[name])
    return calibration.survival(total, calib["combined"])


def budget_scale(alert_threshold: float, alert_p: float) -> float:
    """Factor on a type's tail probability so the alert threshold falls at its per-reading alarm budget.

    The score's alert point is one probability for every type (``p_of_score(alert)``);
    a type whose readings come every second gets a smaller budget per reading than
    one read every three minutes, for the same false alarms per asset-day.
    """
    return calibration.p_of_score(alert_threshold) / alert_p


class SensorScorer:
    """``score_batch`` for sensor bundles: same interface as :class:`streamer.scorer.Scorer`."""

    def __init__(self, bundle: Bundle, device: str = "auto", precision: str = "auto", threads: int = 0,
                 trt_cache_dir: str = ".cache/trt"):
        self.bundle = bundle
        card = bundle.card
        self.spec = enc.spec(card)
        variants = card.get("variants") or {"fp32": "model.onnx"}
        self.session, self.choice = make_session(Path(bundle.path) / variants["fp32"], device, threads, trt_cache_dir)
        graph = graph_precision(precision, self.choice.provider, list(variants))
        if graph != "fp32":
            short = self.choice.provider.replace("ExecutionProvider", "").lower() if self.choice.provider != CPU else "cpu"
            self.session, _ = make_session(Path(bundle.path) / variants[graph], short, threads, trt_cache_dir)
        self.precision = graph
        self.model_path = Path(bundle.path) / variants[graph]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        sm = card["sensor_model"]
        self.use = [list(sm["types"][t.name].get("combine") or ["D"]) for t in self.spec.types]
        self.need = frozenset(k for use in self.use for k in use)  # the parts this bundle combines
        self.calib = [sm["types"][t.name]["calibration"] for t in self.spec.types]
        self.scale = [budget_scale(bundle.alert_threshold, float(sm["types"][t.name].get("alert_p", 1e-3)))
                      for t in self.spec.types]
        self.predictors = [relations.predictors(t.precision) for t in self.spec.types]
        self.lag_predictors = [relations.lag_predictors(t.lag[0]) if t.lag is not None else None for t in self.spec.types]
        self.alert = bundle.alert_threshold
        self.io_binding = False
        self.runner = None

    @property
    def provider(self) -> str:
        return self.choice.provider

    def probe_inputs(self) -> list[Any]:
        """Per asset type (up to four), a new asset's first reading at the type's mean: valid inputs without events."""
        w = self.spec.window
        return [enc.ModelInput(t.index, [list(t.mean)] * w, 1, 0.0, list(t.mean), list(t.std), None, True) for t in self.spec.types[:4]]

    def run(self, a: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feeds = {k: a[k] for k in self.input_names}
        logit, mu, ls = self.session.run(self.output_names, feeds)
        return logit, mu, ls

    def score_batch(self, inputs: Sequence[Any]) -> Scored:
        t0 = time.perf_counter()
        if not inputs:
            return Scored(np.zeros(0), [], 0.0)
        a = enc.stack(inputs, self.bundle.card)
        logit, mu, ls = self.run(a)
        parts = score_components(a, logit, mu, ls, self.need)
        p = np.ones(len(inputs))
        types = np.asarray([inp.type_index for inp in inputs])
        for ti in np.unique(types):
            rows = np.nonzero(types == ti)[0]
            p[rows] = combine({k: parts[k][rows] for k in self.use[ti]}, self.calib[ti], self.use[ti]) * self.scale[ti]
        scores = calibration.to_score(p)
        details: list[Any] = [None] * len(inputs)
        alerts = np.nonzero(scores >= self.alert)[0]
        for ti in np.unique(types[alerts]):
            rows = alerts[types[alerts] == ti]
            cal = self.calib[ti]  # each part's weight for all the type's alert rows at once: an alert storm stays cheap
            weights = {k: calibration.surprise(parts[k][rows], cal[k]) for k in self.use[ti]}
            for j, row in enumerate(rows):
                details[row] = self._detail(int(ti), a, parts, int(row), {k: float(w[j]) for k, w in weights.items()})
        return Scored(scores, details, time.perf_counter() - t0)

    def _detail(self, ti: int, a: Mapping[str, np.ndarray], parts: Mapping[str, np.ndarray], row: int,
                weights: Mapping[str, float]) -> dict[str, Any]:
        """What made this row unusual: the worst-predicted sensors and the part that weighed most (``weights``)."""
        s = len(self.spec.types[ti].sensors)
        lead = max(weights, key=weights.get)
        r, preds = a["r"][row, :s], self.predictors[ti]
        strength = np.abs(r)
        if lead in ("L", "Lbar") and self.lag_predictors[ti] is not None:  # what the lag-aware prediction missed
            preds, lr = self.lag_predictors[ti], a["lr"][row, :, :s]
            if lead == "L":
                r = lr[-1]
                strength = np.abs(r)
            else:  # over the window: ranked by root mean square, reported as the mean (its sign)
                lr = lr[a["step_mask"][row] > 0]
                r, strength = lr.mean(0), np.sqrt((lr ** 2).mean(0))
        order = [int(k) for k in np.argsort(-strength)[:3] if strength[k] >= REASON_SIGMA]
        worst = [(k, float(r[k]), preds[k]) for k in order]
        e = parts["e"][row, :s]
        detail: dict[str, Any] = {"worst": worst, "parts": {k: round(v, 2) for k, v in weights.items()}}
        if lead != "D" and lead in CAUSES:
            detail["cause"] = CAUSES[lead].format(n=int(a["step_mask"][row].sum()), run=int(parts["run"][row]) + 1 if "run" in parts else 0)
        if lead == "E" or not worst:
            k = int(np.argmax(np.abs(e)))
            detail["forecast"] = (k, float(e[k]))
        return detail
