"""Adapt an existing bundle to a user's own labelled events (``streamer model fine-tune``).

Why it starts from the bundle's torch checkpoint and keeps its tokenizer and
encoding: the user's events go through exactly the same windows and words as
the base model saw, so a few hundred labelled events are enough to shift
decision boundaries instead of relearning the vocabulary.

Thresholds are re-chosen on the newest ``val_fraction`` of the user's rows (a
time-ordered split: the future is never used to train). An FPR threshold needs
only negatives, so this works even if that slice has no fraud. When the user's
data has too few positives to balance batches, positives are replayed from the
kind's synthetic target stage (recorded in the card).

Sensors (adapted from normal-only readings) have their own:
``models.sensor_pipeline.fine_tune_sensor``; ``models.cli`` picks by the bundle's kind.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from models import dataset as ds
from models import recipes

MIN_POSITIVES = 20


def fine_tune_labelled(
    bundle: str | Path,
    train_path: str | Path,
    out: str | Path,
    *,
    steps: int = 400,
    lr: float = 3e-4,
    batch_size: int = 128,
    pos_fraction: float = 0.2,
    val_fraction: float = 0.2,
    lora: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
    version_suffix: str = "ft",
    command: str | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Fine-tune (full or LoRA) on labelled JSONL events and write a new bundle to ``out``."""
    from transformers import DeepseekV3ForSequenceClassification

    from models import classifier as clf
    from models import evaluate as ev
    from models.bundle import CHECKPOINT_DIR, git_commit, read_card, write_bundle
    from models.pipeline import Split, _round, export_and_check, prepare
    from models.train import Stage, TrainConfig, resolve_threads, train
    from streamer.bundle import load_bundle

    t_start = time.perf_counter()
    threads = resolve_threads(threads)  # recorded in the card as used
    base = load_bundle(bundle)
    card = read_card(bundle)
    ck = Path(bundle) / CHECKPOINT_DIR
    if not (ck / "config.json").is_file():
        raise FileNotFoundError(f"{bundle}: no {CHECKPOINT_DIR}/ with torch weights; rebuild it with `model train`")
    data = prepare([{"jsonl": str(train_path)}], base.encoding, card)
    n = len(data.labels)
    if n < 10:
        raise ValueError(f"{train_path}: {n} usable rows; need at least 10")
    cut = int(n * (1 - val_fraction))
    train_rows = Split(data.texts[:cut], data.labels[:cut], data.vectors[:cut], [], data.sources)
    val = Split(data.texts[cut:], data.labels[cut:], data.vectors[cut:], [], data.sources)
    ids = ds.token_ids(train_rows.texts, base.tokens)
    labels = list(train_rows.labels)
    replay = None
    if sum(labels) < MIN_POSITIVES:
        try:
            spec = recipes.get(card["kind"])["stages"][-1]["data"]
        except ValueError:
            spec = None
        if spec:
            rep = prepare(spec, base.encoding, card)
            pos = [i for i, y in enumerate(rep.labels) if y == 1]
            ids += ds.token_ids([rep.texts[i] for i in pos], base.tokens)
            labels += [1] * len(pos)
            replay = {"data": rep.sources, "positives_replayed": len(pos)}
            log(f"only {sum(train_rows.labels)} labelled positives: replaying {len(pos)} synthetic positives")

    model = DeepseekV3ForSequenceClassification.from_pretrained(ck, attn_implementation="eager")
    model = clf.use_dense_experts(model)
    if lora:
        model = clf.add_lora(model, **dict(lora))
    stage = Stage(name="fine-tune", ids=ids, labels=labels, steps=steps, lr=lr, pos_fraction=pos_fraction,
                  warmup=min(50, max(1, steps // 5)), summary={"data": str(train_path), "replay": replay})
    summary = train(model, [stage], base.tokens.pad, TrainConfig(batch_size=batch_size, seed=seed, threads=threads,
                                                                  progress=progress),
                    checkpoint_dir=Path(out) / ".train", log=log)
    model = clf.merge_lora(model)
    graphs, checks = export_and_check(model, Path(out), base.tokens, data.texts, log=log)
    val_scores = ev.score_onnx(graphs["fp32"], base.tokens, val.texts)
    thresholds = ev.choose_thresholds(val.labels, val_scores, card["thresholds"].get("target_fpr", 1e-3))
    metrics = {"validation": {"model": ev.metrics(val.labels, val_scores, thresholds["alert"]), "data": val.sources,
                              "split": f"newest {val_fraction:.0%} of {train_path}"}}
    new = dict(card)
    new.update(
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
            "rows": {"train": len(train_rows.labels), "validation": len(val.labels),
                     "train_positives": int(np.sum(train_rows.labels))},
        },
    )
    write_bundle(out, graphs, Path(bundle) / "tokenizer.json", new, model=model)
    import shutil

    shutil.rmtree(Path(out) / ".train", ignore_errors=True)
    log(f"fine-tuned bundle written to {out}")
    return new
