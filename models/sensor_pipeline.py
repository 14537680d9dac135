"""Sensor bundles end to end: normal running -> asset types -> model -> calibration -> ONNX -> report.

Two entry points share every step:

- ``build`` (``streamer model train --kind sensor``): the shipped base bundle,
  from the recipe's synthetic normal fleets (and NAB's probation data as a
  univariate type); tested on held-out fleets with the generator's own faults.
- ``fine_tune_sensor`` (``streamer model fine-tune --bundle BASE --train NORMAL.jsonl``):
  a user's normal-only readings of new asset types (new sensor names welcome).

The steps: split each asset's normal rows in time (the newest
``validation_fraction`` held out); fit each asset type's normal and relation
model on the training part (``models.sensor_fit``); train (or continue
training) the model to forecast the normal windows and to tell them from the
same windows with injected faults (``models.sensor_train``); on the held-out
normal rows, calibrate every score part per asset type, pick the parts whose
combination separates held-out injected faults best, and set the alert
threshold for the target false alarms per asset-day; report the false-alarm
rate that threshold gives on held-out normal rows it was not fitted on, the
parts' contributions and the baselines (PCA T²+Q, Isolation Forest) on the
same data; export ONNX (parity-checked) and write the bundle.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from models import sensor_data as sd
from models import sensor_fit as fit
from models import sensor_recipe as sr
from models.pipeline import _round
from streamer import calibration
from streamer.encoding import sensors as enc
from streamer.sensor_scorer import PARTS, budget_scale, combine

Log = Callable[[str], None]
SEVERITY_P = {"low": 1e-3, "medium": 1e-4, "high": 1e-5, "critical": 1e-6}
DAY_MS = 86_400_000
MIN_CALIBRATION = 20  # held-out normal readings a type needs for its calibration


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def thresholds() -> dict[str, Any]:
    """Alert threshold and severity bands on the score scale (the same for every asset type)."""
    sev = {k: round(float(calibration.to_score(np.array([p]))[0]), 6) for k, p in SEVERITY_P.items()}
    return {"alert": sev["low"], "severity": sev,
            "meaning": "score = -log10(p)/10, p the chance that a normal reading of the asset type is this unusual, "
                       "scaled so that the alert threshold is reached at the type's budget of false alarms per asset-day"}


def split_by_asset(events: Iterable[Mapping[str, Any]], fraction: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training, held-out) events: the newest ``fraction`` of each asset's rows held out, stream order kept."""
    evs = [dict(e) for e in events]
    count: dict[str, int] = defaultdict(int)
    for e in evs:
        count[str(e.get("asset_id"))] += 1
    seen: dict[str, int] = defaultdict(int)
    train, held = [], []
    for e in evs:
        a = str(e.get("asset_id"))
        cut = count[a] - int(round(count[a] * fraction))
        (train if seen[a] < cut else held).append(e)
        seen[a] += 1
    return train, held


