"""The model alone: events/s and tokens/s of the ONNX session against torch eager of the same weights.

    python -m bench.model                      # CPU: onnx fp32, int8, fp32 through IO binding, torch fp32
    python -m bench.model --quick              # smoke run (short timings, small quality set)
    python -m bench.model --device cuda        # GPU host: adds CUDA fp32/fp16 (IO binding) and torch bf16
    python -m bench.model --profile            # operator-type shares of fp32 and int8 (why int8 gains what it gains)

Why measured this way:
- Inputs are real: synthetic events through the bundle's encoding, windows and
  TokenEncoder, batched as the worker batches them (padded to the bundle's
  sequence buckets). Tokenization is excluded; it is the same for every variant.
- The machine is shared and noisy, so variants are measured interleaved
  (round-robin, every round measures every variant at every batch size) and
  ratios are taken within a round, then summarised as median [min–max].
- The torch baseline is not weakened: two configurations of the same weights
  are measured (transformers' defaults, sdpa attention with grouped-GEMM
  experts; and eager attention with the dense experts the export uses) and each
  ratio is against the faster of the two in that round. Threads are the same
  for torch and onnxruntime.
- int8 quality: AUPRC of fp32 and int8 on a held-out synthetic split (the
  card's test_small spec), scored through the worker's path, next to the delta
  the card recorded on its full test split.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import (bundle_info, fmt_range, print_table, resolve_bundle, spread, stream_texts, timed_rate,
                          write_result)

Run = Callable[[np.ndarray, np.ndarray], Any]
REFERENCE = "onnx cpu fp32"


@dataclass
class Variant:
    """One way of running the model: a name, what it runs on, and a factory for its batch function."""

    name: str
    engine: str  # "onnx" | "torch"
    device: str
    precision: str
    make: Callable[[], Run]
    note: str = ""
    threads: int = 0
    run: Run | None = field(default=None, repr=False)


# ---------------------------------------------------------------- inputs
def make_batches(bundle: Any, texts: list[str], batch: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` distinct batches of ``batch`` texts, encoded like the worker does (bucketed width)."""
    out = []
    for k in range(count):
        start = (k * batch * 7) % max(1, len(texts) - batch)
        out.append(bundle.tokens.encode(texts[start : start + batch]))
    return out


# ---------------------------------------------------------------- variants
def onnx_plain(path: Path, device: str, threads: int) -> Callable[[], Run]:
    def make() -> Run:
        from streamer.scorer import make_session

        sess, choice = make_session(path, device, threads)
        if device != "cpu" and choice.provider == "CPUExecutionProvider":
            raise RuntimeError(f"{device} unavailable: {choice.fallback_reason}")
        names = [i.name for i in sess.get_inputs()]
        out = sess.get_outputs()[0].name

        def run(ids: np.ndarray, mask: np.ndarray) -> Any:
            feeds = {"input_ids": ids, "attention_mask": mask}
            return sess.run([out], {k: feeds[k] for k in names})[0]

        return run

    return make


def onnx_scorer(bundle: Any, device: str, precision: str, threads: int, io_binding: bool) -> Callable[[], Run]:
    """The worker's own Scorer (IO binding, pinned buffers and batch buckets on GPU)."""

    def make() -> Run:
        from streamer.scorer import Scorer

        s = Scorer(bundle, device, precision, threads, io_binding=io_binding)
        if device != "cpu" and s.provider == "CPUExecutionProvider":
            raise RuntimeError(f"{device} unavailable: {s.choice.fallback_reason}")
        if s.precision != precision:
            raise RuntimeError(f"bundle has no {precision} variant")
        if s.runner is None:
            return lambda ids, mask: s.session.run([s.output_name], {"input_ids": ids, "attention_mask": mask})[0]
        return s.runner.run_arrays

    return make


