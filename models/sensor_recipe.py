"""The shipped sensor bundle's recipe: which normal fleets it learns from, what it is validated and tested on.

Why these data: the base model has to meet asset types it has never seen, so it
learns from many synthetic fleets of varied asset types (different sensors,
cadences, daily cycles, a shared load that correlates sensors, benign bursts,
drift), from **normal running only** plus the same windows with faults injected
(``streamer.synth.sensors.inject_faults``). The held-out splits are fleets with
their own seeds and more drift, and their faults come from the generator
itself, not from the injector the model trained against.

``nab``: NAB's 58 real series join as one univariate asset type whose normal is
fitted on each series' probationary 15% only (no NAB label is used).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

KIND = "sensor"


def synth(n: int, seed: int, fault_rate: float = 0.0, drift: float = 0.0, n_assets: int = 40) -> dict[str, Any]:
    return {"synth": dict(n_events=n, seed=seed, fault_rate=fault_rate, drift=drift, n_assets=n_assets)}


RECIPE: dict[str, Any] = {
    "kind": KIND,
    "version": "3.6.0",  # 3: sensor-v5, the asset's window as numbers with a relation model per type; 3.1: sensor-v6 (novelty v6 for one-sensor types); 3.2: S weighted by each sensor's normal repeat rate; 3.3: sensor-v7, lag-aware relation parts L and Lbar, parts chosen with subtle faults too (without the rows a fault lingers in) and set aside where they alarm on new assets, closed-form parts calibrated on the training readings too; 3.4: the relations fitted and the network trained on each asset's unbroken stream (held-out blocks encoded in place, no window across them); 3.5: sensor-v8, a repeat at the edge of the normal range is not a stuck sensor, runs counted past the window, S joins the choice unless it costs; 3.6: sensor-v9, the lag-aware σ widens away from the asset's operating point
    "preset": "default",
    "window": 16,
    "warmup": 128,
    "slots": 512,
    "seed": 0,
    # normal running (fault_rate 0), several drift levels so benign change is normal to the model
    "normal": [synth(80_000, 101, 0.0, 0.0, 40), synth(40_000, 102, 0.0, 0.3, 24), synth(30_000, 103, 0.0, 0.6, 16)],
    "inject": {"seed": 201, "fault_rate": 0.08},
    "validation_fraction": 0.2,  # newest share of each asset's normal rows: calibration and selection
    # the held-out classifier metric peaked at 750 of 2,000 steps in the first build (best weights are kept)
    "train": {"steps": 1200, "lr": 2e-3, "batch_size": 64, "warmup": 100, "select_every": 200},
    "false_alarms_per_day": 1.0,
    "test": [synth(60_000, 404, 0.03, 0.5, 32)],
    "test_small": [synth(12_000, 606, 0.04, 0.5, 12)],
    "nab": True,
    # NAB's series are IT and traffic metrics whose normal moves: their baseline keeps following normal
    # readings (time constant in readings); equipment types stay frozen after the warm-up
    "adapt": {"value": 1000},
}


def describe(spec: Mapping[str, Any]) -> str:
    from models import recipes

    return recipes.describe(dict(spec))


def nab_normal_events(path: Any = None) -> Iterator[dict[str, Any]]:
    """The probationary 15% of every NAB series: what NAB lets a detector learn from before scoring."""
    from models import nab

    for s in nab.load_corpus(path):
        for i, ev in enumerate(nab.to_events(s, with_labels=False)):
            if i >= s.probation:
                break
            yield ev
