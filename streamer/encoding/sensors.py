"""Sensor events -> features -> words, for training and for the worker's hot path.

Every reading is judged against the *asset's own* recent behaviour (the window of
its previous events), because "normal" differs between assets of one type and
drifts over time; the bundle's fitted statistics (``card["normalization"]``) are
only the fallback while an asset's window is still short. A sensor name that the
bundle has never fitted is refused by :func:`check` rather than scored against a
made-up normal.

The model sees sensor-name-agnostic words (the top few most-deviating sensors by
rank, not by name), so a bundle fine-tuned on a new asset type with new sensor
names only needs those names' statistics, not new vocabulary.

Pure Python on purpose: this runs once per event in the worker, where numpy's
per-call overhead on arrays of a few hundred values costs more than it saves.

>>> card = {"name": "s", "version": "1", "normalization": {"sensors": {"temp_c": {"mean": 20.0, "std": 1.0}}}}
>>> window = []
>>> for i in range(40):
...     window.append(record({"ts": 1_700_000_000_000 + i * 60_000, "readings": {"temp_c": 20.0 + (i % 3) * 0.5}}))
>>> ev = {"asset_id": "a1", "ts": 1_700_000_000_000 + 40 * 60_000, "readings": {"temp_c": 26.0}}
>>> check(ev, card) is None
True
>>> f = features(ev, window, card)
>>> f["top1_name"], round(f["top1_z"], 1), f["n_dev"]
('temp_c', 7.4, 1.0)
>>> reasons(f)
["temp_c 7.4σ above the asset's normal"]
>>> "_sensor_state" in ev and "s" in record(ev)  # the long-memory state rides in the record
True
>>> text(ev, window, f)
'h3z0 h3m0 h2zp1 h2m1 h1zn1 h1m1 w1 s0 g2 k1 nv15 azp9 alp2 ao0 ay0 adp9 as0 aq0 an2 ae12 am10 ax11 av9 au1 bz0 bd0 bs0 be0 cz0 cs0 ce0'
>>> check({"asset_id": "a1", "ts": 0, "readings": {"rpm": 3.0}}, card)
"unknown sensor 'rpm' for bundle s@1: it has no fitted normalization; fit it with `streamer model fine-tune --bundle BUNDLE --train NORMAL.jsonl --out DIR`"
"""

from __future__ import annotations

import math
from itertools import repeat
from operator import itemgetter, mul, sub
from typing import Any, Mapping, Sequence

KIND = "sensor"
ENCODING_VERSION = "sensor-v4"  # v4: time-of-day profile (rz, renv); v3: cold-start state without the fleet std

# The window the worker keeps per asset (the card repeats it as card["window"]).
# 128 readings (~10 hours at a 5-minute cadence) give a robust short-term normal;
# what is rare over a much longer span is carried by a per-sensor state in each
# record (see ``record``), so the window, and the per-event work, stay small.
WINDOW: dict[str, int] = {"max_events": 128, "max_age_ms": 7 * 24 * 3600 * 1000}
LONG = 8000  # readings: time constant of the long-memory envelopes and statistics

# Time of day: many sensors follow a daily rhythm (load, temperature, traffic), and a reading that
# is ordinary at noon can be news at 3 a.m. The state keeps, per sensor and UTC hour, an
# exponentially weighted mean and variance of the readings seen in that hour.
SLOTS = 24
SLOT_MS = 24 * 3600 * 1000 // SLOTS
SLOT_ALPHA = 0.05  # per reading: a slot follows a slowly changing daily shape
SLOT_WARM = 6  # readings in an hour slot before it is trusted
SLOT_FLOOR = 0.1  # of the sensor's long-run std, added to a slot's own std (a flat hour is not infinitely sure)
_BASE_LEN = 15
STATE_LEN = _BASE_LEN + 3 * SLOTS
RENV_WEIGHT = 0.5  # novelty(): a time-of-day breach counts half as much as a breach of the whole range