def torch_eager(checkpoint: Path, device: str, dtype: str, attn: str, experts: str | None, threads: int) -> Callable[[], Run]:
    def make() -> Run:
        import torch
        from transformers import DeepseekV3ForSequenceClassification

        import models.classifier  # noqa: F401 - registers the "dense" experts implementation

        torch.set_num_threads(threads)
        model = DeepseekV3ForSequenceClassification.from_pretrained(checkpoint, attn_implementation=attn)
        if experts:
            model.set_experts_implementation(experts)
        model = model.to(device=device, dtype=getattr(torch, dtype)).eval()

        def run(ids: np.ndarray, mask: np.ndarray) -> Any:
            if torch.get_num_threads() != threads:  # torch's pool is process-wide; variants differ in threads
                torch.set_num_threads(threads)
            with torch.inference_mode():
                ti = torch.from_numpy(ids).to(device, non_blocking=True)
                tm = torch.from_numpy(mask).to(device, non_blocking=True)
                return model(input_ids=ti, attention_mask=tm).logits.float().cpu().numpy()

        return run

    return make


def variants(bundle: Any, device: str, threads: int) -> list[Variant]:
    """Every way this host can run the bundle, at ``threads`` intra-op threads (names end in "·Nt")."""
    paths = {k: bundle.path / v for k, v in (bundle.card.get("variants") or {"fp32": "model.onnx"}).items()}
    ck = bundle.path / "checkpoint"
    t = f" ·{threads}t"
    out = [Variant(REFERENCE + t, "onnx", "cpu", "fp32", onnx_plain(paths["fp32"], "cpu", threads), "the worker's CPU path")]
    if "int8" in paths:
        out.append(Variant("onnx cpu int8" + t, "onnx", "cpu", "int8", onnx_plain(paths["int8"], "cpu", threads), "dynamic int8 (weights)"))
    out.append(Variant("onnx cpu fp32 iobinding" + t, "onnx", "cpu", "fp32", onnx_scorer(bundle, "cpu", "fp32", threads, True),
                       "preallocated buffers, bound output (the GPU path's code on CPU)"))
    if (ck / "config.json").is_file():
        out.append(Variant("torch cpu fp32 sdpa+grouped_mm" + t, "torch", "cpu", "fp32", torch_eager(ck, "cpu", "float32", "sdpa", None, threads),
                           "transformers defaults"))
        out.append(Variant("torch cpu fp32 eager+dense" + t, "torch", "cpu", "fp32", torch_eager(ck, "cpu", "float32", "eager", "dense", threads),
                           "the training/export formulation"))
    if device == "cuda":
        out.append(Variant("onnx cuda fp32" + t, "onnx", "cuda", "fp32", onnx_scorer(bundle, "cuda", "fp32", threads, True), "IO binding, pinned"))
        out.append(Variant("onnx cuda fp16" + t, "onnx", "cuda", "fp16", onnx_scorer(bundle, "cuda", "fp16", threads, True), "IO binding, pinned (the GPU default)"))
        out.append(Variant("onnx cuda fp16 plain" + t, "onnx", "cuda", "fp16", onnx_scorer(bundle, "cuda", "fp16", threads, False), "session.run with numpy feeds"))
        if (ck / "config.json").is_file():
            out.append(Variant("torch cuda bf16 sdpa+grouped_mm" + t, "torch", "cuda", "bf16", torch_eager(ck, "cuda", "bfloat16", "sdpa", None, threads)))
            out.append(Variant("torch cuda bf16 eager+dense" + t, "torch", "cuda", "bf16", torch_eager(ck, "cuda", "bfloat16", "eager", "dense", threads)))
    for v in out:
        v.threads = threads
    return out


# ---------------------------------------------------------------- measuring
def measure(run: Run, batches: list[tuple[np.ndarray, np.ndarray]], seconds: float, warm: bool = True) -> dict[str, float]:
    """events/s and tokens/s (real tokens, i.e. attention-mask ones) of ``run`` cycling through ``batches``."""
    real = [int(m.sum()) for _, m in batches]
    padded = [int(m.size) for _, m in batches]
    if warm:  # first-shape costs (allocations, kernel selection) are not steady state
        for ids, mask in batches:
            run(ids, mask)
    counts = {"real": 0, "padded": 0}

    def one(i: int) -> int:
        k = i % len(batches)
        ids, mask = batches[k]
        run(ids, mask)
        counts["real"] += real[k]
        counts["padded"] += padded[k]
        return len(ids)

    eps, calls, dt = timed_rate(one, seconds)
    return {"events_per_s": eps, "tokens_per_s": counts["real"] / dt, "padded_tokens_per_s": counts["padded"] / dt,
            "ms_per_batch": 1000 * dt / calls, "calls": calls}


