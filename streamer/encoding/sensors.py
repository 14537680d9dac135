"""Sensor events -> the asset's standardised window, for training and for the worker's hot path.

The sensor model judges an asset's readings *jointly*: all its sensors over the
last ``window`` readings, as numbers, against two references fitted from normal
running (``models/sensor_fit.py``, stored in ``card["sensor_model"]``):

- the **asset type** (the exact set of sensor names an asset reports): each
  sensor's normal level and spread, how much assets of the type differ from
  each other, and how the sensors move together (a regularised precision
  matrix, see :mod:`streamer.encoding.relations`);
- the **asset's own normal**: a per-sensor running mean and variance over its
  first ``warmup`` readings, blended with the type's statistics while it is
  short (a Bayesian cold start: the first readings are judged with the
  type's spread widened by how much assets differ, so a new asset does not
  start with an alert storm), then frozen. Readings far from the current
  estimate (``GATE`` σ) are not absorbed, so a fault in the first readings is
  not learned as normal. The baseline rides in the window's newest record
  (``windows.STATE``), so the changelog restores it with the window after a
  restart or rebalance. So do the asset's recent-history means of every sensor
  (:func:`history_step`), from which the lag-aware relation model
  (:func:`streamer.encoding.relations.lagged`) predicts each sensor.

:func:`features` checks the event against its asset type and returns the
readings standardised by the asset's normal; :func:`model_input` is the window
the scorer stacks (``stack``) into the ONNX graph's input. What the model then
predicted worst comes back from the scorer as ``detail`` and becomes the
alert's reasons (:func:`reasons`).

>>> card = {"name": "s", "version": "1", "sensor_model": {"window": 4, "warmup": 8, "types": {
...     "pump": {"sensors": ["flow", "current"], "mean": [100.0, 10.0], "std": [5.0, 1.0], "between": [5.0, 1.0],
...              "precision": [[2.0, -1.8], [-1.8, 2.0]]}}}}
>>> check({"asset_id": "p1", "ts": 0, "readings": {"flow": 100.0, "current": 10.0}}, card) is None
True
>>> window = []
>>> for i in range(6):
...     ev = {"asset_id": "p1", "ts": i * 1000, "readings": {"flow": 100.0 + i % 2, "current": 10.0 + 0.2 * (i % 2)}}
...     f = features(ev, window, card)
...     window.append(record(ev))
>>> f["type"], f["n_base"], [round(z, 2) for z in f["z"]]
('pump', 5, [0.12, 0.12])
>>> inp = model_input(ev, window[:-1], f)
>>> z, rep, hist = standardise([inp])
>>> z.shape, inp.valid, inp.warming
((1, 4, 2), 4, True)
>>> check({"asset_id": "p1", "ts": 0, "readings": {"flow": 1.0}}, card)
"sensor set ['flow'] matches no asset type of bundle s@1: type 'pump' has ['current', 'flow'] (missing 'current'); fit new types with `streamer model fine-tune --bundle BUNDLE --train NORMAL.jsonl --out DIR`"
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import mul
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from streamer.encoding import novelty, relations

KIND = "sensor"
ENCODING_VERSION = "sensor-v9"  # v9: the lag-aware residual's σ widens away from the asset's operating point; v8: a repeat at the edge of the type's normal range is a sensor pinned at a limit, not stuck; v7: the others' recent history (lag-aware residuals); v6: novelty v6 (one-sensor types); v5: the asset's window as numbers, jointly; v4 and older: per-sensor words
# a v6 card has no lag model: its types keep no history; a v7 card has no limits: every repeat counts; a v8 card
# has no widening of the lag-aware σ. All score as before
READS = ("sensor-v6", "sensor-v7", "sensor-v8")

# The window the worker keeps per asset (the card repeats it as card["window"]); the model sees
# the last ``sensor_model.window`` readings of it.
WINDOW: dict[str, int] = {"max_events": 16, "max_age_ms": 7 * 24 * 3600 * 1000}
DEFAULT_WARMUP = 128  # readings of an asset that form its own normal, then it is frozen
GATE = 6.0  # a reading this many σ from the asset's current normal (any sensor) is not absorbed
ADAPT_GATE = 3.0  # after the warm-up an adapting baseline takes only readings this close (Mahalanobis² per sensor)
CLIP = 30.0  # standardised values are clipped here: beyond it "very far" is all the model needs
MIN_SCALE = 1e-9
LAG_ALPHAS = (0.5, 0.1)  # weights per reading of the recent-history means the lag-aware residuals use
CHANNELS = ("z", "r", "dz", "rep")  # what the scorer stacks per sensor and step (see ``stack``)

Event = Mapping[str, Any]
Record = dict[str, Any]
Features = dict[str, Any]
STATE_KEY = "_sensor_state"


class SensorDataError(ValueError):
    """Readings that cannot be encoded (wrong sensor set for the asset, NaN/Inf); the message says which."""


@dataclass(frozen=True)
class AssetType:
    """One asset type of a bundle: its sensors (canonical order) and their fitted normal."""

    name: str
    index: int
    sensors: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    between: tuple[float, ...]  # std of asset means around the type mean (cold-start prior)
    precision: np.ndarray  # [S, S] of within-asset standardised readings
    own_scale: bool = False  # assets differ in spread too (by orders of magnitude): each is scaled by its own
    adapt: int = 0  # > 0: after the warm-up the baseline keeps following normal readings with this time constant
    rows: tuple = ()  # ``precision`` as nested tuples, for the per-event gate in pure Python
    novelty: bool = False  # one-sensor types: also the long-memory novelty of each reading (``novelty``)
    repeat_weight: tuple[float, ...] = ()  # per sensor: -log10 of its normal chance to repeat a reading exactly
    alphas: tuple[float, ...] = ()  # weights of the recent-history means the state keeps (``history_step``); () keeps none
    lag: tuple[Any, ...] | None = None  # (coef [S, S(1+A)], bias [S], sigma [S], warm-up sigma [S], kappa [S] or None): ``relations.lagged``
    lag_used: bool = True  # the type's score combines L or Lbar (or has no combination yet): ``stack`` computes them
    # (lowest, highest) normal reading per sensor (``repeat_flags``); a type that has them (bundles from 3.5)
    # also counts each sensor's run of repeats in the asset's state, beyond the window (``repeat_runs``)
    limits: tuple[tuple[float, ...], tuple[float, ...]] | None = None


@dataclass(frozen=True)
class Spec:
    """The card's sensor model compiled once per card: type lookup by sensor set, slots, window."""

    ident: str
    window: int
    warmup: int
    types: tuple[AssetType, ...]
    by_set: Mapping[frozenset, AssetType]
    known: frozenset
    slots: Mapping[str, int]


