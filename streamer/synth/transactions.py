"""Seeded synthetic card/account transactions with labelled fraud typologies.

Why synthetic: there is no public labelled stream with device, location and
merchant fields, and the model needs both a broad curriculum and held-out sets
whose *distribution* differs (``drift``), not only their seed.

Normal behaviour, per account: a home country and city, a personal daily rhythm
(local time, by thinning a Poisson process), a set of favourite merchants with
their own categories, channels and amount levels, one or two devices, an
amount scale that drifts slowly over time, and benign look-alikes of fraud
(shopping sprees, trips abroad with plausible flight times, phone upgrades,
occasional big purchases, new merchants, small coffee-sized amounts).

Fraud typologies (every event of an episode has ``label`` 1):

- ``card_testing``: a burst of tiny e-commerce amounts at new merchants from an
  unknown device abroad, sometimes followed by a cash-out purchase;
- ``account_takeover``: a new device (usually in a new country) makes a probe,
  then large transfers to new recipients;
- ``velocity``: a stolen card used many times within minutes near home;
- ``merchant_category``: gambling / quasi-cash / jewellery spending the account
  never had, often from the owner's own device;
- ``impossible_travel``: a cloned card used in person far away shortly after a
  genuine transaction at home.

Fraud episodes start only on accounts with a few events of history in the
stream (standing in for pre-stream history), so a set's first minutes do not
consist of context-free fraud.

>>> evs = list(generate(2000, seed=7, fraud_rate=0.01, n_accounts=50))
>>> len(evs), all(a["ts"] <= b["ts"] for a, b in zip(evs, evs[1:]))
(2000, True)
>>> evs == list(generate(2000, seed=7, fraud_rate=0.01, n_accounts=50))
True
"""

from __future__ import annotations

import heapq
import math
import random
from typing import Any, Iterator

DEFAULT_FRAUD_RATE = 0.004
DEFAULT_START_MS = 1_700_000_000_000
TYPOLOGIES = ("card_testing", "account_takeover", "velocity", "merchant_category", "impossible_travel")
_TYPO_WEIGHTS = (0.25, 0.25, 0.15, 0.15, 0.20)
# Expected labelled events per episode, per typology (from the constants below),
# used to turn fraud_rate (a share of events) into an episode probability.
_TYPO_LEN = (7.5 + 0.5 * 1.5, 0.6 + 2.5, 10.5, 2.0, 2.0)
_MIN_HISTORY = 3

_MIN, _HOUR, _DAY = 60_000, 3_600_000, 86_400_000

# code, lat, lon, currency, weight as a home country
_COUNTRIES = (
    ("US", 39.0, -98.0, "USD", 20), ("GB", 53.0, -1.5, "GBP", 10), ("DE", 51.0, 10.0, "EUR", 10),
    ("FR", 46.5, 2.5, "EUR", 8), ("ES", 40.2, -3.7, "EUR", 6), ("IT", 42.5, 12.5, "EUR", 6),
    ("NL", 52.2, 5.3, "EUR", 4), ("PL", 52.0, 19.5, "PLN", 4), ("BR", -15.0, -48.0, "BRL", 6),
    ("MX", 21.0, -100.0, "MXN", 4), ("IN", 21.0, 78.0, "INR", 6), ("JP", 36.0, 138.0, "JPY", 4),
    ("AU", -33.0, 148.0, "AUD", 3), ("CA", 45.5, -75.0, "CAD", 4), ("ZA", -28.0, 27.0, "ZAR", 2),
    ("NG", 8.0, 7.0, "NGN", 1), ("SG", 1.35, 103.8, "SGD", 1), ("AE", 24.5, 54.5, "AED", 1),
)
_HOME_CUM = []
_acc = 0
for _c in _COUNTRIES:
    _acc += _c[4]
    _HOME_CUM.append(_acc)
del _acc, _c

