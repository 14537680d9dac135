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

import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from models import sensor_data as sd
from models import sensor_fit as fit
from models import sensor_recipe as sr
from models.pipeline import Log, _log, _round
from models.sensor_calibrate import alert_budget, auprc, calibrate, check_parts, thresholds
from models.sensor_evaluate import baseline_report, metrics, score_encoded
from streamer.encoding import reads
from streamer.encoding import sensors as enc


HELD = "_half"  # the key split_by_asset marks held-out rows with (its value: the half of the held-out rows)


def split_by_asset(events: Iterable[Mapping[str, Any]], fraction: float, warmup: int = 0
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(whole stream, training, held-out) events, stream order kept: per asset, after its first ``warmup``
    rows (which form its baseline and always train), every k-th block of consecutive rows is held out
    (k = 1/fraction) and marked ``HELD`` in the whole stream (the stream ``fit_types`` encodes).

    Blocks, not the newest rows: normal running has daily cycles and operating points, and held-out
    rows that cover only the last hours of the data would calibrate the alert threshold on a slice of
    it. Each held-out row carries ``_half`` (0/1, alternating held blocks): the two halves on which the
    report measures the false-alarm rate with a calibration fitted on the other.

    >>> evs = [{"asset_id": "a", "n": i} for i in range(300)]
    >>> whole, tr, ho = split_by_asset(evs, 0.2, warmup=100)
    >>> len(whole), len(tr), len(ho), ho[0]["n"], sorted({e["_half"] for e in ho})
    (300, 268, 32, 164, [0, 1])
    """
    stream = mark_held(events, fraction, warmup)
    return stream, [e for e in stream if not is_held(e)], [e for e in stream if is_held(e)]


def mark_held(events: Iterable[Mapping[str, Any]], fraction: float, warmup: int = 0) -> list[dict[str, Any]]:
    """Copies of ``events`` in stream order, the rows ``split_by_asset`` holds out marked with ``HELD``.

    The whole stream is what ``fit_types`` encodes (``held_key=HELD``): the held-out rows keep their
    place, so the readings after each held-out block have the windows and history the worker gives them.

    >>> marks = [e.get(HELD) for e in mark_held([{"asset_id": "a"}] * 160, 0.5, warmup=64)]
    >>> [i for i, m in enumerate(marks) if m is not None][::16], marks[80], marks[112]
    ([80, 112, 144], 0, 1)
    """
    evs = [dict(e) for e in events]
    count: dict[str, int] = defaultdict(int)
    for e in evs:
        count[str(e.get("asset_id"))] += 1
    every = max(2, int(round(1.0 / fraction))) if fraction > 0 else 0
    seen: dict[str, int] = defaultdict(int)
    for e in evs:
        e.pop(HELD, None)
        a = str(e.get("asset_id"))
        i = seen[a]
        seen[a] += 1
        rest = count[a] - warmup
        if not every or i < warmup or rest <= 0:
            continue
        size = max(16, min(64, rest // (5 * every)))
        block = (i - warmup) // size
        if block % every == every - 1:
            e[HELD] = (block // every) % 2
    return evs


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


def make_card(name: str, version: str, types: Mapping[str, Any], slots: Mapping[str, int], window: int,
              warmup: int) -> dict[str, Any]:
    return {"name": name, "version": version, "kind": "sensor", "encoding_version": enc.ENCODING_VERSION,
            "window": {"max_events": window, "max_age_ms": enc.WINDOW["max_age_ms"]},
            "inputs": list(_input_names()), "thresholds": thresholds(),
            "sensor_model": {"window": window, "warmup": warmup, "types": dict(types), "slots": dict(slots)}}


def _input_names() -> Sequence[str]:
    from models.sensor_model import INPUT_NAMES

    return INPUT_NAMES


# -- the shared core --------------------------------------------------------------------------

HELD_INJECTED_ROWS = 4000  # held-out rows with injected faults wanted for selection and the report
HELD_INJECTED_POSITIVES = 200  # ...and faulty rows among them
MAX_COPIES = 60
SELECTION_ROWS = 8000  # rows the classifier's selection metric is computed on during training
# Fault strengths of the held-out copies, taken in turn: the generator's own magnitudes (2.5-10 times a
# sensor's whole range for a level shift) and a quarter of them. A real fault starts small against the
# sensor's range, and a small fault that lasts is what the window parts (Dbar, Rbar, Lbar) see and a
# single reading does not: chosen on gross faults alone, a fine-tuned 8-sensor machine dropped the
# window parts and caught 0.1% of the readings of a lasting offset of 3 noise σ on one sensor.
HELD_STRENGTHS = (1.0, 0.25)


def injected_copies(train: Sequence[Mapping[str, Any]], held: Sequence[Mapping[str, Any]], seed: int, fault_rate: float,
                    rows: int = HELD_INJECTED_ROWS, positives: int = HELD_INJECTED_POSITIVES,
                    strengths: Sequence[float] = HELD_STRENGTHS) -> list[dict[str, Any]]:
    """Each asset's stream (training rows, then held-out rows) with faults injected into the held-out rows only,
    in as many copies (own seeds, own asset ids) as it takes to reach ``rows`` held-out rows and ``positives``
    faulty ones (at least one copy per fault strength in ``strengths``, taken in turn; at most ``MAX_COPIES``,
    then again at 3x and 9x the fault rate): a small held-out set (the Tennessee Eastman protocol leaves 64
    readings) would otherwise hold no fault to choose parts on and report. Held-out rows are marked
    ``HELD`` (their half kept); they are scored as the continuation of their asset's stream."""
    from streamer.synth.sensors import inject_faults

    for rate in (fault_rate, min(0.45, 3 * fault_rate), min(0.45, 9 * fault_rate)):  # short held-out streams
        out: list[dict[str, Any]] = []                                                   # need a higher rate
        got = n_held = 0
        for k in range(max(MAX_COPIES, len(strengths))):
            if k >= len(strengths) and n_held >= rows and got >= positives:
                break
            tag = (lambda e: {**e, "asset_id": f"{e['asset_id']}~{k}", "event_id": f"{e['event_id']}~{k}"}) if k else dict
            out.extend({**tag(e), "label": 0, "fault_type": None} for e in train)
            for e in inject_faults([tag(e) for e in held], seed=seed + 1000 * k, fault_rate=rate, min_history=0,
                                   strength=strengths[k % len(strengths)]):
                out.append({**e, HELD: e.get(HELD, 0)})
                got += int(e["label"])
                n_held += 1
        if got >= positives:
            break
    out.sort(key=lambda e: e["ts"])
    return out


def after_fault(events: Sequence[Mapping[str, Any]], window: int,
                marked: Callable[[Mapping[str, Any]], bool] = lambda e: bool(e.get("label"))) -> np.ndarray:
    """Normal rows whose window still holds a faulty reading of their asset (the ``window - 1`` rows after a fault).

    With ``marked=is_held``: the rows whose window still holds a held-out reading.

    A window part (``Dbar``, ``Rbar``, ``Lbar``) describes the last ``window`` readings, so it stays
    high for that long after a fault ends; counted as false positives there, those rows made a
    per-reading AUPRC rank the window parts below single-reading ones on lasting faults they catch
    far better. They are left out when parts are chosen and compared.

    >>> after_fault([{"asset_id": "a", "label": l} for l in (0, 1, 1, 0, 0, 0)], 3).tolist()
    [False, False, False, True, True, False]
    """
    since: dict[Any, int] = {}
    out = np.zeros(len(events), dtype=bool)
    for i, e in enumerate(events):
        a = e.get("asset_id")
        if marked(e):
            since[a] = 0
        elif a in since:
            since[a] += 1
            out[i] = since[a] < window
    return out


def is_held(event: Mapping[str, Any]) -> bool:
    """Whether ``split_by_asset`` held the row out."""
    return HELD in event


def held_rows(data: sd.Encoded, events: Sequence[Mapping[str, Any]]) -> sd.Encoded:
    """The rows of ``data`` (encoded from ``events``) that are held out."""
    return data.take([i for i, e in enumerate(events) if is_held(e)])


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
               resume: str | Path | None, log: Log, parts: Sequence[str] | None = None
               ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Encode, train, calibrate: the steps build and fine-tune share. Returns (training summary, calibration report, sets)."""
    from models import sensor_train as st
    from streamer.synth.sensors import inject_faults

    t0 = time.perf_counter()
    types = card["sensor_model"]["types"]
    window = int(card["sensor_model"]["window"])
    # every row is encoded in its asset's unbroken stream, as a worker meets it: encoded without the
    # held-out blocks between them, a window (and the recent-history means) would span each gap as if
    # the readings after it followed the ones before at once, a jump that normal running never makes
    stream = sorted([dict(e) for e in train_events] + [dict(e) for e in held_events], key=lambda e: e["ts"])
    whole = sd.encode(stream, card, source="normal")
    held_n = held_rows(whole, stream)  # the continuation of their asset's stream (its baseline already formed)
    train_rows = [i for i, e in enumerate(stream) if not is_held(e)]
    train_cont = whole.take(train_rows)  # calibration and checks: every training reading
    # the network learns from windows of training readings only: a window that holds a held-out
    # reading would make it forecast the rows the calibration then scores as unseen
    near = after_fault(stream, window, is_held)
    clear = [i for i in train_rows if not near[i]]
    train_n = whole.take(clear)
    injected = list(inject_faults(stream, seed=int(inject["seed"]), fault_rate=float(inject["fault_rate"])))
    train_i = sd.encode(injected, card, source="normal with injected faults").take(clear)
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
        return auprc(val_y, o["logit"]) or 0.0

    summary = st.train(model, pools, cfg, select=select if val_y.sum() else None, checkpoint_dir=out / ".train",
                       resume=resume, log=log)
    budgets = {n: alert_budget(types[n]["cadence_ms"], false_alarms_per_day) for n in types}
    halves = np.asarray([e[HELD] for e in stream if is_held(e)])
    lingering = after_fault(held_inj_events, window)  # on the whole stream, then its held rows
    report = calibrate(card, st.outputs(model, held_n, card), held_n, st.outputs(model, held_i, card), held_i, budgets,
                       halves, log, operator_parts=parts, ignore=lingering[[is_held(e) for e in held_inj_events]],
                       # the training-readings alarm check covers multi-sensor types only: no forward pass without one
                       training=(st.outputs(model, train_cont, card), train_cont)
                       if any(not t.get("novelty") for t in types.values()) else None)
    return summary, report, {"held_injected": held_i, "held_injected_events": [e for e in held_inj_events if is_held(e)],
                             "held_normal": held_n,
                             "budgets": budgets, "train_rows": len(train_rows)}


def _finish(out: Path, card: dict[str, Any], model: Any, held: sd.Encoded, variants: Sequence[str], measure_speed: bool,
            log: Log) -> dict[str, Any]:
    """Export, check parity, measure speed, write the bundle; returns the checks."""
    from models.bundle import CHECKPOINT_DIR, VARIANT_FILES, write_card
    from models.sensor_export import export_all, throughput

    out.mkdir(parents=True, exist_ok=True)
    for stale in ("tokenizer.json", *(f for k, f in VARIANT_FILES.items() if k != "fp32" and k not in variants)):
        (out / stale).unlink(missing_ok=True)  # left by an older build (a token model) in the same directory
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


def _write_final_card(out: Path, card: dict[str, Any], t_start: float, what: str, log: Log) -> dict[str, Any]:
    """The card with its build time, rounded (thresholds and the sensor model exact), written over the one
    ``_finish`` wrote; the training checkpoints removed. Returns the card as written."""
    from models.bundle import write_card

    card["training"]["build_wall_s"] = round(time.perf_counter() - t_start, 1)
    card = {k: (v if k in ("thresholds", "sensor_model") else _round(v)) for k, v in card.items()}
    write_card(out, card)
    shutil.rmtree(out / ".train", ignore_errors=True)
    log(f"{what} written to {out} in {card['training']['build_wall_s']:.0f}s")
    return card


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
        raise ValueError(f"{path}: a checkpoint of another model (not the sensor window model of sensor-v5 or later); rebuild the base "
                         "bundle with `streamer model train --kind sensor`")
    model = SensorNet(DeepseekV3Config(**cfg["backbone"]), slots=cfg["slots"], channels=cfg["channels"], embed=cfg["embed"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval()


# -- build ------------------------------------------------------------------------------------


def build(out: str | Path, *, preset: str | None = None, steps_scale: float = 1.0, data_scale: float = 1.0,
          resume: str | Path | None = None, seed: int | None = None, threads: int = 1, progress: bool = True,
          name: str | None = None, version: str | None = None, command: str | None = None, nab: bool | None = None,
          variants: Sequence[str] = ("fp16", "int8"), measure_speed: bool = True, baselines: bool = True,
          warmup: int | None = None, log: Log = _log, **_: Any) -> dict[str, Any]:
    """Train the shipped sensor bundle from its recipe into ``out``; returns the card.

    ``nab``, ``variants``, ``measure_speed``, ``baselines`` and ``warmup`` (the recipe's 128
    readings per asset) exist so tests can build a tiny bundle in seconds.
    """
    from models.bundle import git_commit
    from models.sensor_model import architecture
    from models.sensor_model import build as build_net
    from models.sensor_train import SensorTrainConfig
    from models.train import resolve_threads
    from streamer.synth.sensors import generate

    t_start = time.perf_counter()
    recipe = dict(sr.RECIPE)
    if warmup is not None:
        recipe["warmup"] = warmup
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
    marked, train_ev, held_ev = split_by_asset(normal, recipe["validation_fraction"], recipe["warmup"])
    types = fit.fit_types(marked, warmup=recipe["warmup"], window=recipe["window"], adapt=recipe.get("adapt") or 0,
                          held_key=HELD)
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
    return _write_final_card(out, card, t_start, "bundle", log)


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


def fine_tune_sensor(bundle: str | Path, train_path: str | Path, out: str | Path, *, steps: int = 300, lr: float = 1e-3,
                     batch_size: int = 64, val_fraction: float = 0.2, fault_rate: float = 0.08, seed: int = 0,
                     threads: int = 0, progress: bool = True, version_suffix: str = "ft", command: str | None = None,
                     warmup_readings: int | None = None, false_alarms_per_day: float = 1.0,
                     resume: str | Path | None = None, variants: Sequence[str] = ("fp16", "int8"),
                     measure_speed: bool = True, baselines: bool = True, parts: str | Sequence[str] | None = None,
                     log: Log = _log, **_: Any) -> dict[str, Any]:
    """Adapt the base sensor bundle to a user's normal-only readings (asset types and sensor names may be new).

    ``parts`` (``--parts R,Rbar,S``) sets the score's parts for the multi-sensor types instead of the
    automatic choice: for an operator who knows the faults to expect (a lasting small offset is seen
    by the window parts, which the automatic choice can leave out; see docs/model-card.md).
    """
    from models.bundle import CHECKPOINT_DIR, git_commit, read_card
    from models.dataset import DataError
    from models.sensor_model import architecture
    from models.sensor_train import SensorTrainConfig
    from models.train import resolve_threads

    t_start = time.perf_counter()
    parts = check_parts(parts) if parts else None  # before the long run
    threads = resolve_threads(threads)
    base = read_card(bundle)
    if base.get("kind") != "sensor" or not reads(enc, base.get("encoding_version")):
        raise ValueError(f"{bundle}: a {base.get('kind')!r} bundle with encoding {base.get('encoding_version')!r}; "
                         f"fine-tune needs a sensor bundle of encoding {enc.ENCODING_VERSION!r}")
    model = load_checkpoint(Path(bundle) / CHECKPOINT_DIR)
    events = read_normal(train_path)
    if len(events) < fit.MIN_READINGS:
        raise DataError(f"{train_path}: {len(events)} events; need at least {fit.MIN_READINGS} normal readings")
    sm = base["sensor_model"]
    warm = int(warmup_readings or sm.get("warmup", enc.DEFAULT_WARMUP))
    marked, train_ev, held_ev = split_by_asset(events, val_fraction, warm)
    try:
        types = fit.fit_types(marked, warmup=warm, window=int(sm["window"]), existing=sm.get("types"), held_key=HELD)
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
                            select_every=max(1, min(50, steps)), seed=seed, threads=threads, progress=progress)
    try:
        summary, report, sets = _fit_model(card, train_ev, held_ev, model=model, cfg=cfg,
                                           inject={"seed": seed + 11, "fault_rate": fault_rate},
                                           false_alarms_per_day=false_alarms_per_day, out=out, resume=resume, log=log,
                                           parts=parts)
    except fit.FitError as exc:
        raise DataError(f"{train_path}: {exc}") from None
    card["architecture"] = {**architecture(model), "init": f"fine-tuned from {base['name']}@{base['version']}"}
    card["training"] = {"base": f"{base['name']}@{base['version']}", "data": str(train_path), "summary": summary,
                        "seed": seed, "threads": threads, "command": command, "new_sensors": new_names,
                        "commit": git_commit(Path(__file__).resolve().parent.parent), "validation_fraction": val_fraction,
                        "false_alarms_per_day": false_alarms_per_day, "parts": list(parts) if parts else None,
                        "inject": {"seed": seed + 11, "fault_rate": fault_rate},
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
    return _write_final_card(out, card, t_start, "fine-tuned sensor bundle", log)


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


