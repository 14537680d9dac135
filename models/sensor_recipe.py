"""The sensor kind's recipe, data specs and fitted normalization.

Curriculum (why): stage one teaches what a fault looks like *relative to an
asset's own normal* on broad synthetic fleets (five asset types, seven fault
types, two drift levels). Stage two adapts to the target data, NAB's 58 real
series, **without any NAB label** (policy (a), so the whole-corpus NAB score is
a held-out result). There are no labels to learn from, so the targets come
from a label-free *novelty teacher* (``teacher``): a sharp logistic of the
encoding's ``novelty`` feature, "how far beyond anything this sensor did in
~8,000 readings, overall or at this hour of the day, is this reading". Synthetic
faults beyond each series' own range are injected into the series
(``inject_faults(..., novel=1.0)``) so the model meets more novel readings on
real backgrounds; they are graded by the same teacher, not by the injection
label. The model learns the teacher's verdict from the words it sees, and
keeps what stage one taught it about faults that are not novel values (stuck,
dropout, noise bursts) through a replay of synthetic fleets (10% of each batch).

Data specs extend ``models.recipes``: besides ``{"synth": {...}}`` and
``{"jsonl": path}``, ``{"nab_inject": {"seed", "fault_rate", "novel", "kinds"}}``
is the NAB corpus (``models.nab``) with injected faults and ``label`` from the
injection only.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Mapping

from models import recipes

KIND = "sensor"


def _synth(n: int, seed: int, fault_rate: float = 0.03, drift: float = 0.0, n_assets: int = 60) -> dict[str, Any]:
    return {"synth": dict(n_events=n, seed=seed, fault_rate=fault_rate, drift=drift, n_assets=n_assets)}


RECIPE: dict[str, Any] = {
    "kind": KIND,
    "version": "2.0.0",  # 2: sensor-v4 encoding and the novelty-teacher stage two (1.x: sensor-v2/v3)
    "max_seq_len": 32,
    "buckets": [32],
    "preset": "default",
    "batch_size": 128,
    "seed": 0,
    "stages": [
        {"name": "broad", "data": [_synth(100_000, 101, 0.04, 0.0, 40), _synth(50_000, 102, 0.04, 0.5, 24)],
         "steps": 1200, "lr": 2e-3, "pos_fraction": 0.3, "warmup": 100},
        {"name": "target", "data": [{"nab_inject": {"seed": 201, "fault_rate": 0.04, "novel": 1.0,
                                                    "kinds": ["spike", "level_shift", "drift", "correlated"]},
                                     "labels": "teacher"},
                                    {**_synth(20_000, 202, 0.04, 0.25, 24), "replay": True}],
         "steps": 1500, "lr": 7e-4, "pos_fraction": 0.3, "warmup": 50, "replay_fraction": 0.1},
    ],
    "validation": [_synth(40_000, 303, 0.02, 0.25, 24)],
    "test": [_synth(60_000, 404, 0.02, 0.5, 32)],
    "test_small": [_synth(12_000, 606, 0.02, 0.5, 12)],
    "alert_fpr": 1e-3,
    "nab": True,
}
recipes.register(KIND, RECIPE)

# The label-free novelty teacher of stage two: a logistic of the encoding's ``novelty`` feature
# (how far a reading lies beyond anything its sensor did in ~8,000 readings, overall or for this
# hour of the day, in the sensor's own spread). It grades how much news a reading is; the model
# learns that ranking on the real series, on top of what stage one taught it about faults.
TEACHER: dict[str, float] = {"center": 0.4, "temperature": 0.05}


def teacher(novelty: float, center: float = TEACHER["center"], temperature: float = TEACHER["temperature"]) -> float:
    """Soft target in (0, 1) for a reading with this ``novelty``.

    >>> round(teacher(-4.0), 4), round(teacher(0.3), 2), round(teacher(0.4), 2), round(teacher(0.5), 2)
    (0.0, 0.12, 0.5, 0.88)
    """
    x = (novelty - center) / temperature
    return 1.0 / (1.0 + math.exp(-x)) if x > -60 else 0.0


def events(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The events a data spec describes, in stream order."""
    if "nab_inject" in spec:
        from models import nab
        from streamer.synth.sensors import inject_faults

        p = spec["nab_inject"]
        corpus = nab.load_corpus(p.get("path"))

        def stream() -> Iterator[dict[str, Any]]:
            for s in corpus:
                yield from nab.to_events(s, with_labels=False)

        return inject_faults(stream(), seed=int(p.get("seed", 0)), fault_rate=float(p.get("fault_rate", 0.05)),
                             novel=float(p.get("novel", 0.0)), kinds=p.get("kinds"))
    return recipes.events(dict(spec), KIND)