_SPECS: dict[int, tuple[Mapping[str, Any], Spec]] = {}


def spec(card: Mapping[str, Any]) -> Spec:
    """The compiled sensor model of ``card`` (cached per card object)."""
    hit = _SPECS.get(id(card))
    if hit is not None and hit[0] is card:
        return hit[1]
    sm = card.get("sensor_model") or {}
    types = []
    for i, (name, t) in enumerate(sorted((sm.get("types") or {}).items())):
        sensors = tuple(t["sensors"])
        prec = np.asarray(t["precision"], dtype=np.float64).reshape(len(sensors), len(sensors))
        types.append(AssetType(name, i, sensors, tuple(map(float, t["mean"])), tuple(map(float, t["std"])),
                               tuple(map(float, t.get("between") or t["std"])), prec,
                               bool(t.get("own_scale", False)), int(t.get("adapt", 0)), tuple(map(tuple, prec.tolist())),
                               bool(t.get("novelty", False)), repeat_weights(t.get("repeat_p"), len(sensors)),
                               *_lag(t.get("lag"), len(sensors)),
                               not t.get("combine") or bool({"L", "Lbar"} & set(t["combine"])), _limits(t.get("limits"), len(sensors))))
    slots = dict(sm.get("slots") or {})
    out = Spec(f"{card.get('name', '?')}@{card.get('version', '?')}", int(sm.get("window", WINDOW["max_events"])),
               int(sm.get("warmup", DEFAULT_WARMUP)), tuple(types), {frozenset(t.sensors): t for t in types},
               frozenset(n for t in types for n in t.sensors), slots)
    if len(_SPECS) > 64:
        _SPECS.clear()
    _SPECS[id(card)] = (card, out)
    return out


def _lag(lag: Mapping[str, Any] | None, s: int) -> tuple[tuple[float, ...], Any]:
    """(history weights, lag model or None) of a card type's ``lag`` entry (absent before bundle 3.3)."""
    if not lag or not lag.get("alphas") or s < 2:  # a lone sensor has no others to be predicted from
        return (), None
    alphas = tuple(float(a) for a in lag["alphas"])
    if "coef" not in lag:  # history kept but no model yet: the fit itself (``models/sensor_fit.py``)
        return alphas, None
    coef = np.asarray(lag["coef"], dtype=np.float64).reshape(s, s * (1 + len(alphas)))
    # from bundle 3.6 the spread at the asset's own operating point and how it widens away from it
    kappa = np.asarray(lag["kappa"], dtype=np.float64) if lag.get("kappa") is not None else None
    sigma = np.asarray(lag["sigma0"] if kappa is not None else lag["sigma"], dtype=np.float64)
    return alphas, (coef, np.asarray(lag["bias"], dtype=np.float64), sigma,
                    np.maximum(np.asarray(lag.get("static_sigma") or sigma, dtype=np.float64), sigma), kappa)