def op_profile(bundle: Any, batches: list[tuple[np.ndarray, np.ndarray]], threads: int, repeats: int = 3) -> dict[str, Any]:
    """Share of kernel time per operator type (onnxruntime's profiler), fp32 and int8.

    Why: dynamic int8 only speeds up the GEMMs, so the GEMMs' share of the
    fp32 time bounds what int8 can ever gain (Amdahl).
    """
    import collections
    import json
    import tempfile

    import onnxruntime as ort

    out: dict[str, Any] = {"threads": threads, "batch": len(batches[0][0]), "runs": repeats * len(batches)}
    variants_ = bundle.card.get("variants") or {"fp32": "model.onnx"}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("fp32", "int8"):
            if name not in variants_:
                continue
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.enable_profiling, so.profile_file_prefix, so.log_severity_level = True, f"{tmp}/{name}", 3
            sess = ort.InferenceSession(str(bundle.path / variants_[name]), so, providers=["CPUExecutionProvider"])
            for _ in range(repeats):
                for ids, mask in batches:
                    sess.run(None, {"input_ids": ids, "attention_mask": mask})
            events = json.load(open(sess.end_profiling()))
            per_op: collections.Counter = collections.Counter()
            for e in events:
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    per_op[e["args"]["op_name"]] += e["dur"]
            total = sum(per_op.values())
            out[name] = {"kernel_ms": total / 1000, "share": {op: d / total for op, d in per_op.most_common()}}
    gemm = ("MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
    if "fp32" in out:
        g = sum(v for k, v in out["fp32"]["share"].items() if k in gemm)
        out["fp32_gemm_share"] = g
        out["int8_speedup_bound"] = 1 / (1 - g) if g < 1 else None
    if "fp32" in out and "int8" in out:
        out["int8_kernel_speedup"] = out["fp32"]["kernel_ms"] / out["int8"]["kernel_ms"]
    return out


def int8_quality(bundle: Any, events: int, threads: int) -> dict[str, Any]:
    """AUPRC of fp32 vs int8 on a held-out synthetic split, through the worker's TokenEncoder and onnxruntime."""
    from models.evaluate import metrics, score_onnx
    from models.pipeline import prepare

    variants_ = bundle.card.get("variants") or {}
    if "int8" not in variants_:
        return {"skipped": "bundle has no int8 variant"}
    spec = ((bundle.card.get("training") or {}).get("eval_specs") or {}).get("test_small")
    spec = [dict(s) for s in spec] if spec else [{"synth": {"n_events": 30000, "seed": 606, "fraud_rate": 0.004, "drift": 0.5, "n_accounts": 400}}]
    for s in spec:
        if "synth" in s:
            s["synth"] = {**s["synth"], "n_events": min(events, s["synth"]["n_events"])}
    split = prepare(spec, bundle.encoding, bundle.card)
    thr = bundle.card["thresholds"]["alert"]
    out: dict[str, Any] = {"data": split.sources, "rows": len(split.labels), "positives": int(sum(split.labels))}
    scores = {}
    for name in ("fp32", "int8"):
        scores[name] = score_onnx(bundle.path / variants_[name], bundle.tokens, split.texts, threads=threads)
        m = metrics(split.labels, scores[name], thr)
        out[name] = {k: m[k] for k in ("auprc", "roc_auc", "recall_at_fpr_0.1%", "f1", "alerts")}
    out["auprc_delta_int8_minus_fp32"] = out["int8"]["auprc"] - out["fp32"]["auprc"]
    out["max_abs_score_diff"] = float(np.abs(scores["int8"] - scores["fp32"]).max())
    out["alert_agreement"] = float(((scores["int8"] >= thr) == (scores["fp32"] >= thr)).mean())
    card = ((bundle.card.get("variant_checks") or {}).get("int8") or {})
    if card.get("test_metric_deltas_vs_fp32"):
        out["card_test_auprc_delta"] = card["test_metric_deltas_vs_fp32"].get("auprc")
        out["card_test_data"] = (bundle.card.get("metrics") or {}).get("test", {}).get("data")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", help="bundle directory (default: the shipped transaction bundle)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda adds the GPU variants")
    ap.add_argument("--batch-sizes", default="1,8,64,256")
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}" if (os.cpu_count() or 1) > 1 else "1",
                    help="comma-separated intra-op thread counts (onnxruntime and torch alike)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved repetitions of every measurement")
    ap.add_argument("--seconds", type=float, default=0.5, help="seconds per measurement")
    ap.add_argument("--quality-events", type=int, default=30000, help="events of the held-out split for the int8 AUPRC check (0: skip)")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only matching variants (plus the reference)")
    ap.add_argument("--profile", action="store_true", help="only profile fp32 and int8 per operator type (batch 64, 1 thread)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 0.3 s each, 3k quality events")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.quality_events = 1, 0.3, min(args.quality_events, 3000)
    thread_counts = sorted({int(x) for x in str(args.threads).split(",") if x})

    from streamer.bundle import load_bundle

    bundle = load_bundle(resolve_bundle(args.bundle))
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    texts, _ = stream_texts(bundle, 4096, seed=4242, skip=1000)
    if args.profile:
        prof = op_profile(bundle, make_batches(bundle, texts, 64, 10), 1, 1 if args.quick else 3)
        for name in ("fp32", "int8"):
            if name in prof:
                top = ", ".join(f"{op} {sh:.1%}" for op, sh in list(prof[name]["share"].items())[:6])
                print(f"{name}: {prof[name]['kernel_ms']:.0f} ms of kernels over {prof['runs']} batches of 64; {top}")
        print(f"GEMM share of fp32 {prof.get('fp32_gemm_share', 0):.1%} -> int8 can gain at most {prof.get('int8_speedup_bound') or 0:.2f}x; "
              f"int8 kernels took {prof.get('int8_kernel_speedup') or 0:.2f}x less time")
        path = write_result("model_profile", {"bundle": bundle_info(bundle), "settings": vars(args), **prof}, args.quick)
        print(f"results: {path}")
        return 0
    batches = {b: make_batches(bundle, texts, b, 8 if b <= 64 else 4) for b in sizes}
    print(f"bundle {bundle.model_id} ({bundle_info(bundle)['parameters']} parameters), threads {thread_counts}, "
          f"mean {np.mean([len(r) for r in bundle.tokens.ids(texts)]):.1f} tokens/event")

    vs = [v for t in thread_counts for v in variants(bundle, args.device, t)]
    if args.only:
        keys = [k for k in args.only.split(",") if k]
        vs = [v for v in vs if v.name.startswith(REFERENCE) or any(k in v.name for k in keys)]
    skipped = {}
    for v in vs:
        try:
            v.run = v.make()
        except Exception as exc:  # noqa: BLE001 - a variant this host cannot run is reported, not fatal
            skipped[v.name] = f"{type(exc).__name__}: {exc}"[:300]
            print(f"skipping {v.name}: {skipped[v.name]}")
    vs = [v for v in vs if v.run is not None]

    raw: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for b in sizes:
            for v in vs:
                gc.collect()
                time.sleep(0.1)  # let the previous engine's spinning threads go idle
                raw.setdefault((v.name, b), []).append(measure(v.run, batches[b], args.seconds, warm=r == 0))
        print(f"round {r + 1}/{args.rounds} done")

    rows = summarise(vs, sizes, raw, args.rounds)
    show(rows, sizes)
    quality = int8_quality(bundle, args.quality_events, max(thread_counts)) if args.quality_events else {"skipped": "--quality-events 0"}
    if "auprc_delta_int8_minus_fp32" in quality:
        print(f"\nint8 quality on {quality['rows']:,} held-out events ({quality['positives']} positives): AUPRC fp32 "
              f"{quality['fp32']['auprc']:.4f}, int8 {quality['int8']['auprc']:.4f}, delta {quality['auprc_delta_int8_minus_fp32']:+.4f}; "
              f"card (full test split) delta {quality.get('card_test_auprc_delta')}; alert agreement {quality['alert_agreement']:.4f}")
    path = write_result("model", {"bundle": bundle_info(bundle), "settings": vars(args), "skipped": skipped,
                                  "variants": {v.name: {"engine": v.engine, "device": v.device, "precision": v.precision, "threads": v.threads, "note": v.note} for v in vs},
                                  "rows": rows, "int8_quality": quality}, args.quick)
    print(f"\nresults: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


def summarise(vs: list[Variant], sizes: list[int], raw: dict, rounds: int) -> list[dict[str, Any]]:
    """Per variant and batch size: median [range] of events/s and tokens/s, and ratios.

    Ratios are paired within a round (same batch size, measured back to back)
    against the variants with the same thread count: ``x_onnx_fp32`` against
    the ONNX fp32 session, ``x_torch_best`` against the faster torch
    configuration on the same device. ``best_ratio_*`` divides the best
    (highest) rate of each over all rounds: interference on a shared machine
    only ever slows a run down, so best-of-rounds is the least disturbed figure.
    """
    rows = []
    for b in sizes:
        for v in vs:
            ms = raw[(v.name, b)]
            same = [u for u in vs if u.threads == v.threads]
            row: dict[str, Any] = {"variant": v.name, "engine": v.engine, "device": v.device, "precision": v.precision, "threads": v.threads,
                                   "batch": b, "events_per_s": spread([m["events_per_s"] for m in ms]),
                                   "tokens_per_s": spread([m["tokens_per_s"] for m in ms]),
                                   "padded_tokens_per_s": spread([m["padded_tokens_per_s"] for m in ms]),
                                   "ms_per_batch": spread([m["ms_per_batch"] for m in ms])}
            ref = raw.get((next(u.name for u in same if u.name.startswith(REFERENCE)), b))
            best = max(m["events_per_s"] for m in ms)
            if ref:
                row["x_onnx_fp32"] = spread([m["events_per_s"] / r["events_per_s"] for m, r in zip(ms, ref)])
                row["best_ratio_onnx_fp32"] = best / max(r["events_per_s"] for r in ref)
            dev = [u.name for u in same if u.engine == "torch" and u.device == v.device]
            base = dev or [u.name for u in same if u.engine == "torch" and u.device == "cpu"]
            if base:
                per_round = [max(raw[(n, b)][i]["events_per_s"] for n in base) for i in range(rounds)]
                row["x_torch_best"] = spread([m["events_per_s"] / t for m, t in zip(ms, per_round)])
                row["best_ratio_torch"] = best / max(per_round)
            rows.append(row)
    return rows


def show(rows: list[dict[str, Any]], sizes: list[int]) -> None:
    for b in sizes:
        sel = [r for r in rows if r["batch"] == b]
        print_table(["variant", "events/s", "best", "tokens/s", "ms/batch", "× onnx fp32 (paired)", "best/best", "× torch (paired)", "best/best"],
                    [[r["variant"], fmt_range(r["events_per_s"]), f"{r['events_per_s']['max']:,.0f}", fmt_range(r["tokens_per_s"]), fmt_range(r["ms_per_batch"], 2),
                      fmt_range(r["x_onnx_fp32"], 2, "×") if "x_onnx_fp32" in r else "", f"{r['best_ratio_onnx_fp32']:.2f}×" if "best_ratio_onnx_fp32" in r else "",
                      fmt_range(r["x_torch_best"], 2, "×") if "x_torch_best" in r else "", f"{r['best_ratio_torch']:.2f}×" if "best_ratio_torch" in r else ""] for r in sel],
                    title=f"batch {b}: median [min–max] over rounds")


if __name__ == "__main__":
    raise SystemExit(main())
