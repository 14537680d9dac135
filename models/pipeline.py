"""End-to-end bundle builds: data -> tokenizer -> curriculum training -> ONNX -> evaluation -> bundle.

Kind-agnostic: the kind picks the encoding module, the synthetic generator and
the recipe (``models.recipes``). Each step lives in its own module; this one only
sequences them and assembles the card, so ``train``, ``fine-tune``, ``evaluate``
and ``export`` share one implementation of each step.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from models import dataset as ds
from models import recipes
from streamer.encoding import for_kind
from streamer.tokens import TokenEncoder

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Split:
    """Encoded rows of one data split, plus what produced them."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)
    typologies: list[str | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    targets: list[float] = field(default_factory=list)  # soft P(positive) per row, or empty (the labels)

    @property
    def x(self) -> np.ndarray:
        return np.asarray(self.vectors, dtype=np.float64)

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"data": self.sources, "rows": len(self.labels), "positives": int(sum(self.labels))}

    def extend(self, other: "Split") -> None:
        """Append ``other``'s rows and sources (splits of several specs are built part by part)."""
        for f in ("texts", "labels", "vectors", "typologies", "sources", "targets"):
            getattr(self, f).extend(getattr(other, f))


def prepare(specs: Sequence[Mapping[str, Any]], encoding: Any, card: Mapping[str, Any] | None = None,
            require_label: bool = True) -> Split:
    """Encode each spec as its own stream (own windows) and concatenate."""
    out = Split()
    for spec in specs:
        evs = recipes.events(spec, encoding.KIND)
        typ: list[str | None] = []

        def tap(stream):
            for e in stream:
                typ.append(e.get("fraud_type"))
                yield e

        src = recipes.describe(spec)
        for r in ds.rows(tap(evs), encoding, card, require_label=require_label, source=src):
            out.texts.append(r.text)
            out.labels.append(int(r.label or 0))
            out.vectors.append(r.vector)
        out.typologies.extend(typ)
        out.sources.append(src)
    return out


def parallel_map(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int = 1) -> list[Any]:
    """``[fn(j) for j in jobs]`` in up to ``workers`` fresh processes (``fn`` must be importable).

    For data preparation: the encoding is pure Python (the GIL rules out threads), each data
    spec is an independent stream, and the results do not depend on where they were computed.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(fn, jobs))


def default_workers(data_scale: float = 1.0) -> int:
    """Processes for a build's data preparation: one per core (up to 4); one for small test builds."""
    import os

    return 1 if data_scale < 0.2 else max(1, min(4, os.cpu_count() or 1))


def _prepare_one(job: tuple[str, Mapping[str, Any], Mapping[str, Any] | None]) -> Split:
    from streamer.encoding import for_kind

    kind, spec, card = job
    return prepare([spec], for_kind(kind), card)


def prepare_groups(groups: Sequence[Sequence[Mapping[str, Any]]], kind: str, card: Mapping[str, Any] | None = None,
                   workers: int = 1) -> list[Split]:
    """``[prepare(g, ...) for g in groups]`` with every spec of every group encoded in parallel."""
    jobs = [(kind, spec, card) for g in groups for spec in g]
    done = iter(parallel_map(_prepare_one, jobs, workers))
    out = []
    for g in groups:
        split = Split()
        for _ in g:
            split.extend(next(done))
        out.append(split)
    return out


def evaluate_model_on(graph: Any, tokens: TokenEncoder, split: Split, thresholds: Mapping[str, Any],
                      threads: int = 1) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of an ONNX graph on a split at the card's alert threshold (worker path)."""
    from models.evaluate import metrics, score_onnx

    scores = score_onnx(graph, tokens, split.texts, threads=threads)
    return metrics(split.labels, scores, thresholds["alert"]), scores


