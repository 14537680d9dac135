"""Evaluating a sensor bundle through the worker's scorer, and the baselines fitted on the same normal data."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import orjson

from models import sensor_data as sd
from models import sensor_recipe as sr


def score_encoded(bundle_dir: str | Path, data: sd.Encoded, threads: int = 1, batch: int = 256) -> np.ndarray:
    """Scores of encoded rows through the bundle's ONNX graph and calibration (the worker's scorer)."""
    from streamer.bundle import load_bundle
    from streamer.scorer import make_scorer

    bundle = load_bundle(bundle_dir)
    scorer = make_scorer(bundle, "cpu", "fp32", threads)
    out = np.zeros(len(data))
    for idx in sd.row_batches(data, batch):
        out[idx] = scorer.score_batch([data.inputs[i] for i in idx]).scores
    return out


def score_stream(bundle: Any, scorer: Any, events: Iterable[Mapping[str, Any]], topic: str, name: str,
                 batch: int = 256) -> np.ndarray:
    """Scores of one stream, event by event through a fresh ``streamer.intake.Intake`` (the worker's validation,
    windows and encoding) and ``scorer``; an event the intake rejects is an error naming ``name`` and its row."""
    from streamer.intake import Intake, Item

    intake = Intake(bundle)
    inputs = []
    for i, ev in enumerate(events):
        item = intake.accept(topic, 0, i, orjson.dumps(ev))
        if not isinstance(item, Item):
            raise ValueError(f"{name} row {i}: rejected by the bundle: {item.error}")
        inputs.append(item.inputs)
    if not inputs:
        return np.zeros(0)
    return np.concatenate([scorer.score_batch(inputs[b : b + batch]).scores for b in range(0, len(inputs), batch)])


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
