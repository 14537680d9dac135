"""Transaction encoding: one event in the context of its account's window -> features -> words.

Why this shape: the worker calls ``features``/``text``/``record`` once per event in
the hot path, so everything is a single pass of list comprehensions over at most
``WINDOW["max_events"]`` compact records, with no third-party imports. Each
bucketed feature becomes exactly one word of a small word-level vocabulary, so an
event plus a summary of its last few predecessors fits in ~27 tokens (the
sequence length is the biggest CPU cost of the classifier).

The same ``features`` dict feeds three consumers: ``text`` (the transformer),
``vector`` (tree / streaming baselines, which get the raw numbers rather than the
buckets so they are not handicapped) and ``reasons`` (human-readable alert text).

>>> def tx(i, ts, amount, **kw):
...     return {"event_id": f"e{i}", "ts": ts, "account_id": "a", "amount": amount, "currency": "EUR",
...             "merchant_id": "m1", "mcc": "5411", "country": "DE", "channel": "pos",
...             "device_id": "d1", "lat": 52.5, "lon": 13.4, **kw}
>>> t0 = 1_700_000_000_000
>>> window = [record(tx(i, t0 + i * 86_400_000, 30.0)) for i in range(3)]
>>> ev = tx(9, t0 + 2 * 86_400_000 + 7_200_000, 900.0, merchant_id="m9", mcc="7995",
...         country="BR", channel="ecom", device_id="d2", lat=-23.5, lon=-46.6)
>>> f = features(ev, window, None)
>>> f["new_device"], f["new_country"], round(f["rel_ratio"]), f["v1h"]
(1, 1, 30, 0)
>>> text(ev, window, f)
'r3p t7 r3p t7 r3p t5 amt14 rel9 rmax4 gap5 v1m0 v10m0 v1h0 sm0 sum5 mnew cnew dnew knew ecom g_gamble hr7 hrna spd5 dist4 n2'
>>> reasons(f)[:3]
['travel speed 5,122 km/h since previous transaction', "amount 30x the account's median", 'new device and new country']
>>> len(vector(f)) == len(FEATURE_NAMES)
True
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any, Mapping, Sequence

KIND = "transaction"
ENCODING_VERSION = "tx-2"

# Default per-account window: enough history for a stable median and for
# "first seen" flags to mean something, small enough to keep the per-event pass
# cheap. The bundle's card.json carries these under "window"; the worker uses them.
WINDOW: dict[str, int] = {"max_events": 32, "max_age_ms": 7 * 24 * 3_600_000}

SUMMARY_EVENTS = 4  # previous events summarized in the text (2 words each)
SMALL_AMOUNT = 5.0  # card-testing probes are typically below this
MIN_HISTORY = 3  # fewer previous amounts than this: relative amount is "na"
NEAR_KM = 50.0  # below this distance, travel speed is meaningless (GPS / merchant jitter)
MIN_GAP_S = 60.0  # floor for the speed denominator so two events a second apart do not yield 10^5 km/h

_MIN, _10MIN, _HOUR, _DAY = 60_000, 600_000, 3_600_000, 86_400_000

# Bucket edges: bucket = number of edges <= value (bisect), so len(edges)+1 buckets.
REL_EDGES = (0.2, 0.5, 0.8, 1.25, 2.0, 3.0, 5.0, 10.0, 20.0)
GAP_EDGES_S = (10, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 3 * 24 * 3600)
COUNT_EDGES = (1, 2, 3, 5, 8, 13)
SUM_EDGES = (1.5, 3.0, 6.0, 12.0, 25.0, 50.0)
SPEED_EDGES = (100.0, 300.0, 900.0, 2000.0)  # km/h; bucket 0 is reserved for "near"
RMAX_EDGES = (0.5, 1.0, 1.5, 3.0)  # amount / largest amount in the window
DIST_EDGES_KM = (50.0, 500.0, 2000.0, 5000.0)  # from the previous located transaction
AMOUNT_SCALE = 1.5  # amount bucket = floor(1.5 * log2(1 + amount)), capped
AMOUNT_MAX_BUCKET = 24

CHANNEL_WORD = {"pos": "pos", "ecom": "ecom", "atm": "atm", "transfer": "transfer"}
CHANNEL_LETTER = {"pos": "p", "ecom": "e", "atm": "a", "transfer": "t"}
CHANNELS = ("pos", "ecom", "atm", "transfer")

# Merchant-category groups: a handful of words instead of ~1000 codes, keeping the
# categories fraud typologies care about (gambling, quasi-cash, jewellery...) apart.
MCC_GROUPS = (
    "other", "groc", "food", "fuel", "travel", "retail", "electr", "jewel",
    "gamble", "cash", "quasi", "xfer", "digital", "bills", "health",
)
RISKY_GROUPS = frozenset({"electr", "jewel", "gamble", "quasi", "xfer", "cash"})
_MCC_EXACT = {
    **dict.fromkeys(("5411", "5422", "5441", "5451", "5462", "5499"), "groc"),
    **dict.fromkeys(("5812", "5813", "5814"), "food"),
    **dict.fromkeys(("5541", "5542", "5983"), "fuel"),
    **dict.fromkeys(("4111", "4112", "4121", "4131", "4411", "4511", "4722", "7011", "7512"), "travel"),
    **dict.fromkeys(("5310", "5311", "5331", "5399", "5651", "5691", "5699", "5947", "5999", "5942", "5941"), "retail"),
    **dict.fromkeys(("5732", "5734", "5045", "5946", "5722"), "electr"),
    **dict.fromkeys(("5944", "5094"), "jewel"),
    **dict.fromkeys(("7995", "7800", "7801", "7802"), "gamble"),
    **dict.fromkeys(("6010", "6011"), "cash"),
    **dict.fromkeys(("6051", "6012", "6211", "6540"), "quasi"),
    **dict.fromkeys(("4829",), "xfer"),
    **dict.fromkeys(("5815", "5816", "5817", "5818"), "digital"),
    **dict.fromkeys(("4814", "4899", "4900"), "bills"),
    **dict.fromkeys(("5912", "8011", "8021", "8062", "8099"), "health"),
}
_GROUP_ID = {g: i for i, g in enumerate(MCC_GROUPS)}
# map(itemgetter) over a window is ~25% faster than a list comprehension (hot path).
_TS, _AMT, _MER, _MCC, _CTRY, _DEV = (itemgetter(k) for k in ("ts", "a", "m", "k", "c", "d"))

FEATURE_NAMES: list[str] = [
    "amount_log", "rel_log", "rel_max_log", "gap_log_s", "v1m", "v10m", "v1h", "small_1h",
    "sum_1h_rel_log", "new_merchant", "new_country", "new_device", "new_mcc",
    "device_age_log_s", "country_age_log_s", "ch_pos", "ch_ecom", "ch_atm", "ch_transfer",
    "mcc_group", "risky_mcc", "local_hour", "odd_hour", "speed_log_kmh", "dist_log_km", "n_hist",
]


def mcc_group(mcc: str | None) -> str:
    """Coarse merchant-category group of a 4-digit MCC ("na" when absent).

    >>> mcc_group("7995"), mcc_group("3005"), mcc_group("3600"), mcc_group(None)
    ('gamble', 'travel', 'travel', 'na')
    """
    if mcc is None:
        return "na"
    g = _MCC_EXACT.get(mcc)
    if g is not None:
        return g
    code = int(mcc) if mcc.isdigit() else -1
    if 3000 <= code <= 3999:  # airlines, car rental, hotels
        return "travel"
    if 5200 <= code <= 5399 or 5600 <= code <= 5699:
        return "retail"
    if 8000 <= code <= 8099:
        return "health"
    return "other"


def amount_bucket(amount: float) -> int:
    """Log-scale amount bucket, ~1.5 buckets per doubling.

    >>> [amount_bucket(a) for a in (0, 1, 10, 100, 1000, 1e9)]
    [0, 1, 5, 9, 14, 24]
    """
    b = int(AMOUNT_SCALE * math.log2(1.0 + amount))
    return b if b < AMOUNT_MAX_BUCKET else AMOUNT_MAX_BUCKET


def _bucket(value: float, edges: Sequence[float]) -> int:
    """Number of edges <= value.

    >>> [_bucket(v, (1, 2)) for v in (0, 1, 1.5, 2, 9)]
    [0, 1, 1, 2, 2]
    """
    return bisect_right(edges, value)


def _count_bucket(n: int) -> int:
    return _bucket(n, COUNT_EDGES)


def _local_hour(ts: int, lon: float | None) -> int:
    """Hour of day, shifted by longitude when known (solar time is close enough for a rhythm feature)."""
    h = (ts // _HOUR) % 24
    if lon is not None:
        h = (h + int(round(lon / 15.0))) % 24
    return h


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12_742.0 * math.asin(min(1.0, math.sqrt(a)))


def record(event: Mapping[str, Any]) -> dict[str, Any]:
    """Compact window record of one (validated) transaction.

    Only what later events' features need; the local hour is computed once here
    instead of once per later event.
    """
    lon = event.get("lon")
    return {
        "ts": event["ts"],
        "a": float(event["amount"]),
        "m": event.get("merchant_id"),
        "c": event.get("country"),
        "d": event.get("device_id"),
        "k": event.get("mcc"),
        "ch": event.get("channel"),
        "la": event.get("lat"),
        "lo": lon,
        "hr": _local_hour(event["ts"], lon),
    }


def check(event: Mapping[str, Any], card: Mapping[str, Any] | None = None) -> str | None:
    """Every contract-valid transaction can be scored; only a missing amount/ts cannot."""
    if event.get("amount") is None:
        return "transaction without amount cannot be scored"
    if event.get("ts") is None:
        return "transaction without ts cannot be scored"
    return None


def _age(ts: int, key: Any, keys: list, tss: list) -> tuple[int, float]:
    """(is_new, seconds since first seen in window; -1 if new or unknown)."""
    if key is None:
        return 0, -1.0
    try:
        i = keys.index(key)
    except ValueError:
        return 1, -1.0
    return 0, (ts - tss[i]) / 1000.0


def features(event: Mapping[str, Any], window: Sequence[Mapping[str, Any]], card: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Features of ``event`` given ``window`` (previous records of the account, oldest first).

    Raw values (ratios, counts, km/h) are kept next to the buckets so that
    ``vector`` and ``reasons`` need not recompute anything.
    """
    ts = event["ts"]
    amount = float(event["amount"])
    n = len(window)
    tss = list(map(_TS, window))
    amts = list(map(_AMT, window))
    if n > 1 and sorted(tss) != tss:
        # Out-of-order arrivals: keep windows as given but count in time order.
        order = sorted(range(n), key=tss.__getitem__)
        window = [window[i] for i in order]
        tss = [tss[i] for i in order]
        amts = [amts[i] for i in order]

    if n >= MIN_HISTORY:
        srt = sorted(amts)
        median = srt[n // 2] if n % 2 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
        median = median if median > 1.0 else 1.0
        rel = amount / median
        rel_max = amount / (srt[-1] if srt[-1] > 1.0 else 1.0)
    else:
        median = rel = rel_max = -1.0

    gap_s = (ts - tss[-1]) / 1000.0 if n else -1.0
    i1m = bisect_left(tss, ts - _MIN)
    i10m = bisect_left(tss, ts - _10MIN)
    i1h = bisect_left(tss, ts - _HOUR)
    v1m, v10m, v1h = n - i1m, n - i10m, n - i1h
    recent = amts[i1h:]
    small = sum(1 for a in recent if a < SMALL_AMOUNT) + (amount < SMALL_AMOUNT)
    sum1h = sum(recent) + amount
    sum_rel = sum1h / median if median > 0 else -1.0

    new_m, _ = _age(ts, event.get("merchant_id"), list(map(_MER, window)), tss) if n else (0, -1.0)
    new_k, _ = _age(ts, event.get("mcc"), list(map(_MCC, window)), tss) if n else (0, -1.0)
    new_c, c_age = _age(ts, event.get("country"), list(map(_CTRY, window)), tss) if n else (0, -1.0)
    new_d, d_age = _age(ts, event.get("device_id"), list(map(_DEV, window)), tss) if n else (0, -1.0)

    lat, lon = event.get("lat"), event.get("lon")
    hour = _local_hour(ts, lon)
    odd_hour = -1
    if n >= 5:
        hours = {r["hr"] for r in window}
        odd_hour = int(hour not in hours and (hour - 1) % 24 not in hours and (hour + 1) % 24 not in hours)

    speed = dist = -1.0
    if lat is not None and lon is not None:
        for r in reversed(window):
            if r["la"] is not None and r["lo"] is not None:
                dist = _haversine_km(r["la"], r["lo"], lat, lon)
                gap = max((ts - r["ts"]) / 1000.0, MIN_GAP_S)
                speed = 0.0 if dist < NEAR_KM else dist / (gap / 3600.0)
                break

    return {
        "amount": amount,
        "n": n,
        "median": median,
        "rel_ratio": rel,
        "rel_max": rel_max,
        "gap_s": gap_s,
        "v1m": v1m,
        "v10m": v10m,
        "v1h": v1h,
        "small_1h": small,
        "sum_1h": sum1h,
        "sum_rel": sum_rel,
        "new_merchant": new_m if event.get("merchant_id") is not None else -1,
        "new_mcc": new_k if event.get("mcc") is not None else -1,
        "new_country": new_c if event.get("country") is not None else -1,
        "new_device": new_d if event.get("device_id") is not None else -1,
        "country_age_s": c_age,
        "device_age_s": d_age,
        "channel": event.get("channel"),
        "mcc_group": mcc_group(event.get("mcc")),
        "hour": hour,
        "odd_hour": odd_hour,
        "speed_kmh": speed,
        "dist_km": dist,
        # Context for the text summary: (amount, channel, ts) of the last few events;
        # their amounts are worded relative to the window median when there is one.
        "_recent": [(amts[j], window[j]["ch"], tss[j]) for j in range(max(0, n - SUMMARY_EVENTS), n)],
        "_ts": ts,
    }


def _flag_word(prefix: str, is_new: int, age_s: float | None = None) -> str:
    if is_new < 0:
        return prefix + "na"
    if is_new:
        return prefix + "new"
    if age_s is None:
        return prefix + "seen"
    if age_s < 3600:
        return prefix + "1h"
    if age_s < 86_400:
        return prefix + "1d"
    return prefix + "old"


def _gap_word(prefix: str, gap_s: float) -> str:
    return prefix + ("na" if gap_s < 0 else str(_bucket(gap_s, GAP_EDGES_S)))


def text(event: Mapping[str, Any], window: Sequence[Mapping[str, Any]], feats: Mapping[str, Any]) -> str:
    """Words: a 2-word summary per recent event (oldest first), then one word per feature.

    Summary word pairs are ``r{amount relative to the window median}{channel
    letter}`` (``e{absolute amount bucket}...`` while there is no median yet) and
    ``t{gap to the next event}``, so the model sees the rhythm and sizes that led
    up to this event. Every number in ``vector`` has a word here too, so the
    transformer and the tree baseline see the same features.
    """
    words: list[str] = []
    recent = feats["_recent"]
    nxt = [r[2] for r in recent[1:]] + [feats["_ts"]]
    median = feats["median"]
    for (a, ch, t), t_next in zip(recent, nxt):
        if median > 0:  # relative words survive a shift in spending level (drift)
            words.append(f"r{_bucket(a / median, REL_EDGES)}{CHANNEL_LETTER.get(ch, 'x')}")
        else:
            words.append(f"e{amount_bucket(a)}{CHANNEL_LETTER.get(ch, 'x')}")
        words.append(_gap_word("t", (t_next - t) / 1000.0))
    f = feats
    rel_max = f["rel_max"]
    dist = f["dist_km"]
    rel = f["rel_ratio"]
    sum_rel = f["sum_rel"]
    speed = f["speed_kmh"]
    if speed < 0:
        spd = "spdna"
    elif speed == 0.0:
        spd = "spd0"
    else:
        spd = "spd" + str(1 + _bucket(speed, SPEED_EDGES))
    n = f["n"]
    odd = f["odd_hour"]
    words += [
        f"amt{amount_bucket(f['amount'])}",
        "relna" if rel < 0 else f"rel{_bucket(rel, REL_EDGES)}",
        "rmaxna" if rel_max < 0 else f"rmax{_bucket(rel_max, RMAX_EDGES)}",
        _gap_word("gap", f["gap_s"]),
        f"v1m{_count_bucket(f['v1m'])}",
        f"v10m{_count_bucket(f['v10m'])}",
        f"v1h{_count_bucket(f['v1h'])}",
        f"sm{_count_bucket(f['small_1h'])}",
        "sumna" if sum_rel < 0 else f"sum{_bucket(sum_rel, SUM_EDGES)}",
        _flag_word("m", f["new_merchant"]),
        _flag_word("c", f["new_country"], f["country_age_s"]),
        _flag_word("d", f["new_device"], f["device_age_s"]),
        _flag_word("k", f["new_mcc"]),
        CHANNEL_WORD.get(f["channel"], "chna"),
        "g_" + f["mcc_group"],
        f"hr{f['hour'] // 3}",
        "hrna" if odd < 0 else ("hrodd" if odd else "hrok"),
        spd,
        "distna" if dist < 0 else f"dist{_bucket(dist, DIST_EDGES_KM)}",
        "n0" if n == 0 else f"n{1 + _bucket(n, (3, 8, 16))}",
    ]
    return " ".join(words)


def _log(x: float) -> float:
    return math.log1p(x) if x >= 0 else -1.0


def vector(feats: Mapping[str, Any]) -> list[float]:
    """The features as numbers (order of ``FEATURE_NAMES``); -1 marks "not available"."""
    f = feats
    ch = f["channel"]
    g = f["mcc_group"]
    return [
        math.log1p(f["amount"]),
        math.log(f["rel_ratio"]) if f["rel_ratio"] > 0 else -10.0,
        math.log(f["rel_max"]) if f["rel_max"] > 0 else -10.0,
        _log(f["gap_s"]),
        float(f["v1m"]),
        float(f["v10m"]),
        float(f["v1h"]),
        float(f["small_1h"]),
        math.log(f["sum_rel"]) if f["sum_rel"] > 0 else -10.0,
        float(f["new_merchant"]),
        float(f["new_country"]),
        float(f["new_device"]),
        float(f["new_mcc"]),
        _log(f["device_age_s"]),
        _log(f["country_age_s"]),
        float(ch == "pos"),
        float(ch == "ecom"),
        float(ch == "atm"),
        float(ch == "transfer"),
        float(_GROUP_ID.get(g, -1)),
        float(g in RISKY_GROUPS),
        float(f["hour"]),
        float(f["odd_hour"]),
        _log(f["speed_kmh"]),
        _log(f["dist_km"]),
        float(f["n"]),
    ]


def reasons(feats: Mapping[str, Any], detail: Any = None) -> list[str]:
    """Short human-readable reasons, strongest first (at most 5).

    >>> reasons({"rel_ratio": 14.2, "new_device": 1, "new_country": 1, "v1m": 4, "speed_kmh": -1,
    ...          "small_1h": 0, "sum_rel": 2, "new_merchant": 0, "new_mcc": 0, "mcc_group": "groc",
    ...          "odd_hour": 0, "v10m": 4, "v1h": 4, "n": 10, "device_age_s": -1, "country_age_s": -1})
    ["amount 14x the account's median", 'new device and new country', '5 transactions in the last minute']
    """
    f = feats
    out: list[tuple[float, str]] = []
    rel = f.get("rel_ratio", -1.0)
    if rel >= 3:
        out.append((rel, f"amount {rel:,.0f}x the account's median"))
    speed = f.get("speed_kmh", -1.0)
    if speed >= 900:
        out.append((20 + speed / 100, f"travel speed {speed:,.0f} km/h since previous transaction"))
    nd, nc = f.get("new_device", -1) == 1, f.get("new_country", -1) == 1
    if nd and nc:
        out.append((9, "new device and new country"))
    elif nd:
        out.append((5, "new device"))
    elif nc:
        out.append((5, "new country"))
    elif 0 <= f.get("device_age_s", -1) < 3600:
        out.append((4, "device first seen less than an hour ago"))
    elif 0 <= f.get("country_age_s", -1) < 3600:
        out.append((4, "country first seen less than an hour ago"))
    # Velocity counts include the current transaction.
    for key, span, floor in (("v1m", "minute", 2), ("v10m", "10 minutes", 4), ("v1h", "hour", 7)):
        c = f.get(key, 0) + 1
        if c >= floor + 1:
            out.append((c * 1.5, f"{c} transactions in the last {span}"))
            break
    if f.get("small_1h", 0) >= 3:
        out.append((f["small_1h"] * 2, f"{f['small_1h']} small amounts in the last hour (card testing?)"))
    if f.get("sum_rel", -1) >= 12 and f.get("v1h", 0) >= 1:  # else it just repeats the amount reason
        out.append((f["sum_rel"] / 2, f"spent {f['sum_rel']:,.0f}x the median amount in the last hour"))
    if f.get("new_mcc", -1) == 1 and f.get("mcc_group") in RISKY_GROUPS:
        out.append((6, f"first {f['mcc_group']} merchant category for this account"))
    elif f.get("new_merchant", -1) == 1 and f.get("n", 0) >= MIN_HISTORY:
        out.append((1, "new merchant"))
    if f.get("odd_hour", -1) == 1:
        out.append((2, "unusual hour for this account"))
    out.sort(key=lambda x: -x[0])
    return [s for _, s in out[:5]] or ["model score (no single feature stands out)"]


def _vocabulary() -> list[str]:
    """Every word ``text`` can emit, so a tokenizer never maps a rare bucket to [UNK]."""
    words = [f"e{b}{c}" for b in range(AMOUNT_MAX_BUCKET + 1) for c in "peatx"]
    words += [f"r{b}{c}" for b in range(len(REL_EDGES) + 1) for c in "peatx"]
    words += ["rmaxna"] + [f"rmax{i}" for i in range(len(RMAX_EDGES) + 1)]
    words += ["distna"] + [f"dist{i}" for i in range(len(DIST_EDGES_KM) + 1)]
    words += ["tna"] + [f"t{i}" for i in range(len(GAP_EDGES_S) + 1)]
    words += [f"amt{b}" for b in range(AMOUNT_MAX_BUCKET + 1)]
    words += ["relna"] + [f"rel{i}" for i in range(len(REL_EDGES) + 1)]
    words += ["gapna"] + [f"gap{i}" for i in range(len(GAP_EDGES_S) + 1)]
    for p in ("v1m", "v10m", "v1h", "sm"):
        words += [f"{p}{i}" for i in range(len(COUNT_EDGES) + 1)]
    words += ["sumna"] + [f"sum{i}" for i in range(len(SUM_EDGES) + 1)]
    words += [p + s for p in "mk" for s in ("na", "new", "seen")]
    words += [p + s for p in "cd" for s in ("na", "new", "1h", "1d", "old")]
    words += list(CHANNELS) + ["chna"]
    words += ["g_" + g for g in MCC_GROUPS + ("na",)]
    words += [f"hr{i}" for i in range(8)] + ["hrna", "hrodd", "hrok"]
    words += ["spdna"] + [f"spd{i}" for i in range(len(SPEED_EDGES) + 2)]
    words += [f"n{i}" for i in range(5)]
    return words


VOCABULARY: list[str] = _vocabulary()
