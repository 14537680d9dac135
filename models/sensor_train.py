"""Training the sensor model: forecast normal running, tell injected faults from normal windows.

Each step draws two batches of one asset type each (no padding inside a batch):

- a **forecast** batch of normal windows: Gaussian NLL of every step's forecast
  of the next step (self-supervised, learns the asset type from normal
  operation alone);
- a **contrast** batch, half windows whose newest reading is inside an injected
  fault, half normal windows: cross-entropy of the classifier head.

Deterministic for a seed (batches are a function of seed and step; deterministic
kernels), resumable (``checkpoint_dir`` is written every ``checkpoint_every``
steps and ``resume`` continues after the last one), with a progress bar, and
the best weights on the validation windows are kept (``select_every``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models import sensor_data as sd
from models.sensor_model import SensorNet, forecast_nll
from models.train import load_state, save_state, set_determinism

CHECKPOINT = "sensor_train.pt"


@dataclass
class SensorTrainConfig:
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 100
    batch_size: int = 64
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    classifier_weight: float = 1.0
    checkpoint_every: int = 250
    select_every: int = 250
    progress: bool = True
    train_only: Sequence[str] = ()  # parameter name prefixes to train (empty: all)


@dataclass
class Pools:
    """Row pools of one training set: normal rows (forecast and negatives), fault rows (positives)."""

    arrays: dict[int, dict[str, np.ndarray]]  # per type index: stacked arrays
    normal: dict[int, np.ndarray]  # per type: row indices (into arrays[type]) usable as normal windows
    faulty: dict[int, np.ndarray]  # per type: rows whose newest reading is inside an injected fault

    @property
    def types(self) -> list[int]:
        return sorted(self.arrays)


def pools(normal: sd.Encoded, injected: sd.Encoded, card: Mapping[str, Any], min_base: int = 0) -> Pools:
    """Stack the encoded rows per type; normal rows from ``normal``, positives from ``injected``'s fault rows.

    ``min_base``: rows of assets with fewer own readings than this are left out of the
    forecast pool (the cold start is scored, but its windows are not what normal looks like).
    """
    arrays: dict[int, dict[str, np.ndarray]] = {}
    norm: dict[int, np.ndarray] = {}
    fault: dict[int, np.ndarray] = {}
    n_rows = sd.by_type(normal)
    f_rows = sd.by_type(injected)
    for t in sorted(set(n_rows) | set(f_rows)):
        nr = [i for i in n_rows.get(t, []) if normal.n_base[i] >= min_base]
        fr = [i for i in f_rows.get(t, []) if injected.labels[i] == 1]
        a = sd.arrays([normal.inputs[i] for i in nr] + [injected.inputs[i] for i in fr], card)
        if not a:
            continue
        arrays[t] = a
        norm[t] = np.arange(len(nr))
        fault[t] = np.arange(len(nr), len(nr) + len(fr))
    return Pools(arrays, norm, fault)


def _tensors(a: Mapping[str, np.ndarray], rows: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a[k][rows]) for k in ("values", "sensor_ids", "sensor_mask", "step_mask", "step_stats")]


def _lr(cfg: SensorTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + np.cos(np.pi * min(1.0, frac)))


def _pick_type(rng: np.random.Generator, p: Pools, need_faults: bool) -> int:
    ts = [t for t in p.types if len(p.normal[t]) and (not need_faults or len(p.faulty[t]))]
    w = np.asarray([len(p.normal[t]) for t in ts], dtype=float) ** 0.5  # small types are not drowned out
    return ts[int(rng.choice(len(ts), p=w / w.sum()))]


def train(model: SensorNet, train_pools: Pools, cfg: SensorTrainConfig, *,
          select: Callable[[SensorNet], float] | None = None, checkpoint_dir: str | Path | None = None,
          resume: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``model`` in place; returns a summary for the card (loss curve, wall time, selected step)."""
    set_determinism(cfg.seed, cfg.threads)
    params = [(n, p) for n, p in model.named_parameters()]
    if cfg.train_only:
        for n, p in params:
            p.requires_grad_(any(n.startswith(pre) for pre in cfg.train_only))
    trainable = [p for _, p in params if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history, best = 0, [], None
    meta = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "threads")},
            "rows": {str(t): [int(len(train_pools.normal[t])), int(len(train_pools.faulty[t]))] for t in train_pools.types}}
    ck = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if resume is not None:
        rp, state = load_state(resume, CHECKPOINT)
        if state["meta"] != meta:
            raise ValueError(f"--resume {resume}: the checkpoint was written for other data or settings "
                             f"({state['meta']['rows']} rows per type, {state['meta']['config']}); use the same ones")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history, best = state["step"] + 1, state["history"], state["best"]
        log(f"resumed from {rp} at step {start}")
    bar = None
    if cfg.progress and sys.stderr.isatty() or (cfg.progress and os.environ.get("STREAMER_PROGRESS") == "1"):
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", file=sys.stderr)
    t0 = time.perf_counter()
    model.train()
    running = []
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step])
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        t = _pick_type(rng, train_pools, need_faults=False)
        a = train_pools.arrays[t]
        rows = rng.choice(train_pools.normal[t], cfg.batch_size)
        v, ids, sm, tm, ss = _tensors(a, rows)
        _, mu, ls = model(v, ids, sm, tm, ss)
        loss_f = forecast_nll(mu, ls, v, sm, tm)
        loss = loss_f
        loss_c = torch.zeros(())
        if cfg.classifier_weight > 0 and any(len(train_pools.faulty[x]) for x in train_pools.types):
            t = _pick_type(rng, train_pools, need_faults=True)
            a = train_pools.arrays[t]
            half = cfg.batch_size // 2
            rows = np.concatenate([rng.choice(train_pools.faulty[t], half), rng.choice(train_pools.normal[t], half)])
            v, ids, sm, tm, ss = _tensors(a, rows)
            logit, _, _ = model(v, ids, sm, tm, ss)
            y = torch.cat([torch.ones(half), torch.zeros(half)])
            loss_c = F.binary_cross_entropy_with_logits(logit, y)
            loss = loss + cfg.classifier_weight * loss_c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        running.append((loss_f.item(), loss_c.item()))
        if bar is not None:
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix(forecast=f"{loss_f.item():.3f}", classifier=f"{loss_c.item():.3f}")
        last = step == cfg.steps - 1
        if (step + 1) % cfg.select_every == 0 or last:
            f, c = np.mean(running, 0) if running else (0.0, 0.0)
            running = []
            entry: dict[str, Any] = {"step": step + 1, "forecast_nll": round(float(f), 4), "classifier_bce": round(float(c), 4)}
            if select is not None:
                model.eval()
                with torch.no_grad():
                    entry["selection"] = round(float(select(model)), 5)
                model.train()
                if best is None or entry["selection"] > best["selection"]:
                    best = {"step": step + 1, "selection": entry["selection"],
                            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            history.append(entry)
            log(f"step {step + 1}/{cfg.steps}: forecast NLL {entry['forecast_nll']:.3f}, classifier BCE "
                f"{entry['classifier_bce']:.3f}" + (f", selection {entry['selection']:.4f}" if "selection" in entry else ""))
        if ck is not None and ((step + 1) % cfg.checkpoint_every == 0 or last):
            ck.parent.mkdir(parents=True, exist_ok=True)
            save_state(ck, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                            "history": history, "best": best, "meta": meta})
    if bar is not None:
        bar.close()
    if best is not None and select is not None:
        model.load_state_dict(best["state"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"steps": cfg.steps, "wall_s": round(time.perf_counter() - t0, 1), "history": history,
            "selected_step": best["step"] if best else cfg.steps, "config": meta["config"], "rows": meta["rows"]}


@torch.no_grad()
def outputs(model: SensorNet, data: sd.Encoded, card: Mapping[str, Any], batch: int = 512) -> dict[str, np.ndarray]:
    """Every score part per row (``streamer.sensor_scorer.PARTS``), the graph's outputs computed in torch."""
    from models.sensor_model import ExportWrapper
    from streamer.sensor_scorer import PARTS, score_components

    wrap = ExportWrapper(model).eval()
    out = {k: np.zeros(len(data), dtype=np.float64) for k in PARTS}
    for idx, a in sd.batches(data, card, batch):
        logit, mu, ls = wrap(*_tensors(a, np.arange(len(idx))))
        comp = score_components(a, logit.numpy(), mu.numpy(), ls.numpy())
        for k in PARTS:
            out[k][idx] = comp[k]
    return out
