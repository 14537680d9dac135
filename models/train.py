"""Kind-agnostic training loop: curriculum stages, class balance, resumable, deterministic.

Why this shape:

- *Curriculum*: stage one learns the vocabulary and typologies on broad, label-rich
  synthetic data; stage two adapts to the target distribution where labels are
  scarce, with a lower learning rate so it refines rather than forgets.
- *Class balance*: fraud is well under 1% of events, so each batch draws a fixed
  share of positives (with replacement). Scores are therefore not calibrated
  probabilities; thresholds are chosen afterwards on a validation split at a
  target false-positive rate, which is what the worker alerts on.
- *Hard negatives*: false alarms at 0.1% FPR come from rare legitimate behaviour
  (trips, new phones, sprees), which uniform sampling almost never shows the
  model. A share of each batch's negatives comes from a pool of hard ones:
  by default the rows whose words are rarest (highest total surprisal under the
  stage's own word frequencies), a kind-agnostic proxy for "unusual" with no
  labels or model in the loop; with soft targets, ``hard_by="targets"`` takes
  the negatives the targets rank highest instead (a teacher's fraud
  look-alikes), so the few hundred negatives that decide the top of the
  ranking are seen many times rather than about once.
- *Replay*: a later stage with few labels mixes in rows of the earlier stages so
  that it adapts instead of memorising its handful of positives.
- *Selection*: with a ``select`` callback (validation AUPRC), the weights with the
  best score seen at ``select_every`` steps are kept, not simply the last ones.
- *Soft targets*: a stage may carry ``targets``, a probability of the positive
  class per row (a label-free teacher's graded opinion, say), trained with
  cross-entropy against that probability so the model learns the teacher's
  *ranking*, not just its verdict; ``labels`` (target >= 0.5) still drive the
  class balance of the batches.
- *Determinism and resume*: every batch is a pure function of (seed, stage, step),
  there is no dropout, and torch runs with deterministic algorithms, so a run
  resumed from a checkpoint reproduces an uninterrupted run exactly (at a fixed
  thread count: BLAS reductions may differ between thread counts).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
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
    hard_fraction: float = 0.0  # share of negatives drawn from the hard pool
    hard_quantile: float = 0.9  # negatives at or above this quantile of hardness form the hard pool
    hard_by: str = "surprisal"  # hardness: "surprisal" (rarest words) or "targets" (highest soft target)
    replay_ids: list[list[int]] = field(default_factory=list)  # rows of earlier stages
    replay_labels: list[int] = field(default_factory=list)
    replay_fraction: float = 0.0  # share of each batch drawn from the replay rows
    targets: list[float] | None = None  # soft P(positive) per row of ``ids`` (None: the 0/1 labels)
    replay_targets: list[float] | None = None

    def describe(self) -> dict[str, Any]:
        pos = int(sum(self.labels))
        return {"name": self.name, "rows": len(self.labels), "positives": pos, "steps": self.steps, "lr": self.lr,
                "pos_fraction": self.pos_fraction, "warmup": self.warmup, "hard_fraction": self.hard_fraction,
                **({"hard_by": self.hard_by, "hard_quantile": self.hard_quantile} if self.hard_fraction else {}),
                "replay_fraction": self.replay_fraction if self.replay_labels else 0.0,
                "replay_rows": len(self.replay_labels), **self.summary}


@dataclass
class TrainConfig:
    batch_size: int = 128
    seed: int = 0
    threads: int = 1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    progress: bool = True
    select_every: int = 500
    ema_decay: float = 0.0  # > 0: also keep an exponential moving average of the weights (see ``train``)


def resolve_threads(threads: int) -> int:
    """Torch threads for training: ``threads``, or one per usable core when it is 0 or less.

    The count changes wall time only: with deterministic kernels the trained weights were
    bit-identical at 1 and 2 threads here (the transactions bundle's ONNX graph included).
    """
    if threads > 0:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_determinism(seed: int, threads: int) -> None:
    """Fixed seeds, fixed thread count, deterministic kernels.

    ``threads`` <= 0 means one per core (:func:`resolve_threads`). On a quiet 2-core machine
    two threads train the default bundles ~1.5x faster than one; on a machine shared with
    other CPU-bound jobs, pass 1 (oversubscribed OpenMP threads were far slower here).
    """
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.set_num_threads(resolve_threads(threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def surprisal(ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Total -log frequency of each row's tokens under the rows' own token distribution.

    >>> int(surprisal([[3, 4], [3, 4], [3, 9]]).argmax())
    2
    """
    flat = np.fromiter((t for row in ids for t in row), dtype=np.int64)
    counts = np.bincount(flat).astype(np.float64)
    logp = np.log(np.maximum(counts, 1.0) / max(1, len(flat)))
    return np.asarray([-logp[np.asarray(row, dtype=np.int64)].sum() for row in ids])


class _Pools:
    """Index pools of one stage: positives / negatives / hard negatives, current and replay."""

    def __init__(self, stage: Stage):
        self.labels = np.asarray(list(stage.labels) + list(stage.replay_labels), dtype=np.int64)
        self.ids = list(stage.ids) + list(stage.replay_ids)
        n_cur = len(stage.labels)
        self.targets: np.ndarray | None = None
        if stage.targets is not None or stage.replay_targets is not None:
            cur_t = stage.targets if stage.targets is not None else stage.labels
            rep_t = stage.replay_targets if stage.replay_targets is not None else stage.replay_labels
            if len(cur_t) != n_cur or len(rep_t) != len(stage.replay_labels):
                raise ValueError(f"stage {stage.name!r}: targets and labels differ in length")
            self.targets = np.asarray(list(cur_t) + list(rep_t), dtype=np.float32)
        idx = np.arange(len(self.labels))
        cur, rep = idx < n_cur, idx >= n_cur
        self.cur_pos = np.flatnonzero(cur & (self.labels == 1))
        self.cur_neg = np.flatnonzero(cur & (self.labels == 0))
        self.rep_pos = np.flatnonzero(rep & (self.labels == 1))
        self.rep_neg = np.flatnonzero(rep & (self.labels == 0))
        self.hard = np.empty(0, dtype=np.int64)
        if stage.hard_fraction > 0 and len(self.cur_neg):
            s = self._hardness(stage)
            self.hard = self.cur_neg[s >= np.quantile(s, stage.hard_quantile)]

    def _hardness(self, stage: Stage) -> np.ndarray:
        """How hard each current negative is, by the stage's ``hard_by``."""
        if stage.hard_by == "surprisal":
            return surprisal([self.ids[i] for i in self.cur_neg])
        if stage.hard_by == "targets":
            if stage.targets is None:
                raise ValueError(f"stage {stage.name!r}: hard_by='targets' needs soft targets for its rows "
                                 "(a recipe with a distillation teacher)")
            return self.targets[self.cur_neg]
        raise ValueError(f"stage {stage.name!r}: hard_by must be 'surprisal' or 'targets', got {stage.hard_by!r}")


def _draw(rng: np.random.Generator, pos: np.ndarray, neg: np.ndarray, hard: np.ndarray, n: int, pos_fraction: float,
          hard_fraction: float) -> list[np.ndarray]:
    n_pos = min(n, int(round(n * pos_fraction))) if len(pos) else 0
    n_neg = n - n_pos if len(neg) else 0
    n_hard = int(round(n_neg * hard_fraction)) if len(hard) else 0
    out = []
    if n_pos:
        out.append(pos[rng.integers(0, len(pos), n_pos)])
    if n_neg - n_hard:
        out.append(neg[rng.integers(0, len(neg), n_neg - n_hard)])
    if n_hard:
        out.append(hard[rng.integers(0, len(hard), n_hard)])
    return out


def _batch_indices(stage: Stage, pools: _Pools, seed: int, stage_no: int, step: int, batch_size: int) -> np.ndarray:
    """Row indices of one batch: a pure function of (seed, stage, step), hence exact resume."""
    rng = np.random.default_rng([seed, stage_no, step])
    n_rep = int(round(batch_size * stage.replay_fraction)) if len(pools.rep_pos) + len(pools.rep_neg) else 0
    parts = _draw(rng, pools.cur_pos, pools.cur_neg, pools.hard, batch_size - n_rep, stage.pos_fraction,
                  stage.hard_fraction)
    if n_rep:
        parts += _draw(rng, pools.rep_pos, pools.rep_neg, np.empty(0, dtype=np.int64), n_rep, stage.pos_fraction, 0.0)
    return np.concatenate(parts)


def _lr_at(stage: Stage, step: int) -> float:
    """Linear warm-up then cosine decay to 5% of the stage's peak rate."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    frac = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class _Ema:
    """An exponential moving average of the trainable weights, updated after every optimizer step.

    Why: a small model trained on small, class-balanced batches ends a run wherever the
    last few hundred batches pushed it; the average over those steps ranks held-out rows
    more steadily. Selection scores both the live and the averaged weights and keeps the
    better, so turning it on cannot make the kept weights worse on the selection metric.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) (or 0 for off), got {decay}")
        self.params = list(params)
        self.decay = decay
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p, 1.0 - self.decay)

    @contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own again after it."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, live):
                    p.copy_(v)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then renamed: an interrupted save leaves the previous checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(resume: str | Path, filename: str) -> tuple[Path, dict[str, Any]]:
    """(file, state) of what ``--resume`` names: a run's checkpoint dir holding ``filename``, or the file."""
    rp = Path(resume)
    rp = rp / filename if rp.is_dir() else rp
    if not rp.is_file():
        raise FileNotFoundError(f"--resume {resume}: no checkpoint {rp.name} there")
    return rp, torch.load(rp, weights_only=False)