def per_typology(split: Split, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Recall at the alert threshold per fraud typology (when the split carries them)."""
    out: dict[str, Any] = {}
    typ = np.asarray([t or "" for t in split.typologies])
    if len(typ) != len(scores):
        return out
    for name in sorted(set(typ.tolist()) - {""}):
        sel = typ == name
        out[name] = {"events": int(sel.sum()), "recall": float((scores[sel] >= threshold).mean())}
    return out


def _round(obj: Any, nd: int = 6) -> Any:
    if isinstance(obj, float):
        return round(obj, nd)
    if isinstance(obj, dict):
        return {k: _round(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, nd) for v in obj]
    return obj


class Baselines:
    """GBT and HalfSpaceTrees fitted on the same rows and features as the model.

    GBT: all curriculum rows, grid point picked on validation AUPRC. HST:
    unlabelled warm-up on the last stage's rows, then score-then-learn. Each gets
    its own alert threshold at the same validation FPR as the model.
    """

    def __init__(self, encoding: Any, train_splits: Sequence[Split], val: Split, seed: int, alert_fpr: float,
                 threads: int = 1):
        from models import evaluate as ev

        t0 = time.perf_counter()
        x_tr = np.concatenate([s.x for s in train_splits])
        y_tr = np.concatenate([s.y for s in train_splits])
        self.gbt, self.gbt_info = ev.gbt_baseline(x_tr, y_tr, val.x, val.y, seed=seed, threads=threads)
        self.gbt_thr = ev.choose_thresholds(val.labels, ev.gbt_scores(self.gbt, val.x), alert_fpr)["alert"]
        self.hst = ev.HSTBaseline(encoding.FEATURE_NAMES, train_splits[-1].x[:50_000], seed=seed)
        self.hst_thr = ev.choose_thresholds(val.labels, self.hst.score_stream(val.x), alert_fpr)["alert"]
        self.names = list(encoding.FEATURE_NAMES)
        self.fit_s = time.perf_counter() - t0

    def evaluate(self, split: Split) -> dict[str, Any]:
        from models import evaluate as ev

        g = ev.gbt_scores(self.gbt, split.x)
        h = self.hst.score_stream(split.x)
        return {"gbt": ev.metrics(split.labels, g, self.gbt_thr), "gbt_per_typology": per_typology(split, g, self.gbt_thr),
                "hst": ev.metrics(split.labels, h, self.hst_thr)}

    def describe(self) -> dict[str, Any]:
        return {"features": self.names, "gbt": self.gbt_info, "hst": self.hst.params,
                "trained_on": "all curriculum rows (GBT); HST warm-up on target-stage rows, unlabelled",
                "thresholds": "each at its own validation FPR 0.1% threshold", "fit_s": round(self.fit_s, 1)}


def lean(split: Split) -> Split:
    """The split without its texts, its vectors as one array: what the baselines read, cheap to pickle."""
    return Split(vectors=split.x, labels=list(split.labels), typologies=list(split.typologies),
                 sources=list(split.sources))


def baselines_report(kind: str, train_splits: Sequence[Split], val: Split, named: Sequence[tuple[str, Split]],
                     seed: int, alert_fpr: float, threads: int = 1) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Fit the baselines, evaluate them on each named split: (metrics per split, ``Baselines.describe()``)."""
    base = Baselines(for_kind(kind), train_splits, val, seed, alert_fpr, threads=threads)
    return {name: base.evaluate(split) for name, split in named}, base.describe()


class BackgroundBaselines:
    """``baselines_report`` in a child process, started before and collected after the model's evaluation.

    Why: HalfSpaceTrees is River's pure-Python score-then-learn loop, about 100 s over
    the validation, test and stress streams of the transactions recipe, on one core;
    the model's ONNX evaluation leaves part of the other core idle (tokenizing and
    batching between runs). Run side by side they finish sooner than one after the
    other, and neither's numbers change: each side's inputs and order are fixed.
    The GBT fits at one thread here so the two sides do not oversubscribe the cores.
    The child is spawned, not forked: the parent has torch's OpenMP runtime loaded.
    """

    def __init__(self, kind: str, train_splits: Sequence[Split], val: Split, named: Sequence[tuple[str, Split]],
                 seed: int, alert_fpr: float):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
        self.future = self.pool.submit(baselines_report, kind, [lean(s) for s in train_splits], lean(val),
                                       [(n, lean(s)) for n, s in named], seed, alert_fpr, 1)

    def result(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        try:
            return self.future.result()
        finally:
            self.pool.shutdown()


def distill_targets(spec: Mapping[str, Any] | None, stage_ids: Sequence[Sequence[Sequence[int]]],
                    stage_splits: Sequence[Split], val: Split, tokens: TokenEncoder, seed: int,
                    log: Log = _log, threads: int = 1) -> tuple[list[list[float] | None], dict[str, Any] | None]:
    """Per-stage soft targets from a token-slot tree teacher (``models.distill``), or None per stage.

    ``spec`` is the recipe's ``distill`` entry, ``{"alpha": a}``: the target is
    ``a * label + (1 - a) * teacher``. The teacher is fitted once on all stages'
    rows (validation scores it for the card), so every stage and its replay learn
    from the same opinion.
    """
    from models.distill import SlotTeacher, soft_targets

    if not spec:
        return [None] * len(stage_ids), None
    alpha = float(spec["alpha"])
    teacher = SlotTeacher(seed=seed, threads=threads).fit([r for ids in stage_ids for r in ids],
                                                       [y for s in stage_splits for y in s.labels],
                                                       ds.token_ids(val.texts, tokens), val.labels)
    targets = [soft_targets(s.labels, teacher.predict(ids), alpha).tolist() for s, ids in zip(stage_splits, stage_ids)]
    info = {**teacher.info, "alpha": alpha, "target": "alpha * label + (1 - alpha) * teacher probability"}
    log(f"teacher: token-slot tree, validation AUPRC {info['val_auprc']:.4f}, fitted in {info['fit_s']:.0f}s; alpha {alpha}")
    return targets, info


def curriculum_stages(specs: Sequence[Mapping[str, Any]], splits: Sequence[Split], ids: Sequence[list[list[int]]],
                      targets: Sequence[list[float] | None], steps_scale: float = 1.0) -> list[Any]:
    """The training ``Stage``s of a recipe: its steps and rates, the splits' rows, replay of earlier stages.

    A stage with soft ``targets`` replays the earlier stages' targets too (their labels where
    they had none), so a replayed row keeps the opinion it was first trained against.
    """
    from models.train import Stage

    stages: list[Stage] = []
    for st, split, rows, soft in zip(specs, splits, ids, targets):
        steps = max(1, int(st["steps"] * steps_scale))
        stage = Stage(name=st["name"], ids=rows, labels=split.labels, steps=steps, targets=soft,
                      lr=st["lr"], pos_fraction=st["pos_fraction"], warmup=min(st.get("warmup", 100), max(1, steps // 5)),
                      **{k: st[k] for k in ("hard_fraction", "hard_quantile", "hard_by") if k in st},  # else Stage's defaults
                      summary={"data": split.sources, **({"soft_targets": "distilled"} if soft is not None else {})})
        if st.get("replay_fraction") and stages:
            stage.replay_ids = [r for s in stages for r in s.ids]
            stage.replay_labels = [y for s in stages for y in s.labels]
            if soft is not None:
                stage.replay_targets = [t for s in stages for t in (s.targets if s.targets is not None else s.labels)]
            stage.replay_fraction = st["replay_fraction"]
        stages.append(stage)
    return stages


def selection_metric(val: Split, tokens: TokenEncoder, negatives: int, seed: int) -> Callable[[Any], float]:
    """Validation AUPRC on all validation positives plus a fixed sample of negatives (torch, no export).

    Sub-sampling negatives inflates AUPRC uniformly across checkpoints, so it
    still ranks them; the full validation split is scored later through ONNX.
    """
    import torch

    from models.evaluate import metrics

    y = val.y
    rng = np.random.default_rng(seed)
    neg = np.flatnonzero(y == 0)
    keep = np.sort(np.concatenate([np.flatnonzero(y == 1), rng.choice(neg, min(negatives, len(neg)), replace=False)]))
    ids = tokens.ids([val.texts[i] for i in keep])
    labels = y[keep]

    def score(model: Any) -> float:
        out = []
        for s in range(0, len(ids), 512):
            a, m = tokens.pad(ids[s : s + 512])
            logits = model(input_ids=torch.from_numpy(a), attention_mask=torch.from_numpy(m)).logits.float()
            out.append(torch.softmax(logits, -1)[:, 1].double().numpy())
        return float(metrics(labels, np.concatenate(out))["auprc"])

    return score


def export_and_check(model: Any, out: Path, tokens: TokenEncoder, parity_texts: Sequence[str],
                     variants: Sequence[str] = ("fp16", "int8"), log: Log = _log) -> tuple[dict[str, Path], dict[str, Any]]:
    """fp32 export with a hard parity check, then precision variants with measured parity."""
    from models import export as ex

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fp32 = ex.export_onnx(model, out / "model.onnx", tokens.pad_id, tokens.end_id)
    batches = ex.parity_batches(tokens, parity_texts)
    parity = ex.check_parity(model, fp32, batches)
    log(f"exported {fp32.name} in {time.perf_counter() - t0:.1f}s; max abs logit diff vs torch "
        f"{parity['max_abs_logit_diff']:.2e} over batches {parity['batches']}")
    graphs = {"fp32": fp32}
    checks: dict[str, Any] = {"fp32": {"vs_torch": parity}}
    if "fp16" in variants:
        graphs["fp16"] = ex.to_fp16(fp32, out / "model.fp16.onnx")
    if "int8" in variants:
        graphs["int8"] = ex.to_int8(fp32, out / "model.int8.onnx")
    for name in variants:
        checks[name] = {"vs_fp32": ex.compare_sessions(fp32, graphs[name], batches)}
        log(f"{name}: max abs logit diff vs fp32 {checks[name]['vs_fp32']['max_abs_logit_diff']:.2e}")
    return graphs, checks


def speed(graphs: Mapping[str, Path], tokens: TokenEncoder, texts: Sequence[str]) -> dict[str, Any]:
    """Events/s of each graph alone, batch 1 and 64, one intra-op thread (noisy shared machine)."""
    from models.export import throughput

    long_texts = sorted(texts, key=lambda t: -len(t))[:256]
    return {name: {"b1_events_per_s": round(throughput(g, tokens, long_texts, batch=1, seconds=1.5)),
                   "b64_events_per_s": round(throughput(g, tokens, long_texts, batch=64, seconds=1.5))}
            for name, g in graphs.items()}


def build(
    kind: str,
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
    workers: int | None = None,
    log: Log = _log,
) -> dict[str, Any]:
    """Train a bundle for ``kind`` from its recipe and write it to ``out``; returns the card.

    ``workers``: processes for data preparation and sessions for evaluation (None: one per
    core, up to 4). They change the wall time only, never the bundle.
    """
    import torch

    from models import classifier as clf
    from models import evaluate as ev
    from models import tokenizer as tk
    from models.bundle import git_commit, serving_fields, write_bundle
    from models.train import TrainConfig, resolve_threads, train

    t_start = time.perf_counter()
    recipe = recipes.get(kind)
    threads = resolve_threads(threads)  # recorded in the card as used
    version = version or recipe.get("version", "1.0.0")
    encoding = for_kind(kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = recipe["seed"] if seed is None else seed
    preset = preset or recipe["preset"]
    window = dict(encoding.WINDOW)
    card_ctx = {"window": window}

    def scaled(specs):
        if data_scale == 1.0:
            return specs
        specs = [dict(s) for s in specs]
        for s in specs:
            if "synth" in s:
                s["synth"] = {**s["synth"], "n_events": max(500, int(s["synth"]["n_events"] * data_scale))}
        return specs

    t0 = time.perf_counter()
    n_stages = len(recipe["stages"])
    groups = [scaled(st["data"]) for st in recipe["stages"]] + [
        scaled(recipe["validation"]), scaled(recipe["test"]), scaled(recipe.get("stress") or []),
        recipe.get("test_small") or []]
    prepared = prepare_groups(groups, kind, card_ctx, default_workers(data_scale) if workers is None else workers)
    stage_splits = prepared[:n_stages]
    val, test, stress, small = prepared[n_stages:]
    stress = stress if recipe.get("stress") else None
    small = small if recipe.get("test_small") else None
    t_data = time.perf_counter() - t0
    log(f"data: {sum(len(s.labels) for s in stage_splits)} training rows, {len(val.labels)} validation, "
        f"{len(test.labels)} test in {t_data:.0f}s")

    tok = tk.train((t for s in stage_splits for t in s.texts), getattr(encoding, "VOCABULARY", ()))
    tok_path = tk.save(tok, out / "tokenizer.json")
    tokens = TokenEncoder(tok_path, recipe["max_seq_len"], recipe["buckets"])

    if base is not None:
        model, init = clf.lora_from_base(base, lora, tokens.pad_id, tok.get_vocab_size())
    else:
        torch.manual_seed(seed)
        model = clf.build(clf.make_config(preset, tok.get_vocab_size(), tokens.pad_id, recipe["max_seq_len"]), seed=seed)
        init = {"preset": preset, "init": "random"}

    stage_ids = [ds.token_ids(split.texts, tokens) for split in stage_splits]
    stage_targets, distillation = distill_targets(recipe.get("distill"), stage_ids, stage_splits, val, tokens, seed, log,
                                                  threads=threads)
    stages = curriculum_stages(recipe["stages"], stage_splits, stage_ids, stage_targets, steps_scale)
    cfg = TrainConfig(batch_size=recipe["batch_size"], seed=seed, threads=threads, progress=progress,
                      select_every=max(1, int(recipe.get("select_every", 500) * steps_scale)),
                      ema_decay=recipe.get("ema_decay", 0.0))
    select = selection_metric(val, tokens, recipe.get("select_negatives", 20_000), seed) if recipe.get("select") else None
    ckpt_dir = out / ".train"
    summary = train(clf.use_routed_experts(model), stages, tokens.pad, cfg, checkpoint_dir=ckpt_dir, resume=resume,
                    log=log, select=select)
    log(f"training: {summary['wall_s']:.0f}s")
    model = clf.merge_lora(clf.use_dense_experts(model))

    graphs, checks = export_and_check(model, out, tokens, test.texts, log=log)
    perf = speed(graphs, tokens, test.texts)  # first, while nothing else runs
    for variant in graphs:
        checks[variant]["speed"] = perf[variant]
    named = [("test", test)] + ([("stress", stress)] if stress else [])
    background = (BackgroundBaselines(kind, stage_splits, val, named, seed, recipe.get("alert_fpr", 1e-3))
                  if baselines else None)

    val_scores = ev.score_onnx(graphs["fp32"], tokens, val.texts)
    thresholds = ev.choose_thresholds(val.labels, val_scores, recipe.get("alert_fpr", 1e-3))
    metrics: dict[str, Any] = {"validation": {"model": ev.metrics(val.labels, val_scores, thresholds["alert"]),
                                              "data": val.sources}}
    scores_by: dict[str, np.ndarray] = {}
    for split_name, split in named:
        m, s = evaluate_model_on(graphs["fp32"], tokens, split, thresholds)
        scores_by[split_name] = s
        metrics[split_name] = {"data": split.sources, "model": m,
                               "model_per_typology": per_typology(split, s, thresholds["alert"])}
        log(f"{split_name}: model AUPRC {m['auprc']:.4f} recall@0.1%FPR {m['recall_at_fpr_0.1%']:.4f}")
    if small is not None:
        m, _ = evaluate_model_on(graphs["fp32"], tokens, small, thresholds)
        metrics["test_small"] = {"data": small.sources, "model": m,
                                 "note": "re-evaluated by tests/test_models_transactions.py to check reproduction"}

    # Precision variants are compared on the small test split (same drift as the test
    # split, 30k events) to keep the build short; fp32 metrics on it are metrics.test_small.
    ref_name, ref_split = ("test_small", small) if small is not None else ("test", test)
    for variant in graphs:
        if variant == "fp32":
            continue
        m, _ = evaluate_model_on(graphs[variant], tokens, ref_split, thresholds)
        ref = metrics[ref_name]["model"]
        checks[variant][f"{ref_name}_metrics"] = m
        checks[variant][f"{ref_name}_metric_deltas_vs_fp32"] = {
            k: m[k] - ref[k] for k in ("auprc", "roc_auc", "f1", "recall", "alert_precision", "recall_at_fpr_0.1%")}

    if background is not None:
        reports, metrics["baselines"] = background.result()
        for split_name, _ in named:
            metrics[split_name].update(reports[split_name])
            log(f"{split_name}: GBT AUPRC {metrics[split_name]['gbt']['auprc']:.4f} "
                f"HST AUPRC {metrics[split_name]['hst']['auprc']:.4f}")

    card = {
        "name": name or f"{kind}s-deepseek",
        "version": version,
        "kind": kind,
        **serving_fields(encoding, recipe["max_seq_len"], tokens, tok, window),
        "thresholds": thresholds,
        "normalization": None,
        "architecture": {**clf.architecture(model), **init},
        "training": {
            "curriculum": summary["stages"], "selected_checkpoint": summary.get("selected"), "seed": seed, "threads": threads, "batch_size": cfg.batch_size,
            "weight_average_decay": cfg.ema_decay or None,
            "distillation": distillation, "experts_in_training": clf.ROUTED_EXPERTS,
            "train_wall_s": summary["wall_s"], "data_prep_s": round(t_data, 1),
            "build_wall_s": None, "command": command, "commit": git_commit(Path(__file__).resolve().parent.parent),
            "deterministic": "torch.use_deterministic_algorithms(True); batches are a function of (seed, stage, step)",
            "eval_specs": {"validation": recipe["validation"], "test": recipe["test"], "stress": recipe.get("stress"),
                           "test_small": recipe.get("test_small")},
        },
        "metrics": metrics,
        "variant_checks": checks,
    }
    card["training"]["build_wall_s"] = round(time.perf_counter() - t_start, 1)
    card = {k: (v if k == "thresholds" else _round(v)) for k, v in card.items()}  # thresholds stay exact
    write_bundle(out, graphs, tok_path, card, model=model)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log(f"bundle written to {out} in {card['training']['build_wall_s']:.0f}s")
    return card


def evaluate_bundle(bundle_dir: str | Path, specs: Sequence[Mapping[str, Any]] | None = None, split: str = "test_small",
                    precision: str = "fp32", threads: int = 1, baselines: bool = False) -> dict[str, Any]:
    """Re-evaluate a bundle the way the worker scores: its card window, tokenizer and ONNX graph.

    ``specs`` defaults to the eval spec recorded in the card under ``split``.
    ``baselines`` refits GBT and HalfSpaceTrees on the kind's recipe data (a few
    minutes) and scores the same rows with them, side by side with the model.
    """
    from streamer.bundle import load_bundle

    b = load_bundle(bundle_dir, precision=precision)
    if specs is None:
        specs = (b.card.get("training", {}).get("eval_specs") or {}).get(split)
        if not specs:
            raise ValueError(f"{bundle_dir}: card has no eval spec {split!r}; pass --data")
    data = prepare(specs, b.encoding, b.card)
    m, s = evaluate_model_on(b.model_path, b.tokens, data, b.card["thresholds"], threads=threads)
    report = {"bundle": str(bundle_dir), "precision": precision, "data": data.sources, "model": _round(m),
              "model_per_typology": _round(per_typology(data, s, b.card["thresholds"]["alert"]))}
    if baselines:
        recipe = recipes.get(b.kind)
        train_splits = [prepare(st["data"], b.encoding, b.card) for st in recipe["stages"]]
        val = prepare(recipe["validation"], b.encoding, b.card)
        reports, described = baselines_report(b.kind, train_splits, val, [(split, data)], recipe.get("seed", 0),
                                              recipe.get("alert_fpr", 1e-3), threads=threads)
        report.update(_round(reports[split]))
        report["baselines"] = _round(described)
    return report
