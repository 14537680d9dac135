"""Render a bundle card's numbers as Markdown tables (for docs/model-card.md).

Why generated: hand-copied metrics drift from the bundle they describe. The
model-card section quotes this output verbatim, with the command and commit
recorded in the card. ``python -m models.report --bundle DIR``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Sequence

from models.bundle import read_card

COLUMNS = (("auprc", "AUPRC"), ("roc_auc", "ROC AUC"), ("recall_at_fpr_0.1%", "recall @ FPR 0.1%"),
           ("recall_at_fpr_0.02%", "recall @ FPR 0.02%"), ("f1", "F1 @ alert thr."),
           ("alert_precision", "alert precision"), ("recall", "recall @ alert thr."), ("fpr", "FPR @ alert thr."))


def _f(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.1e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"
    return str(v)


TOKEN_DETECTORS = (("model", "DeepSeek-V3 (ONNX fp32)"), ("gbt", "HistGradientBoosting"), ("hst", "HalfSpaceTrees"))


def _detectors_table(m: Mapping[str, Any], detectors: Sequence[tuple[str, str]], head: str) -> str:
    """One row of ``COLUMNS`` per detector present in ``m`` (a split's metrics)."""
    rows = [f"| {head} | " + " | ".join(c for _, c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for key, label in detectors:
        if key in m:
            rows.append(f"| {label} | " + " | ".join(_f(m[key].get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(rows)


def metrics_table(card: Mapping[str, Any], split: str) -> str:
    return _detectors_table(card["metrics"].get(split) or {}, TOKEN_DETECTORS, "model")


def typology_table(card: Mapping[str, Any], split: str, key: str = "typology") -> str:
    """Recall per fraud typology (transactions) or fault type (sensors, ``key="fault_type"``)."""
    m = card["metrics"].get(split) or {}
    model, gbt, hst = (m.get(f"{k}_per_{key}") or {} for k in ("model", "gbt", "hst"))
    head = key.replace("_", " ")
    rows = [f"| {head} | events | model recall @ alert thr. | GBT recall @ its alert thr. |"
            + (" HST recall @ its alert thr. |" if hst else ""), "|---|---|---|---|" + ("---|" if hst else "")]
    for name in sorted(model):
        rows.append(f"| {name} | {model[name]['events']} | {_f(model[name]['recall'])} | "
                    f"{_f((gbt.get(name) or {}).get('recall'))} |"
                    + (f" {_f((hst.get(name) or {}).get('recall'))} |" if hst else ""))
    return "\n".join(rows)


def nab_table(card: Mapping[str, Any]) -> str:
    """NAB per profile: the model (through the worker path) and, where recorded, its label-free teacher."""
    nab = (card.get("metrics") or {}).get("nab") or {}
    prof = nab.get("profiles") or {}
    teacher = nab.get("teacher_profiles") or {}
    rows = ["| profile | model score | raw | threshold |" + (" teacher (novelty feature) score |" if teacher else ""),
            "|---|---|---|---|" + ("---|" if teacher else "")]
    for name, r in prof.items():
        rows.append(f"| {name} | **{r['score']:.2f}** | {r['raw']:.2f} | {r['threshold']:.4f} |"
                    + (f" {teacher[name]['score']:.2f} |" if name in teacher else ""))
    return "\n".join(rows)


def nab_section(card: Mapping[str, Any]) -> str | None:
    """The NAB paragraph (corpus, command, ``nab_table``), or None when the card records no NAB run."""
    nab = (card.get("metrics") or {}).get("nab")
    if not nab:
        return None
    return (f"\n**NAB** ({nab.get('series')} series, {nab.get('windows')} anomaly windows; "
            f"`{nab.get('command')}`)\n\n" + nab_table(card))


def variants_table(card: Mapping[str, Any]) -> str:
    checks = card.get("variant_checks") or {}
    rows = ["| variant | file | max abs logit diff | max abs score diff | argmax agreement | AUPRC delta | "
            "recall @ FPR 0.1% delta | events/s B1 | events/s B64 |", "|---" * 9 + "|"]
    for name, c in checks.items():
        par = c.get("vs_torch") or c.get("vs_fp32") or {}
        ref = "torch" if "vs_torch" in c else "fp32"
        delta = next((v for k, v in c.items() if k.endswith("_metric_deltas_vs_fp32")), {}) or {}
        sp = c.get("speed") or {}
        rows.append(f"| {name} | {card.get('variants', {}).get(name, '')} | {_f(par.get('max_abs_logit_diff'))} (vs {ref}) | "
                    f"{_f(par.get('max_abs_score_diff'))} | {_f(par.get('argmax_agreement'))} | {_f(delta.get('auprc'))} | "
                    f"{_f(delta.get('recall_at_fpr_0.1%'))} | {sp.get('b1_events_per_s', 'n/a')} | {sp.get('b64_events_per_s', 'n/a')} |")
    return "\n".join(rows)


SENSOR_DETECTORS = (("model", "DeepSeek-V3 sensor model (ONNX fp32)"), ("pca_t2q", "PCA T²+Q (per type)"),
                    ("pca_t2q_per_asset", "PCA T²+Q (per asset, own first readings)"), ("iforest", "Isolation Forest"))


def sensor_metrics_table(m: Mapping[str, Any]) -> str:
    return _detectors_table(m, SENSOR_DETECTORS, "detector")


def sensor_fault_table(m: Mapping[str, Any]) -> str:
    present = [(k, label) for k, label in SENSOR_DETECTORS if k in m]
    names = sorted((m["model"].get("per_fault_type") or {}))
    rows = ["| fault type | events | " + " | ".join(f"{label.split(' (')[0]} recall" for _, label in present) + " |",
            "|---|---|" + "---|" * len(present)]
    for n in names:
        cells = [_f(((m[k].get("per_fault_type") or {}).get(n) or {}).get("recall")) for k, _ in present]
        rows.append(f"| {n} | {m['model']['per_fault_type'][n]['events']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def sensor_types_table(card: Mapping[str, Any]) -> str:
    types = card["sensor_model"]["types"]
    far = ((card.get("metrics") or {}).get("validation") or {}).get("false_alarms") or {}
    rows = ["| asset type | sensors | assets | readings | relation strength | baseline | alert budget / reading | "
            "held-out false-alarm rate | false alarms / asset-day |", "|---" * 9 + "|"]
    for name, t in types.items():
        f = far.get(name) or {}
        base = ("own scale, " if t.get("own_scale") else "") + (f"adapts ({t['adapt']})" if t.get("adapt") else "frozen after warm-up")
        rows.append(f"| {name} | {len(t['sensors'])} | {t.get('assets')} | {t.get('readings')} | {_f(t.get('relation_strength'))} | "
                    f"{base} | {_f(t.get('alert_p'))} | {_f(f.get('heldout_false_alarm_rate'))} | "
                    f"{_f(f.get('heldout_false_alarms_per_asset_day'))} |")
    return "\n".join(rows)


def sensor_parts_table(card: Mapping[str, Any]) -> str:
    """Each part alone and the best combinations (held-out injected AUPRC, multi-sensor types pooled), then per type."""
    v = (card.get("metrics") or {}).get("validation") or {}
    table = v.get("auprc_on_injected_by_parts") or {}
    chosen = "+".join(v.get("combine") or [])
    singles = [k for k in ("D", "R", "Dbar", "Rbar", "L", "Lbar", "S", "E", "logit") if k in table]
    best = [k for k, _ in sorted(((k, x) for k, x in table.items() if "+" in k and x is not None), key=lambda kv: -kv[1])[:6]]
    rows = ["| parts (all multi-sensor types) | held-out injected AUPRC |", "|---|---|"]
    for k in singles + best + ([chosen] if chosen and chosen not in singles + best else []):
        rows.append(f"| {'**' + k + '** (chosen)' if k == chosen else k} | {_f(table.get(k))} |")
    per = ["", "| asset type | " + " | ".join(singles + ["N"]) + " | used | its AUPRC |", "|---" * (len(singles) + 4) + "|"]
    for name, t in (v.get("types") or {}).items():
        own = t.get("auprc_on_injected_by_parts") or {}
        used = "+".join(t.get("combine") or [])
        per.append(f"| {name} | " + " | ".join(_f(own.get(k)) for k in singles + ["N"]) + f" | {used} | {_f(own.get(used))} |")
    return "\n".join(rows + per)


def sensor_variants_table(card: Mapping[str, Any]) -> str:
    checks = card.get("variant_checks") or {}
    rows = ["| variant | file | max abs output diff | events/s B64 (1 thread) |", "|---|---|---|---|"]
    for name, c in checks.items():
        diff = c.get("max_abs_diff", c.get("max_abs_diff_vs_fp32"))
        ref = "torch" if "max_abs_diff" in c else "fp32"
        rows.append(f"| {name} | {card.get('variants', {}).get(name, '')} | {_f(diff)} (vs {ref}) | "
                    f"{c.get('events_per_s_b64_1thread', 'n/a')} |")
    return "\n".join(rows)


def render_sensor(card: Mapping[str, Any]) -> str:
    arch = card.get("architecture", {})
    tr = card.get("training", {})
    summary = tr.get("summary") or {}
    parts = [
        f"Bundle `{card['name']}@{card['version']}`, encoding `{card['encoding_version']}`, "
        f"{arch.get('parameters', '?'):,} parameters, window {card['sensor_model']['window']} readings, "
        f"warm-up {card['sensor_model']['warmup']} readings.",
        f"Built by `{tr.get('command')}` at commit `{tr.get('commit')}`; training {summary.get('wall_s')} s "
        f"({summary.get('steps')} steps, weights of step {summary.get('selected_step')} kept), whole build "
        f"{tr.get('build_wall_s')} s.",
        "\n**Asset types** (held-out: every fifth block of each asset's normal rows after its warm-up; calibrated on "
        "them and, for a type with at least 100 readings per sensor, on its training readings too; false-alarm rate of "
        "the alert threshold on each half of the held-out blocks with the calibration fitted on the other half)\n\n"
        + sensor_types_table(card),
        "\n**Score parts** (AUPRC on held-out normal rows with injected faults at full and quarter strength, the "
        "rows a fault lingers in left out; `D` Mahalanobis distance, `R` worst leave-one-out residual, `Dbar` and "
        "`Rbar` the same over the window, `L` and `Lbar` the lag-aware residual now and over the window, `S` "
        "weighted run of exact repeats, `E` forecast error, `logit` classifier)\n\n" + sensor_parts_table(card),
    ]
    for split in ("test", "held_out_injected", "test_small"):
        m = (card.get("metrics") or {}).get(split)
        if m and "model" in m:
            data = m.get("data")
            data = "; ".join(data) if isinstance(data, list) else data
            parts.append(f"\n**{split}** ({data})\n\n" + sensor_metrics_table(m))
            if m["model"].get("per_fault_type"):
                parts.append("\n" + sensor_fault_table(m))
    if (nab := nab_section(card)) is not None:
        parts.append(nab)
    parts.append("\n**Precision variants**\n\n" + sensor_variants_table(card))
    return "\n".join(parts) + "\n"


def render(card: Mapping[str, Any]) -> str:
    if card.get("kind") == "sensor" and "sensor_model" in card:
        return render_sensor(card)
    arch = card.get("architecture", {})
    tr = card.get("training", {})
    parts = [
        f"Bundle `{card['name']}@{card['version']}`, encoding `{card['encoding_version']}`, "
        f"{arch.get('parameters', '?'):,} parameters, max {card['max_seq_len']} tokens, window {card.get('window')}.",
        f"Built by `{tr.get('command')}` at commit `{tr.get('commit')}`; training {tr.get('train_wall_s')} s, "
        f"whole build {tr.get('build_wall_s')} s (data preparation {tr.get('data_prep_s')} s).",
    ]
    for split in ("test", "stress", "validation", "test_small"):
        if split in card.get("metrics", {}):
            data = card["metrics"][split].get("data")
            parts.append(f"\n**{split}** ({'; '.join(data) if data else ''})\n\n" + metrics_table(card, split))
            for key in ("typology", "fault_type"):
                if card["metrics"][split].get(f"model_per_{key}"):
                    parts.append("\n" + typology_table(card, split, key))
    if (nab := nab_section(card)) is not None:
        parts.append(nab)
    parts.append("\n**Precision variants**\n\n" + variants_table(card))
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.report", description=__doc__)
    ap.add_argument("--bundle", required=True)
    args = ap.parse_args(argv)
    sys.stdout.write(render(read_card(args.bundle)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