MIN_HISTORY = 16  # readings of a sensor before the window replaces the card's statistics
RECENT = 5  # readings (current included) averaged for the level-shift feature
NOISE_RECENT = 8  # successive differences (current included) for the noise-burst feature
HISTORY = 3  # previous readings summarised in the text, newest last
TOP = 3  # most-deviating sensors described individually
DEV = 3.0  # a sensor "deviates" at this severity (σ-like units)
STUCK_N = 5  # reasons() calls a run of this many unchanged readings "stuck"
CLIP = 50.0
INSIDE = 4.0
_IQR_TO_SD = 1 / 1.349  # σ of a Gaussian from its interquartile range
_ABSDEV_TO_SD = 1.2533  # σ of a Gaussian from its mean absolute deviation

Event = Mapping[str, Any]
Record = dict[str, Any]
Features = dict[str, Any]

_PER_SENSOR = ("z", "delta", "shift", "drift", "stuck", "repeat", "noise", "env", "menv", "denv", "venv", "qenv",
               "rz", "renv")
_BREACHES = frozenset(("env", "menv", "denv", "venv", "qenv", "renv"))
FEATURE_NAMES: list[str] = (
    ["n_hist", "long_n", "n_sensors", "gap_ratio", "n_dev", "max_sev", "novelty"]
    + [f"top{i}_{k}" for i in range(1, TOP + 1) for k in _PER_SENSOR]
    + [f"hist{k}_z" for k in range(1, HISTORY + 1)]
    + [f"hist{k}_max" for k in range(1, HISTORY + 1)]
)


class SensorDataError(ValueError):
    """Readings that cannot be encoded (NaN/Inf, wrong type); the message names the field."""


STATE_KEY = "_sensor_state"
_GET_R = itemgetter("r")


def record(event: Event) -> Record:
    """What the window keeps of an event: its time, its readings and the long-memory state.

    The state (per sensor: long-run mean and variance, and slowly decaying
    envelopes of the value, its short mean, its step size and its volatility) is
    what lets a 128-reading window answer "has this sensor been this far out in
    the last ~LONG readings?" in O(1) per event. ``features`` computes it and
    leaves it on the event; both callers (the worker's intake and
    ``models.dataset.rows``) call ``features`` before ``record`` on the same
    event. A record made without it simply carries no state, and the next event
    re-seeds the state from the window (a cold start, not an error).
    """
    rec = {"ts": event["ts"], "r": event["readings"]}
    st = event.get(STATE_KEY) if isinstance(event, dict) else None
    if st is not None:
        rec["s"] = st
    return rec


def _known(card: Mapping[str, Any] | None, asset: str | None) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    norm = (card or {}).get("normalization") or {}
    fleet = norm.get("sensors") or {}
    per_asset = (norm.get("assets") or {}).get(asset) or {} if asset is not None else {}
    return fleet, per_asset


def check(event: Event, card: Mapping[str, Any]) -> str | None:
    """Refuse events with sensors this bundle has no fitted normal for.

    Scoring such a reading would compare it with nothing (or with another
    sensor's scale) and produce a confident but meaningless score.
    """
    fleet, per_asset = _known(card, event.get("asset_id"))
    unknown = [n for n in event["readings"] if n not in fleet and n not in per_asset]
    if not unknown:
        return None
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    ident = f"{card.get('name', '?')}@{card.get('version', '?')}"
    return (
        f"unknown sensor {unknown[0][:64]!r}{more} for bundle {ident}: it has no fitted normalization; "
        "fit it with `streamer model fine-tune --bundle BUNDLE --train NORMAL.jsonl --out DIR`"
    )


def _median_sorted(s: Sequence[float]) -> float:
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


def _clip(x: float) -> float:
    return CLIP if x > CLIP else -CLIP if x < -CLIP else x


def _inside(x: float) -> float:
    """Envelope distance, clipped to [-INSIDE, CLIP]: how far *inside* matters little."""
    return CLIP if x > CLIP else -INSIDE if x < -INSIDE else x