# group: (mccs, amount multiplier, channel)
_GROUPS = {
    "groc": (("5411", "5499", "5451"), 1.0, "pos"),
    "food": (("5812", "5814", "5813"), 0.5, "pos"),
    "fuel": (("5541", "5542"), 1.3, "pos"),
    "retail": (("5311", "5651", "5999", "5942"), 1.6, "pos"),
    "health": (("5912", "8011"), 1.2, "pos"),
    "eretail": (("5999", "5311", "5942"), 1.5, "ecom"),
    "digital": (("5815", "5816", "5818"), 0.25, "ecom"),
    "bills": (("4814", "4900", "4899"), 2.0, "ecom"),
    "electr": (("5732", "5734"), 5.0, "ecom"),
    "travel": (("4511", "7011", "4111"), 6.0, "ecom"),
    "gamble": (("7995",), 1.5, "ecom"),
    "jewel": (("5944",), 8.0, "pos"),
    "quasi": (("6051",), 4.0, "ecom"),
}
_MERCHANTS_PER_MCC = 400


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 12_742.0 * math.asin(min(1.0, math.sqrt(a)))


class _Account:
    """Mutable per-account state; plain attributes for speed."""

    __slots__ = (
        "aid", "home", "lat", "lon", "tz", "rate", "hw", "wmax", "scale", "trend", "favs", "cum", "phone",
        "laptop", "wallet", "n", "trip", "busy_until", "new_merchant_p",
    )