def _limits(limits: Mapping[str, Any] | None, s: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(lowest, highest) normal reading per sensor of a card type's ``limits`` (absent before bundle 3.5: None)."""
    if not limits:
        return None
    lo, hi = (tuple(float(v) for v in limits[k]) for k in ("lo", "hi"))
    return (lo, hi) if len(lo) == len(hi) == s else None


def repeat_weights(repeat_p: Sequence[float] | None, n: int) -> tuple[float, ...]:
    """Each sensor's weight per exactly repeated reading: ``-log10`` of how often it repeats in normal running.

    A run of ``L`` repeats of a sensor that repeats with chance ``q`` has chance about
    ``q**L`` in normal running, so ``L * weight`` is its surprise in decades: a stuck
    sensor that normally changes every reading stands out after a few readings, one
    that often holds its value (a setpoint, a coarse gauge) does not. A card without
    repeat rates (bundles before 3.2.0) weighs every repeat 1, as those bundles did.

    >>> repeat_weights([0.001, 0.5], 2)
    (3.0, 0.30103)
    >>> repeat_weights(None, 2)
    (1.0, 1.0)
    """
    if not repeat_p or len(repeat_p) != n:
        return (1.0,) * n
    return tuple(round(-math.log10(min(max(float(q), 1e-6), 0.99)), 5) for q in repeat_p)


def check_card(card: Mapping[str, Any]) -> str | None:
    """Why a card's sensor model cannot be served (None if it can): checked when a bundle loads."""
    sm = card.get("sensor_model")
    if not isinstance(sm, Mapping) or not sm.get("types"):
        return "card.json: sensor_model.types is missing (no asset type to score against)"
    for name, t in sm["types"].items():
        try:
            s = len(t["sensors"])
            if not s or any(len(t[k]) != s for k in ("mean", "std")):
                return f"card.json: sensor_model.types.{name}: mean/std do not match its {s} sensors"
            p = np.asarray(t["precision"], dtype=np.float64)
            if p.shape != (s, s) or not np.all(np.isfinite(p)) or np.any(np.diag(p) <= 0):
                return f"card.json: sensor_model.types.{name}.precision must be a finite {s}x{s} matrix with a positive diagonal"
            if min(t["std"]) <= 0:
                return f"card.json: sensor_model.types.{name}.std must be positive"
        except (KeyError, TypeError, ValueError) as exc:
            return f"card.json: sensor_model.types.{name}: {type(exc).__name__}: {exc}"
        if "calibration" not in t:
            return f"card.json: sensor_model.types.{name} has no calibration (fit it with `streamer model fine-tune`)"
    return None


_FINE_TUNE = "fit new types with `streamer model fine-tune --bundle BUNDLE --train NORMAL.jsonl --out DIR`"


def check(event: Event, card: Mapping[str, Any]) -> str | None:
    """Refuse an event whose sensor set is not exactly one asset type's.

    A reading of a sensor the bundle never fitted, or an asset that reports a
    different set of sensors than its type, would be compared with a made-up
    normal and get a confident but meaningless score.
    """
    sp = spec(card)
    names = frozenset(event["readings"])
    if names in sp.by_set:
        return None
    unknown = sorted(n for n in names if n not in sp.known)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        return f"unknown sensor {unknown[0][:64]!r}{more} for bundle {sp.ident}: no asset type has it; {_FINE_TUNE}"
    best = max(sp.types, key=lambda t: len(names & set(t.sensors)) - len(names ^ set(t.sensors)), default=None)
    have = sorted(names)[:16]
    if best is None:
        return f"sensor set {have} matches no asset type of bundle {sp.ident} (it has none); {_FINE_TUNE}"
    return f"sensor set {have} matches no asset type of bundle {sp.ident}: {_difference(best, names)}; {_FINE_TUNE}"


def _difference(t: AssetType, names: frozenset) -> str:
    missing = sorted(set(t.sensors) - names)
    extra = sorted(names - set(t.sensors))
    parts = ([f"missing {', '.join(repr(n[:64]) for n in missing[:4])}"] if missing else []) + (
        [f"unexpected {', '.join(repr(n[:64]) for n in extra[:4])}"] if extra else [])
    return f"type {t.name!r} has {sorted(t.sensors)[:16]} ({'; '.join(parts)})"


def record(event: Event) -> Record:
    """What the window keeps of an event: time, readings in its type's order, the asset's baseline state.

    ``features`` computes the state and leaves it on the event (both callers, the
    worker's intake and ``models.dataset.rows``, call it before ``record``).
    """
    st = event.get(STATE_KEY) if isinstance(event, dict) else None
    rec: Record = {"ts": event["ts"], "x": event.get("_x") if isinstance(event, dict) else None}
    if rec["x"] is None:
        rec["x"] = [float(v) for v in event["readings"].values()]
    if st is not None:
        rec["s"] = st
    return rec


def _baseline(t: AssetType, st: Mapping[str, Any] | None) -> tuple[int, list[float], list[float]]:
    """(absorbed readings, centre, scale) of the asset's normal now, per sensor of ``t``.

    The centre is the posterior mean of the asset's level with the type's
    between-asset spread as prior: the type mean at first, the asset's own mean
    once it has a few readings. The scale is the type's within-asset spread
    widened by what is still unknown about the centre, so at n = 0 a reading is
    judged against the type's spread plus how much assets of the type differ.
    The asset's own spread is used only for types whose assets differ in spread
    by far more than a few hundred readings can misjudge (``own_scale``, set by
    the fit): a few hundred readings of a slowly varying process understate
    its spread (on the Tennessee Eastman data the own spread of the first 128
    readings cost 7 points of detection rate at the same false-alarm rate, the
    own mean none).
    """
    n = int(st["n"]) if st else 0
    centre, scale = [], []
    for k in range(len(t.sensors)):
        sd, tau, mu0 = t.std[k], t.between[k], t.mean[k]
        var = sd * sd
        tau2 = max(tau * tau, 1e-12 * var + 1e-300)
        if t.own_scale and n >= 2:
            mu = st["m"][k]
            var = max(st["q"][k] / (n - 1), 1e-18 * (mu * mu + 1.0))
            post = var / n
        elif n:
            post = 1.0 / (1.0 / tau2 + n / var)
            mu = post * (mu0 / tau2 + n * st["m"][k] / var)
        else:
            post, mu = tau2, mu0
        centre.append(mu)
        scale.append(max(math.sqrt(var + post), MIN_SCALE * (abs(mu) + 1.0)))
    return n, centre, scale


def _absorb(st: Mapping[str, Any] | None, t: AssetType, x: Sequence[float], warmup: int) -> dict[str, Any]:
    """The baseline state after one more normal reading: count, running mean and squared deviations.

    Within the warm-up this is Welford's running mean and variance; after it, a
    type that ``adapt``s keeps them as exponentially weighted ones (weight
    1/adapt per reading), so the baseline follows slow legitimate change.
    """
    if not st:
        return {"t": t.name, "n": 1, "m": list(x), "q": [0.0] * len(x)}
    n = int(st["n"]) + 1
    m, q = list(st["m"]), list(st["q"])
    if n > warmup and t.adapt:
        a = 1.0 / t.adapt
        for k, v in enumerate(x):
            d = v - m[k]
            m[k] += a * d
            q[k] = (1.0 - a) * (q[k] + a * d * d * (n - 1))  # q stays (n - 1) x the variance
        return {"t": t.name, "n": min(n, warmup + 1), "m": m, "q": q}
    for k, v in enumerate(x):
        d = v - m[k]
        m[k] += d / n
        q[k] += d * (v - m[k])
    return {"t": t.name, "n": n, "m": m, "q": q}


def _d2(z: Sequence[float], rows: Sequence[Sequence[float]]) -> float:
    """z' P z for one reading (pure Python: a numpy call per event costs more at these sizes)."""
    return sum(zi * sum(map(mul, row, z)) for zi, row in zip(z, rows))


def features(event: Event, window: Sequence[Record], card: Mapping[str, Any] | None) -> Features:
    """The event against its asset's normal: type, standardised readings, baseline state.

    Raises :class:`SensorDataError` naming the problem for readings that are not
    finite numbers, or a sensor set that is not the asset's type (the worker
    dead-letters the event with that message).
    """
    sp = spec(card or {})
    readings = event["readings"]
    if not readings:
        raise SensorDataError("readings: empty; a sensor event needs 1-256 readings")
    t = sp.by_set.get(frozenset(readings))
    if t is None:
        raise SensorDataError(check(event, card or {}) or "sensor set matches no asset type")
    prev = window[-1].get("s") if window else None
    if prev and prev.get("t") != t.name:
        asset = str(event.get("asset_id"))[:64]
        raise SensorDataError(f"sensor set of asset {asset!r} changed: it is a {prev.get('t')!r} asset, this event "
                              f"has the sensors of {t.name!r} ({sorted(readings)[:16]}); send each asset's full "
                              "sensor set in every event")
    x = []
    for name in t.sensors:
        v = readings[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SensorDataError(f"readings.{name[:64]}: expected a number, got {type(v).__name__}")
        if not -math.inf < v < math.inf:
            raise SensorDataError(f"readings.{name[:64]}: must be a finite number, got {v!r}")
        x.append(float(v))
    n, centre, scale = _baseline(t, prev)
    z = [max(-CLIP, min(CLIP, (v - c) / s)) for v, c, s in zip(x, centre, scale)]
    if n < sp.warmup:
        absorb = max(map(abs, z)) < GATE
    else:  # an adapting type follows slow change, never a reading off the type's relations
        absorb = bool(t.adapt) and max(map(abs, z)) < GATE and _d2(z, t.rows) < ADAPT_GATE * len(z)
    if absorb:
        state = _absorb(prev, t, x, sp.warmup)
    else:
        state = dict(prev) if prev else {"t": t.name, "n": 0, "m": list(x), "q": [0.0] * len(x)}
    nov = 0.0
    if t.novelty:
        olds = (prev or {}).get("v") or [None] * len(x)
        slot = novelty.slot_of(int(event["ts"]))
        news = []
        for k, v in enumerate(x):
            seed = [r["x"][k] for r in window[-32:]] if olds[k] is None else ()
            nk, sk = novelty.step(v, olds[k], slot, seed)
            nov = nk if k == 0 or nk > nov else nov
            news.append(sk)
        state["v"] = news
    if t.alphas:
        state["e"] = history_step((prev or {}).get("e"), x, t.alphas, window)
    if t.limits is not None:
        state["r"] = repeat_runs((prev or {}).get("r"), x, window, t.limits)
    if isinstance(event, dict):
        event[STATE_KEY] = state
        event["_x"] = x
    return {"type": t.name, "type_index": t.index, "n_base": n, "sensors": t.sensors, "x": x, "z": z,
            "centre": centre, "scale": scale, "n_hist": len(window), "window": sp.window, "novelty": nov,
            "e": state.get("e"), "warmup": sp.warmup, "runs": state.get("r")}


def repeat_runs(old: Sequence[int] | None, x: Sequence[float], window: Sequence[Record],
                limits: tuple[Sequence[float], Sequence[float]]) -> list[int]:
    """Per sensor, how many readings in a row up to ``x`` repeated the one before exactly (``repeat_flags``).

    Kept in the asset's state, the count goes on past the model's window: a gauge that
    holds its value a third of the time is caught only after tens of repeats, more than
    a window of 16 readings shows. An asset without the counts yet (a state from before
    bundle 3.5) starts them from the readings its window holds.

    >>> lim = ([0.0, 0.0], [9.0, 9.0])
    >>> repeat_runs([4, 1], [3.0, 5.0], [{"x": [3.0, 4.0]}], lim)
    [5, 0]
    >>> repeat_runs(None, [3.0, 0.0], [{"x": [3.0, 0.0]}, {"x": [3.0, 0.0]}], lim)  # 0 is the edge: not counted
    [2, 0]
    """
    last = window[-1].get("x") if window else None
    if last is None or len(last) != len(x):
        return [0] * len(x)
    lo, hi = limits
    if old is None or len(old) != len(x):  # rare (a state from before 3.5): the batch helpers, on the window
        rows = np.asarray([[r["x"] for r in window if len(r.get("x") or ()) == len(x)]], dtype=np.float64)
        old = window_runs(repeat_flags(rows, np.array([rows.shape[1]]), limits))[0].astype(int).tolist()
    return [r + 1 if v == p and a < v < b else 0 for v, p, r, a, b in zip(x, last, old, lo, hi)]


def history_step(old: Sequence[Sequence[float]] | None, x: Sequence[float], alphas: Sequence[float],
                 window: Sequence[Record]) -> list[list[float]]:
    """The asset's recent-history means after reading ``x``: per weight ``a``, ``m <- (1 - a) m + a x`` per sensor.

    They ride in the baseline state, so a restart restores them with the window. An asset
    without them yet (its first reading, or a state from before bundle 3.3) starts them from
    the readings its window holds.

    >>> history_step(None, [2.0], [0.5], [{"x": [0.0]}])
    [[1.0]]
    >>> history_step([[1.0]], [2.0], [0.5], [])
    [[1.5]]
    """
    if old is None or len(old) != len(alphas) or any(len(m) != len(x) for m in old):
        seed = [r["x"] for r in window[-32:] if len(r.get("x") or ()) == len(x)]
        old = [list(seed[0] if seed else x) for _ in alphas]
        for xs in seed[1:]:
            old = [[(1.0 - a) * mk + a * v for mk, v in zip(m, xs)] for a, m in zip(alphas, old)]
    return [[(1.0 - a) * mk + a * v for mk, v in zip(m, x)] for a, m in zip(alphas, old)]


class ModelInput(NamedTuple):
    """One event's window as the intake leaves it: raw readings and the normal to judge them by.

    Standardising them is :func:`standardise`'s job, for a whole batch at once (``stack``):
    done per event, numpy's fixed cost per call on these small arrays held the worker's
    event loop longer than the rest of the intake.
    """

    type_index: int
    rows: Sequence[Sequence[float]]  # T readings, oldest first; fewer than T: the oldest repeated to the left
    valid: int  # how many of the rows are real readings
    novelty: float  # the long-memory novelty of a one-sensor type (0 for the others)
    centre: Sequence[float]  # the asset's normal now, per sensor
    scale: Sequence[float]
    means: Sequence[Sequence[float]] | None  # the recent-history means after this reading [A][S] (None: the type keeps none)
    warming: bool  # the asset's own normal is still forming (fewer than ``warmup`` readings)
    runs: Sequence[int] | None = None  # per sensor, repeats in a row up to this reading (``repeat_runs``; None: count in the window)


def model_input(event: Event, window: Sequence[Record], feats: Features) -> ModelInput:
    """The window the scorer stacks: the last T readings of the asset, oldest first, with its normal now.

    Every step is standardised by the asset's normal *now* (:func:`standardise`), so the
    window shows how the readings moved relative to one reference. The recent-history means
    (``history_step``) after this reading ride along; ``stack`` recovers them at every step of
    the window (:func:`history_window`): what the lag-aware residuals predict each sensor from.
    """
    steps = int(feats.get("window") or WINDOW["max_events"])
    rows = [r["x"] for r in window[-(steps - 1):]] if steps > 1 else []
    rows.append(feats["x"])
    valid = len(rows)
    if valid < steps:
        rows = [rows[0]] * (steps - valid) + rows
    return ModelInput(int(feats["type_index"]), rows, valid, float(feats.get("novelty", 0.0)), feats["centre"], feats["scale"],
                      feats.get("e"), int(feats.get("n_base", 0)) < int(feats.get("warmup", 0)), feats.get("runs"))


def standardise(inputs: Sequence[ModelInput], limits: tuple[Sequence[float], Sequence[float]] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Windows of one asset type -> (z [n, T, S] float32, repeat flags [n, T, S], history means now [n, A, S] or None).

    ``z`` is each reading in σ of its asset's normal now, clipped at ``CLIP``; the repeat flags
    are :func:`repeat_flags` (``limits``: the type's, or None); the history means are
    standardised the same way (None unless every input has them).

    >>> inp = ModelInput(0, [[1.0, 5.0], [1.0, 7.0], [3.0, 7.0]], 2, 0.0, [1.0, 5.0], [2.0, 1.0], None, False)
    >>> z, rep, hist = standardise([inp])
    >>> z[0].tolist(), rep[0].tolist(), hist
    ([[0.0, 0.0], [0.0, 2.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]], None)
    """
    x = np.asarray([inp.rows for inp in inputs], dtype=np.float64)
    centre = np.asarray([inp.centre for inp in inputs], dtype=np.float64)[:, None, :]
    scale = np.asarray([inp.scale for inp in inputs], dtype=np.float64)[:, None, :]
    z = np.clip((x - centre) / scale, -CLIP, CLIP).astype(np.float32)
    rep = repeat_flags(x, np.asarray([inp.valid for inp in inputs]), limits).astype(np.float32)
    hist = None
    if all(inp.means is not None for inp in inputs):
        hist = np.clip((np.asarray([inp.means for inp in inputs], dtype=np.float64) - centre) / scale, -CLIP, CLIP)
    return z, rep, hist


def repeat_flags(x: np.ndarray, valid: np.ndarray, limits: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """1 where a raw reading [n, T, S] equals the step before, 0 elsewhere; a stuck sensor's trace.

    Padded steps and the first real one repeat nothing. With the type's ``limits`` (lowest and
    highest normal reading per sensor), a repeat at or beyond them is not flagged: a meter
    pinned at the end of its range (no traffic reads exactly 0, a valve fully open) holds its
    value in normal running, and a reading that far out is what the level and relation parts
    judge. A sensor frozen *inside* its range is what only the repeats show.

    >>> x = np.array([[[0.0, 5.0], [0.0, 5.0], [0.0, 5.0]]])
    >>> repeat_flags(x, np.array([3]))[0].tolist()
    [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    >>> repeat_flags(x, np.array([3]), (np.array([0.0, 1.0]), np.array([9.0, 9.0])))[0].tolist()
    [[0.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    n, steps, _ = x.shape
    rep = np.zeros(x.shape, dtype=bool)
    if steps > 1:
        first_real = steps - np.asarray(valid)
        rep[:, 1:] = (x[:, 1:] == x[:, :-1]) & (np.arange(1, steps)[None, :] > first_real[:, None])[:, :, None]
        if limits is not None:
            lo, hi = limits
            rep &= (x > np.asarray(lo)) & (x < np.asarray(hi))
    return rep.astype(np.float64)


def vector(feats: Features) -> list[float]:
    """The standardised current readings (for baselines that take one vector per event)."""
    return [float(v) for v in feats["z"]]


FEATURE_NAMES: list[str] = []  # per-type widths differ; baselines use ``vector`` per asset type


def stack(inputs: Sequence[ModelInput], card: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A batch of ``model_input`` values -> the ONNX graph's inputs and the relation statistics.

    Shared by the scorer and by training (``models/sensor_data.py``), so both see the
    same numbers. Per step and sensor: ``z``, the leave-one-out residual ``r`` (how
    far the sensor is from what the type's other sensors predict, in its
    conditional σ), ``dz`` (change since the previous step) and ``rep`` (1 if the
    raw reading repeated exactly inside the type's normal range: :func:`repeat_flags`). Assets of different types are padded to the
    widest, with ``sensor_mask`` 0 on the padding.

    Returns ``values`` [B, T, S, C], ``sensor_ids`` [B, S] (embedding slots),
    ``sensor_mask`` [B, S], ``step_mask`` [B, T], ``step_stats`` [B, T, 2] (log1p of
    each step's Mahalanobis distance per sensor and of its largest squared
    residual: the relation statistics as the model sees them), plus ``d2`` [B, T]
    (that distance), ``r`` [B, S] (the residuals at the newest step), ``nov`` [B]
    (the long-memory novelty of one-sensor types, 0 for the others),
    ``repeat_weight`` [B, S] (:func:`repeat_weights`), ``runs`` [B, S] (each sensor's run of
    repeats up to the newest reading: :func:`repeat_runs`, or counted in the window) and, where a type of the batch
    combines them, ``lr`` [B, T, S] (the lag-aware residuals,
    :func:`streamer.encoding.relations.lagged`; 0 for the other types' rows).
    """
    sp = spec(card)
    b = len(inputs)
    steps = len(inputs[0].rows) if b else sp.window
    width = max((sp.types[inp.type_index].precision.shape[0] for inp in inputs), default=1)
    values = np.zeros((b, steps, width, len(CHANNELS)), dtype=np.float32)
    ids = np.zeros((b, width), dtype=np.int64)
    smask = np.zeros((b, width), dtype=np.float32)
    tmask = np.zeros((b, steps), dtype=np.float32)
    d2 = np.zeros((b, steps), dtype=np.float32)
    r2 = np.zeros((b, steps), dtype=np.float32)
    rw = np.zeros((b, width), dtype=np.float64)
    runs = np.zeros((b, width), dtype=np.float64)
    by_type: dict[int, list[int]] = {}
    lr = None  # the lag-aware residuals, where a type of the batch combines them
    for row, inp in enumerate(inputs):
        by_type.setdefault(inp.type_index, []).append(row)
        tmask[row, steps - inp.valid:] = 1.0
    for ti, rows in by_type.items():
        t = sp.types[ti]
        s = len(t.sensors)
        group = [inputs[r] for r in rows]
        z32, rep, means = standardise(group, t.limits)
        z = z32.astype(np.float64)  # [n, T, S]
        rr, dd = relations.residuals(z, t.precision)
        values[rows, :, :s, 0] = z32
        values[rows, :, :s, 1] = np.clip(rr, -CLIP, CLIP)
        values[rows, 1:, :s, 2] = np.clip(z[:, 1:] - z[:, :-1], -CLIP, CLIP)
        values[rows, :, :s, 3] = rep
        have = [inp.runs is not None and len(inp.runs) == s for inp in group]
        if all(have):
            runs[rows, :s] = [inp.runs for inp in group]
        else:  # cards before bundle 3.5 and probes: the run in the window
            counted = window_runs(rep)
            for j, inp in enumerate(group):
                if have[j]:
                    counted[j] = inp.runs
            runs[rows, :s] = counted
        d2[rows] = dd / s
        r2[rows] = np.max(rr * rr, axis=2)
        ids[rows, :s] = [sp.slots.get(n, 0) for n in t.sensors]
        smask[rows, :s] = 1.0
        rw[rows, :s] = t.repeat_weight
        if t.lag is not None and t.lag_used:
            coef, bias, sigma, loose, kappa = t.lag
            # while an asset's own normal forms, its levels are uncertain by more than the lag model's
            # tight σ allows for: those readings are judged on the static prediction's looser σ
            sig = np.where(np.asarray([inp.warming for inp in group])[:, None, None], loose, sigma)
            # an input without the means (a probe) takes its newest reading for every weight
            now = means if means is not None else np.repeat(z[:, -1:, :], len(t.alphas), 1)
            hist = history_window(z, now, t.alphas, np.asarray([inp.valid for inp in group]))
            if lr is None:
                lr = np.zeros((b, steps, width), dtype=np.float64)
            lr[rows, :, :s] = np.clip(relations.lagged(z, hist, coef, bias, sig, kappa), -CLIP, CLIP)
    values[:, :, :, 2] *= np.concatenate([np.zeros((b, 1)), tmask[:, :-1]], 1)[:, :, None] * tmask[:, :, None]
    stats = np.stack([np.log1p(d2), np.log1p(r2)], -1) * tmask[:, :, None]
    out = {"values": values, "sensor_ids": ids, "sensor_mask": smask, "step_mask": tmask,
           "step_stats": stats.astype(np.float32), "d2": d2, "r": values[:, -1, :, 1].copy(),
           "nov": np.asarray([inp.novelty for inp in inputs], dtype=np.float64), "repeat_weight": rw, "runs": runs}
    if lr is not None:
        out["lr"] = lr
    return out


def window_runs(rep: np.ndarray) -> np.ndarray:
    """Per window and sensor, the run of repeat flags [n, T, S] ending at the newest step: [n, S].

    What an input without ``runs`` (a card from before bundle 3.5, a probe) counts, in its window alone.

    >>> window_runs(np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]])).tolist()
    [[3.0, 0.0]]
    """
    alive = np.cumprod(rep[:, ::-1] > 0, axis=1)  # newest first: still in the run
    return alive.sum(1).astype(np.float64)


def history_window(z: np.ndarray, now: np.ndarray, alphas: Sequence[float], valid: np.ndarray) -> np.ndarray:
    """The recent-history means at every step of a batch of windows [n, T, A*S], from the means now.

    ``z`` [n, T, S] (oldest first), ``now`` [n, A, S] the means after the newest reading, ``valid``
    [n] the real steps. Undoing the k newest readings of ``m <- (1 - a) m + a z`` gives the means
    k steps back: ``(now - a * sum_{j<k} (1 - a)^j z[-1-j]) / (1 - a)^k``; padded steps take
    the oldest real step's, and so do the steps before a reading clipped at ``CLIP`` (its true value is
    lost). Vectorised over the batch: done per event in the intake, it slowed the worker.

    >>> z = np.array([[[0.0], [1.0], [1.0]]])
    >>> history_window(z, np.array([[[0.75]]]), [0.5], np.array([3])).ravel().tolist()
    [0.0, 0.5, 0.75]
    """
    n, steps, s = z.shape
    a = np.asarray(alphas, dtype=np.float64)[None, :, None, None]
    back = z[:, ::-1][:, None].astype(np.float64)  # [n, 1, T, S], newest first
    decay = (1.0 - a) ** np.arange(steps)[None, None, :, None]  # [1, A, T, 1]
    undone = np.concatenate([np.zeros((n, a.shape[1], 1, s)), np.cumsum(decay[:, :, :-1] * back[:, :, :-1], 2)], 2)
    e = ((now[:, :, None, :] - a * undone) / decay)[:, :, ::-1]  # [n, A, T, S], oldest first
    # padded steps take the oldest real step's means; so do the steps before a clipped reading (|z| at CLIP),
    # which cannot be undone exactly
    clipped = np.where((np.abs(z) >= CLIP).any(2), np.arange(steps)[None, :], 0).max(1)
    oldest = np.maximum(steps - np.asarray(valid), clipped)
    first = np.maximum(np.arange(steps)[None, :], oldest[:, None])
    e = np.take_along_axis(e, first[:, None, :, None], 2)
    return e.transpose(0, 2, 1, 3).reshape(n, steps, -1)


def reasons(feats: Features, detail: Mapping[str, Any] | None = None, limit: int = 4) -> list[str]:
    """Short reasons, strongest first: which sensors the model found furthest from what was expected.

    ``detail`` (from the scorer) names, per sensor, the leave-one-out residual
    (σ from what the type's other sensors predict) and the sensors that predict
    it most; without it the reasons fall back to the readings' distance from the
    asset's normal.
    """
    names = feats["sensors"]
    out: list[str] = []
    if detail:
        for k, r, preds in detail.get("worst", [])[:limit]:
            name = names[k]
            side = "above" if r > 0 else "below"
            if preds:
                out.append(f"{name} {abs(r):.1f}σ {side} what {_and(names[j] for j in preds)} predict")
            else:
                out.append(f"{name} {abs(r):.1f}σ {side} the asset's normal")
        if detail.get("forecast"):
            k, e = detail["forecast"]
            out.append(f"{names[k]} {abs(e):.1f}σ {'above' if e > 0 else 'below'} the model's forecast")
        if detail.get("cause"):
            out.append(str(detail["cause"]))
    if not out:
        k = max(range(len(names)), key=lambda i: abs(feats["z"][i]))
        z = feats["z"][k]
        out.append(f"{names[k]} {abs(z):.1f}σ {'above' if z > 0 else 'below'} the asset's normal")
    if feats.get("n_base", 0) < 16:
        out.append(f"new asset: judged on {feats['n_base']} of its own readings so far")
    return out[:limit]


def _and(names: Any) -> str:
    ns = list(names)
    return ns[0] if len(ns) == 1 else ", ".join(ns[:-1]) + " and " + ns[-1]