def describe(spec: Mapping[str, Any]) -> str:
    if "nab_inject" in spec:
        return "nab_inject(" + ", ".join(f"{k}={v}" for k, v in spec["nab_inject"].items()) + "; NAB labels unused)"
    return recipes.describe(dict(spec))


class NormalizationError(ValueError):
    """Readings whose normal cannot be fitted; the message names the sensor (and asset)."""


def fit_normalization(events: Iterable[Mapping[str, Any]], per_asset: bool = False, min_count: int = 2) -> dict[str, Any]:
    """Fleet-wide (and optionally per-asset) mean/std of every sensor, for ``card["normalization"]``.

    These statistics are the encoding's fallback while an asset's window is
    still short, and the list of sensor names the bundle accepts. A sensor that
    is constant, empty or non-finite has no usable normal: that is an error
    naming it, never a silently tiny std that would make every reading an alarm.
    """
    acc: dict[str, list[float]] = {}  # name -> [n, mean, M2]
    acc_a: dict[str, dict[str, list[float]]] = {}
    n_events = 0
    for i, ev in enumerate(events):
        readings = ev.get("readings")
        if not isinstance(readings, Mapping) or not readings:
            raise NormalizationError(f"event {i} ({ev.get('event_id')!r}): readings must be a non-empty object")
        n_events += 1
        asset = str(ev.get("asset_id"))
        for name, v in readings.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise NormalizationError(f"event {i} ({ev.get('event_id')!r}): readings.{name}: must be a finite "
                                         f"number, got {v!r}")
            targets = [acc.setdefault(name, [0.0, 0.0, 0.0])]
            if per_asset:
                targets.append(acc_a.setdefault(asset, {}).setdefault(name, [0.0, 0.0, 0.0]))
            for a in targets:
                a[0] += 1
                d = v - a[1]
                a[1] += d / a[0]
                a[2] += d * (v - a[1])
    if not n_events:
        raise NormalizationError("no events to fit normalization on (empty input)")

    def stats(name: str, a: list[float], where: str) -> dict[str, float]:
        n, mean, m2 = a
        if n < min_count:
            raise NormalizationError(f"readings.{name}{where}: only {int(n)} reading(s); need at least {min_count} "
                                     "to fit its normal")
        std = math.sqrt(m2 / (n - 1))
        if not std > 1e-12 * max(1.0, abs(mean)):
            raise NormalizationError(f"readings.{name}{where}: constant at {mean:g} over {int(n)} readings; a sensor "
                                     "needs some variation to define its normal (drop it or add data)")
        return {"mean": mean, "std": std, "n": int(n)}

    out: dict[str, Any] = {"sensors": {k: stats(k, a, "") for k, a in sorted(acc.items())}}
    if per_asset:
        out["assets"] = {asset: {k: stats(k, a, f" of asset {asset!r}") for k, a in sorted(d.items())}
                         for asset, d in sorted(acc_a.items())}
    return out


def merge_normalization(base: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` statistics over ``base`` (new sensor names added, re-fitted names replaced)."""
    out: dict[str, Any] = {"sensors": dict((base or {}).get("sensors") or {})}
    out["sensors"].update(new.get("sensors") or {})
    assets = dict((base or {}).get("assets") or {})
    for a, d in (new.get("assets") or {}).items():
        assets[a] = {**assets.get(a, {}), **d}
    if assets:
        out["assets"] = assets
    return out


def nab_probation_events(path: Any = None) -> Iterator[dict[str, Any]]:
    """The probationary 15% of every NAB series: what NAB lets a detector learn from before scoring."""
    from models import nab

    for s in nab.load_corpus(path):
        for i, ev in enumerate(nab.to_events(s, with_labels=False)):
            if i >= s.probation:
                break
            yield ev


def _fine_tune(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from models.sensor_pipeline import fine_tune_sensor

    return fine_tune_sensor(*args, **kwargs)


def _register_fine_tuner() -> None:
    from models import finetune

    finetune.register(KIND, _fine_tune)


_register_fine_tuner()
