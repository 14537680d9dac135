"""Fit an asset type's normal from normal running: levels, spreads, how assets differ, how sensors relate.

This is what makes a new asset type scorable from its normal operation alone
(``streamer model fine-tune``): for every sensor set found in the data (an asset
type), the pooled within-asset mean and spread of each sensor, the spread of
asset means around the type mean (the encoding's cold-start prior), and the
regularised precision matrix of the readings standardised exactly as the
worker standardises them (:mod:`streamer.encoding.sensors`), with the amount of
shrinkage chosen by the Gaussian likelihood of held-out normal readings.

Bad input is an error that names the row and the field: NaN/Inf, a sensor
that never changes, too few readings, an asset whose sensor set changes.

>>> import random
>>> rnd = random.Random(0)
>>> evs = []
>>> for i in range(400):
...     load = rnd.gauss(0, 1)
...     evs.append({"event_id": str(i), "ts": i * 1000, "asset_id": "pump-1",
...                 "readings": {"flow": 100 + 5 * load + rnd.gauss(0, 1), "current": 10 + load + rnd.gauss(0, 0.2)}})
>>> types = fit_types(evs)
>>> t = types["pump"]
>>> t["sensors"], round(t["mean"][0], 1), t["assets"]
(['current', 'flow'], 10.0, 1)
>>> round(float(relation_strength(t)), 2) > 0.9  # flow and current move together
True
>>> fit_types(evs[:10])
Traceback (most recent call last):
...
models.sensor_fit.FitError: asset type 'pump' (sensors ['current', 'flow']): 10 normal readings; need at least 64 to fit its normal
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from streamer.encoding import sensors as enc
from streamer.windows import context, push

MIN_READINGS = 64  # per asset type
SHRINKAGE_GRID = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
LAG_RIDGE = (1e-4, 1e-3, 1e-2, 0.1, 1.0)  # ridge penalties (per reading) tried for the lag-aware relation model
MIN_WIDENING_READINGS = 200  # held-out readings a type needs before its lag-aware σ may widen away from the operating point
HOLDOUT = 0.2  # newest share of each asset's readings scores the shrinkage candidates


class FitError(ValueError):
    """Normal data that cannot define a normal; the message names the row, asset, type or sensor."""


def _event_readings(events: Iterable[Mapping[str, Any]], held_key: str | None = None
                    ) -> dict[str, list[tuple[int, dict[str, float], bool]]]:
    """Per asset, (row, readings, held out) in stream order, every reading checked."""
    out: dict[str, list[tuple[int, dict[str, float], bool]]] = defaultdict(list)
    sets: dict[str, frozenset] = {}
    for i, ev in enumerate(events, 1):
        readings = ev.get("readings")
        where = f"row {i} (event_id={ev.get('event_id')!r})"
        if not isinstance(readings, Mapping) or not readings:
            raise FitError(f"{where}: readings must be a non-empty object of sensor name -> number")
        for name, v in readings.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FitError(f"{where}: readings.{name}: expected a number, got {type(v).__name__}")
            if not math.isfinite(v):
                raise FitError(f"{where}: readings.{name}: must be a finite number, got {v!r}")
        asset = str(ev.get("asset_id"))
        names = frozenset(readings)
        if sets.setdefault(asset, names) != names:
            missing, extra = sorted(sets[asset] - names), sorted(names - sets[asset])
            raise FitError(f"{where}: asset {asset!r} reported sensors {sorted(sets[asset])} before and now "
                           f"{sorted(names)} (missing {missing}, unexpected {extra}); every event of an asset must "
                           "carry the same sensors")
        out[asset].append((i, {k: float(v) for k, v in readings.items()}, held_key is not None and held_key in ev))
    if not out:
        raise FitError("no events: normal readings are needed to fit an asset type")
    return out


def type_name(assets: Sequence[str], taken: set[str], sensors: Sequence[str] = ()) -> str:
    """A readable, unique name for the type of ``assets``: their common leading word, the sensor's name
    for a one-sensor type, else ``type-N``.

    >>> type_name(["pump-01", "pump-02"], set()), type_name(["a1", "b2"], {"type-1"}), type_name(["a", "b"], set(), ["value"])
    ('pump', 'type-2', 'value')
    """
    prefix = re.match(r"[A-Za-z][A-Za-z_]*", assets[0])
    word = prefix.group(0).rstrip("_") if prefix else ""
    if word and len(word) >= 3 and all(a.startswith(word) for a in assets) and word not in taken:
        return word
    if len(sensors) == 1 and sensors[0] not in taken:
        return sensors[0]
    k = 1
    while f"type-{k}" in taken:
        k += 1
    return f"type-{k}"


ADAPT_READINGS = 1024  # time constant of an adapting baseline, when the fit finds that normal levels move
DRIFT_LIMIT = 0.5  # median |level change| (type sigmas) of assets past their warm-up that makes a type adapt


def level_drift(per_asset: Mapping[str, np.ndarray], warmup: int, std: np.ndarray) -> float:
    """How far normal levels move after the warm-up: median over assets and sensors of |mean of the last
    quarter - mean of the first ``warmup`` readings|, in type sigmas (0 for assets too short to tell).

    A frozen baseline suits equipment whose normal level stays put; where normal running itself moves
    (benign trends, seasons, load growth), a frozen baseline turns that into alerts that never stop.
    """
    moves = []
    for x in per_asset.values():
        if len(x) < 2 * warmup:
            continue
        late = x[-max(warmup, len(x) // 4):].mean(0)
        moves.append(np.abs(late - x[:warmup].mean(0)) / std)
    return float(np.median(np.concatenate(moves))) if moves else 0.0


def relation_strength(t: Mapping[str, Any]) -> float:
    """Largest squared multiple correlation of one sensor with the others (1 = fully predictable)."""
    p = np.asarray(t["precision"])
    return float(np.max(1.0 - 1.0 / np.diag(p))) if len(p) > 1 else 0.0


def _standardised(per_asset: Mapping[str, np.ndarray], t: Mapping[str, Any], warmup: int,
                  window: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each asset's readings standardised by the encoding itself (its baseline as the worker builds it).

    Per asset: ``z`` [T, S] and the recent-history means as the encoding keeps them, standardised
    the same way [T, A*S] (empty for one sensor).
    """
    lag = {"alphas": list(enc.LAG_ALPHAS)} if len(t["sensors"]) > 1 else None
    card = {"name": "fit", "version": "0", "sensor_model": {"window": window, "warmup": warmup, "types": {"t": {
        **t, "precision": np.eye(len(t["sensors"])).tolist(), "lag": lag}}}}
    out = []
    names = t["sensors"]
    for x in per_asset.values():
        win: list[dict[str, Any]] = []
        zs, now = [], []
        for i, row in enumerate(x):
            ev = {"asset_id": "a", "ts": i, "readings": dict(zip(names, row.tolist()))}
            ctx = context(win, i, window, 1 << 62)
            f = enc.features(ev, ctx, card)
            rec = enc.record(ev)
            win = push(win, rec, window, 1 << 62)
            zs.append(f["z"])
            now.append(enc.ModelInput(0, [f["x"]], 1, 0.0, f["centre"], f["scale"], f["e"], False))
        hist = enc.standardise(now)[2] if lag and now else None  # the means as the stack sees them
        out.append((np.asarray(zs), hist.reshape(len(zs), -1) if hist is not None else np.zeros((len(zs), 0))))
    return out


