"""Markdown tables for docs/benchmarks.md, straight from the results JSON (no hand-copied numbers).

    python -m bench.report                         # newest full run of each benchmark
    python -m bench.report --model bench/results/model-X.json ...
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from bench.common import ROOT, fmt_range, latest_result, markdown_table


def _load(path: Path | None, name: str) -> dict[str, Any] | None:
    path = path or latest_result(name)
    if path is None:
        return None
    doc = orjson.loads(path.read_bytes())
    doc["_path"] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return doc


def _source(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return (f"`{doc['_path']}` — `{doc['command']}` at commit `{doc['commit']}`, {doc['when']}; "
            f"{m['cpu']}, {m['cores']} cores, load average {m['load_avg_1m_at_start']} at start")


def model_summary_md(doc: dict[str, Any]) -> str:
    """One row per (threads, batch): the ONNX fp32 session, int8 and IO binding against it, torch against it."""
    by = {(r["variant"], r["batch"]): r for r in doc["rows"]}
    rows = []
    for r in doc["rows"]:
        if not r["variant"].startswith("onnx cpu fp32 ·"):
            continue
        t, b = r["threads"], r["batch"]
        suffix = f" ·{t}t"
        int8 = by.get(("onnx cpu int8" + suffix, b))
        iob = by.get(("onnx cpu fp32 iobinding" + suffix, b))
        torches = [by[k] for k in by if k[1] == b and k[0].startswith("torch cpu") and k[0].endswith(suffix)]
        best_torch = max(torches, key=lambda x: x["events_per_s"]["median"]) if torches else None
        rows.append([t, b, fmt_range(r["events_per_s"]), fmt_range(r["tokens_per_s"]),
                     fmt_range(int8["x_onnx_fp32"], 2, "×") if int8 else "–", fmt_range(iob["x_onnx_fp32"], 2, "×") if iob else "–",
                     f"{fmt_range(best_torch['events_per_s'])} ({best_torch['variant'].split(' fp32 ')[1].split(' ·')[0]})" if best_torch else "–",
                     fmt_range(r["x_torch_best"], 2, "×") if "x_torch_best" in r else "–", f"{r['best_ratio_torch']:.2f}×" if "best_ratio_torch" in r else "–"])
    return markdown_table(["intra-op threads", "batch", "ONNX fp32 events/s", "ONNX fp32 tokens/s", "int8 × fp32 (paired)",
                           "IO binding × plain (paired)", "torch eager fp32, faster config, events/s", "ONNX × torch (paired)", "ONNX × torch best/best"], rows)


def model_md(doc: dict[str, Any]) -> str:
    out = [_source(doc), "", model_summary_md(doc), "", "<details><summary>every variant</summary>", ""]
    rows = []
    for r in doc["rows"]:
        rows.append([r["variant"], r["batch"], fmt_range(r["events_per_s"]), f"{r['events_per_s']['max']:,.0f}", fmt_range(r["tokens_per_s"]),
                     fmt_range(r["x_onnx_fp32"], 2, "×") if "x_onnx_fp32" in r else "",
                     fmt_range(r["x_torch_best"], 2, "×") if "x_torch_best" in r else "",
                     f"{r['best_ratio_torch']:.2f}×" if "best_ratio_torch" in r else ""])
    out.append(markdown_table(["variant", "batch", "events/s", "best", "tokens/s", "× onnx fp32 (paired)", "× best torch (paired)", "× torch best/best"], rows))
    out += ["", "</details>"]
    q = doc.get("int8_quality") or {}
    if "auprc_delta_int8_minus_fp32" in q:
        out += ["", f"int8 quality: {q['rows']:,} held-out events ({q['positives']} positives; {', '.join(q['data'])}): "
                    f"AUPRC fp32 {q['fp32']['auprc']:.4f}, int8 {q['int8']['auprc']:.4f}, delta {q['auprc_delta_int8_minus_fp32']:+.4f}; "
                    f"alert agreement {q['alert_agreement']:.4f}; max score difference {q['max_abs_score_diff']:.4f}; "
                    f"the card's delta on its 200k-event test split: {q.get('card_test_auprc_delta')}"]
    return "\n".join(out)


def _ms(s: dict[str, float] | None) -> str:
    return fmt_range(s, 1) if s else "–"


def batcher_md(doc: dict[str, Any]) -> str:
    out = [_source(doc), "", f"Capacity ({doc['capacity']['policy']}, pre-filled queue): {fmt_range(doc['capacity']['events_per_s'])} events/s.", ""]
    rows = [[r["policy"], f"{r['load']:.0%}", f"{r['offered_per_s']:,.0f}", fmt_range(r["events_per_s"]), _ms(r["p50_ms"]), _ms(r["p99_ms"]),
             fmt_range(r["mean_batch"], 1), f"{r['overloaded']}/{r['repeats']}"] for r in doc["rows"]]
    out.append(markdown_table(["policy", "load", "offered/s", "events/s", "p50 ms", "p99 ms", "mean batch", "overloaded runs"], rows))
    out += ["", "Defaults sweep (saturated = pre-filled queue; 50%/90% of the default policy's capacity):", ""]
    rows = [[r["policy"], r["load"] if isinstance(r["load"], str) else f"{r['load']:.0%}", fmt_range(r["events_per_s"]), _ms(r["p50_ms"]), _ms(r["p99_ms"]),
             f"{r['overloaded']}/{r['repeats']}"] for r in doc["sweep"]]
    out.append(markdown_table(["policy", "load", "events/s", "p50 ms", "p99 ms", "overloaded runs"], rows))
    return "\n".join(out)


def threads_md(doc: dict[str, Any]) -> str:
    rows = [[r["policy"], r["inflight"], r["threads"] if r["threads"] else "0 (one per core)", fmt_range(r["events_per_s"]), fmt_range(r["x_default"], 2, "×")]
            for r in doc["rows"]]
    return "\n".join([_source(doc), "", markdown_table(["policy", "inflight_batches", "intra_op_threads", "events/s (saturated)", "× first row (paired)"], rows)])


def scaling_md(doc: dict[str, Any]) -> str:
    rows = [[r["processes"], r["intra_op_threads"], fmt_range(r["steady_events_per_s"]), fmt_range(r["first_to_last_events_per_s"]),
             fmt_range(r["x_one_process"], 2, "×") if r.get("x_one_process") else "", fmt_range(r["cores_busy"], 2),
             fmt_range(r["machine_cores_busy"], 2) if r.get("machine_cores_busy") else "–", fmt_range(r["worker_cpu_ms_per_event"], 2)]
            for r in doc["rows"]]
    return "\n".join([_source(doc), "", markdown_table(
        ["processes", "intra-op threads each", "events/s (steady)", "first to last", "× 1 process", "cores busy (workers + broker)",
         "machine cores busy (all tenants)", "worker CPU-ms/event"], rows)])


def buckets_md(doc: dict[str, Any]) -> str:
    rows = [[r["batch"], f"{r['width_card']} / {r['width_against']}", fmt_range(r["card_events_per_s"]),
             fmt_range(r["against_events_per_s"]), f"{r['ratio']['median']:.3f}", f"{r['max_abs_logit_diff']:.1e}"]
            for r in doc["results"]]
    return "\n".join([_source(doc), "", markdown_table(
        ["batch", "padded width", "events/s, card buckets", f"events/s, {doc['against']}", "paired ratio", "max abs logit diff"],
        rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("model", "buckets", "batcher", "batcher_threads", "scaling", "scaling_noop"):
        ap.add_argument("--" + name.replace("_", "-"), type=Path)
    args = ap.parse_args(argv)
    sections = [("model", "model", model_md), ("buckets", "buckets", buckets_md), ("batcher", "batcher", batcher_md), ("batcher_threads", "batcher_threads", threads_md),
                ("scaling", "scaling", scaling_md), ("scaling_noop", "scaling-noop", scaling_md)]
    for attr, name, fn in sections:
        doc = _load(getattr(args, attr), name)
        if doc:
            print(f"\n### {name}\n\n{fn(doc)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
