"""NAB from the one-sensor novelty alone: the card's NAB figures, fast, without the bundle.

For one-sensor asset types (every NAB series) the sensor bundle's score is a
monotone calibration of ``streamer.encoding.novelty``'s ``N`` (one asset type,
``value``, for the whole corpus), and NAB picks one threshold per profile over
the corpus, so NAB's result depends on the order of the novelty values alone.
This script runs ``novelty.step`` over every series from its first reading, as
``streamer.encoding.sensors.features`` does in the worker (UTC hour-of-day slot
of the event timestamp; a cold state at the first reading and after a gap
longer than the worker's window age, when the window and the state in it
expire), and scores the values with ``models.nab`` (the NAB v1 rules). No NAB
label is used except in that scoring. It reproduces the shipped bundle's card
(63.64 / 58.57 / 67.71 at sensor-v5's novelty, commit a5b0282).

    OMP_NUM_THREADS=1 python -m bench.nab_novelty                      # this tree's novelty
    OMP_NUM_THREADS=1 python -m bench.nab_novelty --baseline a5b0282   # and another commit's, timed alternately
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from models import nab
from streamer.encoding import novelty
from streamer.encoding.sensors import WINDOW

MAX_AGE_MS = WINDOW["max_age_ms"]  # the bundle's window age (card: 7 days)
REPO = Path(__file__).resolve().parent.parent


def novelty_scores(corpus: Sequence[nab.Series], step: Callable = novelty.step,
                   slot_of: Callable = novelty.slot_of) -> tuple[dict[str, list[float]], float, int]:
    """(novelty per series, seconds spent in ``step``, readings)."""
    out, t_total, n = {}, 0.0, 0
    for s in corpus:
        slots = [slot_of(t) for t in s.ts]
        st, vals, prev = None, [], None
        t0 = time.perf_counter()
        for t, v, sl in zip(s.ts, s.values, slots):
            if prev is not None and t - prev > MAX_AGE_MS:
                st = None  # the worker's window (and the state in it) has expired: a cold start
            prev = t
            nv, st = step(v, st, sl)
            vals.append(nv)
        t_total += time.perf_counter() - t0
        n += len(vals)
        out[s.name] = vals
    return out, t_total, n


def module_at(rev: str) -> Any:
    """``streamer/encoding/novelty.py`` as it was at git revision ``rev``."""
    src = subprocess.run(["git", "show", f"{rev}:streamer/encoding/novelty.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType(f"novelty_{rev}")
    exec(compile(src, f"{rev}:streamer/encoding/novelty.py", "exec"), mod.__dict__)
    return mod


def report(corpus: Sequence[nab.Series], scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {k: round(r.normalized, 2) for k, r in nab.score_all_profiles(corpus, scores).items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nab_novelty", description=__doc__.splitlines()[0])
    p.add_argument("--nab-dir", default=None, help="NAB corpus root (default: $STREAMER_NAB_DIR, else ../shared/data/nab)")
    p.add_argument("--baseline", default=None, help="also score and time the novelty of this git revision")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (alternating with the baseline)")
    p.add_argument("--per-series", action="store_true", help="standard-profile breakdown per series")
    args = p.parse_args(argv)
    corpus = nab.load_corpus(args.nab_dir)
    contenders = {"this tree": novelty}
    if args.baseline:
        contenders = {f"{args.baseline}": module_at(args.baseline), "this tree": novelty}
    secs: dict[str, list[float]] = {k: [] for k in contenders}
    scores: dict[str, dict[str, list[float]]] = {}
    n = 0
    for _ in range(max(1, args.rounds)):
        for name, mod in contenders.items():
            sc, t, n = novelty_scores(corpus, mod.step, mod.slot_of)
            secs[name].append(t)
            scores[name] = sc
    for name in contenders:
        ts = sorted(secs[name])
        print(f"{name:>12}: NAB {json.dumps(report(corpus, scores[name]))}  N over {n} readings: "
              f"median {ts[len(ts) // 2]:.2f}s [{ts[0]:.2f}-{ts[-1]:.2f}] = {1e6 * ts[len(ts) // 2] / n:.2f} us/reading")
    if args.per_series:
        sc = scores["this tree"]
        res = nab.score_corpus(corpus, sc, "standard")
        for k, v in nab.series_breakdown(corpus, sc, "standard", res.threshold).items():
            print(k, v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
