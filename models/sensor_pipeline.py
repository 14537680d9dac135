"""Sensor bundles end to end: recipe -> normalization -> curriculum -> ONNX -> metrics + NAB -> bundle.

The kind-agnostic steps (tokenizer, classifier, training loop, export, metrics,
baselines, bundle writer) are ``models.*``; this module adds what sensors need:
fitted normalization in the card (the encoding refuses sensors without it), the
NAB stage and NAB scoring, and fine-tuning from normal-only data.

NAB is scored through the worker's own per-event path (``streamer.intake.Intake``
+ ``streamer.scorer.Scorer``: validation, window, encoding, tokenizer, ONNX), so
the score in the card is what the shipped bundle does on that data, with no
post-processing: the encoding's long-memory envelope features already make a
sustained excursion score high once, at its start, rather than on every reading.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import orjson

from models import dataset as ds
from models import sensor_recipe as sr
from models.pipeline import Split, _round, default_workers, parallel_map, per_typology
from streamer.encoding import sensors as enc
from streamer.tokens import TokenEncoder

Log = Callable[[str], None]
NAB_POLICY = (
    "policy (a): no NAB label is used for training: stage two trains on NAB values with synthetic faults "
    "injected, with soft targets from a label-free novelty teacher (a function of the encoding's features). "
    "Not label-free: the design of the encoding's novelty feature (time-of-day profile, its weight) and the "
    "teacher's centre were chosen by exploring NAB scores on the whole corpus, as NAB entries tune their "
    "detectors; the same design scored 67.1 and 63.0 (standard) on the two halves of the corpus (even/odd "
    "series). Thresholds are optimized per profile over the whole corpus, as NAB's own protocol does for "
    "every detector. Normalization for the sensor 'value' is fitted on the probationary 15% of each series only."
)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_NOVELTY = [enc.FEATURE_NAMES.index(f"top1_{k}") for k in ("env", "menv")]
_TEACHER = enc.FEATURE_NAMES.index("novelty")


def prepare(specs: Sequence[Mapping[str, Any]], card: Mapping[str, Any], require_label: bool = True,
            limit: int | None = None) -> Split:
    """Encode each spec as its own stream (own windows) through ``models.dataset.rows``; keep fault types.

    Spec options for self-supervised target data (why: the unlabelled series contain real anomalies that
    must not be taught as "normal", and an alert is wanted when a fault *starts*):

    - ``"labels": "onset"`` with ``"onset_k"``: an injected fault is positive for its first k readings
      only; its later readings are negatives (they are no longer news);
    - ``"pu": true``: readings *without* an injected fault whose value (or short mean) is already outside
      the asset's long-run range are left out: unlabelled, possibly anomalous, not negatives. (Natural
      quiet spells, repeats and bursts stay negatives: real metrics have plenty of them.)
    - ``"teacher": true``: every reading also gets a soft target from the label-free novelty teacher
      (``sensor_recipe.teacher``, a function of the encoding's own ``novelty`` feature); the target is
      the larger of that and the reading's 0/1 label. Real anomalies in the unlabelled series are then
      taught as graded novelty instead of being dropped or called normal.
    - ``"labels": "teacher"``: the teacher alone; injected faults count only through the novelty
      they create. (Onset labels on top of it taught the first readings of injected drifts, which
      look like nothing yet, as alarms: label noise that cost 5 NAB points.)

    ``targets`` is filled for every row (the 0/1 label where no teacher is used).
    """
    out = Split()
    for spec in specs:
        typ: list[str | None] = []
        ages: list[int | None] = []

        def tap(stream: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
            for e in stream:
                typ.append(e.get("fault_type"))
                ages.append(e.get("fault_age"))
                yield e

        onset_k = int(spec.get("onset_k", 3)) if spec.get("labels") == "onset" else None
        pu = bool(spec.get("pu"))
        only_teacher = spec.get("labels") == "teacher"
        teach = bool(spec.get("teacher")) or only_teacher
        src = (sr.describe(spec) + (f" labels=onset(k={onset_k})" if onset_k else "") + (" pu" if pu else "")
               + (f" labels=teacher{sr.TEACHER}" if only_teacher else f" teacher={sr.TEACHER}" if teach else ""))
        it = ds.rows(tap(sr.events(spec)), enc, card, require_label=require_label, source=src)
        for i, r in enumerate(itertools.islice(it, limit)):
            y = int(r.label or 0)
            injected = typ[i] is not None
            if pu and not injected and max(r.vector[j] for j in _NOVELTY) > 0:
                continue
            if onset_k is not None and injected:
                y = int(ages[i] is not None and ages[i] < onset_k)
            if only_teacher:
                t = sr.teacher(r.vector[_TEACHER])
            else:
                t = max(float(y), sr.teacher(r.vector[_TEACHER])) if teach else float(y)
            out.texts.append(r.text)
            out.labels.append(int(t >= 0.5) if teach else y)
            out.targets.append(t)
            out.vectors.append(r.vector)
            out.typologies.append(typ[i])
        out.sources.append(src)
    return out


def _prepare_job(job: tuple[Mapping[str, Any], Mapping[str, Any], int | None]) -> Split:
    spec, card, limit = job
    return prepare([spec], card, limit=limit)


def prepare_many(jobs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], int | None]], workers: int = 1) -> list[Split]:
    """``prepare`` for many independent specs, in ``workers`` processes; results in ``jobs`` order.

    Each spec is its own stream with its own windows, so the rows are identical whatever the
    worker count. Data preparation is most of a sensor build's wall time; two cores halve it.
    """
    return parallel_map(_prepare_job, jobs, workers)


def default_normalization(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Sensor statistics for the shipped bundle: synthetic fleets' sensors, plus NAB's ``value`` from probation only."""
    specs = [s for st in recipe["stages"] for s in st["data"] if "synth" in s]
    evs = itertools.chain.from_iterable(sr.events({"synth": {**s["synth"], "n_events": min(s["synth"]["n_events"], 30_000)}})
                                        for s in specs)
    norm = sr.fit_normalization(evs)
    if recipe.get("nab"):
        norm = sr.merge_normalization(norm, sr.fit_normalization(sr.nab_probation_events()))
    norm["fitted_on"] = "synthetic stage data (first 30k events per spec); NAB 'value': probationary 15% of each series"
    return norm


# -- NAB through the worker path -------------------------------------------------------------


def _nab_job(job: tuple[str, list[Any], int, int, str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    bundle_dir, corpus, threads, batch, precision = job
    novelty: dict[str, np.ndarray] = {}
    scores = nab_scores(bundle_dir, corpus, threads=threads, batch=batch, precision=precision, workers=1,
                        novelty_out=novelty, log=lambda m: None)
    return scores, novelty


def nab_scores(bundle_dir: str | Path, corpus: Sequence[Any] | None = None, threads: int = 1, batch: int = 256,
               precision: str = "fp32", workers: int | None = 1, novelty_out: dict[str, np.ndarray] | None = None,
               log: Log = _log) -> dict[str, np.ndarray]:
    """Per-series scores of a bundle on NAB, event by event as the worker would score them.

    ``workers`` > 1 scores disjoint sets of series in that many processes (each series is its
    own asset with its own window, so the scores are the same). ``novelty_out``, if given, is
    filled with the encoding's ``novelty`` feature per row: the label-free teacher's own scores,
    the reference the model is compared with.
    """
    from models import nab
    from streamer.bundle import load_bundle
    from streamer.intake import Intake, Item
    from streamer.scorer import Scorer

    corpus = list(corpus) if corpus is not None else nab.load_corpus()
    workers = default_workers() if workers is None else workers
    if workers > 1 and len(corpus) > 1:
        t0 = time.perf_counter()
        shares: list[list[Any]] = [[] for _ in range(workers)]
        sizes = [0] * workers
        for s in sorted(corpus, key=lambda s: -len(s.ts)):  # longest first, each to the lightest share
            k = sizes.index(min(sizes))
            shares[k].append(s)
            sizes[k] += len(s.ts)
        jobs = [(str(bundle_dir), sh, threads, batch, precision) for sh in shares if sh]
        merged: dict[str, np.ndarray] = {}
        for part, nov in parallel_map(_nab_job, jobs, len(jobs)):
            merged.update(part)
            if novelty_out is not None:
                novelty_out.update(nov)
        log(f"NAB: scored {sum(sizes)} events in {time.perf_counter() - t0:.0f}s ({len(jobs)} processes)")
        return {s.name: merged[s.name] for s in corpus}
    bundle = load_bundle(bundle_dir, precision=precision)
    scorer = Scorer(bundle, "cpu", precision, threads)
    out: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for s in corpus:
        intake = Intake(bundle)  # fresh windows per series (each is its own asset anyway)
        texts: list[str] = []
        nov: list[float] = []
        for i, ev in enumerate(nab.to_events(s, with_labels=False)):
            item = intake.accept("nab", 0, i, orjson.dumps(ev))
            if not isinstance(item, Item):
                raise ValueError(f"NAB {s.name} row {i}: rejected by the bundle: {item.error}")
            texts.append(item.inputs)
            nov.append(float(item.feats.get("novelty", 0.0)))
        if novelty_out is not None:
            novelty_out[s.name] = np.asarray(nov)
        sc = np.empty(len(texts))
        for b in range(0, len(texts), batch):
            sc[b : b + batch] = scorer.score_texts(texts[b : b + batch])[0]
        out[s.name] = sc
    log(f"NAB: scored {sum(len(v) for v in out.values())} events in {time.perf_counter() - t0:.0f}s")
    return out


def nab_report(scores: Mapping[str, Sequence[float]], corpus: Sequence[Any] | None = None,
               novelty: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """NAB results per profile (normalized score, raw, threshold) for the card.

    With ``novelty`` (the teacher's scores), its results are reported beside the model's: the
    model learned from that teacher, so the pair shows what learning it kept and lost.
    """
    from models import nab

    corpus = corpus if corpus is not None else nab.load_corpus()
    res = nab.score_all_profiles(corpus, scores)
    extra: dict[str, Any] = {}
    if novelty is not None:
        extra["teacher_profiles"] = {k: {"score": round(r.normalized, 2), "threshold": r.threshold}
                                     for k, r in nab.score_all_profiles(corpus, novelty).items()}
        extra["teacher"] = "the encoding's `novelty` feature scored directly (sensor_recipe.teacher grades it)"
    std = res["standard"]
    extra["standard_per_series"] = nab.series_breakdown(corpus, scores, "standard", std.threshold)
    return {**extra,
        "profiles": {k: {"score": round(r.normalized, 2), "raw": round(r.raw, 3), "threshold": r.threshold,
                         "null_raw": round(r.null, 3), "perfect_raw": round(r.perfect, 3)} for k, r in res.items()},
        "series": len(corpus), "windows": sum(len(s.windows) for s in corpus),
        "held_out": NAB_POLICY,
        "scoring": "models/nab.py: NAB v1 rules (scaled sigmoid, earliest detection per window, 15% probation "
                   "capped at 750 rows, per-profile corpus-wide threshold optimization, 0-100 between the null and "
                   "perfect detectors); scores from the worker's intake + ONNX path; no detection post-processing",
        "command": "python -m models.nab --bundle streamer/bundles/sensors",
        "references_standard": {"Numenta HTM": 70.5, "ARTime": 74.9, "KNN CAD": 58.0, "Random Cut Forest": 51.7},
    }


# -- build -----------------------------------------------------------------------------------


def build(
    out: str | Path,
    *,
    preset: str | None = None,
    steps_scale: float = 1.0,
    data_scale: float = 1.0,
    resume: str | Path | None = None,
    base: str | Path | None = None,
    lora: Mapping[str, Any] | None = None,
    baselines: bool = True,
    seed: int | None = None,
    threads: int = 1,
    progress: bool = True,
    name: str | None = None,
    version: str | None = None,
    command: str | None = None,
    nab: bool | None = None,
    variants: Sequence[str] = ("fp16", "int8"),
    measure_speed: bool = True,
    workers: int | None = None,
    log: Log = _log,
    **_: Any,
) -> dict[str, Any]:
    """Train the sensor bundle from its recipe and write it to ``out``; returns the card.

    ``nab``, ``variants`` and ``measure_speed`` exist so tests can build a tiny bundle in seconds.
    ``workers``: processes for data preparation and NAB scoring (None: one per core, up to 4;
    one for small test builds). They change wall time only, never the bundle.
    """
    import torch

    from models import classifier as clf
    from models import evaluate as ev
    from models import recipes
    from models import tokenizer as tk
    from models.bundle import VARIANT_FILES, git_commit, serving_fields, write_bundle, write_card
    from models.pipeline import evaluate_model_on, export_and_check, speed
    from models.train import Stage, TrainConfig, resolve_threads, train

    t_start = time.perf_counter()
    recipe = recipes.get("sensor")
    threads = resolve_threads(threads)  # recorded in the card as used
    version = version or recipe.get("version", "1.0.0")
    use_nab = recipe.get("nab", False) if nab is None else nab
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = recipe["seed"] if seed is None else seed
    preset = preset or recipe["preset"]
    window = dict(enc.WINDOW)

    def scaled(specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        res = []
        for s in specs:
            if "nab_inject" in s and not use_nab:
                continue
            s = dict(s)
            if "synth" in s and data_scale != 1.0:
                s["synth"] = {**s["synth"], "n_events": max(500, int(s["synth"]["n_events"] * data_scale))}
            res.append(s)
        return res

    t0 = time.perf_counter()
    norm = default_normalization({**recipe, "nab": use_nab})
    card_ctx = {"name": name or "sensors-deepseek", "version": version, "window": window, "normalization": norm}
    nab_limit = None if data_scale >= 1.0 else max(2000, int(365_000 * data_scale))
    if workers is None:
        workers = default_workers(data_scale)
    jobs: list[tuple[Mapping[str, Any], Mapping[str, Any], int | None]] = []
    stage_specs = [(st, scaled(st["data"])) for st in recipe["stages"]]
    for _, specs in stage_specs:
        jobs += [(s, card_ctx, nab_limit if "nab_inject" in s else None) for s in specs]
    eval_sets = {"validation": scaled(recipe["validation"]), "test": scaled(recipe["test"]),
                 "test_small": recipe.get("test_small") or []}
    for specs in eval_sets.values():
        jobs += [(s, card_ctx, None) for s in specs]
    done = iter(prepare_many(jobs, workers))
    stage_splits = []  # (stage, all its rows, the replay part of them)
    replays: list[Split] = []
    for st, specs in stage_specs:
        parts = [next(done) for _ in specs]
        if not specs:
            continue
        main, rep = Split(), Split()
        for spec, p in zip(specs, parts):  # a spec marked "replay" is drawn at the stage's replay_fraction
            (rep if spec.get("replay") else main).extend(p)
        replays.append(rep)
        main.extend(rep)
        stage_splits.append((st, main))
    evals: dict[str, Split] = {}
    for key, specs in eval_sets.items():
        evals[key] = Split()
        for _ in specs:
            evals[key].extend(next(done))
    val, test = evals["validation"], evals["test"]
    small = evals["test_small"] if eval_sets["test_small"] else None
    t_data = time.perf_counter() - t0
    log(f"data: {sum(len(s.labels) for _, s in stage_splits)} training rows, {len(val.labels)} validation, "
        f"{len(test.labels)} test in {t_data:.0f}s")

    tok = tk.train((t for _, s in stage_splits for t in s.texts), enc.VOCABULARY)
    tok_path = tk.save(tok, out / "tokenizer.json")
    tokens = TokenEncoder(tok_path, recipe["max_seq_len"], recipe["buckets"])
    torch.manual_seed(seed)
    init: Any = "random"
    if base is not None:  # a local pretrained checkpoint, fine-tuned with LoRA (head trained fully), merged for export
        model, init = clf.lora_from_base(base, lora, tokens.pad_id, tok.get_vocab_size())
    else:
        model = clf.build(clf.make_config(preset, tok.get_vocab_size(), tokens.pad_id, recipe["max_seq_len"]), seed=seed)

    stages = []
    for (st, split), rep in zip(stage_splits, replays):
        steps = max(1, int(st["steps"] * steps_scale))
        soft = any(spec.get("teacher") or spec.get("labels") == "teacher" for spec in st["data"])
        n = len(split.labels) - len(rep.labels)  # the stage's own rows come first, its replay rows last
        if n == 0:  # only replay data (NAB left out of a test build): train on it as the stage's own
            n, rep = len(split.labels), Split()
        ids = ds.token_ids(split.texts, tokens)
        stage = Stage(name=st["name"], ids=ids[:n], labels=split.labels[:n], steps=steps,
                      lr=st["lr"], pos_fraction=st["pos_fraction"], warmup=min(st.get("warmup", 100), max(1, steps // 5)),
                      targets=split.targets[:n] if soft else None,
                      summary={"data": split.sources, **({"soft_targets": "teacher"} if soft else {})})
        if len(rep.labels):
            stage.replay_ids, stage.replay_labels = ids[n:], split.labels[n:]
            stage.replay_targets = split.targets[n:] if soft else None
            stage.replay_fraction = float(st.get("replay_fraction", 0.1))
        stages.append(stage)
    cfg = TrainConfig(batch_size=recipe["batch_size"], seed=seed, threads=threads, progress=progress)
    summary = train(model, stages, tokens.pad, cfg, checkpoint_dir=out / ".train", resume=resume, log=log)
    log(f"training: {summary['wall_s']:.0f}s")
    model = clf.merge_lora(model)

    graphs, checks = export_and_check(model, out, tokens, test.texts[:2000], variants=variants, log=log)
    val_scores = ev.score_onnx(graphs["fp32"], tokens, val.texts)
    thresholds = ev.choose_thresholds(val.labels, val_scores, recipe.get("alert_fpr", 1e-3))
    metrics: dict[str, Any] = {"validation": {"model": ev.metrics(val.labels, val_scores, thresholds["alert"]),
                                              "data": val.sources}}
    m, test_scores = evaluate_model_on(graphs["fp32"], tokens, test, thresholds)
    metrics["test"] = {"data": test.sources, "model": m,
                       "model_per_fault_type": per_typology(test, test_scores, thresholds["alert"])}
    log(f"test: model AUPRC {m['auprc']:.4f} recall@0.1%FPR {m['recall_at_fpr_0.1%']:.4f}")
    if small is not None:
        ms, _ = evaluate_model_on(graphs["fp32"], tokens, small, thresholds)
        metrics["test_small"] = {"data": small.sources, "model": ms,
                                 "note": "re-evaluated by tests/test_sensor_models.py to check reproduction"}
    for vname in graphs:
        if vname != "fp32":
            mv, _ = evaluate_model_on(graphs[vname], tokens, test, thresholds)
            checks[vname]["test_metrics"] = mv
            checks[vname]["test_metric_deltas_vs_fp32"] = {k: mv[k] - m[k] for k in ("auprc", "roc_auc", "f1", "recall")}
    if measure_speed:
        perf = speed(graphs, tokens, test.texts)
        for vname in graphs:
            checks[vname]["speed"] = perf[vname]

    if baselines:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        x_tr = np.concatenate([s.x for _, s in stage_splits])
        y_tr = np.concatenate([s.y for _, s in stage_splits])
        keep = rng.choice(len(y_tr), size=min(len(y_tr), 150_000), replace=False)
        gbt, gbt_info = ev.gbt_baseline(x_tr[keep], y_tr[keep], val.x, val.y, seed=seed, grid=ev.GBT_GRID[:1])
        g_thr = ev.choose_thresholds(val.labels, ev.gbt_scores(gbt, val.x), recipe.get("alert_fpr", 1e-3))["alert"]
        normal_rows = stage_splits[0][1].x[stage_splits[0][1].y == 0][:20_000]
        hst = ev.HSTBaseline(enc.FEATURE_NAMES, normal_rows, seed=seed)
        h_thr = ev.choose_thresholds(val.labels, hst.score_stream(val.x), recipe.get("alert_fpr", 1e-3))["alert"]
        g = ev.gbt_scores(gbt, test.x)
        h = hst.score_stream(test.x)
        metrics["test"]["gbt"] = ev.metrics(test.labels, g, g_thr)
        metrics["test"]["gbt_per_fault_type"] = per_typology(test, g, g_thr)
        metrics["test"]["hst"] = ev.metrics(test.labels, h, h_thr)
        metrics["test"]["hst_per_fault_type"] = per_typology(test, h, h_thr)
        log(f"test: GBT AUPRC {metrics['test']['gbt']['auprc']:.4f} HST AUPRC {metrics['test']['hst']['auprc']:.4f}")
        metrics["baselines"] = {"features": list(enc.FEATURE_NAMES), "gbt": gbt_info, "hst": hst.params,
                                "trained_on": "GBT: 150k rows sampled from all curriculum rows (labels); HST: warm-up on "
                                              "20k normal stage-one rows (no labels), then score-then-learn",
                                "thresholds": "each at its own validation FPR 0.1% threshold",
                                "wall_s": round(time.perf_counter() - t0, 1)}

    card: dict[str, Any] = {
        "name": card_ctx["name"],
        "version": version,
        "kind": "sensor",
        **serving_fields(enc, recipe["max_seq_len"], tokens, tok, window),
        "thresholds": thresholds,
        "normalization": norm,
        "architecture": {**clf.architecture(model), "preset": None if base is not None else preset, "init": init},
        "training": {
            "curriculum": summary["stages"], "seed": seed, "threads": threads, "batch_size": cfg.batch_size,
            "train_wall_s": summary["wall_s"], "data_prep_s": round(t_data, 1), "build_wall_s": None,
            "command": command, "commit": git_commit(Path(__file__).resolve().parent.parent),
            "nab_policy": NAB_POLICY if use_nab else "NAB not used",
            "deterministic": "torch.use_deterministic_algorithms(True); batches are a function of (seed, stage, step)",
            "eval_specs": {"validation": recipe["validation"], "test": recipe["test"],
                           "test_small": recipe.get("test_small")},
        },
        "metrics": metrics,
        "variant_checks": checks,
    }
    card = {k: (v if k in ("thresholds", "normalization") else _round(v)) for k, v in card.items()}
    write_bundle(out, graphs, tok_path, card, model=model)
    if use_nab:
        novelty: dict[str, np.ndarray] = {}
        scores = nab_scores(out, threads=1, workers=workers, novelty_out=novelty, log=log)
        card["metrics"]["nab"] = nab_report(scores, novelty=novelty)
        log("NAB: " + ", ".join(f"{k} {v['score']:.1f}" for k, v in card["metrics"]["nab"]["profiles"].items()))
    card["training"]["build_wall_s"] = round(time.perf_counter() - t_start, 1)
    card = {**card, "variants": {k: VARIANT_FILES[k] for k in graphs}}
    write_card(out, card)
    shutil.rmtree(out / ".train", ignore_errors=True)
    log(f"bundle written to {out} in {card['training']['build_wall_s']:.0f}s")
    return card


# -- fine-tune from normal-only data ------------------------------------------------------------


def fine_tune_sensor(
    bundle: str | Path,
    train_path: str | Path,
    out: str | Path,
    *,
    steps: int = 400,
    lr: float = 3e-4,
    batch_size: int = 128,
    pos_fraction: float = 0.3,
    val_fraction: float = 0.2,
    fault_rate: float = 0.08,
    replay_events: int = 20_000,
    lora: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
    version_suffix: str = "ft",
    command: str | None = None,
    variants: Sequence[str] = ("fp16", "int8"),
    log: Log = _log,
    **_: Any,
) -> dict[str, Any]:
    """Adapt a sensor bundle to a user's normal-only readings (sensor names may be new).

    1. fit normalization (fleet-wide and per asset) on the training part and add it to the card,
       so the encoding accepts the new sensor names;
    2. inject synthetic faults into the user's stream (``inject_faults``: scaled to each asset's own
       spread) -- the data as it is is "normal", the injected readings are "faulty";
    3. fine-tune from the bundle's checkpoint, with a replay of synthetic fleets against forgetting;
    4. re-pick thresholds on the newest ``val_fraction`` of the stream (time-ordered: the future never trains).
    """
    from transformers import DeepseekV3ForSequenceClassification

    from models import classifier as clf
    from models import evaluate as ev
    from models.bundle import CHECKPOINT_DIR, VARIANT_FILES, git_commit, read_card, write_bundle
    from models.pipeline import export_and_check
    from models.train import Stage, TrainConfig, resolve_threads, train
    from streamer.bundle import load_bundle
    from streamer.synth.sensors import inject_faults
    from streamer.validation import Invalid, check_sensor

    t_start = time.perf_counter()
    threads = resolve_threads(threads)  # recorded in the card as used
    base = load_bundle(bundle)
    card = read_card(bundle)
    if card.get("kind") != "sensor":
        raise ValueError(f"{bundle}: a {card.get('kind')!r} bundle; fine_tune_sensor needs a sensor bundle")
    ck = Path(bundle) / CHECKPOINT_DIR
    if not (ck / "config.json").is_file():
        raise FileNotFoundError(f"{bundle}: no {CHECKPOINT_DIR}/ with torch weights; rebuild it with `model train`")

    events: list[dict[str, Any]] = []
    for i, raw in enumerate(ds.read_jsonl(train_path), 1):
        try:
            e = check_sensor(dict(raw))
        except Invalid as exc:
            raise ds.DataError(f"{train_path}: row {i} (event_id={raw.get('event_id')!r}): {exc}") from None
        events.append({k: v for k, v in e.items() if k != "label" or v is not None})
    n = len(events)
    if n < 50:
        raise ValueError(f"{train_path}: {n} events; need at least 50 normal readings to fit and fine-tune")
    cut = int(n * (1 - val_fraction))
    try:
        fitted = sr.fit_normalization(events[:cut], per_asset=True)
    except sr.NormalizationError as exc:
        raise ValueError(f"{train_path}: {exc}") from None
    new_names = sorted(set(fitted["sensors"]) - set((card.get("normalization") or {}).get("sensors") or {}))
    norm = sr.merge_normalization(card.get("normalization"), fitted)
    norm["fitted_on"] = f"{(card.get('normalization') or {}).get('fitted_on', 'base')}; fine-tune: first {cut} events of {train_path}"
    new_card = {**card, "normalization": norm}
    log(f"fitted normalization for {len(fitted['sensors'])} sensors ({len(new_names)} new: {new_names[:8]}"
        f"{'...' if len(new_names) > 8 else ''}) over {len(fitted.get('assets', {}))} assets")

    injected = list(inject_faults(events, seed=seed, fault_rate=fault_rate))
    for e, src in zip(injected, events):  # readings the user labelled as faults stay faults
        if src.get("label") == 1:
            e["label"] = 1
    texts, labels, types = [], [], []
    for r, e in zip(ds.rows(injected, enc, new_card, source=str(train_path)), injected):
        texts.append(r.text)
        labels.append(int(r.label or 0))
        types.append(e.get("fault_type"))
    train_split = Split(texts[:cut], labels[:cut], [], types[:cut], [str(train_path)])
    val = Split(texts[cut:], labels[cut:], [], types[cut:], [str(train_path)])
    ids = ds.token_ids(train_split.texts, base.tokens)
    y = list(train_split.labels)
    replay = None
    if replay_events:
        spec = {"synth": {"n_events": replay_events, "seed": 9000 + seed, "fault_rate": 0.04, "n_assets": 12}}
        rep = prepare([spec], new_card)
        ids += ds.token_ids(rep.texts, base.tokens)
        y += rep.labels
        replay = {"data": rep.sources, "rows": len(rep.labels), "positives": int(sum(rep.labels))}

    model = DeepseekV3ForSequenceClassification.from_pretrained(ck, attn_implementation="eager")
    model = clf.use_dense_experts(model)
    if lora:
        model = clf.add_lora(model, **dict(lora))
    stage = Stage(name="fine-tune", ids=ids, labels=y, steps=steps, lr=lr, pos_fraction=pos_fraction,
                  warmup=min(50, max(1, steps // 5)),
                  summary={"data": f"{train_path} with injected faults (fault_rate={fault_rate}, seed={seed})",
                           "replay": replay})
    summary = train(model, [stage], base.tokens.pad, TrainConfig(batch_size=batch_size, seed=seed, threads=threads,
                                                                  progress=progress),
                    checkpoint_dir=Path(out) / ".train", log=log)
    model = clf.merge_lora(model)
    graphs, checks = export_and_check(model, Path(out), base.tokens, texts[:2000], variants=variants, log=log)
    val_scores = ev.score_onnx(graphs["fp32"], base.tokens, val.texts)
    target_fpr = card["thresholds"].get("target_fpr", 1e-3)
    thresholds = ev.choose_thresholds(val.labels, val_scores, target_fpr)
    thresholds["chosen_on"] = f"newest {val_fraction:.0%} of {train_path} (injected faults as positives)"
    metrics = {"validation": {"model": ev.metrics(val.labels, val_scores, thresholds["alert"]),
                              "model_per_fault_type": per_typology(val, val_scores, thresholds["alert"]),
                              "data": f"newest {val_fraction:.0%} of {train_path}, synthetic faults injected "
                                      f"(seed={seed}, fault_rate={fault_rate})"},
               "base_metrics": {"note": f"metrics of the base bundle {card['name']}@{card['version']}, "
                                        "not re-measured after fine-tuning", **(card.get("metrics") or {})}}
    out_card = dict(new_card)
    out_card.update(
        version=f"{card['version']}+{version_suffix}",
        thresholds=thresholds,
        metrics=_round(metrics),
        variant_checks=_round(checks),
        architecture={**clf.architecture(model), "init": f"fine-tuned from {card['name']}@{card['version']}",
                      "lora": dict(lora) if lora else None},
        training={
            "base": f"{card['name']}@{card['version']}", "base_training": card.get("training", {}).get("curriculum"),
            "curriculum": _round(summary["stages"]), "seed": seed, "threads": threads,
            "train_wall_s": summary["wall_s"], "command": command,
            "commit": git_commit(Path(__file__).resolve().parent.parent),
            "build_wall_s": round(time.perf_counter() - t_start, 1),
            "new_sensors": new_names,
            "rows": {"train": len(train_split.labels), "validation": len(val.labels),
                     "train_positives_injected": int(sum(train_split.labels))},
        },
    )
    write_bundle(out, graphs, Path(bundle) / "tokenizer.json", out_card, model=model)
    shutil.rmtree(Path(out) / ".train", ignore_errors=True)
    log(f"fine-tuned sensor bundle written to {out}")
    return {**out_card, "variants": {k: VARIANT_FILES[k] for k in graphs}}
