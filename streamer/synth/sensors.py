"""Seeded synthetic sensor streams with labelled faults, and fault injection into real data.

Why synthetic: labelled industrial sensor faults are rare and private, and the
model must first learn what a fault looks like *relative to an asset's own
normal* before it meets a new asset type. So normal behaviour here is varied on
purpose (several asset types with their own sensors, cadences, daily cycles,
a shared latent load that correlates sensors, AR(1) noise, quantized and
heavy-tailed sensors, benign bursts and slow legitimate trends) and faults are
defined relative to each sensor's recent robust scale.

Fault types (every reading of the asset during an episode has ``label`` 1,
``fault_type`` set and ``fault_age``, its position in the episode, 0 at onset):

- ``spike``: 1-3 readings far off on one sensor;
- ``level_shift``: one sensor jumps to a new level for a while;
- ``drift``: one sensor ramps away from normal;
- ``stuck``: one sensor repeats its last value (or drops to 0: ``dropout``);
- ``noise_burst``: one sensor's noise grows several-fold;
- ``correlated``: 2-4 sensors deviate together, inconsistent with the load;
- ``decoupled``: one sensor stops following the others: it keeps its usual
  level and spread but loses its relation to the load (a fault no single
  sensor's range shows, only the relations between sensors).

Every event of an asset carries the asset's full sensor set (a reading that
does not arrive is the producer's problem to report, not a fault).

:func:`inject_faults` applies the same fault shapes to a user's normal-only
stream, which is how ``streamer model fine-tune`` learns a new asset type
without labels (contrastive: the data as it is vs. the data with faults).

>>> evs = list(generate(3000, seed=3, fault_rate=0.03, n_assets=6))
>>> len(evs), all(a["ts"] <= b["ts"] for a, b in zip(evs, evs[1:]))
(3000, True)
>>> evs == list(generate(3000, seed=3, fault_rate=0.03, n_assets=6))
True
>>> many = list(generate(30000, seed=3, fault_rate=0.03, n_assets=24))
>>> 0.015 < sum(e["label"] for e in many) / len(many) < 0.05
True
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

DEFAULT_FAULT_RATE = 0.02
DEFAULT_START_MS = 1_700_000_000_000
FAULT_TYPES = ("spike", "level_shift", "drift", "stuck", "dropout", "noise_burst", "correlated", "decoupled")
_FAULT_WEIGHTS = (0.20, 0.16, 0.13, 0.11, 0.05, 0.11, 0.14, 0.10)
# (min, max) episode length in readings, per fault type
_FAULT_LEN = {"spike": (1, 3), "level_shift": (15, 150), "drift": (40, 250), "stuck": (15, 150), "dropout": (5, 60),
              "noise_burst": (15, 100), "correlated": (10, 100), "decoupled": (20, 150)}
_MEAN_LEN = sum(w * (a + b) / 2 for w, (a, b) in zip(_FAULT_WEIGHTS, (_FAULT_LEN[t] for t in FAULT_TYPES)))
MIN_HISTORY = 96  # readings of an asset before a fault may start (its normal must be observable)
_DAY = 86_400_000


@dataclass(frozen=True)
class SensorSpec:
    name: str
    base: float
    daily: float  # amplitude of the daily cycle, in units of noise
    load: float  # gain on the shared latent load, in units of noise
    noise: float  # innovation scale (absolute units)
    ar: float = 0.6  # AR(1) coefficient of the noise
    quantum: float = 0.0  # round readings to this step (0: none)
    lo: float = -math.inf
    hi: float = math.inf
    heavy: float = 0.0  # probability per reading of a benign burst (bursty sensors)


# Asset types and their sensors; names differ between types like in real fleets.
ASSET_TYPES: dict[str, tuple[SensorSpec, ...]] = {
    "pump": (
        SensorSpec("temp_c", 55.0, 3.0, 4.0, 0.4, 0.8, 0.1),
        SensorSpec("pressure_bar", 4.2, 1.0, 6.0, 0.05, 0.5, 0.01, 0.0),
        SensorSpec("vibration_mm_s", 2.1, 0.5, 3.0, 0.15, 0.3, 0.01, 0.0),
        SensorSpec("flow_lpm", 310.0, 2.0, 8.0, 3.0, 0.6, 1.0, 0.0),
        SensorSpec("current_a", 18.0, 2.0, 7.0, 0.3, 0.5, 0.1, 0.0),
    ),
    "hvac": (
        SensorSpec("supply_temp_c", 14.0, 4.0, 2.0, 0.2, 0.85, 0.1),
        SensorSpec("return_temp_c", 22.0, 6.0, 2.0, 0.25, 0.85, 0.1),
        SensorSpec("humidity_pct", 45.0, 5.0, 1.0, 0.8, 0.9, 1.0, 0.0, 100.0),
        SensorSpec("fan_rpm", 1200.0, 2.0, 6.0, 12.0, 0.4, 10.0, 0.0),
    ),
    "server": (
        SensorSpec("cpu_pct", 35.0, 3.0, 5.0, 3.0, 0.5, 0.0, 0.0, 100.0, 0.01),
        SensorSpec("mem_pct", 62.0, 1.0, 2.0, 0.6, 0.95, 0.0, 0.0, 100.0),
        SensorSpec("net_in_mbps", 120.0, 4.0, 5.0, 12.0, 0.3, 0.0, 0.0, math.inf, 0.015),
        SensorSpec("latency_ms", 42.0, 2.0, 3.0, 4.0, 0.2, 0.0, 1.0, math.inf, 0.01),
    ),
    "turbine": (
        SensorSpec("rotor_rpm", 14.5, 1.0, 8.0, 0.2, 0.7, 0.0, 0.0),
        SensorSpec("bearing_temp_c", 48.0, 2.0, 3.0, 0.3, 0.9, 0.1),
        SensorSpec("gen_power_kw", 1500.0, 1.0, 9.0, 40.0, 0.6, 1.0, 0.0),
        SensorSpec("vibration_g", 0.35, 0.5, 2.0, 0.03, 0.3, 0.001, 0.0),
        SensorSpec("oil_pressure_bar", 2.8, 0.3, 1.5, 0.04, 0.7, 0.01, 0.0),
        SensorSpec("nacelle_temp_c", 21.0, 6.0, 1.0, 0.2, 0.9, 0.1),
    ),
    "meter": (
        SensorSpec("reading", 230.0, 5.0, 3.0, 1.5, 0.6, 0.1),
    ),
}
_TYPE_WEIGHTS = {"pump": 0.25, "hvac": 0.2, "server": 0.2, "turbine": 0.2, "meter": 0.15}
_INTERVALS_MS = ((10_000, 0.25), (60_000, 0.4), (300_000, 0.35))


class _Scale:
    """Recent robust scale of one sensor: level σ (IQR) and step σ (median |diff|)."""

    __slots__ = ("buf", "hi", "lo")

    def __init__(self) -> None:
        self.buf: deque[float] = deque(maxlen=256)
        self.hi = -math.inf  # all-time range: "novel" faults go beyond it
        self.lo = math.inf

    def add(self, x: float) -> None:
        self.buf.append(x)
        if x > self.hi:
            self.hi = x
        if x < self.lo:
            self.lo = x

    def beyond(self, m: float) -> float:
        """Offset from the last value to ``|m|`` level-σ past the all-time range, on the side of ``m``'s sign."""
        last, sd = self.last(), self.level()
        return (self.hi - last + m * sd) if m > 0 else (self.lo - last + m * sd)

    def level(self) -> float:
        s = sorted(self.buf)
        n = len(s)
        iqr = (s[(3 * n) // 4] - s[n // 4]) / 1.349 if n >= 8 else 0.0
        return max(iqr, self.step() * 2.0, 1e-6 * (abs(s[n // 2]) + 1.0) if n else 1e-6)

    def step(self) -> float:
        b = list(self.buf)
        d = sorted(abs(b[i] - b[i - 1]) for i in range(1, len(b)))
        if not d:
            return 1e-6
        med = d[len(d) // 2] * 1.4826
        return max(med, sum(d) / len(d) * 1.2533 * 0.5, 1e-9)

    def last(self) -> float:
        return self.buf[-1] if self.buf else 0.0

    def centre(self) -> float:
        s = sorted(self.buf)
        return s[len(s) // 2] if s else 0.0

    def spread(self) -> float:
        """Plain standard deviation of the recent readings (what the sensor's own range looks like)."""
        b = list(self.buf)
        if len(b) < 2:
            return 0.0
        m = sum(b) / len(b)
        return math.sqrt(sum((x - m) ** 2 for x in b) / (len(b) - 1))


@dataclass
class _Episode:
    """One fault on one asset: which sensors, how, for how many readings."""

    kind: str
    length: int
    targets: dict[str, float]  # sensor -> signed magnitude (absolute units) or frozen value (stuck)
    k: int = 0
    spread: dict[str, float] = field(default_factory=dict)  # decoupled: sensor -> its own spread
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def apply(self, readings: dict[str, float]) -> dict[str, float]:
        out = dict(readings)
        k, n = self.k, self.length
        for name, mag in self.targets.items():
            if name not in out:
                continue
            if self.kind in ("spike", "level_shift"):
                out[name] = out[name] + mag
            elif self.kind == "drift":
                out[name] = out[name] + mag * (k + 1) / n
            elif self.kind in ("stuck", "dropout"):
                out[name] = mag
            elif self.kind == "noise_burst":
                out[name] = out[name] + self.rng.gauss(0.0, mag)
            elif self.kind == "correlated":
                out[name] = out[name] + mag * min(1.0, (k + 1) / 3.0)
            elif self.kind == "decoupled":  # its usual level and spread, unrelated to what the others do
                out[name] = mag + self.rng.gauss(0.0, self.spread[name])
        self.k += 1
        return out

    @property
    def done(self) -> bool:
        return self.k >= self.length


def _new_episode(rng: random.Random, scales: Mapping[str, _Scale], names: Sequence[str], kinds: Sequence[str] | None = None,
                 weights: Sequence[float] | None = None, strength: float = 1.0, novel: float = 0.0) -> _Episode:
    """Draw a fault relative to the sensors' recent robust scales (magnitudes log-uniform, subtle to gross).

    With probability ``novel`` a spike, shift, drift or correlated fault is instead placed *beyond the
    sensor's all-time range* by 0.3-5 σ: novel relative to the asset's own history, which is what
    separates a fault from the heavy tails that real metrics show all the time.
    """
    kinds = list(kinds or FAULT_TYPES)
    if weights is None:
        weights = [_FAULT_WEIGHTS[FAULT_TYPES.index(k)] for k in kinds]
    for multi in ("correlated", "decoupled"):  # relation faults need a second sensor
        if len(names) < 2 and multi in kinds:
            i = kinds.index(multi)
            kinds, weights = kinds[:i] + kinds[i + 1:], list(weights[:i]) + list(weights[i + 1:])
    kind = rng.choices(kinds, weights)[0]
    lo, hi = _FAULT_LEN[kind]
    length = rng.randint(lo, hi)

    def mag(lo_s: float, hi_s: float) -> float:
        return math.exp(rng.uniform(math.log(lo_s), math.log(hi_s))) * strength * rng.choice((-1.0, 1.0))

    targets: dict[str, float] = {}
    spread: dict[str, float] = {}
    is_novel = novel > 0 and rng.random() < novel
    if kind == "correlated":
        chosen = rng.sample(list(names), min(len(names), rng.randint(2, 4)))
        sign = rng.choice((-1.0, 1.0))
        for nm in chosen:
            sg = sign if rng.random() < 0.8 else -sign
            targets[nm] = (scales[nm].beyond(sg * abs(mag(0.3, 5.0))) if is_novel
                           else abs(mag(2.0, 6.0)) * scales[nm].level() * sg)
    elif kind == "decoupled":
        nm = rng.choice(list(names))
        targets[nm] = scales[nm].centre()
        spread[nm] = scales[nm].spread() or scales[nm].level()
    else:
        nm = rng.choice(list(names))
        sc = scales[nm]
        if is_novel and kind in ("spike", "level_shift", "drift"):
            targets[nm] = sc.beyond(mag(0.3, 5.0))
        elif kind == "spike":
            targets[nm] = mag(4.0, 15.0) * sc.level()
        elif kind == "level_shift":
            targets[nm] = mag(2.5, 10.0) * sc.level()
        elif kind == "drift":
            targets[nm] = mag(4.0, 12.0) * sc.level()
        elif kind == "stuck":
            targets[nm] = sc.last()
        elif kind == "dropout":
            targets[nm] = 0.0
        elif kind == "noise_burst":
            targets[nm] = abs(mag(3.0, 10.0)) * sc.step()
    return _Episode(kind, length, targets, spread=spread, rng=random.Random(rng.random()))


class _Asset:
    """Normal behaviour of one asset: shared load, daily cycle, per-sensor AR(1) noise."""

    def __init__(self, rng: random.Random, idx: int, seed: int, drift: float, start_ms: int):
        self.rng = rng
        self.type = rng.choices(list(_TYPE_WEIGHTS), list(_TYPE_WEIGHTS.values()))[0]
        self.id = f"{self.type}-{seed}-{idx:04d}"
        self.specs = ASSET_TYPES[self.type]
        ivals, iw = zip(*_INTERVALS_MS)
        self.interval = rng.choices(ivals, iw)[0] * (1.0 + 0.5 * drift * rng.random())
        self.ts = float(start_ms + rng.random() * self.interval)
        self.phase = rng.uniform(0, 2 * math.pi)
        self.level = {s.name: s.base * (1.0 + rng.uniform(-0.15, 0.15)) for s in self.specs}
        self.gain = {s.name: s.load * rng.uniform(0.6, 1.4) * (1.0 - 0.4 * drift * rng.random()) for s in self.specs}
        self.amp = {s.name: s.daily * rng.uniform(0.5, 1.5) * (1.0 - 0.3 * drift) for s in self.specs}
        self.noise_mult = 1.0 + 0.6 * drift * rng.random()
        self.trend = {s.name: drift * rng.gauss(0.0, 0.5) * s.noise for s in self.specs}  # per 1000 readings, benign
        self.ar = {s.name: 0.0 for s in self.specs}
        self.load = 0.0
        self.load_target = 0.0
        self.burst: dict[str, int] = {}
        self.n = 0
        self.scales = {s.name: _Scale() for s in self.specs}
        self.episode: _Episode | None = None

    def normal(self) -> dict[str, float]:
        rng = self.rng
        t = self.ts
        day = 2 * math.pi * ((t % _DAY) / _DAY) + self.phase
        cyc = math.sin(day) + 0.3 * math.sin(2 * day + 1.0)
        if rng.random() < 0.002:  # an operating-point change (benign, all sensors move consistently)
            self.load_target = rng.gauss(0.0, 0.8)
        self.load += 0.02 * (self.load_target - self.load) + rng.gauss(0.0, 0.03)
        out: dict[str, float] = {}
        for s in self.specs:
            noise = s.noise * self.noise_mult
            self.ar[s.name] = s.ar * self.ar[s.name] + rng.gauss(0.0, noise) * math.sqrt(1 - s.ar * s.ar)
            v = (self.level[s.name] + noise * (self.amp[s.name] * cyc + self.gain[s.name] * self.load)
                 + self.ar[s.name] + self.trend[s.name] * self.n / 1000.0)
            if s.heavy:
                left = self.burst.get(s.name, 0)
                if left == 0 and rng.random() < s.heavy:
                    left = rng.randint(1, 6)
                if left > 0:  # benign bursts: busy minutes, not faults
                    v += abs(rng.gauss(0.0, 2.5)) * noise
                    self.burst[s.name] = left - 1
            v = min(max(v, s.lo), s.hi)
            if s.quantum:
                v = round(round(v / s.quantum) * s.quantum, 6)
            out[s.name] = v
        return out


def _round(readings: Mapping[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in readings.items()}


def generate(
    n_events: int,
    seed: int = 0,
    fault_rate: float = DEFAULT_FAULT_RATE,
    n_assets: int = 50,
    start_ms: int = DEFAULT_START_MS,
    drift: float = 0.0,
    asset_types: Sequence[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """``n_events`` contract-valid sensor events in time order, each with ``label`` and ``fault_type``.

    ``fault_rate`` is the expected share of labelled readings; ``drift`` (0-1)
    shifts the normal behaviour (noise, cycle amplitude, gains, cadence,
    benign trends) for held-out sets that differ in distribution, not only seed.
    """
    if not 0.0 <= fault_rate < 0.5:
        raise ValueError(f"fault_rate must be in [0, 0.5), got {fault_rate!r}")
    rng = random.Random(seed)
    assets = []
    for i in range(max(1, n_assets)):
        a = _Asset(random.Random(rng.random()), i, seed, drift, start_ms)
        if asset_types is not None:
            while a.type not in asset_types:
                a = _Asset(random.Random(rng.random()), i, seed, drift, start_ms)
        assets.append(a)
    p_start = fault_rate / max(_MEAN_LEN * (1.0 - fault_rate), 1e-9)
    heap = [(a.ts, i) for i, a in enumerate(assets)]
    heapq.heapify(heap)
    for n in range(n_events):
        ts, i = heapq.heappop(heap)
        a = assets[i]
        readings = a.normal()
        label, ftype = 0, None
        if a.episode is None and a.n >= MIN_HISTORY and a.rng.random() < p_start:
            a.episode = _new_episode(a.rng, a.scales, [s.name for s in a.specs])
        for name, v in readings.items():
            a.scales[name].add(v)  # scales track the *normal* signal, as an operator's baseline would
        age = None
        if a.episode is not None:
            age = a.episode.k
            readings = a.episode.apply(readings)
            label, ftype = 1, a.episode.kind
            if a.episode.done:
                a.episode = None
        ev = {"event_id": f"sn-{seed}-{n}", "ts": int(ts), "asset_id": a.id, "readings": _round(readings),
              "label": label, "fault_type": ftype, "fault_age": age}
        a.n += 1
        a.ts += a.interval * (1.0 + a.rng.uniform(-0.02, 0.02))
        heapq.heappush(heap, (a.ts, i))
        yield ev


def inject_faults(
    events: Iterable[Mapping[str, Any]],
    seed: int = 0,
    fault_rate: float = 0.05,
    kinds: Sequence[str] | None = None,
    min_history: int = MIN_HISTORY,
    strength: float = 1.0,
    novel: float = 0.0,
) -> Iterator[dict[str, Any]]:
    """Inject labelled synthetic faults into a normal-only, time-ordered stream (any sensor names).

    Each asset's faults are scaled to that asset's own recent robust spread, so
    the same call works for temperatures in °C and request counts in millions.
    Events keep their ids, assets and times; ``label`` becomes 1 during a fault
    (and 0 elsewhere: the input is taken to be normal) and ``fault_type`` names it.
    Non-finite or non-numeric readings raise ``ValueError`` naming the field.
    """
    rng = random.Random(seed)
    p_start = fault_rate / max(_MEAN_LEN * (1.0 - fault_rate), 1e-9)
    if kinds is not None:
        bad = [k for k in kinds if k not in FAULT_TYPES]
        if bad:
            raise ValueError(f"unknown fault kinds {bad}; expected some of {list(FAULT_TYPES)}")
        lens = [sum(_FAULT_LEN[k]) / 2 for k in kinds]
        p_start = fault_rate / max(sum(lens) / len(lens) * (1.0 - fault_rate), 1e-9)
    state: dict[str, tuple[dict[str, _Scale], list[int], list[_Episode | None]]] = {}
    for i, ev in enumerate(events):
        asset = ev.get("asset_id")
        readings = ev.get("readings")
        if not isinstance(readings, Mapping) or not readings:
            raise ValueError(f"event {i} ({ev.get('event_id')!r}): readings must be a non-empty object")
        for name, v in readings.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"event {i} ({ev.get('event_id')!r}): readings.{name}: must be a finite number, got {v!r}")
        scales, count, ep = state.setdefault(str(asset), ({}, [0], [None]))
        for name, v in readings.items():
            scales.setdefault(name, _Scale()).add(float(v))
        out = dict(ev)
        out["label"], out["fault_type"], out["fault_age"] = 0, None, None
        if ep[0] is None and count[0] >= min_history and rng.random() < p_start:
            names = [n for n in readings if n in scales and len(scales[n].buf) >= 16]
            if names:
                ep[0] = _new_episode(rng, scales, names, kinds, strength=strength, novel=novel)
        if ep[0] is not None:
            out["fault_age"] = ep[0].k
            out["readings"] = _round(ep[0].apply({k: float(v) for k, v in readings.items()}))
            out["label"], out["fault_type"] = 1, ep[0].kind
            if ep[0].done:
                ep[0] = None
        count[0] += 1
        yield out