def _save(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, stage_no: int, step: int,
          history: list[dict[str, Any]], meta: dict[str, Any], best: dict[str, Any] | None,
          ema: _Ema | None = None) -> None:
    save_state(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "stage": stage_no, "step": step,
                      "history": history, "meta": meta, "torch_rng": torch.get_rng_state(), "best": best,
                      "ema": [s.clone() for s in ema.shadow] if ema is not None else None})


def train(
    model: torch.nn.Module,
    stages: Sequence[Stage],
    pad: Callable[[Sequence[Sequence[int]]], tuple[np.ndarray, np.ndarray]],
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | Path | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    select: Callable[[torch.nn.Module], float] | None = None,
) -> dict[str, Any]:
    """Run the curriculum; returns a summary (per-stage loss curve, wall time) for the card.

    ``pad`` is the bundle's ``TokenEncoder.pad`` so training batches are padded to
    the same buckets as serving. ``resume`` is a checkpoint dir (or file) written by
    an earlier run with the same stages and config; training continues after its
    last completed step. ``select(model) -> float`` (higher is better) is called
    every ``config.select_every`` steps and at the end of each stage from the
    last stage on; the best weights are kept. With ``config.ema_decay`` > 0 the
    moving average of the weights is scored too at each of those points, and
    without ``select`` the average is what training returns.
    """
    set_determinism(config.seed, config.threads)
    ckpt_path = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT
    meta = {"stages": [(s.name, s.steps, len(s.labels)) for s in stages], "config": asdict(config)}
    start_stage, start_step, history = 0, 0, []
    state = None
    best: dict[str, Any] | None = None
    if resume is not None:
        rp, state = load_state(resume, CHECKPOINT)
        if state["meta"]["stages"] != meta["stages"]:
            raise ValueError(f"--resume {resume}: checkpoint was written for stages {state['meta']['stages']}, "
                             f"this run has {meta['stages']}; use the same data and steps")
        model.load_state_dict(state["model"])
        torch.set_rng_state(state["torch_rng"])
        start_stage, start_step, history = state["stage"], state["step"] + 1, state["history"]
        best = state.get("best")
        log(f"resumed from {rp} at stage {stages[start_stage].name!r} step {start_step}")
    t0 = time.perf_counter()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ema = _Ema(params, config.ema_decay) if config.ema_decay else None
    if ema is not None and state is not None and state.get("ema") is not None:
        for s, saved in zip(ema.shadow, state["ema"]):
            s.copy_(saved)
    for stage_no in range(start_stage, len(stages)):
        stage = stages[stage_no]
        if not len(stage.labels):
            raise ValueError(f"stage {stage.name!r} has no rows")
        pools = _Pools(stage)
        labels, rows = pools.labels, pools.ids
        selecting = select is not None and stage_no == len(stages) - 1

        def consider(step: int) -> None:
            nonlocal best
            model.eval()
            def snapshot() -> dict[str, torch.Tensor]:
                return {k: v.detach().clone() for k, v in model.state_dict().items()}

            with torch.no_grad():
                candidates = [("live", float(select(model)), snapshot())]
                if ema is not None:
                    with ema.applied():
                        candidates.append(("ema", float(select(model)), snapshot()))
            model.train()
            log(f"stage {stage.name!r} step {step + 1}: selection metric "
                + ", ".join(f"{name} {value:.5f}" for name, value, _ in candidates))
            for name, value, weights in candidates:
                if best is None or value > best["value"]:
                    best = {"value": value, "stage": stage.name, "step": step + 1, "weights": name, "state": weights}
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
            idx = _batch_indices(stage, pools, config.seed, stage_no, step, config.batch_size)
            ids, mask = pad([rows[i] for i in idx])
            if pools.targets is not None:
                t = torch.from_numpy(pools.targets[idx])
                y = torch.stack([1.0 - t, t], dim=1)  # class probabilities
            else:
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
            if ema is not None:
                ema.update()
            v = float(loss.detach())
            running = v if running is None else 0.98 * running + 0.02 * v
            if step % 50 == 0 or step == stage.steps - 1:
                losses.append(round(running, 5))
                bar.set_postfix(loss=f"{running:.4f}")
            if selecting and (step + 1) % config.select_every == 0 and step + 1 < stage.steps:
                consider(step)
            if ckpt_path is not None and (step + 1) % config.checkpoint_every == 0:
                _save(ckpt_path, model, opt, stage_no, step, history, meta, best, ema)
        bar.close()
        if selecting:
            consider(stage.steps - 1)
        history.append({**stage.describe(), "loss_curve_every_50": losses, "final_loss": losses[-1] if losses else None})
        if ckpt_path is not None:
            _save(ckpt_path, model, opt, stage_no, stage.steps - 1, history, meta, best, ema)
        log(f"stage {stage.name!r}: {stage.steps} steps, smoothed loss {running if running is not None else float('nan'):.4f}")
        state = None
    selected = None
    if best is not None:
        model.load_state_dict(best["state"])
        weights = best.get("weights", "live")
        selected = {"stage": best["stage"], "step": best["step"], "value": round(best["value"], 6), "weights": weights}
        log(f"kept the {'averaged ' if weights == 'ema' else ''}weights of stage {best['stage']!r} step {best['step']} "
            f"(selection metric {best['value']:.5f})")
    elif ema is not None:
        with torch.no_grad():
            for p, s in zip(ema.params, ema.shadow):
                p.copy_(s)
        selected = {"stage": stages[-1].name, "step": stages[-1].steps, "weights": "ema"}
    model.eval()
    return {"stages": history, "selected": selected, "wall_s": round(time.perf_counter() - t0, 1), **asdict(config)}