class _Gen:
    def __init__(self, seed: int, fraud_rate: float, drift: float, n_accounts: int, start_ms: int):
        if not 0.0 <= fraud_rate < 0.5:
            raise ValueError(f"fraud_rate must be in [0, 0.5), got {fraud_rate}")
        if n_accounts < 1:
            raise ValueError(f"n_accounts must be >= 1, got {n_accounts}")
        self.rng = random.Random(seed)
        self.seed = seed
        self.drift = float(drift)
        self.start = int(start_ms)
        d = self.drift
        self.p_spree = 0.03
        self.p_trip = 0.003 * (1 + 2 * d)
        self.p_phone = 0.002 * (1 + 2 * d)
        self.p_big = 0.01 * (1 + d)
        self.ecom_boost = 0.15 * d
        # Typology parameters that drift: slower, larger card tests; smaller ATO
        # transfers more often from the home country; slower velocity bursts.
        self.ct_gap = (5.0, 90.0 * (1 + 2 * d))
        self.ct_amount = (0.5, 4.99 + 3.0 * d)
        self.ato_mult = (5.0 - 2.0 * d, 30.0 - 10.0 * d)
        self.ato_home = 0.3 + 0.2 * d
        self.vel_gap = (20.0, 240.0 * (1 + 0.5 * d))
        normal_per_tick = 1 + self.p_spree * 3
        mean_len = sum(w * n for w, n in zip(_TYPO_WEIGHTS, _TYPO_LEN))
        self.p_fraud = fraud_rate / (1 - fraud_rate) * normal_per_tick / mean_len if fraud_rate > 0 else 0.0
        self.heap: list[tuple[int, int, int, Any]] = []
        self.seq = 0
        self.dev_counter = 0
        self.accounts = [self._account(i) for i in range(n_accounts)]
        for i, a in enumerate(self.accounts):
            self._push(self._next_tick(a, self.start), 0, i)

    # -- accounts ------------------------------------------------------------
    def _account(self, i: int) -> _Account:
        rng, d = self.rng, self.drift
        a = _Account()
        a.aid = f"acc-{i:06d}"
        r = rng.random() * _HOME_CUM[-1]
        home = _COUNTRIES[next(j for j, c in enumerate(_HOME_CUM) if c >= r)]
        a.home = home
        a.lat = home[1] + rng.gauss(0, 1.5)
        a.lon = home[2] + rng.gauss(0, 2.0)
        a.tz = int(round(a.lon / 15.0))
        a.rate = math.exp(rng.gauss(math.log(3.0), 0.6)) * (1 + 0.3 * d) / _DAY  # events per ms
        p1, p2 = rng.gauss(12.5, 1.5), rng.gauss(19.0, 1.5)
        night = 0.03 + 0.05 * rng.random()
        hw = []
        for h in range(24):
            w = night + math.exp(-((h - p1) ** 2) / 6) + 1.2 * math.exp(-((h - p2) ** 2) / 8) + 0.25 * (7 <= h <= 22)
            hw.append(w)
        a.hw, a.wmax = hw, max(hw)
        a.rate *= a.wmax / (sum(hw) / 24)  # candidate rate before thinning keeps the mean rate
        a.scale = math.exp(rng.gauss(math.log(35.0), 0.5)) * (1 + 0.6 * d)
        a.trend = rng.gauss(0.002, 0.004) * (1 + d) / _DAY
        a.favs = []
        weights = []
        ecom_share = min(0.9, rng.uniform(0.1, 0.5) + self.ecom_boost)
        groups_pos = ("groc", "groc", "food", "food", "fuel", "retail", "health")
        groups_ecom = ("eretail", "digital", "bills", "digital", "electr")
        for _ in range(rng.randint(6, 18)):
            g = rng.choice(groups_ecom) if rng.random() < ecom_share else rng.choice(groups_pos)
            a.favs.append(self._merchant(g))
            weights.append(1.0 / (len(weights) + 1) ** 0.8)
        a.favs.append(("atm-" + home[0].lower() + str(rng.randint(0, 999)), "6011", "atm", 3.0))
        weights.append(0.3 * rng.random())
        if rng.random() < 0.5:
            a.favs.append((f"p2p-{rng.randint(0, 10**6)}", "4829", "transfer", 6.0))
            weights.append(0.2 * rng.random())
        if rng.random() < 0.05:  # regular gamblers: gambling is normal for them
            a.favs.append(self._merchant("gamble"))
            weights.append(0.5)
        if rng.random() < 0.03:
            a.favs.append(self._merchant("quasi"))
            weights.append(0.3)
        total, cum = 0.0, []
        for w in weights:
            total += w
            cum.append(total)
        a.cum = cum
        a.phone = self._device(a.aid)
        a.laptop = self._device(a.aid) if rng.random() < 0.5 else None
        a.wallet = rng.uniform(0.0, 0.8)
        a.n = 0
        a.trip = None
        a.busy_until = 0
        a.new_merchant_p = 0.08 * (1 + d)
        return a

    def _merchant(self, group: str) -> tuple[str, str, str, float]:
        mccs, mult, channel = _GROUPS[group]
        mcc = self.rng.choice(mccs)
        return (f"m{mcc}-{self.rng.randrange(_MERCHANTS_PER_MCC)}", mcc, channel, mult)

    def _device(self, owner: str) -> str:
        self.dev_counter += 1
        return f"dev-{self.seed % 100000}-{self.dev_counter}"

    # -- scheduling ----------------------------------------------------------
    def _push(self, ts: int, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (ts, self.seq, kind, payload))

    def _next_tick(self, a: _Account, t: int) -> int:
        """Next normal event time: Poisson thinning by the account's local-hour profile."""
        rng, hw, wmax, lam = self.rng, a.hw, a.wmax, a.rate
        while True:
            t += int(rng.expovariate(lam)) + 1
            if rng.random() * wmax < hw[(t // _HOUR + a.tz) % 24]:
                return t

    # -- events --------------------------------------------------------------
    def _event(self, a: _Account, ts: int, amount: float, fav: tuple, *, country=None, lat=None, lon=None,
               currency=None, device=None, label: int = 0, typ: str | None = None) -> dict[str, Any]:
        self.seq += 1
        ev = {
            "event_id": f"tx-{self.seed}-{self.seq}",
            "ts": ts,
            "account_id": a.aid,
            "amount": round(amount, 2),
            "currency": currency or a.home[3],
            "merchant_id": fav[0],
            "mcc": fav[1],
            "country": country or a.home[0],
            "channel": fav[2],
            "lat": round(lat if lat is not None else a.lat, 4),
            "lon": round(lon if lon is not None else a.lon, 4),
            "label": label,
        }
        if device is not None:
            ev["device_id"] = device
        if typ is not None:
            ev["fraud_type"] = typ
        return ev

    def _normal(self, a: _Account, ts: int) -> dict[str, Any]:
        rng = self.rng
        r = rng.random() * a.cum[-1]
        k = 0
        cum = a.cum
        while cum[k] < r:
            k += 1
        fav = a.favs[k]
        if rng.random() < a.new_merchant_p and fav[2] in ("pos", "ecom"):
            fav = self._merchant(rng.choice(("groc", "food", "retail", "eretail", "digital")))
            if rng.random() < 0.15:  # the account adopts it: slow drift of habits
                a.favs[rng.randrange(len(a.favs))] = fav
        scale = a.scale * math.exp(a.trend * (ts - self.start))
        amount = scale * fav[3] * rng.lognormvariate(0.0, 0.55)
        if rng.random() < self.p_big and fav[2] != "transfer":
            fav = self._merchant(rng.choice(("electr", "travel", "retail")))
            amount = scale * rng.uniform(4.0, 12.0) * fav[3] ** 0.5
        ch = fav[2]
        trip = a.trip
        abroad = trip is not None and trip[0] <= ts < trip[1] and ch in ("pos", "atm")
        if trip is not None and ts >= trip[1]:
            a.trip = trip = None
        if ch == "pos":
            device = a.phone if rng.random() < a.wallet else None
        elif ch == "atm":
            device = None
        elif ch == "ecom":
            device = a.laptop if a.laptop is not None and rng.random() < 0.5 else a.phone
        else:
            device = a.phone
        if abroad:
            c = trip[2]
            return self._event(a, ts, amount * rng.uniform(0.7, 1.5), fav, country=c[0], currency=c[3],
                               lat=trip[3] + rng.gauss(0, 0.05), lon=trip[4] + rng.gauss(0, 0.05), device=device)
        jitter = 0.05 if ch in ("pos", "atm") else 0.3
        return self._event(a, ts, amount, fav, lat=a.lat + rng.gauss(0, jitter), lon=a.lon + rng.gauss(0, jitter),
                           device=device)

    def _benign_extras(self, a: _Account, ts: int) -> None:
        rng = self.rng
        if rng.random() < self.p_spree:  # shopping spree: legit velocity
            t = ts
            for _ in range(rng.randint(2, 4)):
                t += int(rng.uniform(2, 12) * _MIN)
                self._push(t, 2, a)
        if a.trip is None and rng.random() < self.p_trip:
            dest = rng.choice(_COUNTRIES)
            if dest[0] != a.home[0]:
                lat, lon = dest[1] + rng.gauss(0, 1.0), dest[2] + rng.gauss(0, 1.0)
                km = _haversine_km(a.lat, a.lon, lat, lon)
                depart = ts + int(rng.uniform(2, 48) * _HOUR)
                arrive = depart + int((km / 800.0 + rng.uniform(1.5, 4.0)) * _HOUR)
                a.trip = (arrive, arrive + int(rng.uniform(2, 10) * _DAY), dest, lat, lon)
        if rng.random() < self.p_phone:
            a.phone = self._device(a.aid)

    # -- fraud ---------------------------------------------------------------
    def _attacker_country(self, a: _Account) -> tuple:
        while True:
            c = self.rng.choice(_COUNTRIES)
            if c[0] != a.home[0]:
                return c

    def _fraud(self, a: _Account, ts: int) -> None:
        rng = self.rng
        typ = rng.choices(TYPOLOGIES, _TYPO_WEIGHTS)[0]
        scale = a.scale * math.exp(a.trend * (ts - self.start))
        out: list[dict] = []
        if typ == "card_testing":
            c = self._attacker_country(a)
            dev = self._device("x") if rng.random() < 0.85 else None
            t = ts + int(rng.uniform(10, 720) * _MIN)
            for _ in range(rng.randint(3, 12)):
                t += int(rng.uniform(*self.ct_gap) * 1000)
                fav = self._merchant(rng.choice(("digital", "eretail")))
                out.append(self._event(a, t, rng.uniform(*self.ct_amount), fav, country=c[0], lat=c[1] + rng.gauss(0, 1),
                                       lon=c[2] + rng.gauss(0, 1), device=dev, label=1, typ=typ))
            if rng.random() < 0.5:
                for _ in range(rng.randint(1, 2)):
                    t += int(rng.uniform(5, 60) * _MIN)
                    fav = self._merchant(rng.choice(("electr", "jewel", "quasi")))
                    out.append(self._event(a, t, scale * rng.uniform(10, 40), fav, country=c[0], lat=c[1],
                                           lon=c[2], device=dev, label=1, typ=typ))
        elif typ == "account_takeover":
            home = rng.random() < self.ato_home
            c = a.home if home else self._attacker_country(a)
            lat, lon = (a.lat + rng.gauss(0, 2), a.lon + rng.gauss(0, 2)) if home else (c[1], c[2])
            dev = self._device("x")
            t = ts + int(rng.uniform(30, 2880) * _MIN)
            if rng.random() < 0.6:
                fav = self._merchant("digital")
                out.append(self._event(a, t, rng.uniform(1, 20), fav, country=c[0], lat=lat, lon=lon, device=dev,
                                       label=1, typ=typ))
                t += int(rng.uniform(2, 120) * _MIN)
            for _ in range(rng.randint(1, 4)):
                fav = (f"p2p-x{rng.randrange(10**7)}", "4829", "transfer", 1.0)
                out.append(self._event(a, t, scale * rng.uniform(*self.ato_mult), fav, country=c[0], lat=lat, lon=lon,
                                       device=dev, label=1, typ=typ))
                t += int(rng.uniform(1, 30) * _MIN)
        elif typ == "velocity":
            t = ts + int(rng.uniform(60, 1440) * _MIN)
            for _ in range(rng.randint(6, 15)):
                t += int(rng.uniform(*self.vel_gap) * 1000)
                fav = self._merchant(rng.choice(("retail", "electr", "fuel", "retail", "groc")))
                fav = (fav[0], fav[1], "pos", fav[3])
                out.append(self._event(a, t, scale * rng.uniform(0.8, 3.0) * fav[3] ** 0.5, fav,
                                       lat=a.lat + rng.gauss(0, 0.05), lon=a.lon + rng.gauss(0, 0.05), label=1, typ=typ))
        elif typ == "merchant_category":
            t = ts + int(rng.uniform(10, 1440) * _MIN)
            g = rng.choice(("gamble", "quasi", "jewel"))
            dev = a.phone if rng.random() < 0.5 else self._device("x")
            for _ in range(rng.randint(1, 3)):
                fav = self._merchant(g)
                fav = (fav[0], fav[1], "ecom", fav[3])
                out.append(self._event(a, t, scale * rng.uniform(3, 15), fav, lat=a.lat + rng.gauss(0, 0.3),
                                       lon=a.lon + rng.gauss(0, 0.3), device=dev, label=1, typ=typ))
                t += int(rng.uniform(2, 60) * _MIN)
        else:  # impossible_travel: a cloned card used in person far away soon after a genuine transaction
            while True:
                c = self._attacker_country(a)
                if _haversine_km(a.lat, a.lon, c[1], c[2]) > 3000:
                    break
            t = ts + int(rng.uniform(10, 180) * _MIN)
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.5:
                    fav = (f"atm-{c[0].lower()}{rng.randrange(1000)}", "6011", "atm", 1.0)
                else:
                    fav = self._merchant(rng.choice(("electr", "jewel")))
                    fav = (fav[0], fav[1], "pos", fav[3])
                out.append(self._event(a, t, scale * rng.uniform(2, 10), fav, country=c[0], currency=c[3],
                                       lat=c[1] + rng.gauss(0, 0.3), lon=c[2] + rng.gauss(0, 0.3), label=1, typ=typ))
                t += int(rng.uniform(2, 20) * _MIN)
        for ev in out:
            self._push(ev["ts"], 1, ev)
        if out:
            a.busy_until = out[-1]["ts"]

    # -- main loop -----------------------------------------------------------
    def run(self, n_events: int, with_typology: bool) -> Iterator[dict[str, Any]]:
        heap, accounts, rng = self.heap, self.accounts, self.rng
        produced = 0
        while produced < n_events:
            ts, _, kind, payload = heapq.heappop(heap)
            if kind == 0:
                a = accounts[payload]
                ev = self._normal(a, ts)
                a.n += 1
                self._push(self._next_tick(a, ts), 0, payload)
                self._benign_extras(a, ts)
                if self.p_fraud and a.n >= _MIN_HISTORY and ts >= a.busy_until and rng.random() < self.p_fraud:
                    self._fraud(a, ts)
            elif kind == 2:  # spree follow-up: a normal event, not a new tick
                ev = self._normal(payload, ts)
                payload.n += 1
            else:
                ev = payload
                if not with_typology:
                    ev.pop("fraud_type", None)
            produced += 1
            yield ev


def generate(
    n_events: int,
    seed: int,
    fraud_rate: float = DEFAULT_FRAUD_RATE,
    drift: float = 0.0,
    n_accounts: int = 2000,
    start_ms: int = DEFAULT_START_MS,
    with_typology: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield ``n_events`` contract-valid transactions (with ``label``) in time order.

    ``fraud_rate`` is the expected share of labelled events; ``drift`` in [0, 1]
    shifts normal behaviour (amount levels, e-commerce share, travel, device
    churn) and the fraud typologies' parameters, for held-out evaluation sets.
    ``with_typology`` adds ``fraud_type`` to fraud events (an extra field the
    contract ignores), for per-typology reports.
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    return _Gen(seed, fraud_rate, drift, n_accounts, start_ms).run(n_events, with_typology)