def fit_lag(train: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """The lag-aware relation model (``streamer.encoding.relations.lagged``) of one asset type.

    Each sensor is regressed on the *other* sensors' readings and recent-history means (ridge,
    the penalty chosen per sensor by the squared error on the held-out readings), never on its
    own: its own history would predict a lasting offset away. ``sigma`` is the held-out residual
    spread, so readings the fit did not see are judged on the scale they will have.

    >>> rng = np.random.default_rng(0)
    >>> load = np.cumsum(rng.normal(size=1200)) * 0.1
    >>> temp = np.convolve(load, np.full(8, 1 / 8))[:1200] + 0.05 * rng.normal(size=1200)  # follows load, late
    >>> z = np.c_[load, temp]
    >>> h = np.c_[load, temp, load, temp]  # placeholder history: none of it helps
    >>> for a, j in ((0.5, 2), (0.1, 4)):
    ...     for i in range(1, 1200): h[i, j - 2: j] = (1 - a) * h[i - 1, j - 2: j] + a * z[i]
    >>> m = fit_lag((z[:900], h[:900]), (z[900:], h[900:]))
    >>> m["sigma"][1] < 0.5 * m["static_sigma"][1]  # the temperature, from load now and its recent means
    True
    """
    (zt, ht), (zh, hh) = train, held
    s = zt.shape[1]
    xt, xh = np.c_[zt, ht], np.c_[zh, hh]
    width = xt.shape[1]
    coef, bias, sigma, static, chosen = np.zeros((s, width)), np.zeros(s), np.ones(s), np.ones(s), []
    sigma0, kappa = np.ones(s), np.zeros(s)
    for k in range(s):
        cols = [j for j in range(width) if j % s != k]
        a, ah = np.c_[xt[:, cols], np.ones(len(xt))], np.c_[xh[:, cols], np.ones(len(xh))]
        gram, rhs = a.T @ a, a.T @ zt[:, k]
        best = None
        for lam in LAG_RIDGE:
            pen = lam * len(a) * np.eye(len(gram))
            pen[-1, -1] = 0.0  # the constant is not shrunk
            b = np.linalg.solve(gram + pen, rhs)
            err = float(np.mean((zh[:, k] - ah @ b) ** 2))
            if best is None or err < best[0]:
                best = (err, lam, b)
        err, lam, b = best
        coef[k, cols], bias[k] = b[:-1], b[-1]
        sigma[k] = max(math.sqrt(err), 1e-3)
        pred = ah @ b
        sigma0[k], kappa[k] = _widening(zh[:, k] - pred, pred, sigma[k])
        now = [j for j in range(s) if j != k]  # the static prediction from the others now: the report, and the warm-up σ
        an, anh = np.c_[zt[:, now], np.ones(len(zt))], np.c_[zh[:, now], np.ones(len(zh))]
        bn = np.linalg.lstsq(an, zt[:, k], rcond=None)[0]
        static[k] = math.sqrt(float(np.mean((zh[:, k] - anh @ bn) ** 2)))
        chosen.append(lam)
    return {"alphas": list(enc.LAG_ALPHAS), "coef": coef.round(8).tolist(), "bias": bias.round(8).tolist(),
            "sigma": sigma.round(6).tolist(), "ridge": chosen, "static_sigma": static.round(6).tolist(),
            "sigma0": sigma0.round(6).tolist(), "kappa": kappa.round(6).tolist()}


def _widening(err: np.ndarray, pred: np.ndarray, sigma: float) -> tuple[float, float]:
    """(σ at the asset's own operating point, κ): held-out squared errors fitted as ``σ0² (1 + κ p²)``.

    ``p`` is the prediction in σ of the asset's normal, so it measures how far the operating
    point has moved from where the asset's normal was learned. Least squares of ``err²`` on
    ``[1, p²]``; κ is 0 where the errors do not grow, or where fewer than
    ``MIN_WIDENING_READINGS`` held-out readings leave a slope of squared errors to noise
    (Tennessee Eastman: 66), and then σ0 is the plain held-out σ.

    >>> rng = np.random.default_rng(1)
    >>> p = rng.normal(size=20000)
    >>> s0, k = _widening(rng.normal(size=20000) * 0.2 * np.sqrt(1 + 0.5 * p * p), p, 0.25)
    >>> round(s0, 2), round(k, 1)
    (0.2, 0.5)
    """
    design = np.c_[np.ones(len(pred)), pred * pred]
    if len(pred) < MIN_WIDENING_READINGS or float(np.ptp(design[:, 1])) <= 0:
        return sigma, 0.0
    a, c = np.linalg.lstsq(design, err * err, rcond=None)[0]
    if not (a > 0 and c > 0 and np.isfinite(a) and np.isfinite(c)):
        return sigma, 0.0
    return max(math.sqrt(float(a)), 1e-3), float(c / a)


def _choose_shrinkage(train: np.ndarray, held: np.ndarray) -> tuple[float, dict[str, float]]:
    """The shrinkage toward independence whose precision gives held-out normal readings the best likelihood."""
    c = np.corrcoef(train, rowvar=False) if train.shape[1] > 1 else np.ones((1, 1))
    c = np.nan_to_num(c, nan=0.0)
    np.fill_diagonal(c, 1.0)
    scores: dict[str, float] = {}
    best, best_ll = SHRINKAGE_GRID[-1], -np.inf
    for lam in SHRINKAGE_GRID:
        s = (1 - lam) * c + lam * np.eye(len(c))
        sign, logdet = np.linalg.slogdet(s)
        if sign <= 0:
            continue
        p = np.linalg.inv(s)
        ll = -0.5 * (logdet + float(np.mean(np.einsum("ij,jk,ik->i", held, p, held))))
        scores[str(lam)] = round(ll, 4)
        if ll > best_ll:
            best, best_ll = lam, ll
    return best, scores


def normal_limits(per_asset: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
    """Per sensor, the lowest and highest reading of the type's normal running (``enc.repeat_flags``).

    >>> normal_limits({"a": np.array([[1.0, 5.0], [2.0, 5.0]]), "b": np.array([[0.0, 6.0]])})
    {'lo': [0.0, 5.0], 'hi': [2.0, 6.0]}
    """
    x = np.concatenate(list(per_asset.values()))
    return {"lo": x.min(0).tolist(), "hi": x.max(0).tolist()}


def repeat_rates(per_asset: Mapping[str, np.ndarray], limits: Mapping[str, Sequence[float]] | None = None) -> list[float]:
    """Per sensor, how often a reading exactly repeats the one before, in normal running.

    Smoothed (half a repeat in, one pair more) so that a sensor never seen to repeat
    gets a small chance rather than none. With ``limits`` (:func:`normal_limits`),
    repeats at or beyond them do not count, as the encoding does not flag them: a meter
    that idles at 0 does not make its repeats inside the range look common.

    >>> x = {"a": np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 6.0]])}
    >>> repeat_rates(x)
    [0.125, 0.625]
    >>> repeat_rates(x, normal_limits(x))
    [0.125, 0.125]
    """
    pairs = sum(max(len(x) - 1, 0) for x in per_asset.values())
    width = next(iter(per_asset.values())).shape[1]
    same = np.zeros(width)
    for x in per_asset.values():
        if len(x) > 1:
            flags = enc.repeat_flags(x[None], np.array([len(x)]), None if limits is None else
                                     (np.asarray(limits["lo"]), np.asarray(limits["hi"])))
            same += flags[0].sum(0)
    return [round((float(k) + 0.5) / (pairs + 1), 6) for k in same]


def fit_types(events: Iterable[Mapping[str, Any]], warmup: int = enc.DEFAULT_WARMUP, window: int = enc.WINDOW["max_events"],
              existing: Mapping[str, Mapping[str, Any]] | None = None,
              adapt: int | Mapping[str, int] = 0, held_key: str | None = None) -> dict[str, dict[str, Any]]:
    """Asset types found in normal ``events`` (stream order) -> their fitted normal, for ``card["sensor_model"]["types"]``.

    Rows that carry ``held_key`` (``split_by_asset`` marks its held-out rows ``_half``) are checked and
    run through the encoding in their place in the stream, so that the windows and recent-history means
    of the rows after them are those the worker builds, but fit nothing: cutting them out instead makes
    every gap a jump that the lag-aware relation model learns as normal.
    ``existing`` types (a base bundle's) keep their names when a sensor set matches one of them.
    ``adapt`` (readings; per type name or for all): baselines keep following normal readings after
    the warm-up with this time constant (0: frozen after the warm-up); not given for a type, the fit
    decides from the data: frozen unless normal levels move after the warm-up (``level_drift``).
    """
    per_asset_rows = _event_readings(events, held_key)
    by_set: dict[frozenset, list[str]] = defaultdict(list)
    for asset, rows in per_asset_rows.items():
        by_set[frozenset(rows[0][1])].append(asset)
    names_by_set = {frozenset(t["sensors"]): n for n, t in (existing or {}).items()}
    taken = set(existing or {})
    out: dict[str, dict[str, Any]] = {}
    for sset, assets in sorted(by_set.items(), key=lambda kv: sorted(kv[1])[0]):
        assets = sorted(assets)
        sensors = sorted(sset)
        name = names_by_set.get(sset) or type_name(assets, taken | set(out), sensors)
        what = f"asset type {name!r} (sensors {sensors[:16]})"
        stream = {a: np.asarray([[r[k] for k in sensors] for _, r, _ in per_asset_rows[a]]) for a in assets}
        fits = {a: np.asarray([not held for _, _, held in per_asset_rows[a]], dtype=bool) for a in assets}
        per_asset = {a: x[fits[a]] for a, x in stream.items()}
        n = sum(len(x) for x in per_asset.values())
        if n < MIN_READINGS:
            raise FitError(f"{what}: {n} normal readings; need at least {MIN_READINGS} to fit its normal")
        means, devs = [], []
        for x in per_asset.values():
            m = x[: max(2, min(warmup, len(x)))].mean(0)
            means.append(m)
            devs.append(x - m)
        dev = np.concatenate(devs)
        std = dev.std(0, ddof=1)
        for k, s in enumerate(std):
            scale = max(1.0, float(np.abs(np.concatenate([x[:, k] for x in per_asset.values()])).max()))
            if not s > 1e-9 * scale:
                const = {a: float(x[0, k]) for a, x in list(per_asset.items())[:3]}
                raise FitError(f"{what}: sensor {sensors[k]!r} is constant ({const}) over {n} readings; a sensor "
                               "needs some variation to define its normal (drop it from the events or add data)")
        spreads = np.stack([np.maximum(d[: max(2, min(warmup, len(d)))].std(0), 1e-12) for d in devs])
        # assets whose spreads differ by orders of magnitude (NAB's series: CPU percent beside request counts)
        # are each scaled by their own; otherwise the type's spread is the better estimate
        own_scale = len(devs) > 2 and float(np.median(np.log10(spreads.max(0) / spreads.min(0)))) > 1.0
        mean_all = np.mean(np.stack(means), 0) if len(means) > 1 else means[0]
        between = np.std(np.stack(means), 0, ddof=1) if len(means) > 2 else std.copy()
        between = np.maximum(between, 0.05 * std)  # assets are never known to be identical
        chosen = adapt.get(name) if isinstance(adapt, Mapping) else (adapt or None)
        moved = level_drift(per_asset, warmup, std)
        t: dict[str, Any] = {"sensors": sensors, "mean": mean_all.tolist(), "std": std.tolist(),
                             "between": between.tolist(), "assets": len(assets), "readings": n,
                             "own_scale": own_scale, "level_drift": round(moved, 3), "novelty": len(sensors) == 1,
                             "adapt": int(chosen if chosen is not None else (ADAPT_READINGS if moved > DRIFT_LIMIT else 0))}
        zs = [(z[fits[a]], h[fits[a]]) for a, (z, h) in zip(stream, _standardised(stream, t, warmup, window))]
        tr, ho, htr, hho = [], [], [], []
        for z, h in zs:
            start = min(len(z) // 4, warmup)  # past the cold start, as the relations are used most
            z, h = z[start:], h[start:]
            cut = int(len(z) * (1 - HOLDOUT))
            tr.append(z[:cut])
            ho.append(z[cut:])
            htr.append(h[:cut])
            hho.append(h[cut:])
        train, held = np.concatenate(tr), np.concatenate(ho)
        if len(train) < max(16, 2 * len(sensors)) or len(held) < 8:
            raise FitError(f"{what}: {n} normal readings leave {len(train)} past the first {warmup} of each asset to "
                           f"fit how its {len(sensors)} sensors relate; need at least {max(16, 2 * len(sensors))} "
                           "(more readings per asset, or a smaller --warmup)")
        lam, lls = _choose_shrinkage(train, held)
        c = np.corrcoef(np.concatenate([train, held]), rowvar=False) if len(sensors) > 1 else np.ones((1, 1))
        c = np.nan_to_num(c, nan=0.0)
        np.fill_diagonal(c, 1.0)
        s = (1 - lam) * c + lam * np.eye(len(c))
        t["precision"] = np.linalg.inv(s).round(8).tolist()
        t["shrinkage"] = lam
        t["shrinkage_heldout_loglik"] = lls
        t["relation_strength"] = round(relation_strength(t), 4)
        t["limits"] = normal_limits(per_asset)
        t["repeat_p"] = repeat_rates(per_asset, t["limits"])
        if len(sensors) > 1:
            t["lag"] = fit_lag((train, np.concatenate(htr)), (held, np.concatenate(hho)))
        out[name] = t
    return out


def assign_slots(types: Mapping[str, Mapping[str, Any]], slots: Mapping[str, int] | None, capacity: int) -> dict[str, int]:
    """Embedding slots for every sensor name: existing names keep theirs, new names take free ones.

    >>> assign_slots({"p": {"sensors": ["a", "b"]}}, {"a": 3}, 8)
    {'a': 3, 'b': 1}
    """
    out = dict(slots or {})
    used = set(out.values()) | {0}  # slot 0: padding and the generic "unknown sensor" row
    free = (i for i in range(1, capacity) if i not in used)
    for t in types.values():
        for name in t["sensors"]:
            if name not in out:
                try:
                    out[name] = next(free)
                except StopIteration:
                    raise FitError(f"more than {capacity - 1} distinct sensor names: the model has {capacity} "
                                   "embedding slots (rebuild the base with a larger capacity)") from None
    return out
