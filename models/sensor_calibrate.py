"""Calibrating a sensor bundle's score on held-out normal running: parts, their combination, the alert budget.

Why a module of its own: this is where the sensor score gets its meaning. Every
score part (``streamer.sensor_scorer.PARTS``) is put on the scale of normal
running of its asset type (``streamer.calibration``), one combination of
parts is chosen for all multi-sensor types (a part must earn its place), and
the alert threshold is set from a budget of false alarms per asset-day; the
report says what each part contributes and what false-alarm rate the
threshold gives on held-out normal rows it was not fitted on.
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from models import sensor_data as sd
from models import sensor_fit as fit
from streamer import calibration
from streamer.encoding import sensors as enc
from streamer.sensor_scorer import PARTS, budget_scale, combine

Log = Callable[[str], None]
SEVERITY_P = {"low": 1e-3, "medium": 1e-4, "high": 1e-5, "critical": 1e-6}
MIN_CALIBRATION = 20  # held-out normal readings a type needs for its calibration
FEW_READINGS = 400  # below this the held-out false-alarm rate is reported with a warning




def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def thresholds() -> dict[str, Any]:
    """Alert threshold and severity bands on the score scale (the same for every asset type)."""
    sev = {k: round(float(calibration.to_score(np.array([p]))[0]), 6) for k, p in SEVERITY_P.items()}
    return {"alert": sev["low"], "severity": sev,
            "meaning": "score = -log10(p)/10, p the chance that a normal reading of the asset type is this unusual, "
                       "scaled so that the alert threshold is reached at the type's budget of false alarms per asset-day"}


def alert_budget(cadence_ms: float, false_alarms_per_day: float) -> float:
    """Per-reading false-alarm probability that gives ``false_alarms_per_day`` alerts per asset-day.

    >>> round(alert_budget(180_000, 1.0), 5), f"{alert_budget(1_000, 1.0):.3g}", alert_budget(10, 1.0)
    (0.00208, '1.16e-05', 1e-05)
    """
    return float(min(0.05, max(1e-5, false_alarms_per_day * cadence_ms / calibration.DAY_MS)))


def _types(data: sd.Encoded) -> np.ndarray:
    """The asset type index of every row of ``data``."""
    return np.asarray([i.type_index for i in data.inputs])


def _parts_by_type(outputs: Mapping[str, np.ndarray], data: sd.Encoded) -> dict[int, dict[str, np.ndarray]]:
    types = _types(data)
    return {int(t): {k: outputs[k][types == t] for k in PARTS} for t in np.unique(types)}


def auprc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else None


MODEL_PARTS = ("D", "R", "Dbar", "Rbar", "L", "Lbar", "S", "E", "logit")  # candidates for several sensors; one-sensor types: N
NETWORK_PARTS = ("E", "logit")  # what the network learned from the types' normal running (the rest is closed form)
# Normal readings per sensor the network needs before its parts are candidates. A type fitted on fewer
# (Tennessee Eastman: 436 readings of 52 sensors, 8 per sensor) is judged by the relation model and
# the window statistics alone: its injected faults still rank the network's parts highly (the
# classifier is trained against that very injection), but they did not carry over to real faults.
MIN_READINGS_PER_SENSOR_FOR_NETWORK = 100
MAX_PARTS = 4  # combinations of up to this many parts are tried
PARSIMONY = 0.01  # AUPRC a larger combination must gain to be chosen over a smaller one
MAX_REJECTED = 40  # combinations set aside for alarming on new assets before the choice gives up and warns
STATIC_PARTS = ("D", "R", "Dbar", "Rbar")  # built on how the sensors relate at one instant
LAG_GAIN = 0.8  # a sensor the lag-aware model predicts with under this share of its static σ lags the others


def calibrate_parts(parts: Mapping[str, np.ndarray], use: Sequence[str], sensors: int = 1,
                    extra: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """A type's calibration from its normal readings' score parts: each used part's tail, then their sum's.

    ``extra``: the type's training readings' parts (:func:`calibrates_on_training`). They join
    the closed-form parts' tails and the sum's, not the network's parts' own tails (the
    network was trained on them).

    ``S`` of a type whose normal readings never repeated has no empirical tail (every
    value 0: any repeat would be "impossible" and score 1.0). Its tail then follows
    the repeat model ``S`` is built on (:func:`repeat_tail`), so one coincidental
    repeat is as rare as the sensors' repeat rates say, not an alarm.

    >>> c = calibrate_parts({"S": np.zeros(3000), "R": np.linspace(0, 9, 3000)}, ["R", "S"], sensors=8)
    >>> round(float(calibration.surprise(np.array([3.91]), c["S"])[0]), 2)  # one repeat, q ~ 1.2e-4: ~1e-3
    6.92
    """
    both = (lambda k: np.concatenate([parts[k], extra[k]])) if extra is not None else (lambda k: parts[k])
    c = {k: calibration.fit(parts[k] if k in NETWORK_PARTS else both(k)) for k in use}
    if "S" in c and c["S"]["s_u"] <= 0:
        c["S"] = repeat_tail(c["S"], sensors)
    c["combined"] = calibration.fit(sum(calibration.surprise(both(k), c[k]) for k in use))
    return c


def repeat_tail(cal: Mapping[str, Any], sensors: int) -> dict[str, Any]:
    """``S``'s tail from the repeat model: P(S >= x) ~ sensors * 10**-x (``S`` is a run's -log10 chance per sensor).

    >>> t = repeat_tail(calibration.fit(np.zeros(100)), 8)
    >>> [round(float(v), 4) for v in calibration.survival(np.array([0.0, 3.0, 4.0]), t)]
    [1.0, 0.008, 0.0008]
    """
    return {**cal, "u": 0.0, "s_u": 1.0, "start": math.log10(max(sensors, 1)), "shape": 0.0, "scale": 1.0 / math.log(10.0)}


def check_parts(parts: str | Sequence[str]) -> tuple[str, ...]:
    """An operator's combination of parts for the multi-sensor types (``--parts``), checked before a long run.

    >>> check_parts("R,Rbar,S")
    ('R', 'Rbar', 'S')
    >>> check_parts("R,rbar")
    Traceback (most recent call last):
    ...
    ValueError: --parts: unknown part 'rbar'; choose from D, R, Dbar, Rbar, L, Lbar, S, E, logit (comma-separated, e.g. R,Rbar,S)
    """
    names = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    for p in names:
        if p not in MODEL_PARTS:
            raise ValueError(f"--parts: unknown part {p!r}; choose from {', '.join(MODEL_PARTS)} (comma-separated, e.g. R,Rbar,S)")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--parts: {list(names)}: give each part once, at least one")
    return tuple(names)


def alert_hits(parts: Mapping[str, np.ndarray], cal: Mapping[str, Any], use: Sequence[str], budget: float,
               alert: float) -> np.ndarray:
    """Per row of ``parts``, whether its score reaches the alert threshold under ``cal`` and the type's ``budget``.

    What the worker's scorer decides, for the checks of a calibration on normal readings.
    """
    return calibration.to_score(combine(parts, cal, use) * budget_scale(alert, budget)) >= alert


def training_alarms(parts: Mapping[str, np.ndarray], cal: Mapping[str, Any], use: Sequence[str], budget: float,
                    alert: float) -> dict[str, Any]:
    """How often the alert threshold fires on the type's training readings, against what its budget allows.

    The held-out check (two halves of the newest readings) is short where data is; the
    training readings are all the other normal running there is. They were used to fit the
    relation model (so a relation part is a little optimistic on them), not to calibrate
    the parts. Multi-sensor types only: a one-sensor type's novelty is high by design on its
    first readings, while its long memory forms. ``suspect`` is set when the count is too
    high for the budget at the 0.1% level (Poisson): then the calibration's tail is lighter
    than normal running's, as for a window part where sensors lag each other.

    >>> cal = calibrate_parts({"R": np.linspace(0, 9, 3000)}, ["R"])
    >>> ok = training_alarms({"R": np.linspace(0, 9, 5000)}, cal, ["R"], 1e-3, 0.3)
    >>> ok["alerts"], ok["suspect"]
    (0, False)
    >>> training_alarms({"R": np.full(5000, 20.0)}, cal, ["R"], 1e-3, 0.3)["suspect"]
    True
    """
    hits = alert_hits(parts, cal, use, budget, alert)
    return _alarm_test(int(hits.sum()), len(hits), budget)


def _alarm_test(alerts: int, readings: int, budget: float) -> dict[str, Any]:
    """Alerts on normal readings against the budget: ``suspect`` when too many at the 0.1% level (Poisson)."""
    from scipy.stats import poisson

    expected = readings * budget
    chance = float(poisson.sf(alerts - 1, expected)) if alerts else 1.0
    return {"readings": readings, "alerts": alerts, "expected": round(expected, 3), "chance": chance,
            "suspect": bool(chance < 1e-3)}


def calibrates_on_training(t: Mapping[str, Any]) -> bool:
    """Whether a type's calibration also takes its training readings (else the held-out ones alone).

    The held-out readings are a fifth of each asset's, in blocks: a few hundred readings where a
    window part's values are a few dozen independent windows, too few for a tail at the alert
    budget (on the test mill, R+Lbar calibrated on them alone alerted on 23 of 8,616 fresh normal
    readings; Lbar, calibrated on the 2,970 training readings too, on 4; on the shipped types' test
    fleets, L+Lbar+E+logit's false-alarm rate at the threshold fell from 0.0285 to 0.0143). The
    training readings fitted the closed-form parts' relation models (a handful of coefficients
    per sensor: with 100 readings per sensor or more they are hardly optimistic there), so they
    join where the type has that many (:func:`calibrate_parts` keeps the network's own parts
    to the held-out readings).

    >>> calibrates_on_training({"readings": 12000, "sensors": ["a"] * 8})
    True
    >>> calibrates_on_training({"readings": 436, "sensors": ["a"] * 52})
    False
    """
    return t["readings"] >= MIN_READINGS_PER_SENSOR_FOR_NETWORK * len(t["sensors"])


def new_asset_alarms(by_asset: Mapping[str, Mapping[str, np.ndarray]], use: Sequence[str], sensors: int, budget: float,
                     alert: float) -> dict[str, Any] | None:
    """Each asset's normal readings judged with a calibration fitted on the *other* assets': how a new asset fares.

    Held-out blocks and training readings come from the assets the calibration is fitted
    on; a part whose normal level differs from asset to asset (a window part where an
    asset's own normal was formed on a short warm-up of a slow process) looks calm there
    and alarms on every new asset. Counted over all assets and tested like
    :func:`training_alarms` (Poisson, 0.1% level). None with fewer than two assets.

    >>> rng = np.random.default_rng(0)
    >>> same = {a: {"R": rng.exponential(size=3000)} for a in "abc"}
    >>> new_asset_alarms(same, ["R"], 3, 1e-3, 0.3)["suspect"]
    False
    >>> shifted = {a: {"R": rng.exponential(size=3000) + 3 * i} for i, a in enumerate("abc")}
    >>> new_asset_alarms(shifted, ["R"], 3, 1e-3, 0.3)["suspect"]
    True
    """
    if len(by_asset) < 2:
        return None
    alerts = readings = 0
    for a, own in by_asset.items():
        others = {k: np.concatenate([p[k] for b, p in by_asset.items() if b != a]) for k in use}
        cal = calibrate_parts(others, use, sensors)
        hits = alert_hits(own, cal, use, budget, alert)
        alerts += int(hits.sum())
        readings += len(hits)
    return {"assets": len(by_asset), **_alarm_test(alerts, readings, budget)}


def _by_asset(parts: Sequence[Mapping[str, np.ndarray]], assets: Sequence[np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """One type's parts (several row sets) regrouped per asset."""
    ids = np.concatenate(assets)
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {str(a): {k: v[ids == a] for k, v in joined.items()} for a in np.unique(ids)}


def _choose(table: Mapping[str, float | None], fallback: str, lagging: bool = False) -> str:
    """The fewest parts within ``PARSIMONY`` of the best AUPRC: a part must earn its place.

    Where sensors lag each other (``lagging``: :func:`sensors_lag`), the fewest static parts
    among those: the lag-aware model holds the static one (the others now) and their recent
    history, so at equal detection it is the better account of normal running, and a new
    asset's own changes of load do not read as broken relations (on the mill of
    ``tests/test_sensor_models.py``, ``Rbar`` and ``Lbar`` detect the injected faults alike;
    on fresh normal running ``Rbar`` alerts several times as often).

    >>> t = {"Rbar": 0.9927, "Lbar": 0.9922, "Dbar": 0.9908, "Lbar+S": 0.995}
    >>> _choose(t, "D+R"), _choose(t, "D+R", lagging=True)
    ('Rbar', 'Lbar')
    """
    scored = [(k, v) for k, v in table.items() if v is not None]
    if not scored:
        return fallback
    top = max(v for _, v in scored)

    def static(key: str) -> int:
        return sum(p in STATIC_PARTS for p in key.split("+")) if lagging else 0

    return min((kv for kv in scored if kv[1] >= top - PARSIMONY), key=lambda kv: (kv[0].count("+"), static(kv[0]), -kv[1]))[0]


def with_part(key: str, part: str, order: Sequence[str]) -> str:
    """A combination's key with one more part, in the candidates' order.

    >>> with_part("L+Lbar+logit", "S", MODEL_PARTS)
    'L+Lbar+S+logit'
    """
    use = set(key.split("+")) | {part}
    return "+".join(k for k in order if k in use)


def sensors_lag(types: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> bool:
    """Whether a sensor of these types follows the others late: its lag-aware σ is under ``LAG_GAIN`` of its static σ.

    >>> sensors_lag({"mill": {"lag": {"sigma": [0.13, 0.10], "static_sigma": [0.42, 0.10]}}}, ["mill"])
    True
    >>> sensors_lag({"pump": {"lag": {"sigma": [0.30, 0.14], "static_sigma": [0.31, 0.14]}}}, ["pump"])
    False
    """
    for n in names:
        lag = types[n].get("lag")
        if lag and any(s < LAG_GAIN * st for s, st in zip(lag["sigma"], lag["static_sigma"])):
            return True
    return False


def network_candidates(types: Mapping[str, Mapping[str, Any]], names: Sequence[str], log: Log = _log) -> tuple[str, ...]:
    """The parts the combination may use: the network's only when every multi-sensor type had enough normal running.

    >>> network_candidates({"pump": {"readings": 31367, "sensors": ["a"] * 5}}, ["pump"], log=lambda m: None)
    ('D', 'R', 'Dbar', 'Rbar', 'L', 'Lbar', 'S', 'E', 'logit')
    >>> network_candidates({"tep": {"readings": 436, "sensors": ["x"] * 52}}, ["tep"], log=lambda m: None)
    ('D', 'R', 'Dbar', 'Rbar', 'L', 'Lbar', 'S')
    """
    few = [n for n in names if not calibrates_on_training(types[n])]  # the same bar: enough readings per sensor
    if not few:
        return MODEL_PARTS
    log(f"calibration: {', '.join(few)}: fewer than {MIN_READINGS_PER_SENSOR_FOR_NETWORK} normal readings per sensor; "
        f"the network's parts ({', '.join(NETWORK_PARTS)}) are not candidates")
    return tuple(k for k in MODEL_PARTS if k not in NETWORK_PARTS)


def calibrate(card: dict[str, Any], val_normal: Mapping[str, np.ndarray], normal: sd.Encoded,
              val_injected: Mapping[str, np.ndarray], injected: sd.Encoded, budgets: Mapping[str, float],
              halves: np.ndarray | None = None, log: Log = _log, operator_parts: Sequence[str] | None = None,
              training: tuple[Mapping[str, np.ndarray], sd.Encoded] | None = None,
              ignore: np.ndarray | None = None) -> dict[str, Any]:
    """The parts to combine, each type's calibration and alert budget; returns the report.

    ``val_normal``/``val_injected``: the model's outputs (``sensor_train.outputs``) on the
    held-out normal rows and on the same rows with injected faults. One combination serves
    every type with several sensors: the fewest parts within ``PARSIMONY`` of the best AUPRC
    on the injected rows of all those types together, each type calibrated on its own
    held-out normal rows (chosen per type, it followed each type's injected faults and lost
    0.2 AUPRC on the generator's own faults of the test fleets); a one-sensor type is judged
    by its novelty N. The false-alarm rate of the alert threshold is measured on each half of
    the type's held-out normal rows (``halves``, 0/1 per row of ``normal``) with the
    calibration fitted on the other half (and on the training readings, where the type's
    calibration takes them: :func:`calibrates_on_training`). A combination that alarms there (types
    with ``FEW_READINGS`` held-out readings or more), or
    on an asset judged with the other assets' calibration (:func:`new_asset_alarms`), more often
    than the budget allows at the 0.1% level is set aside before the choice. ``S`` is then added
    to an automatic choice that lacks it, where that costs under ``PARSIMONY`` of AUPRC and passes
    both checks: a sensor frozen inside its range is a fault only ``S`` sees, and as one kind among
    many injected faults its worth hardly shows in the AUPRC of the mix. ``operator_parts`` (an operator's choice, :func:`check_parts`)
    replaces the automatic choice for the multi-sensor types; every combination is still scored for
    the report, and the operator's too. ``training`` (the model's outputs on the training
    readings, and those readings) adds a second check of the threshold (:func:`training_alarms`).
    ``ignore`` (per row of ``injected``) marks normal rows left out of every AUPRC: those whose
    window still holds a fault (``sensor_pipeline.after_fault``).
    """
    spec = enc.spec(card)
    types = card["sensor_model"]["types"]
    normal_by = _parts_by_type(val_normal, normal)
    inj_by = _parts_by_type(val_injected, injected)
    inj_types, norm_types = _types(injected), _types(normal)
    halves = np.asarray(halves) if halves is not None else (np.arange(len(norm_types)) % 2)
    keep = ~np.asarray(ignore, dtype=bool) if ignore is not None else np.ones(len(inj_types), dtype=bool)
    inj_by = {t: {k: v[keep[inj_types == t]] for k, v in parts.items()} for t, parts in inj_by.items()}
    y_by = {t: np.asarray(injected.labels)[(inj_types == t) & keep] for t in inj_by}
    for t, parts in normal_by.items():
        if len(parts["D"]) < MIN_CALIBRATION:
            raise fit.FitError(f"asset type {spec.types[t].name!r}: {len(parts['D'])} held-out normal readings; need "
                               f"at least {MIN_CALIBRATION} to calibrate its scores (more data, or a larger validation share)")
    train_by = _parts_by_type(*training) if training is not None else {}
    multi = [t for t in sorted(normal_by) if not spec.types[t].novelty]
    single = [t for t in sorted(normal_by) if spec.types[t].novelty]

    def extra_of(t: int) -> Mapping[str, np.ndarray] | None:
        return train_by[t] if t in train_by and t in multi and calibrates_on_training(types[spec.types[t].name]) else None

    def pooled(ts: Sequence[int], use: Sequence[str]) -> float | None:
        ys, ss = [], []
        for t in ts:
            if t in inj_by:
                c = calibrate_parts(normal_by[t], use, len(spec.types[t].sensors), extra_of(t))
                ys.append(y_by[t])
                ss.append(-np.log10(combine(inj_by[t], c, use)))
        return auprc(np.concatenate(ys), np.concatenate(ss)) if ys else None

    table: dict[str, float | None] = {}
    candidates = network_candidates(types, [spec.types[t].name for t in multi], log)
    if multi:
        for use in (c for r in range(1, MAX_PARTS + 1) for c in itertools.combinations(candidates, r)):
            table["+".join(use)] = pooled(multi, use)
    alert = thresholds()["alert"]
    per_asset = {}  # multi-sensor types with training readings: each asset's normal parts (held-out and training)
    if training is not None:
        train_types = _types(training[1])
        for t in multi:
            if t in train_by:
                ids = [np.asarray(normal.assets)[norm_types == t], np.asarray(training[1].assets)[train_types == t]]
                per_asset[t] = _by_asset([normal_by[t], train_by[t]], ids)

    split: dict[tuple[int, str], tuple[list[float], int]] = {}  # (type, combination) -> its split check

    def split_alarms(t: int, use: Sequence[str]) -> tuple[list[float], int]:
        """The alert threshold on each half of the type's held-out readings, calibrated on the other half
        (and on the training readings where the type takes them): (false-alarm rate per half, alerts).
        Kept per combination: the choice's check and the report read the same figures."""
        key = (t, "+".join(use))
        if key not in split:
            parts, name = normal_by[t], spec.types[t].name
            n = len(parts["D"])
            half = halves[norm_types == t] == 0
            if half.all() or not half.any():
                half = np.arange(n) < n // 2
            rates, alerts = [], 0
            for fit_rows, check_rows in ((half, ~half), (~half, half)):
                c = calibrate_parts({k: v[fit_rows] for k, v in parts.items()}, use, len(spec.types[t].sensors), extra_of(t))
                hits = alert_hits({k: v[check_rows] for k, v in parts.items()}, c, use, budgets[name], alert)
                rates.append(float(np.mean(hits)))
                alerts += int(hits.sum())
            split[key] = (rates, alerts)
        return split[key]

    held_checked: dict[str, dict[str, Any]] = {}

    def held_out_check(use: Sequence[str]) -> dict[str, Any]:
        """Per multi-sensor type with ``FEW_READINGS`` held-out readings or more, the split held-out alerts
        against the budget (Poisson, as the other checks). With fewer, each half's calibration is fitted
        on a few dozen readings (Tennessee Eastman: 32) and alerts on the other half say nothing."""
        key = "+".join(use)
        if key not in held_checked:
            held_checked[key] = {spec.types[t].name: _alarm_test(split_alarms(t, use)[1], len(normal_by[t]["D"]),
                                                                 budgets[spec.types[t].name])
                                 for t in multi if len(normal_by[t]["D"]) >= FEW_READINGS}
        return held_checked[key]

    checked: dict[str, dict[str, Any]] = {}  # combination -> its check: the chosen one was checked in the choice

    def new_asset_check(use: Sequence[str]) -> dict[str, Any]:
        key = "+".join(use)
        if key not in checked:
            checked[key] = {}
            for t, by in per_asset.items():
                chk = new_asset_alarms(by, use, len(spec.types[t].sensors), budgets[spec.types[t].name], alert)
                if chk is not None:
                    checked[key][spec.types[t].name] = chk
        return checked[key]

    # the fewest parts near the best AUPRC, among the combinations that alarm neither on a new asset nor
    # on the held-out halves more often than the budget allows
    def alarms(use: Sequence[str]) -> dict[str, str]:
        bad = {f"{n} (new asset)": c for n, c in new_asset_check(use).items() if c["suspect"]}
        bad.update({f"{n} (held-out halves)": c for n, c in held_out_check(use).items() if c["suspect"]})
        return {n: f"{c['alerts']} alerts on {c['readings']} readings, about {c['expected']:.2g} allowed" for n, c in bad.items()}

    open_table, rejected = dict(table), {}
    lagging = sensors_lag(types, [spec.types[t].name for t in multi])
    automatic = _choose(open_table, "D+R", lagging)
    while multi and len(rejected) < MAX_REJECTED:
        bad = alarms(automatic.split("+"))
        if not bad:
            break
        rejected[automatic] = bad
        open_table.pop(automatic, None)
        automatic = _choose(open_table, "D+R", lagging)
    stuck: dict[str, Any] = {}
    if multi and "S" in candidates and "S" not in automatic.split("+"):
        plus = with_part(automatic, "S", candidates)
        if plus not in table:
            table[plus] = pooled(multi, plus.split("+"))
        stuck = {"tried": plus, "auprc": table[plus], "without": table.get(automatic)}
        costs = table[plus] is None or table.get(automatic) is None or table[plus] < table[automatic] - PARSIMONY
        bad = {} if costs else alarms(plus.split("+"))
        stuck["added"] = not costs and not bad
        if costs:
            stuck["why_not"] = f"its AUPRC on the injected faults is more than {PARSIMONY} below the choice's"
        elif bad:
            stuck["why_not"] = "; ".join(f"{n}: {v}" for n, v in bad.items())
            rejected[plus] = bad
        if stuck["added"]:
            log(f"calibration: S added to {automatic} (stuck sensors; AUPRC {table[plus]:.4f} against {table[automatic]:.4f})")
            automatic = plus
    if rejected:
        log(f"calibration: {len(rejected)} combination(s) set aside: they alarmed on normal readings more often than "
            f"the budget allows ({'; '.join(f'{k}: {v}' for k, v in list(rejected.items())[:3])})")
    chosen = list(check_parts(operator_parts)) if operator_parts else automatic.split("+")
    if multi and "+".join(chosen) not in table:
        table["+".join(chosen)] = pooled(multi, chosen)
    report: dict[str, Any] = {"combine": chosen if multi else None, "auprc_on_injected_by_parts": table,
                              "candidates": list(candidates), "types": {}, "false_alarms": {},
                              "chosen_by": "operator (--parts)" if operator_parts and multi else "automatic",
                              "automatic": automatic if multi else None, "set_aside_for_new_asset_alarms": rejected,
                              "stuck_part": stuck or None}
    if operator_parts and multi:
        log(f"calibration: parts {'+'.join(chosen)} as given (--parts; the automatic choice would be {automatic})")
    elif operator_parts:
        log("calibration: --parts ignored: it sets the parts of multi-sensor types, and there is none "
            "(one-sensor types are judged by their novelty N)")
    chosen_check = new_asset_check(chosen) if multi else {}
    chosen_held = held_out_check(chosen) if multi else {}
    for t, parts in sorted(normal_by.items()):
        name = spec.types[t].name
        use = ["N"] if t in single else chosen
        types[name]["combine"] = use
        extra = extra_of(t)
        n = len(parts["D"])
        types[name]["calibration"] = calibrate_parts(parts, use, len(spec.types[t].sensors), extra)
        types[name]["alert_p"] = budgets[name]
        rates, _ = split_alarms(t, use)
        cad = types[name]["cadence_ms"]
        report["false_alarms"][name] = {
            "alert_budget_per_reading": budgets[name], "heldout_false_alarm_rate": round(float(np.mean(rates)), 6),
            "heldout_false_alarms_per_asset_day": round(float(np.mean(rates)) * calibration.DAY_MS / cad, 3),
            "heldout_readings": n, "cadence_ms": cad,
            "calibrated_on": ("training and held-out readings (the network's parts' own tails: held-out)" if extra
                              else "held-out readings")}
        if name in chosen_held:
            report["false_alarms"][name]["heldout_check"] = chosen_held[name]
        if name in chosen_check:
            report["false_alarms"][name]["new_asset_check"] = chosen_check[name]
            if chosen_check[name]["suspect"]:
                c = chosen_check[name]
                log(f"calibration: WARNING {name}: judged with a calibration fitted on the other assets, its assets "
                    f"alerted {c['alerts']} times on {c['readings']} normal readings, where the budget allows about "
                    f"{c['expected']:.2g}: expect more false alarms than budgeted on new assets")
        if n < FEW_READINGS:
            report["false_alarms"][name]["note"] = (
                f"{n} held-out readings: each half ({n // 2}) is too small to check a rate near "
                f"{budgets[name]:.2g}; the estimate is noise (score a longer normal run to check the threshold)")
        if t in train_by and t in multi and extra is None:  # (a one-sensor type's novelty is high by design while
            # its memory forms; a calibration that took the training readings is not checked on them)
            chk = training_alarms(train_by[t], types[name]["calibration"], use, budgets[name], alert)
            report["false_alarms"][name]["training_check"] = chk
            if chk["suspect"]:
                lag = ("; a window part (Dbar, Rbar) does this where sensors lag each other: Lbar allows for lags"
                       if {"Dbar", "Rbar"} & set(use) else "")
                log(f"calibration: WARNING {name}: the alert threshold fired on {chk['alerts']} of the "
                    f"{chk['readings']} training readings, where the budget allows about {chk['expected']:.2g}; "
                    f"the parts' tails ({'+'.join(use)}) are heavier in normal running than the held-out readings "
                    f"showed: expect more false alarms than budgeted (check a long normal run with streamer "
                    f"score-file{lag})")
        own = {k: pooled([t], [k]) for k in (("N",) if t in single else candidates)}
        own["+".join(use)] = pooled([t], use)
        report["types"][name] = {"combine": use, "auprc_on_injected_by_parts": own,
                                 "injected_positives": int(y_by.get(t, np.zeros(0)).sum())}
    log(f"calibration: {'+'.join(chosen) if multi else '-'} (held-out injected AUPRC {table.get('+'.join(chosen))}); "
        + ", ".join(f"{k} FAR {v['heldout_false_alarm_rate']:.4f}" for k, v in report["false_alarms"].items()))
    report["how"] = ("each chosen part's -log normal-tail probability (empirical survival + generalised Pareto tail "
                     "fitted on the type's held-out normal readings, and on its training readings too where it has "
                     f">= {MIN_READINGS_PER_SENSOR_FOR_NETWORK} per sensor, except the network's parts E and logit) "
                     "summed; "
                     "the sum calibrated the same way; the "
                     "parts are the fewest within 0.01 of the best AUPRC (where a sensor lags the others, the fewest "
                     "static parts D, R, Dbar, Rbar among those) on the held-out normal readings of all "
                     "multi-sensor types with injected faults (the network's parts E and logit only where every such "
                     f"type had >= {MIN_READINGS_PER_SENSOR_FOR_NETWORK} normal readings per sensor); one-sensor types: the novelty N")
    return report