def cadences(events: Iterable[Mapping[str, Any]], types: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Median time between an asset's readings, per asset type (ms)."""
    by_set = {frozenset(t["sensors"]): name for name, t in types.items()}
    last: dict[str, int] = {}
    gaps: dict[str, list[int]] = defaultdict(list)
    for e in events:
        a = str(e.get("asset_id"))
        name = by_set.get(frozenset(e["readings"]))
        ts = int(e["ts"]) if isinstance(e["ts"], (int, float)) else None
        if name is None or ts is None:
            continue
        if a in last and ts > last[a]:
            gaps[name].append(ts - last[a])
        last[a] = ts
    return {n: float(np.median(g)) if g else 60_000.0 for n, g in ((n, gaps.get(n, [])) for n in types)}


def alert_budget(cadence_ms: float, false_alarms_per_day: float) -> float:
    """Per-reading false-alarm probability that gives ``false_alarms_per_day`` alerts per asset-day.

    >>> round(alert_budget(180_000, 1.0), 5), alert_budget(1_000, 1.0) == 1e-5
    (0.00208, True)
    """
    return float(min(0.05, max(1e-5, false_alarms_per_day * cadence_ms / DAY_MS)))


def make_card(name: str, version: str, types: Mapping[str, Any], slots: Mapping[str, int], window: int,
              warmup: int) -> dict[str, Any]:
    return {"name": name, "version": version, "kind": "sensor", "encoding_version": enc.ENCODING_VERSION,
            "window": {"max_events": window, "max_age_ms": enc.WINDOW["max_age_ms"]},
            "inputs": list(_input_names()), "thresholds": thresholds(),
            "sensor_model": {"window": window, "warmup": warmup, "types": dict(types), "slots": dict(slots)}}


def _input_names() -> Sequence[str]:
    from models.sensor_model import INPUT_NAMES

    return INPUT_NAMES


# -- calibration --------------------------------------------------------------------------


def _parts_by_type(outputs: Mapping[str, np.ndarray], data: sd.Encoded) -> dict[int, dict[str, np.ndarray]]:
    types = np.asarray([i[0] for i in data.inputs])
    return {int(t): {k: outputs[k][types == t] for k in PARTS} for t in np.unique(types)}


def _auprc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else None


MODEL_PARTS = ("D", "R", "Dbar", "E", "logit")  # candidates for types with several sensors; one-sensor types: N


def _calibrated(parts: Mapping[str, np.ndarray], use: Sequence[str]) -> dict[str, Any]:
    c = {k: calibration.fit(parts[k]) for k in use}
    c["combined"] = calibration.fit(sum(calibration.surprise(parts[k], c[k]) for k in use))
    return c


def calibrate(card: dict[str, Any], val_normal: Mapping[str, np.ndarray], normal: sd.Encoded,
              val_injected: Mapping[str, np.ndarray], injected: sd.Encoded, budgets: Mapping[str, float],
              log: Log = _log) -> dict[str, Any]:
    """Per asset type: the parts to combine, their calibration, the alert budget; returns the report.

    ``val_normal``/``val_injected``: the model's outputs (``sensor_train.outputs``) on the
    held-out normal rows and on the same rows with injected faults. For a type with several
    sensors the combination is the subset of D, R, Dbar, E and logit with the best AUPRC on
    its injected rows (ties: fewer parts); a one-sensor type is judged by its novelty N. The
    false-alarm rate of the alert threshold is measured on each half of the type's held-out
    normal rows with the calibration fitted on the other half.
    """
    spec = enc.spec(card)
    types = card["sensor_model"]["types"]
    normal_by = _parts_by_type(val_normal, normal)
    inj_by = _parts_by_type(val_injected, injected)
    inj_types = np.asarray([i[0] for i in injected.inputs])
    y_by = {t: np.asarray(injected.labels)[inj_types == t] for t in inj_by}
    report: dict[str, Any] = {"types": {}, "false_alarms": {}}
    alert = thresholds()["alert"]
    for t, parts in sorted(normal_by.items()):
        at = spec.types[t]
        name = at.name
        if len(parts["D"]) < MIN_CALIBRATION:
            raise fit.FitError(f"asset type {name!r}: {len(parts['D'])} held-out normal readings; need at least "
                               f"{MIN_CALIBRATION} to calibrate its scores (more data, or a larger validation share)")
        cands = [("N",)] if at.novelty else [c for r in range(1, len(MODEL_PARTS) + 1) for c in itertools.combinations(MODEL_PARTS, r)]
        table = {}
        for use in cands:
            if t in inj_by:
                c = _calibrated(parts, use)
                table["+".join(use)] = _auprc(y_by[t], -np.log10(combine(inj_by[t], c, use)))
        scored = [(k, v) for k, v in table.items() if v is not None]
        best = max(scored, key=lambda kv: (round(kv[1], 4), -kv[0].count("+")))[0] if scored else "+".join(cands[0])
        use = best.split("+")
        types[name]["combine"] = use
        types[name]["calibration"] = _calibrated(parts, use)
        types[name]["alert_p"] = budgets[name]
        n = len(parts["D"])
        half = np.arange(n) < n // 2
        rates = []
        for fit_rows, check_rows in ((half, ~half), (~half, half)):
            c = _calibrated({k: v[fit_rows] for k, v in parts.items()}, use)
            p = combine({k: v[check_rows] for k, v in parts.items()}, c, use) * budget_scale(alert, budgets[name])
            rates.append(float(np.mean(calibration.to_score(p) >= alert)))
        cad = types[name]["cadence_ms"]
        report["false_alarms"][name] = {
            "alert_budget_per_reading": budgets[name], "heldout_false_alarm_rate": round(float(np.mean(rates)), 6),
            "heldout_false_alarms_per_asset_day": round(float(np.mean(rates)) * DAY_MS / cad, 3),
            "heldout_readings": n, "cadence_ms": cad}
        report["types"][name] = {"combine": use, "auprc_on_injected_by_parts": table,
                                 "injected_positives": int(y_by.get(t, np.zeros(0)).sum())}
    log("calibration: " + "; ".join(f"{k} {'+'.join(v['combine'])} (FAR {report['false_alarms'][k]['heldout_false_alarm_rate']:.4f})"
                                    for k, v in report["types"].items()))
    report["how"] = ("per asset type: each chosen part's -log normal-tail probability (empirical body + exponential "
                     "tail fitted on the type's held-out normal readings) summed; the sum calibrated the same way; the "
                     "parts are the subset with the best AUPRC on the type's held-out normal readings with injected "
                     "faults (one-sensor types: the novelty N)")
    return report


# -- evaluation -----------------------------------------------------------------------------


def score_encoded(bundle_dir: str | Path, data: sd.Encoded, threads: int = 1, batch: int = 256) -> np.ndarray:
    """Scores of encoded rows through the bundle's ONNX graph and calibration (the worker's scorer)."""
    from streamer.bundle import load_bundle
    from streamer.scorer import make_scorer

    bundle = load_bundle(bundle_dir)
    scorer = make_scorer(bundle, "cpu", "fp32", threads)
    out = np.zeros(len(data))
    for idx, _ in _type_batches(data, batch):
        out[idx] = scorer.score_batch([data.inputs[i] for i in idx]).scores
    return out


def _type_batches(data: sd.Encoded, size: int) -> Iterable[tuple[np.ndarray, None]]:
    for rows in sd.by_type(data).values():
        for s in range(0, len(rows), size):
            yield np.asarray(rows[s : s + size]), None


def metrics(labels: Sequence[int], scores: np.ndarray, threshold: float, fault_types: Sequence[str | None]) -> dict[str, Any]:
    from models import evaluate as ev

    m = ev.metrics(list(labels), scores.tolist(), threshold)
    y = np.asarray(labels)
    ft = np.asarray([f or "" for f in fault_types])
    m["per_fault_type"] = {str(k): {"events": int((ft == k).sum()), "recall": round(float((scores[ft == k] >= threshold).mean()), 4)}
                           for k in sorted(set(ft[y == 1]) - {""})}
    return m


def _matrix(events: Sequence[Mapping[str, Any]], sensors: Sequence[str]) -> np.ndarray:
    return np.asarray([[float(e["readings"][n]) for n in sensors] for e in events], dtype=np.float64)


def baseline_report(card: Mapping[str, Any], train_events: Sequence[Mapping[str, Any]], held_normal: Sequence[Mapping[str, Any]],
              eval_events: Sequence[Mapping[str, Any]], budgets: Mapping[str, float], seed: int = 0) -> dict[str, Any]:
    """PCA T²+Q (per type on the training normal rows, and per asset on its own first readings) and an
    Isolation Forest, on ``eval_events``; each at its own threshold for the type's alert budget on held-out normal rows."""
    from models.sensor_baselines import IForest, Pca, per_asset_pca

    types = card["sensor_model"]["types"]
    by_set = {frozenset(t["sensors"]): n for n, t in types.items()}

    def group(evs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
        out: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for e in evs:
            name = by_set.get(frozenset(e["readings"]))
            if name is not None:
                out[name][str(e["asset_id"])].append(e)
        return out

    tr, ho, evg = group(train_events), group(held_normal), group(eval_events)
    result: dict[str, list[np.ndarray]] = defaultdict(list)
    labels, ftypes = [], []
    for name, assets in evg.items():
        sensors = types[name]["sensors"]
        if name not in tr:
            continue
        x_tr = np.concatenate([_matrix(v, sensors) for v in tr[name].values()])
        pca, forest = Pca.fit(x_tr), IForest(x_tr, seed=seed)
        x_ho = np.concatenate([_matrix(v, sensors) for v in ho.get(name, {}).values()]) if ho.get(name) else x_tr
        thr = {"pca_t2q": np.quantile(pca.score(x_ho), 1 - budgets[name]),
               "iforest": np.quantile(forest.score(x_ho), 1 - budgets[name])}
        for asset, evs in assets.items():
            x = _matrix(evs, sensors)
            labels.extend(int(e.get("label") or 0) for e in evs)
            ftypes.extend(e.get("fault_type") for e in evs)
            # each detector's score divided by its own threshold: 1.0 is its alert point
            result["pca_t2q"].append(pca.score(x) / thr["pca_t2q"])
            result["iforest"].append(forest.score(x) / thr["iforest"])
            own = per_asset_pca(x)
            fit_n = max(2 * len(sensors) + 2, min(400, len(x) // 2))
            result["pca_t2q_per_asset"].append(own / max(float(np.quantile(own[:fit_n], 1 - budgets[name])), 1e-12))
    out: dict[str, Any] = {}
    for k, parts in result.items():
        out[k] = metrics(labels, np.concatenate(parts), 1.0, ftypes)
    out["fitted_on"] = ("pca_t2q and iforest: the training part of the same normal rows, per asset type (alert "
                        "threshold at the type's budget on the held-out normal rows); pca_t2q_per_asset: each evaluated "
                        "asset's own first min(400, half) readings (threshold from those readings)")
    return out


# -- the shared core --------------------------------------------------------------------------

HELD_INJECTED_ROWS = 4000  # held-out rows with injected faults wanted for selection and the report
SELECTION_ROWS = 8000  # rows the classifier's selection metric is computed on during training


def injected_copies(train: Sequence[Mapping[str, Any]], held: Sequence[Mapping[str, Any]], seed: int, fault_rate: float,
                    rows: int = HELD_INJECTED_ROWS) -> list[dict[str, Any]]:
    """Each asset's stream (training rows, then held-out rows) with faults injected into the held-out rows only,
    in as many copies (own seeds, own asset ids) as it takes to reach ``rows`` held-out rows: a small held-out
    set (the Tennessee Eastman protocol leaves 100 readings) would otherwise hold no fault to choose and report on.
    Held-out rows are marked ``_held``; they are scored as the continuation of their asset's stream."""
    from streamer.synth.sensors import inject_faults

    copies = max(1, min(20, -(-rows // max(1, len(held)))))
    out: list[dict[str, Any]] = []
    for k in range(copies):
        tag = (lambda e: {**e, "asset_id": f"{e['asset_id']}~{k}", "event_id": f"{e['event_id']}~{k}"}) if k else dict
        out.extend({**tag(e), "label": 0, "fault_type": None} for e in train)
        for e in inject_faults([tag(e) for e in held], seed=seed + 1000 * k, fault_rate=fault_rate, min_history=0):
            out.append({**e, "_held": True})
    out.sort(key=lambda e: e["ts"])
    return out


def held_rows(data: sd.Encoded, events: Sequence[Mapping[str, Any]]) -> sd.Encoded:
    """The rows of ``data`` (encoded from ``events``) that are held out."""
    return data.take([i for i, e in enumerate(events) if e.get("_held")])


def _new_rows_from_trained(model: Any, slots: Mapping[str, int], trained: set[int]) -> None:
    """Start new sensor names' embedding rows at the mean of the trained ones (a generic sensor)."""
    import torch

    new = [i for i in slots.values() if i not in trained]
    old = sorted(trained)
    if not new or not old:
        return
    with torch.no_grad():
        for table in (model.sensor.weight, model.direction):
            table[new] = table[old].mean(0, keepdim=True).expand(len(new), *table.shape[1:]).clone()


def _fit_model(card: dict[str, Any], train_events: list[dict[str, Any]], held_events: list[dict[str, Any]], *,
               model: Any, cfg: Any, inject: Mapping[str, Any], false_alarms_per_day: float, out: Path,
               resume: str | Path | None, log: Log) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Encode, train, calibrate: the steps build and fine-tune share. Returns (training summary, calibration report, sets)."""
    from models import sensor_train as st
    from streamer.synth.sensors import inject_faults

    t0 = time.perf_counter()
    types = card["sensor_model"]["types"]
    train_n = sd.encode(train_events, card, source="training normal")
    train_i = sd.encode(list(inject_faults(train_events, seed=int(inject["seed"]), fault_rate=float(inject["fault_rate"]))),
                        card, source="training with injected faults")
    # held-out rows are scored as the continuation of their asset's stream (its baseline already formed)
    stream = sorted([dict(e) for e in train_events] + [{**e, "_held": True} for e in held_events], key=lambda e: e["ts"])
    held_n = held_rows(sd.encode(stream, card, source="held-out normal"), stream)
    held_inj_events = injected_copies(train_events, held_events, int(inject["seed"]) + 1, float(inject["fault_rate"]))
    held_i = held_rows(sd.encode(held_inj_events, card, source="held-out with injected faults"), held_inj_events)
    log(f"data: {len(train_n)} normal training rows ({sum(train_i.labels)} injected fault rows), "
        f"{len(held_n)} held-out normal in {time.perf_counter() - t0:.0f}s")
    pools = st.pools(train_n, train_i, card, min_base=16)
    step = max(1, len(held_i) // SELECTION_ROWS)
    sel = held_i.take(list(range(0, len(held_i), step)))  # an evenly spread subsample: selection runs often
    val_y = np.asarray(sel.labels)

    def select(m: Any) -> float:
        o = st.outputs(m, sel, card)
        return _auprc(val_y, o["logit"]) or 0.0

    summary = st.train(model, pools, cfg, select=select if val_y.sum() else None, checkpoint_dir=out / ".train",
                       resume=resume, log=log)
    budgets = {n: alert_budget(types[n]["cadence_ms"], false_alarms_per_day) for n in types}
    report = calibrate(card, st.outputs(model, held_n, card), held_n, st.outputs(model, held_i, card), held_i, budgets, log)
    return summary, report, {"held_injected": held_i, "held_injected_events": [e for e in held_inj_events if e.get("_held")],
                             "held_normal": held_n,
                             "budgets": budgets, "train_rows": len(train_n)}


def _finish(out: Path, card: dict[str, Any], model: Any, held: sd.Encoded, variants: Sequence[str], measure_speed: bool,
            log: Log) -> dict[str, Any]:
    """Export, check parity, measure speed, write the bundle; returns the checks."""
    from models.bundle import CHECKPOINT_DIR, VARIANT_FILES, write_card
    from models.sensor_export import export_all, throughput

    out.mkdir(parents=True, exist_ok=True)
    graphs, checks = export_all(model, out, held.inputs, card, variants, log)
    if measure_speed:
        batch = enc.stack(held.inputs[:64], card)
        for name, g in graphs.items():
            checks[name]["events_per_s_b64_1thread"] = round(throughput(g, batch), 1)
    ck = out / CHECKPOINT_DIR
    if ck.exists():
        shutil.rmtree(ck)
    ck.mkdir(parents=True)
    save_checkpoint(model, ck)
    card["variants"] = {k: VARIANT_FILES[k] for k in graphs}
    card["variant_checks"] = _round(checks)
    write_card(out, card)
    from streamer.bundle import load_bundle

    for name in graphs:
        load_bundle(out, precision=name)  # a bundle the worker would refuse fails here
    return checks


def save_checkpoint(model: Any, path: Path) -> None:
    """Torch weights and the architecture needed to rebuild the model (for fine-tuning from this bundle)."""
    import orjson
    import torch
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_bytes(orjson.dumps({"backbone": orjson.loads(model.config.to_json_string()), "slots": model.slots,
                                                     "channels": model.channels, "embed": model.embed_dim,
                                                     "torch": torch.__version__}, option=orjson.OPT_INDENT_2))


def load_checkpoint(path: Path) -> Any:
    import orjson
    from safetensors.torch import load_file
    from transformers import DeepseekV3Config

    from models.sensor_model import SensorNet

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json: this bundle has no torch checkpoint to fine-tune from")
    cfg = orjson.loads((path / "config.json").read_bytes())
    if "backbone" not in cfg:
        raise ValueError(f"{path}: a checkpoint of another model (not the sensor-v5 window model); rebuild the base "
                         "bundle with `streamer model train --kind sensor`")
    model = SensorNet(DeepseekV3Config(**cfg["backbone"]), slots=cfg["slots"], channels=cfg["channels"], embed=cfg["embed"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval()


# -- build ------------------------------------------------------------------------------------


def build(out: str | Path, *, preset: str | None = None, steps_scale: float = 1.0, data_scale: float = 1.0,
          resume: str | Path | None = None, seed: int | None = None, threads: int = 1, progress: bool = True,
          name: str | None = None, version: str | None = None, command: str | None = None, nab: bool | None = None,
          variants: Sequence[str] = ("fp16", "int8"), measure_speed: bool = True, baselines: bool = True,
          log: Log = _log, **_: Any) -> dict[str, Any]:
    """Train the shipped sensor bundle from its recipe into ``out``; returns the card."""
    from models.bundle import git_commit, write_card
    from models.sensor_model import architecture
    from models.sensor_model import build as build_net
    from models.sensor_train import SensorTrainConfig
    from models.train import resolve_threads
    from streamer.synth.sensors import generate

    t_start = time.perf_counter()
    recipe = dict(sr.RECIPE)
    threads = resolve_threads(threads)
    seed = recipe["seed"] if seed is None else seed
    use_nab = recipe.get("nab", False) if nab is None else nab
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def scaled(spec: Mapping[str, Any]) -> dict[str, Any]:
        s = {"synth": dict(spec["synth"])}
        s["synth"]["n_events"] = max(600, int(s["synth"]["n_events"] * data_scale))
        return s

    normal: list[dict[str, Any]] = []
    for spec in recipe["normal"]:
        normal.extend(generate(**scaled(spec)["synth"]))
    if use_nab:
        normal.extend(sr.nab_normal_events())
    normal.sort(key=lambda e: e["ts"])
    train_ev, held_ev = split_by_asset(normal, recipe["validation_fraction"])
    types = fit.fit_types(train_ev, warmup=recipe["warmup"], window=recipe["window"], adapt=recipe.get("adapt") or 0)
    for tname, c in cadences(train_ev, types).items():
        types[tname]["cadence_ms"] = c
    slots = fit.assign_slots(types, None, recipe["slots"])
    card = make_card(name or "sensors-deepseek", version or recipe["version"], types, slots, recipe["window"], recipe["warmup"])
    model = build_net(preset or recipe["preset"], recipe["window"], recipe["slots"], seed=seed)
    tr = recipe["train"]
    cfg = SensorTrainConfig(steps=max(1, int(tr["steps"] * steps_scale)), lr=tr["lr"], batch_size=tr["batch_size"],
                            warmup=min(tr["warmup"], max(1, int(tr["steps"] * steps_scale) // 5)),
                            select_every=max(1, min(tr["select_every"], int(tr["steps"] * steps_scale))),
                            seed=seed, threads=threads, progress=progress)
    summary, report, sets = _fit_model(card, train_ev, held_ev, model=model, cfg=cfg, inject=recipe["inject"],
                                       false_alarms_per_day=recipe["false_alarms_per_day"], out=out, resume=resume, log=log)
    card["architecture"] = {**architecture(model), "preset": preset or recipe["preset"]}
    card["training"] = {"normal": [sr.describe(s) for s in recipe["normal"]] + (["nab probation (15% of each series)"] if use_nab else []),
                        "inject": recipe["inject"], "summary": summary, "seed": seed, "threads": threads,
                        "command": command, "commit": git_commit(Path(__file__).resolve().parent.parent),
                        "validation_fraction": recipe["validation_fraction"],
                        "false_alarms_per_day": recipe["false_alarms_per_day"], "eval_specs": {
                            "test": recipe["test"], "test_small": recipe["test_small"]}}
    card["metrics"] = {"validation": report}
    _finish(out, card, model, sets["held_normal"], variants, measure_speed, log)
    for split in ("test", "test_small"):
        specs = recipe[split] if data_scale >= 1.0 or split == "test_small" else [scaled(s) for s in recipe[split]]
        evs = [e for s in specs for e in generate(**s["synth"])]
        data = sd.encode(evs, card, source=split)
        scores = score_encoded(out, data, threads)
        card["metrics"][split] = {"data": [sr.describe(s) for s in specs],
                                  "model": metrics(data.labels, scores, card["thresholds"]["alert"], data.fault_types)}
        if baselines and split == "test":
            card["metrics"][split].update(baseline_report(card, train_ev, held_ev, evs, sets["budgets"], seed))
        m = card["metrics"][split]["model"]
        log(f"{split}: AUPRC {m['auprc']:.4f} F1 {m.get('f1', 0):.4f} at the alert threshold")
    if use_nab:
        from models.sensor_nab import nab_report, nab_scores

        card["metrics"]["nab"] = nab_report(nab_scores(out, threads=1, workers=None, log=log))
        log("NAB: " + ", ".join(f"{k} {v['score']:.1f}" for k, v in card["metrics"]["nab"]["profiles"].items()))
    card["training"]["build_wall_s"] = round(time.perf_counter() - t_start, 1)
    card = {k: (v if k in ("thresholds", "sensor_model") else _round(v)) for k, v in card.items()}
    write_card(out, card)
    shutil.rmtree(out / ".train", ignore_errors=True)
    log(f"bundle written to {out} in {card['training']['build_wall_s']:.0f}s")
    return card


# -- fine-tune from normal-only data ----------------------------------------------------------


def read_normal(path: str | Path) -> list[dict[str, Any]]:
    """Contract-valid sensor events from a JSONL file; a bad row is an error naming it and its field."""
    from models.dataset import DataError, read_jsonl
    from streamer.validation import Invalid, check_sensor

    out = []
    for i, raw in enumerate(read_jsonl(path), 1):
        try:
            e = check_sensor(dict(raw))
        except Invalid as exc:
            raise DataError(f"{path}: row {i} (event_id={raw.get('event_id')!r}): {exc}") from None
        if e.get("label") == 1:
            raise DataError(f"{path}: row {i} (event_id={e['event_id']!r}): label 1: fine-tune takes normal running "
                            "only; drop the faulty rows")
        out.append({k: v for k, v in e.items() if k != "label"})
    return out


def fine_tune_sensor(bundle: str | Path, train_path: str | Path, out: str | Path, *, steps: int = 600, lr: float = 1e-3,
                     batch_size: int = 64, val_fraction: float = 0.2, fault_rate: float = 0.08, seed: int = 0,
                     threads: int = 0, progress: bool = True, version_suffix: str = "ft", command: str | None = None,
                     warmup_readings: int | None = None, false_alarms_per_day: float = 1.0,
                     resume: str | Path | None = None, variants: Sequence[str] = ("fp16", "int8"),
                     measure_speed: bool = True, baselines: bool = True, log: Log = _log, **_: Any) -> dict[str, Any]:
    """Adapt the base sensor bundle to a user's normal-only readings (asset types and sensor names may be new)."""
    from models.bundle import CHECKPOINT_DIR, git_commit, read_card, write_card
    from models.dataset import DataError
    from models.sensor_model import architecture
    from models.sensor_train import SensorTrainConfig
    from models.train import resolve_threads

    t_start = time.perf_counter()
    threads = resolve_threads(threads)
    base = read_card(bundle)
    if base.get("kind") != "sensor" or base.get("encoding_version") != enc.ENCODING_VERSION:
        raise ValueError(f"{bundle}: a {base.get('kind')!r} bundle with encoding {base.get('encoding_version')!r}; "
                         f"fine-tune needs a sensor bundle of encoding {enc.ENCODING_VERSION!r}")
    model = load_checkpoint(Path(bundle) / CHECKPOINT_DIR)
    events = read_normal(train_path)
    if len(events) < fit.MIN_READINGS:
        raise DataError(f"{train_path}: {len(events)} events; need at least {fit.MIN_READINGS} normal readings")
    sm = base["sensor_model"]
    warm = int(warmup_readings or sm.get("warmup", enc.DEFAULT_WARMUP))
    train_ev, held_ev = split_by_asset(events, val_fraction)
    try:
        types = fit.fit_types(train_ev, warmup=warm, window=int(sm["window"]), existing=sm.get("types"))
    except fit.FitError as exc:
        raise DataError(f"{train_path}: {exc}") from None
    for tname, c in cadences(train_ev, types).items():
        types[tname]["cadence_ms"] = c
    trained = set(sm["slots"].values())
    slots = fit.assign_slots(types, sm["slots"], model.slots)
    _new_rows_from_trained(model, slots, trained)
    new_names = sorted(set(slots) - set(sm["slots"]))
    found = ", ".join(f"{n} ({len(t['sensors'])} sensors, {t['assets']} assets, {t['readings']} readings)" for n, t in types.items())
    log(f"asset types: {found}; {len(new_names)} new sensor names")
    card = make_card(base["name"], f"{base['version']}+{version_suffix}", types, slots, int(sm["window"]), warm)
    out = Path(out)
    cfg = SensorTrainConfig(steps=steps, lr=lr, batch_size=batch_size, warmup=min(50, max(1, steps // 5)),
                            select_every=max(1, min(100, steps)), seed=seed, threads=threads, progress=progress)
    try:
        summary, report, sets = _fit_model(card, train_ev, held_ev, model=model, cfg=cfg,
                                           inject={"seed": seed + 11, "fault_rate": fault_rate},
                                           false_alarms_per_day=false_alarms_per_day, out=out, resume=resume, log=log)
    except fit.FitError as exc:
        raise DataError(f"{train_path}: {exc}") from None
    card["architecture"] = {**architecture(model), "init": f"fine-tuned from {base['name']}@{base['version']}"}
    card["training"] = {"base": f"{base['name']}@{base['version']}", "data": str(train_path), "summary": summary,
                        "seed": seed, "threads": threads, "command": command, "new_sensors": new_names,
                        "commit": git_commit(Path(__file__).resolve().parent.parent), "validation_fraction": val_fraction,
                        "false_alarms_per_day": false_alarms_per_day, "inject": {"seed": seed + 11, "fault_rate": fault_rate},
                        "rows": {"train": sets["train_rows"], "held_out": len(sets["held_normal"])}}
    held_i = sets["held_injected"]
    card["metrics"] = {"validation": report, "base_metrics": {"note": f"metrics of the base bundle {base['name']}@{base['version']}",
                                                              **{k: v for k, v in (base.get("metrics") or {}).items() if k != "nab"}}}
    _finish(out, card, model, sets["held_normal"], variants, measure_speed, log)
    scores = score_encoded(out, held_i, threads)
    heldm: dict[str, Any] = {"data": f"newest {val_fraction:.0%} of each asset's rows of {train_path}, faults injected "
                                     f"(seed {seed + 11}, fault rate {fault_rate})",
                             "model": metrics(held_i.labels, scores, card["thresholds"]["alert"], held_i.fault_types)}
    if baselines:
        heldm.update(baseline_report(card, train_ev, held_ev, sets["held_injected_events"], sets["budgets"], seed))
    card["metrics"]["held_out_injected"] = heldm
    card["training"]["build_wall_s"] = round(time.perf_counter() - t_start, 1)
    card = {k: (v if k in ("thresholds", "sensor_model") else _round(v)) for k, v in card.items()}
    write_card(out, card)
    shutil.rmtree(out / ".train", ignore_errors=True)
    log(f"fine-tuned sensor bundle written to {out} in {card['training']['build_wall_s']:.0f}s")
    return card


def evaluate_bundle(bundle_dir: str | Path, data: Sequence[str | Path] | None = None, split: str = "test_small",
                    precision: str = "fp32", threads: int = 1) -> dict[str, Any]:
    """Model metrics of a sensor bundle through the worker's scorer (``streamer model evaluate``).

    ``data``: labelled JSONL files (each its own stream); else the card's ``split``
    regenerated from its recorded synthetic spec (what ``--check`` compares with the card).
    """
    from models.bundle import read_card
    from models.dataset import read_jsonl
    from streamer.synth.sensors import generate

    card = read_card(bundle_dir)
    if precision != "fp32":
        raise ValueError("the sensor scorer serves the fp32 graph on CPU; --precision fp16/int8 are GPU variants")
    if data:
        streams = [(str(p), list(read_jsonl(p))) for p in data]
    else:
        specs = ((card.get("training") or {}).get("eval_specs") or {}).get(split)
        if not specs:
            raise ValueError(f"{bundle_dir}: the card records no {split!r} spec; pass --data FILE.jsonl")
        streams = [(sr.describe(sp), list(generate(**sp["synth"]))) for sp in specs]
    enc_all, sources = sd.Encoded(), []
    for src, evs in streams:
        enc_all.extend(sd.encode(evs, card, source=src))
        sources.append(src)
    scores = score_encoded(bundle_dir, enc_all, threads)
    return {"data": sources, "model": metrics(enc_all.labels, scores, card["thresholds"]["alert"], enc_all.fault_types)}


def export_bundle(bundle_dir: str | Path, out: str | Path | None = None, variants: Sequence[str] = ("fp16", "int8"),
                  log: Log = _log) -> dict[str, Any]:
    """Re-export a sensor bundle's graphs from its torch checkpoint (``streamer model export``)."""
    from models.bundle import CHECKPOINT_DIR, read_card
    from streamer.synth.sensors import generate

    src = Path(bundle_dir)
    dst = Path(out or src)
    card = read_card(src)
    model = load_checkpoint(src / CHECKPOINT_DIR)
    if dst != src:
        shutil.copytree(src, dst, dirs_exist_ok=True)
    specs = ((card.get("training") or {}).get("eval_specs") or {}).get("test_small")
    if specs:
        evs = [e for sp in specs for e in generate(**sp["synth"])]
        rows = sd.encode([e for e in evs if frozenset(e["readings"]) in enc.spec(card).by_set], card, source="export")
    else:
        rows = sd.Encoded()
    if not len(rows):
        raise ValueError(f"{src}: no rows to check the export on (the card records no test_small spec of its types)")
    _finish(dst, card, model, rows, variants, True, log)
    return card["variant_checks"]


def evaluate_events(bundle_dir: str | Path, events: Sequence[Mapping[str, Any]], threads: int = 1) -> dict[str, Any]:
    """Model metrics of a bundle on labelled events (``streamer model evaluate --data``)."""
    from models.bundle import read_card

    card = read_card(bundle_dir)
    data = sd.encode(events, card, source="evaluation data")
    scores = score_encoded(bundle_dir, data, threads)
    return {"model": metrics(data.labels, scores, card["thresholds"]["alert"], data.fault_types)}


