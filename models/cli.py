"""``streamer model train|fine-tune|evaluate|export``: the offline side's command line.

The lead wires it with ``models.cli.register(model_subparsers)`` and dispatches
``args.func(args)``; until then ``python -m models.cli ...`` runs the same parser.
Heavy imports (torch, transformers) happen inside the handlers so ``--help``
stays instant and the worker never imports them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from streamer.bundle import DEFAULT_BUNDLES

KINDS = ("transaction", "sensor")
ACTIONS = ("train", "fine-tune", "evaluate", "export")


def _command_line(argv: list[str] | None = None) -> str:
    """The command as a user would retype it, for the card, whichever entry point ran it.

    >>> _command_line(["streamer", "model", "train", "--kind", "sensor"])
    'streamer model train --kind sensor'
    >>> _command_line(["models/cli.py", "train", "--out", "a b"])
    "streamer model train --out 'a b'"
    """
    argv = sys.argv if argv is None else argv
    if not argv:
        return ""
    args = list(argv[1:])
    if "model" in args and not any(a in args[: args.index("model")] for a in ACTIONS):
        args = args[args.index("model") + 1 :]  # run as `streamer [flags] model ACTION ...`
    return "streamer model " + " ".join(shlex.quote(a) for a in args)


def _lora(args: argparse.Namespace) -> dict[str, Any] | None:
    if not getattr(args, "lora", False) and getattr(args, "base", None) is None:
        return None
    targets = [t for t in (args.lora_targets or "").split(",") if t] or None
    return {"rank": args.lora_rank, "alpha": args.lora_alpha, "dropout": args.lora_dropout, "targets": targets}


def _add_lora_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout")
    p.add_argument("--lora-targets", default="",
                   help="comma-separated module names for LoRA (default: the MLA projections present: "
                        "q_proj or q_a_proj/q_b_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj); the 'score' head is "
                        "always trained fully")


def cmd_train(args: argparse.Namespace) -> int:
    from models.pipeline import build

    out = args.out or str(DEFAULT_BUNDLES[args.kind])
    common = dict(preset=args.preset, steps_scale=args.steps_scale, data_scale=args.data_scale, resume=args.resume,
                  baselines=not args.no_baselines, seed=args.seed, threads=args.threads, progress=not args.quiet,
                  name=args.name, version=args.version, command=_command_line())
    if args.kind == "sensor":  # asset types, relation models, calibration, NAB: models/sensor_pipeline.py
        from models.sensor_pipeline import build as build_sensor

        if args.base is not None:
            print("--base (a pretrained LoRA base) applies to the token models; the sensor model trains from its "
                  "recipe", file=sys.stderr)
            return 2
        card = build_sensor(out, **common)
        test = card["metrics"].get("test", {})
        print(json.dumps({k: test.get(k) for k in ("model", "pca_t2q", "pca_t2q_per_asset", "iforest")}, indent=2))
        return 0
    card = build(args.kind, out, base=args.base, lora=_lora(args), **common)
    test = card["metrics"].get("test", {})
    print(json.dumps({k: test.get(k) for k in ("model", "gbt", "hst")}, indent=2))
    return 0


def cmd_fine_tune(args: argparse.Namespace) -> int:
    from models.bundle import read_card
    from models.dataset import DataError

    kind = read_card(args.bundle).get("kind")
    given = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    try:
        if kind == "sensor":  # normal-only readings of new asset types: models/sensor_pipeline.py
            from models.sensor_pipeline import fine_tune_sensor

            if args.lora:
                print("--lora applies to the token models; the sensor model fine-tunes all weights", file=sys.stderr)
                return 2
            card = fine_tune_sensor(args.bundle, args.train, args.out, val_fraction=args.val_fraction, seed=args.seed,
                                    threads=args.threads, progress=not args.quiet, command=_command_line(),
                                    warmup_readings=args.warmup, false_alarms_per_day=args.false_alarms_per_day,
                                    fault_rate=args.fault_rate, resume=args.resume, parts=args.parts, **given)
            v = card["metrics"]["validation"]
            print(json.dumps({"combine": v["combine"], "chosen_by": v.get("chosen_by"), "false_alarms": v["false_alarms"],
                              "held_out_injected": {k: {m: d.get(m) for m in ("auprc", "roc_auc", "f1", "fpr")}
                                                    for k, d in card["metrics"]["held_out_injected"].items()
                                                    if isinstance(d, dict) and "auprc" in d}}, indent=2))
            return 0
        from models.finetune import fine_tune_labelled

        if args.parts:
            print("--parts applies to sensor bundles; a token model's score is its classifier", file=sys.stderr)
            return 2
        lora = _lora(args) if args.lora else None
        card = fine_tune_labelled(args.bundle, args.train, args.out, val_fraction=args.val_fraction, lora=lora,
                                  seed=args.seed, threads=args.threads, progress=not args.quiet,
                                  command=_command_line(), **given)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"fine-tune: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(card["metrics"], indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.bundle import read_card

    card = read_card(args.bundle)
    if card.get("kind") == "sensor":
        from models.sensor_evaluate import evaluate_bundle as evaluate_sensor

        report = evaluate_sensor(args.bundle, args.data or None, split=args.split, precision=args.precision,
                                 threads=args.threads)
    else:
        from models.pipeline import evaluate_bundle

        specs = [{"jsonl": p} for p in args.data] if args.data else None
        report = evaluate_bundle(args.bundle, specs, split=args.split, precision=args.precision, threads=args.threads,
                                 baselines=args.baselines)
    recorded = (card.get("metrics") or {}).get(args.split) if not args.data else None
    if recorded:
        report["recorded_in_card"] = {k: recorded.get(k) for k in ("model", "gbt", "hst") if k in recorded}
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    if args.check:
        if not recorded or args.precision != "fp32":
            print(f"--check needs an fp32 evaluation of a split recorded in the card ({args.split!r})", file=sys.stderr)
            return 2
        diffs = {k: (recorded["model"].get(k), v) for k, v in report["model"].items()
                 if isinstance(v, (int, float)) and recorded["model"].get(k) is not None
                 and abs(float(recorded["model"][k]) - float(v)) > args.tolerance}
        if diffs:
            print(f"metrics differ from the card: {diffs}", file=sys.stderr)
            return 1
        print(f"card metrics for {args.split!r} reproduced", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from models.bundle import read_card as _read

    if _read(args.bundle).get("kind") == "sensor":
        from models.sensor_pipeline import export_bundle

        print(json.dumps(export_bundle(args.bundle, args.out, [v for v in args.variants.split(",") if v]), indent=2))
        return 0
    from transformers import DeepseekV3ForSequenceClassification

    from models import classifier as clf
    from models.bundle import CHECKPOINT_DIR, read_card, write_bundle
    from models.pipeline import _round, export_and_check, speed
    from streamer.bundle import load_bundle

    src = Path(args.bundle)
    out = Path(args.out or src)
    b = load_bundle(src)
    card = read_card(src)
    model = clf.use_dense_experts(DeepseekV3ForSequenceClassification.from_pretrained(src / CHECKPOINT_DIR,
                                                                                      attn_implementation="eager"))
    from models.pipeline import prepare

    specs = (card.get("training", {}).get("eval_specs") or {}).get("test_small")
    texts = prepare(specs, b.encoding, card).texts if specs else ["" for _ in range(64)]
    variants = [v for v in args.variants.split(",") if v]
    graphs, checks = export_and_check(model, out, b.tokens, texts, variants=variants)
    perf = speed(graphs, b.tokens, texts)
    for name in graphs:
        checks[name]["speed"] = perf[name]
    card["variant_checks"] = _round(checks)
    write_bundle(out, graphs, src / "tokenizer.json", card, model=model if out != src else None)
    print(json.dumps(card["variant_checks"], indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add ``train``, ``fine-tune``, ``evaluate`` and ``export`` to a subparsers object."""
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = subparsers.add_parser(
        "train", formatter_class=fmt,
        help="train a bundle from the kind's recipe (synthetic curriculum), export ONNX, evaluate vs baselines",
        description="Train the DeepSeek-V3 classifier for one event kind from its recipe (models/recipes.py): "
                    "curriculum stage one on broad synthetic data, stage two on target-like data with few labels; "
                    "then export ONNX (fp32 + fp16 + int8) with parity checks, choose thresholds on a validation "
                    "split at the target FPR, evaluate on held-out drifted data beside GBT and HalfSpaceTrees "
                    "baselines, and write the bundle. Example: streamer model train --kind transaction "
                    "--preset default --out streamer/bundles/transactions")
    p.add_argument("--kind", choices=KINDS, default="transaction", help="event kind")
    p.add_argument("--preset", choices=("tiny", "default", "large"), default=None,
                   help="model size; None means the recipe's (\"default\" for CPU bundles)")
    p.add_argument("--out", default=None, help="bundle directory; None means the shipped bundle of the kind")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's training steps")
    p.add_argument("--data-scale", type=float, default=1.0, help="multiply synthetic set sizes (quick runs)")
    p.add_argument("--seed", type=int, default=None, help="training seed; None means the recipe's")
    p.add_argument("--threads", type=int, default=0,
                   help="torch training threads; 0 means one per core (fastest on a quiet machine), 1 suits a "
                        "machine shared with other jobs; the bundle does not depend on it")
    p.add_argument("--resume", default=None, help="checkpoint dir of an interrupted run (OUT/.train)")
    p.add_argument("--base", default=None,
                   help="local pretrained DeepSeek checkpoint dir: fine-tune it with LoRA instead of a random init")
    _add_lora_flags(p)
    p.add_argument("--no-baselines", action="store_true", help="skip the GBT / HalfSpaceTrees baselines")
    p.add_argument("--name", default=None, help="bundle name; None means \"<kind>s-deepseek\"")
    p.add_argument("--version", default=None, help="bundle version; None means the recipe's (bumped when the model changes)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train, lora=False)

    p = subparsers.add_parser(
        "fine-tune", formatter_class=fmt, help="adapt a bundle to your own events (JSONL)",
        description="Continue training a bundle's model on your own labelled events (JSONL, one contract event per "
                    "line, in stream order, with 'label'), re-choose thresholds on the newest --val-fraction of "
                    "rows, re-export and write a new bundle. Example: streamer model fine-tune --bundle "
                    "streamer/bundles/transactions --train mine.jsonl --out my-bundle")
    p.add_argument("--bundle", required=True, help="base bundle directory (must contain checkpoint/)")
    p.add_argument("--train", required=True, help="JSONL events (labelled; for sensors, normal-only readings)")
    p.add_argument("--out", required=True, help="output bundle directory")
    p.add_argument("--steps", type=int, default=None, help="training steps (None: 400 for token models, 300 for sensors)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (None: 3e-4 for token models, 1e-3 for sensors)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="newest share of rows (of each asset's, for sensors) held out for thresholds and calibration")
    p.add_argument("--warmup", type=int, default=None,
                   help="sensors: readings that form each asset's own normal before it is frozen (None: the base's, 128)")
    p.add_argument("--false-alarms-per-day", type=float, default=1.0,
                   help="sensors: the alert threshold's budget of false alarms per asset-day on normal running")
    p.add_argument("--fault-rate", type=float, default=0.08,
                   help="sensors: share of readings given an injected fault for the contrastive stage")
    p.add_argument("--parts", default=None,
                   help="sensors: the score's parts for multi-sensor types instead of the automatic choice, "
                        "comma-separated from D,R,Dbar,Rbar,L,Lbar,S,E,logit (e.g. R,Lbar,S: Lbar sees a small "
                        "offset that lasts and allows for sensors that lag each other; Rbar sees it too but raises "
                        "false alarms where sensors lag). The report still scores every combination")
    p.add_argument("--resume", default=None, help="sensors: continue an interrupted run from its OUT/.train")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (merged before export) instead of all weights")
    _add_lora_flags(p)
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--threads", type=int, default=0,
                   help="torch training threads; 0 means one per core, 1 suits a machine shared with other jobs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fine_tune)

    p = subparsers.add_parser(
        "evaluate", formatter_class=fmt, help="evaluate a bundle through onnxruntime (the worker's path)",
        description="Score events with the bundle's ONNX graph, tokenizer and window exactly as the worker does, "
                    "and report AUPRC, ROC AUC, recall at FPR 0.1%% / 0.02%%, and F1 / alert precision at the card's "
                    "threshold. Without --data, regenerates the synthetic split recorded in the card (--split); "
                    "--check exits 1 unless the card's metrics for that split are reproduced.")
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLES["transaction"]), help="bundle directory")
    p.add_argument("--data", action="append", default=[], help="labelled JSONL events (repeatable)")
    p.add_argument("--split", default="test_small", choices=("test_small", "test", "stress", "validation"),
                   help="card eval spec to regenerate when --data is not given")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="graph variant")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--check", action="store_true", help="compare with the card's recorded metrics")
    p.add_argument("--baselines", action="store_true",
                   help="also refit the GBT and HalfSpaceTrees baselines on the kind's recipe data and score the same "
                        "rows (minutes); without it, baselines recorded in the card for --split are shown")
    p.add_argument("--tolerance", type=float, default=1e-6, help="allowed difference per metric for --check")
    p.add_argument("--output", default=None, help="also write the JSON report here")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "export", formatter_class=fmt, help="re-export a bundle's ONNX graphs from its torch checkpoint",
        description="Export checkpoint/ of a bundle to model.onnx (dynamic batch and sequence axes, dense experts), "
                    "check parity against torch on padded batches of varied lengths (fails above 1e-4), build "
                    "the fp16 and int8 variants and record their parity and speed in the card.")
    p.add_argument("--bundle", required=True, help="bundle directory with checkpoint/")
    p.add_argument("--out", default=None, help="write to another directory (default: in place)")
    p.add_argument("--variants", default="fp16,int8", help="comma-separated precision variants to build")
    p.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer model", description="Offline side: train, fine-tune, evaluate, export.")
    sub = parser.add_subparsers(dest="model_command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