def _baseline(vals: list[float], stat: Mapping[str, Any] | None) -> tuple[float, float, float, float]:
    """(center, scale, diff_scale, repeat_fraction) of a sensor's normal.

    Median and interquartile range resist the very outliers we look for; the
    scale is floored by the mean absolute deviation because sparse signals
    (mostly zero, bursts now and then) have an IQR of zero while still varying,
    and by a tiny relative epsilon so a perfectly flat sensor that finally moves
    scores high, not inf. Everything is a C-level builtin (sorted, map, sum):
    this runs for every sensor of every event.
    """
    n = len(vals)
    if n >= MIN_HISTORY:
        s = sorted(vals)
        center = _median_sorted(s)
        iqr = (s[(3 * n) // 4] - s[n // 4]) * _IQR_TO_SD
        mad = sum(map(abs, map(sub, vals, repeat(center, n)))) / n * _ABSDEV_TO_SD
        scale = max(iqr, mad)
    else:
        if stat is not None:
            center = float(stat["mean"]) if n < 3 else _median_sorted(sorted(vals))
            scale = float(stat["std"])
        elif n:
            center = sum(vals) / n
            scale = math.sqrt(sum((x - center) ** 2 for x in vals) / n)
        else:
            return 0.0, 1.0, 1.0, 0.0
    scale = max(scale, 1e-6 * (abs(center) + 1.0))
    if n >= 2:
        absd = list(map(abs, map(sub, vals[1:], vals[:-1])))
        rep = absd.count(0.0) / (n - 1)
        dscale = max(sum(absd) / (n - 1) * _ABSDEV_TO_SD, 0.05 * scale)
    else:
        dscale, rep = scale, 0.0
    return center, scale, dscale, rep


def _cold_state(vals: list[float], v: float) -> list[float]:
    """Long-memory state for a sensor without one: seeded from its window (before ``v``), else from ``v``."""
    hist = vals or [v]
    n = len(hist)
    m = sum(hist) / n
    var = sum((x - m) ** 2 for x in hist) / n  # never the card's std: a fleet-wide spread would mask
    # this asset's own range for thousands of readings (the state's variance forgets only as 1/n)
    absd = list(map(abs, map(sub, hist[1:], hist[:-1]))) or [0.0]
    ad = sum(absd) / len(absd)
    rec = hist[-RECENT:]
    sm = sum(rec) / len(rec)
    q = ad * _ABSDEV_TO_SD
    # time-of-day slots start empty: the window holds too few days to seed them
    return [float(len(vals)), m, var, max(hist), min(hist), sm, sm, ad, max(absd), q, q, q, 0.0, 0.0, 0.0] + [0.0] * (3 * SLOTS)


def _sensor(v: float, vals: list[float], stat: Mapping[str, Any] | None, st: list[float] | None,
            slot: int = 0) -> tuple[dict[str, float], list[float]]:
    """Short-window features, long-memory features and the sensor's next state (``slot``: UTC hour)."""
    center, scale, dscale, rep = _baseline(vals, stat)
    n = len(vals)
    z = _clip((v - center) / scale)
    prev = vals[-1] if n else v
    delta = _clip((v - prev) / dscale)
    recent = vals[-(RECENT - 1) :] if n else []
    sm = (sum(recent) + v) / (len(recent) + 1)
    shift = _clip((sm - center) / scale)
    if n >= MIN_HISTORY:
        q = n // 4
        drift = _clip((sum(vals[-q:]) / q - sum(vals[:q]) / q) / scale)
    else:
        drift = 0.0
    stuck = 1
    for x in reversed(vals):
        if x != v:
            break
        stuck += 1
    tail = vals[-NOISE_RECENT:] + [v]
    if len(tail) >= 3:
        rd = list(map(sub, tail[1:], tail[:-1]))
        vol = math.sqrt(sum(map(mul, rd, rd)) / len(rd))
    else:
        vol = dscale
    noise = min(vol / dscale, CLIP)

    # Long memory: has this sensor ever (in ~LONG readings) been this far out?
    if st is None or len(st) != STATE_LEN:  # none yet, or a state of an older encoding
        st = _cold_state(vals, v)
    cnt, m, var, hi, lo, mhi, mlo, ad, dhi, qm, qhi, qlo, rm, rvar, rhi = st[:_BASE_LEN]
    prof = st[_BASE_LEN:]  # slot means, then variances, then reading counts
    d = abs(v - prev)
    if cnt >= MIN_HISTORY:
        sd = max(math.sqrt(var), 1e-6 * (abs(m) + 1.0))
        env = _inside(max(v - hi, lo - v) / sd)
        menv = _inside(max(sm - mhi, mlo - sm) / sd)
        dunit = max(ad * _ABSDEV_TO_SD, 1e-3 * sd)
        denv = _inside((d - dhi) / dunit)
        qunit = max(qm, 1e-3 * sd)
        venv = _inside((vol - qhi) / qunit)
        qenv = _inside((qlo - vol) / qunit)
    else:
        env = menv = denv = venv = qenv = -INSIDE

    # Time of day: distance from this hour's usual level, then "has it ever been this far off?"
    pm, pv, pc = prof[slot], prof[SLOTS + slot], prof[2 * SLOTS + slot]
    if pc >= SLOT_WARM:
        gsd = max(math.sqrt(var), 1e-6 * (abs(m) + 1.0))
        rz = _clip((v - pm) / (math.sqrt(pv) + SLOT_FLOOR * gsd))
    else:
        rz = 0.0
    arz = abs(rz)
    if cnt >= MIN_HISTORY and pc >= SLOT_WARM:
        renv = _inside((arz - rhi) / max(math.sqrt(rvar), 1e-3))
    else:
        renv = -INSIDE
    prof = list(prof)
    if pc == 0:
        prof[slot], prof[SLOTS + slot] = v, var
    else:
        dp = v - pm
        prof[slot] = pm + SLOT_ALPHA * dp
        prof[SLOTS + slot] = (1.0 - SLOT_ALPHA) * (pv + SLOT_ALPHA * dp * dp)
    prof[2 * SLOTS + slot] = min(pc + 1.0, SLOT_WARM)

    a = 1.0 / (cnt + 2.0) if cnt + 2.0 < LONG else 1.0 / LONG
    dl = v - m
    m += a * dl
    var = (1.0 - a) * (var + a * dl * dl)
    k = 1.0 / LONG
    hi = v if v > hi else hi - (hi - m) * k
    lo = v if v < lo else lo + (m - lo) * k
    mhi = sm if sm > mhi else mhi - (mhi - m) * k
    mlo = sm if sm < mlo else mlo + (m - mlo) * k
    ad += a * (d - ad)
    dhi = d if d > dhi else dhi - (dhi - ad) * k
    qm += a * (vol - qm)
    qhi = vol if vol > qhi else qhi - (qhi - qm) * k
    qlo = vol if vol < qlo else qlo + (qm - qlo) * k
    dr = arz - rm
    rm += a * dr
    rvar = (1.0 - a) * (rvar + a * dr * dr)
    rhi = arz if arz > rhi else rhi - (rhi - rm) * k
    new_state = [min(cnt + 1.0, 1e9), m, var, hi, lo, mhi, mlo, ad, dhi, qm, qhi, qlo, rm, rvar, rhi] + prof

    stuck_sev = (stuck - 1) / 2.0 if rep < 0.3 else 0.0
    breach = max(env, menv, denv, venv, qenv, RENV_WEIGHT * renv)
    sev = max(abs(z), abs(shift), 0.5 * abs(delta), stuck_sev, noise if noise > 2.0 else 0.0,
              DEV + 2.0 * breach if breach > 0 else 0.0)
    return {
        "z": z, "delta": delta, "shift": shift, "drift": drift, "stuck": float(stuck), "repeat": rep,
        "noise": noise, "env": env, "menv": menv, "denv": denv, "venv": venv, "qenv": qenv,
        "rz": rz, "renv": renv, "sev": sev, "nov": max(env, RENV_WEIGHT * renv),
        "center": center, "scale": scale, "value": v, "long_n": cnt,
    }, new_state


def _history(rs: list[Mapping[str, float]], name: str) -> list[float]:
    """One sensor's values in the window, oldest first (C-level maps; records may lack the sensor)."""
    vals = list(map(dict.get, rs, repeat(name, len(rs))))
    if None in vals:
        return [x for x in vals if x is not None]
    return vals


def features(event: Event, window: Sequence[Record], card: Mapping[str, Any] | None) -> Features:
    """Features of the newest event against its asset's window (oldest first, newest excluded).

    Raises :class:`SensorDataError` naming the field for a non-finite or
    non-numeric reading (the validator rejects those first in the worker; this
    guards the training path, where the data comes from files).
    """
    readings = event["readings"]
    if not readings:
        raise SensorDataError("readings: empty; a sensor event needs 1-256 readings")
    rs = list(map(_GET_R, window))
    fleet, per_asset = _known(card, event.get("asset_id"))
    prev_state = window[-1].get("s") if window else None
    state = dict(prev_state) if prev_state else {}
    per: list[tuple[str, dict[str, float]]] = []
    slot = (event["ts"] // SLOT_MS) % SLOTS
    for name, v in readings.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SensorDataError(f"readings.{name[:64]}: expected a number, got {type(v).__name__}")
        if not -math.inf < v < math.inf:
            raise SensorDataError(f"readings.{name[:64]}: must be a finite number, got {v!r}")
        feats_s, state[name] = _sensor(float(v), _history(rs, name), per_asset.get(name) or fleet.get(name), state.get(name), slot)
        per.append((name, feats_s))
    per.sort(key=lambda p: -p[1]["sev"])
    if isinstance(event, dict):
        event[STATE_KEY] = state

    n_hist = len(window)
    if n_hist:
        ts = [r["ts"] for r in window[-17:]]
        gaps = sorted(map(sub, ts[1:], ts[:-1]))
        usual = _median_sorted(gaps) if gaps else 0
        gap = event["ts"] - window[-1]["ts"]
        gap_ratio = gap / usual if usual > 0 else (1.0 if gap <= 0 else 8.0)
    else:
        gap_ratio = 1.0
    f: Features = {
        "n_hist": float(n_hist),
        "long_n": min(s["long_n"] for _, s in per),
        "n_sensors": float(len(per)),
        "gap_ratio": gap_ratio,
        "n_dev": float(sum(1 for _, s in per if s["sev"] >= DEV)),
        "max_sev": per[0][1]["sev"],
        "novelty": max(s["nov"] for _, s in per),
    }
    for i in range(TOP):
        key = f"top{i + 1}_"
        if i < len(per):
            name, s = per[i]
            f[key + "name"] = name
            f[key + "value"] = s["value"]
            for k in _PER_SENSOR:
                f[key + k] = s[k]
        else:
            f[key + "name"] = None
            f[key + "value"] = 0.0
            for k in _PER_SENSOR:
                f[key + k] = -INSIDE if k in _BREACHES else 0.0
    # The last few readings, judged against today's normal: lets the model tell
    # the first step of an excursion (alert now) from its tenth (already alerted).
    top_name, top = per[0]
    stats = {name: (s["center"], s["scale"]) for name, s in per}
    for k in range(1, HISTORY + 1):
        if k <= n_hist:
            r = window[-k]["r"]
            x = r.get(top_name)
            f[f"hist{k}_z"] = _clip((x - top["center"]) / top["scale"]) if x is not None else 0.0
            m = 0.0
            for name, x in r.items():
                cs = stats.get(name)
                if cs is not None:
                    a = abs(x - cs[0]) / cs[1]
                    if a > m:
                        m = a
            f[f"hist{k}_max"] = min(m, CLIP)
        else:
            f[f"hist{k}_z"] = 0.0
            f[f"hist{k}_max"] = 0.0
    return f


# --- words ---------------------------------------------------------------

_Z_EDGES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 25.0)
_POS_EDGES = (1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0)
_STUCK_EDGES = (2, 3, 4, 6, 8, 12, 20, 32, 64)
_REPEAT_EDGES = (0.02, 0.1, 0.3, 0.6)
_GAP_EDGES = (0.25, 0.6, 1.5, 3.0, 8.0, 30.0)
_COUNT_EDGES = (1, 2, 3, 4, 6, 10)
_NSENS_EDGES = (2, 3, 5, 9, 17, 65)
_LONG_EDGES = (MIN_HISTORY, 128, 1024, 4096)
_BREACH_EDGES = (-2.0, -1.0, -0.5, -0.25, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# novelty is the headline statistic: finer steps where "ordinary" turns into "never seen"
_NOVELTY_EDGES = (-1.0, -0.5, -0.25, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)


def _idx(x: float, edges: Sequence[float]) -> int:
    i = 0
    for e in edges:
        if x < e:
            break
        i += 1
    return i


def _signed(prefix: str, x: float) -> str:
    """``az0``, ``azp7`` (7th bucket above), ``azn7`` (below): letters and digits only, one token each."""
    b = _idx(abs(x), _Z_EDGES)
    return f"{prefix}0" if b == 0 else f"{prefix}{'p' if x > 0 else 'n'}{b}"


def text(event: Event, window: Sequence[Record], feats: Features) -> str:
    """31 words: recent readings (oldest first), then the current event; one word per bucketed feature.

    Words name ranks (``a`` = most-deviating sensor) and never sensor names, so
    the vocabulary is the same for every asset type.
    """
    w: list[str] = []
    for k in range(HISTORY, 0, -1):
        w.append(_signed(f"h{k}z", feats[f"hist{k}_z"]))
        w.append(f"h{k}m{_idx(feats[f'hist{k}_max'], _Z_EDGES)}")
    w.append(f"w{_idx(feats['long_n'], _LONG_EDGES)}")
    w.append(f"s{_idx(feats['n_sensors'], _NSENS_EDGES)}")
    w.append(f"g{_idx(feats['gap_ratio'], _GAP_EDGES)}")
    w.append(f"k{_idx(feats['n_dev'], _COUNT_EDGES)}")
    w.append(f"nv{_idx(feats['novelty'], _NOVELTY_EDGES)}")
    for rank, full in (("a", True), ("b", False), ("c", False)):
        p = f"top{'abc'.index(rank) + 1}_"
        w.append(_signed(f"{rank}z", feats[p + "z"]))
        if full:
            w.append(_signed(f"{rank}l", feats[p + "shift"]))
            w.append(_signed(f"{rank}o", feats[p + "rz"]))
            w.append(f"{rank}y{_idx(feats[p + 'renv'], _BREACH_EDGES)}")
        if rank != "c":
            w.append(_signed(f"{rank}d", feats[p + "delta"]))
        w.append(f"{rank}s{_idx(feats[p + 'stuck'], _STUCK_EDGES)}")
        if full:
            w.append(f"{rank}q{_idx(feats[p + 'repeat'], _REPEAT_EDGES)}")
            w.append(f"{rank}n{_idx(feats[p + 'noise'], _POS_EDGES) if feats[p + 'noise'] >= 1.0 else 'l'}")
        w.append(f"{rank}e{_idx(feats[p + 'env'], _BREACH_EDGES)}")
        if full:
            w.append(f"{rank}m{_idx(feats[p + 'menv'], _BREACH_EDGES)}")
            w.append(f"{rank}x{_idx(feats[p + 'denv'], _BREACH_EDGES)}")
            w.append(f"{rank}v{_idx(feats[p + 'venv'], _BREACH_EDGES)}")
            w.append(f"{rank}u{_idx(feats[p + 'qenv'], _BREACH_EDGES)}")
    return " ".join(w)


def _vocabulary() -> list[str]:
    """Every word ``text`` can produce, so the tokenizer never maps a rare bucket to [UNK]."""
    nz = len(_Z_EDGES)
    words: set[str] = set()

    def signed(prefix: str) -> None:
        words.add(f"{prefix}0")
        words.update(f"{prefix}{s}{b}" for s in "pn" for b in range(1, nz + 1))

    def plain(prefix: str, edges: Sequence[float]) -> None:
        words.update(f"{prefix}{b}" for b in range(len(edges) + 1))

    for k in range(1, HISTORY + 1):
        signed(f"h{k}z")
        plain(f"h{k}m", _Z_EDGES)
    plain("w", _LONG_EDGES)
    plain("s", _NSENS_EDGES)
    plain("g", _GAP_EDGES)
    plain("k", _COUNT_EDGES)
    plain("nv", _NOVELTY_EDGES)
    for rank in "abc":
        signed(f"{rank}z")
        if rank != "c":
            signed(f"{rank}d")
        plain(f"{rank}s", _STUCK_EDGES)
        plain(f"{rank}e", _BREACH_EDGES)
    signed("al")
    signed("ao")
    plain("ay", _BREACH_EDGES)
    plain("aq", _REPEAT_EDGES)
    plain("an", _POS_EDGES)
    words.add("anl")
    for c in "mxvu":
        plain(f"a{c}", _BREACH_EDGES)
    return sorted(words)


VOCABULARY: list[str] = _vocabulary()


def vector(feats: Features) -> list[float]:
    """The features as numbers (``FEATURE_NAMES`` order) for the tree and streaming baselines."""
    return [float(feats[k]) for k in FEATURE_NAMES]


def _span(feats: Features) -> str:
    n = int(min(feats["long_n"], LONG))
    return f"~{n}" if n >= LONG else str(n)


def reasons(feats: Features, detail: Any = None, limit: int = 4) -> list[str]:
    """Short human-readable reasons, strongest first."""
    out: list[str] = []
    for i in range(1, TOP + 1):
        p = f"top{i}_"
        name = feats.get(p + "name")
        if name is None:
            break
        z, stuck = feats[p + "z"], int(feats[p + "stuck"])
        if abs(z) >= DEV:
            out.append(f"{name} {abs(z):.1f}σ {'above' if z > 0 else 'below'} the asset's normal")
        if stuck >= STUCK_N and feats[p + "repeat"] < 0.3:
            out.append(f"{name} stuck at {feats[p + 'value']:.4g} for {stuck} readings")
        if feats[p + "noise"] >= DEV:
            out.append(f"{name} noise {feats[p + 'noise']:.1f}× its usual level")
        if abs(feats[p + "shift"]) >= DEV and abs(z) < DEV:
            out.append(f"{name} level shifted {feats[p + 'shift']:+.1f}σ over the last {RECENT} readings")
        if abs(feats[p + "drift"]) >= DEV:
            out.append(f"{name} drifted {feats[p + 'drift']:+.1f}σ across the window")
        if abs(feats[p + "delta"]) >= 2 * DEV and abs(z) < DEV:
            out.append(f"{name} jumped {feats[p + 'delta']:+.1f}σ from the previous reading")
        if feats[p + "env"] > 0 and abs(z) < DEV:
            out.append(f"{name} at {feats[p + 'value']:.4g}, outside its range of the last {_span(feats)} readings")
        if feats[p + "renv"] > 0 and feats[p + "env"] <= 0 and abs(z) < DEV:
            out.append(f"{name} at {feats[p + 'value']:.4g}, {abs(feats[p + 'rz']):.1f}σ from its usual level at "
                       "this hour of the day")
        if feats[p + "qenv"] > 0:
            out.append(f"{name} unusually flat: its quietest stretch in {_span(feats)} readings")
    if feats["n_dev"] >= 2:
        out.insert(min(1, len(out)), f"{int(feats['n_dev'])} sensors deviating together")
    if feats["gap_ratio"] >= 8:
        out.append(f"{feats['gap_ratio']:.0f}× the usual time since the previous reading")
    if not out and feats.get("top1_name") is not None:
        out.append(f"largest deviation: {feats['top1_name']} {feats['top1_z']:+.1f}σ")
    return out[:limit]
