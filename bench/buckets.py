"""Sequence buckets: the bundle's graph fed batches padded to its card's buckets against other buckets.

Why: padding is pure waste for the model (causal attention, pooled at the last real
token), and on CPU the model's cost grows with the padded width. The transactions
encoding makes 28 words + ``[END]`` = 29 tokens for almost every event, which the
16 / 24 / 32 buckets of bundles up to 1.2.0 padded to 32; bundle 1.3.0 adds a 29
bucket. Same graph, same texts, only the padding differs, measured in interleaved
rounds; the ratio is each round's card-buckets rate over the other's, then the
median. Scores agree up to float rounding (printed).

    python -m bench.buckets                    # the shipped bundle vs 16,24,32
    python -m bench.buckets --against 32       # vs one fixed width
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Sequence

import numpy as np

from bench.common import bundle_info, fmt_range, print_table, resolve_bundle, spread, stream_texts, write_result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", help="bundle directory (default: the shipped transaction bundle)")
    ap.add_argument("--against", default="16,24,32", help="comma-separated buckets to compare with the card's")
    ap.add_argument("--batch-sizes", default="1,64,256")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved repetitions per batch size")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 0.2 s")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 2, 0.2

    from models.export import run_logits, session, throughput
    from streamer.bundle import load_bundle
    from streamer.tokens import TokenEncoder

    bundle = load_bundle(resolve_bundle(args.bundle))
    mine = bundle.tokens
    try:
        other = TokenEncoder(bundle.path / "tokenizer.json", mine.max_len, [int(b) for b in args.against.split(",")])
    except ValueError:
        sys.exit(f"--against {args.against!r}: expected comma-separated integers")
    texts, _ = stream_texts(bundle, 4096, seed=21, skip=40_000)  # steady state: windows filled
    lengths = np.asarray([len(r) for r in mine.ids(texts)])
    sess = session(bundle.model_path, 1)
    rows, out = [], []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        chunk = texts[:batch]
        a = mine.encode(chunk)
        b = other.encode(chunk)
        diff = float(np.abs(run_logits(sess, *a) - run_logits(sess, *b)).max())
        ra, rb, ratios = [], [], []
        for r in range(args.rounds):
            order = (mine, other) if r % 2 == 0 else (other, mine)
            rate = {id(enc): throughput(bundle.model_path, enc, chunk, batch=batch, seconds=args.seconds)
                    for enc in order}
            ra.append(rate[id(mine)])
            rb.append(rate[id(other)])
            ratios.append(ra[-1] / rb[-1])
        res = {"batch": batch, "width_card": int(a[0].shape[1]), "width_against": int(b[0].shape[1]),
               "card_events_per_s": spread(ra), "against_events_per_s": spread(rb), "ratio": spread(ratios),
               "max_abs_logit_diff": diff}
        out.append(res)
        rows.append([batch, f"{res['width_card']} / {res['width_against']}", fmt_range(res["card_events_per_s"]),
                     fmt_range(res["against_events_per_s"]), f"{statistics.median(ratios):.3f}", f"{diff:.1e}"])
    print_table(["batch", "padded width (card / against)", "events/s card buckets", f"events/s {args.against}",
                 "ratio (median of rounds)", "max abs logit diff"], rows,
                title=f"{bundle.model_id}: buckets {list(mine.buckets)} against [{args.against}], fp32, 1 thread; "
                      f"{np.mean(lengths == lengths.max()):.0%} of {len(texts)} texts have {lengths.max()} tokens")
    path = write_result("buckets", {"bundle": bundle_info(bundle), "against": args.against, "results": out,
                                    "token_lengths": {str(k): int(v) for k, v in zip(*np.unique(lengths, return_counts=True))}},
                        args.quick)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
