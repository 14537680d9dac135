"""Kind-agnostic training loop: curriculum stages, class balance, resumable, deterministic.

Why this shape:

- *Curriculum*: stage one learns the vocabulary and typologies on broad, label-rich
  synthetic data; stage two adapts to the target distribution where labels are
  scarce, with a lower learning rate so it refines rather than forgets.
- *Class balance*: fraud is well under 1% of events, so each batch draws a fixed
  share of positives (with replacement). Scores are therefore not calibrated
  probabilities; thresholds are chosen afterwards on a validation split at a
  target false-positive rate, which is what the worker alerts on.
- *Determinism and resume*: every batch is a pure function of (seed, stage, step),
  there is no dropout, and torch runs with deterministic algorithms, so a run
  resumed from a checkpoint reproduces an uninterrupted run exactly (at a fixed
  thread count: BLAS reductions may differ between thread counts).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

CHECKPOINT = "last.pt"


@dataclass
class Stage:
    """One curriculum stage: token-id rows with 0/1 labels and how to train on them."""

    name: str
    ids: list[list[int]]
    labels: list[int]
    steps: int
    lr: float
    pos_fraction: float = 0.2
    warmup: int = 100
    summary: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        pos = int(sum(self.labels))
        return {"name": self.name, "rows": len(self.labels), "positives": pos, "steps": self.steps, "lr": self.lr,
                "pos_fraction": self.pos_fraction, "warmup": self.warmup, **self.summary}


@dataclass
class TrainConfig:
    batch_size: int = 128
    seed: int = 0
    threads: int = 1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    progress: bool = True


def set_determinism(seed: int, threads: int) -> None:
    """Fixed seeds, fixed thread count, deterministic kernels.

    One thread is the default on purpose: on a shared 2-core machine, two
    OpenMP threads contending with other jobs ran ~30x slower here.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def _batch_indices(stage: Stage, pos_idx: np.ndarray, neg_idx: np.ndarray, seed: int, stage_no: int, step: int,
                   batch_size: int) -> np.ndarray:
    """Row indices of one batch: a pure function of (seed, stage, step), hence exact resume."""
    rng = np.random.default_rng([seed, stage_no, step])
    n_pos = min(batch_size, int(round(batch_size * stage.pos_fraction))) if len(pos_idx) else 0
    n_neg = batch_size - n_pos if len(neg_idx) else 0
    parts = []
    if n_pos:
        parts.append(pos_idx[rng.integers(0, len(pos_idx), n_pos)])
    if n_neg:
        parts.append(neg_idx[rng.integers(0, len(neg_idx), n_neg)])
    return np.concatenate(parts)


def _lr_at(stage: Stage, step: int) -> float:
    """Linear warm-up then cosine decay to 5% of the stage's peak rate."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    frac = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _save(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, stage_no: int, step: int,
          history: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "stage": stage_no, "step": step,
                "history": history, "meta": meta, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def train(
    model: torch.nn.Module,
    stages: Sequence[Stage],
    pad: Callable[[Sequence[Sequence[int]]], tuple[np.ndarray, np.ndarray]],
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | Path | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the curriculum; returns a summary (per-stage loss curve, wall time) for the card.

    ``pad`` is the bundle's ``TokenEncoder.pad`` so training batches are padded to
    the same buckets as serving. ``resume`` is a checkpoint dir (or file) written by
    an earlier run with the same stages and config; training continues after its
    last completed step.
    """
    set_determinism(config.seed, config.threads)
    ckpt_path = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT
    meta = {"stages": [(s.name, s.steps, len(s.labels)) for s in stages], "config": asdict(config)}
    start_stage, start_step, history = 0, 0, []
    state = None
    if resume is not None:
        rp = Path(resume)
        rp = rp / CHECKPOINT if rp.is_dir() else rp
        if not rp.is_file():
            raise FileNotFoundError(f"--resume {resume}: no checkpoint {rp.name} there")
        state = torch.load(rp, weights_only=False)
        if state["meta"]["stages"] != meta["stages"]:
            raise ValueError(f"--resume {resume}: checkpoint was written for stages {state['meta']['stages']}, "
                             f"this run has {meta['stages']}; use the same data and steps")
        model.load_state_dict(state["model"])
        torch.set_rng_state(state["torch_rng"])
        start_stage, start_step, history = state["stage"], state["step"] + 1, state["history"]
        log(f"resumed from {rp} at stage {stages[start_stage].name!r} step {start_step}")
    t0 = time.perf_counter()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for stage_no in range(start_stage, len(stages)):
        stage = stages[stage_no]
        labels = np.asarray(stage.labels, dtype=np.int64)
        pos_idx, neg_idx = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        if not len(labels):
            raise ValueError(f"stage {stage.name!r} has no rows")
        opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=config.weight_decay)
        first = start_step if stage_no == start_stage else 0
        if first >= stage.steps:  # checkpoint written at the end of this stage
            state = None
            continue
        if state is not None and stage_no == start_stage and first > 0:
            opt.load_state_dict(state["optimizer"])
        losses: list[float] = []
        bar = tqdm(range(first, stage.steps), desc=f"{stage.name}", disable=not config.progress, unit="step",
                   initial=first, total=stage.steps, mininterval=2.0)
        running = None
        for step in bar:
            idx = _batch_indices(stage, pos_idx, neg_idx, config.seed, stage_no, step, config.batch_size)
            ids, mask = pad([stage.ids[i] for i in idx])
            y = torch.from_numpy(labels[idx])
            for g in opt.param_groups:
                g["lr"] = _lr_at(stage, step)
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            v = float(loss.detach())
            running = v if running is None else 0.98 * running + 0.02 * v
            if step % 50 == 0 or step == stage.steps - 1:
                losses.append(round(running, 5))
                bar.set_postfix(loss=f"{running:.4f}")
            if ckpt_path is not None and (step + 1) % config.checkpoint_every == 0:
                _save(ckpt_path, model, opt, stage_no, step, history, meta)
        bar.close()
        history.append({**stage.describe(), "loss_curve_every_50": losses, "final_loss": losses[-1] if losses else None})
        if ckpt_path is not None:
            _save(ckpt_path, model, opt, stage_no, stage.steps - 1, history, meta)
        log(f"stage {stage.name!r}: {stage.steps} steps, smoothed loss {running if running is not None else float('nan'):.4f}")
        state = None
    model.eval()
    return {"stages": history, "wall_s": round(time.perf_counter() - t0, 1), **asdict(config)}
