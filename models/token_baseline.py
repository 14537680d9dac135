"""A gradient-boosted tree on the classifier's own input words: how much of the tokens a tree can use.

Why: the card's GBT baseline gets the exact numbers behind the words
(``encoding.vector``) but not the summary of the previous events. When the
DeepSeek model stays below that tree, the question is whether the words lack
the information or the transformer does not extract it. This tree sees exactly
what the model sees: one categorical feature per word slot, counted from the
end of the text (an event's own words have fixed slots there; the summary of
earlier events, shorter for new accounts, fills the slots further back).

It is a diagnosis, run on demand (``python -m models.token_baseline``): it
scores the tree on the evaluation splits, which adds a few minutes, and the
card's baseline stays the exact-number tree. The same tree, fitted on token
ids, is the transactions build's distillation teacher (``models.distill``).

>>> slots = TokenSlots(width=3).fit(["a b c", "b c"])
>>> slots.transform(["a b c", "b c", "z c"]).tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, nan, 0.0]]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np

from models.distill import SlotCodes


class TokenSlots:
    """Word slot -> category code, per slot, fitted on training texts: ``SlotCodes`` over words.

    Words get ids in sorted order, so codes follow the words' order within a slot.
    Code 0 is an empty slot (a text shorter than ``width``); a word never seen in
    that slot during ``fit`` becomes NaN, which the tree treats as missing.
    """

    def __init__(self, width: int):
        self.width = width
        self.vocab: dict[str, int] = {}
        self.slots = SlotCodes(width)

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        unseen = len(self.vocab)  # beyond every fitted id: missing in every slot
        return [[self.vocab.get(w, unseen) for w in t.split()[-self.width:]] for t in texts]

    def fit(self, texts: Sequence[str]) -> "TokenSlots":
        words = sorted({w for t in texts for w in t.split()[-self.width:]})
        self.vocab = {w: i for i, w in enumerate(words)}
        self.slots.fit(self._ids(texts))
        return self

    @property
    def codes(self) -> list[dict[str, int]]:
        """Per slot, each word seen there and its code."""
        luts = self.slots.luts
        return [{w: int(luts[j, i + 1]) for w, i in self.vocab.items() if luts[j, i + 1] > 0} for j in range(self.width)]

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.slots.transform(self._ids(texts))


def fit_and_score(kind: str, splits: Sequence[str], workers: int | None = None) -> dict[str, Any]:
    """Fit the token-slot GBT on the recipe's curriculum rows (grid picked on validation AUPRC); metrics per split."""
    from models import evaluate as ev
    from models import recipes
    from models.pipeline import default_workers, prepare_groups

    recipe = recipes.get(kind)
    missing = [n for n in splits if not recipe.get(n)]
    if missing:
        raise ValueError(f"the {kind} recipe has no split {missing[0]!r}")
    names = ["validation"] + [s for s in splits if s != "validation"]
    groups = [st["data"] for st in recipe["stages"]] + [recipe[n] for n in names]
    print(f"encoding the {kind} recipe's training and evaluation data...", file=sys.stderr, flush=True)
    prepared = prepare_groups(groups, kind, None, default_workers() if workers is None else workers)
    train, evals = prepared[: len(recipe["stages"])], dict(zip(names, prepared[len(recipe["stages"]):]))
    texts = [t for s in train for t in s.texts]
    width = max(len(t.split()) for t in texts)
    slots = TokenSlots(width).fit(texts)
    x, y = slots.transform(texts), np.concatenate([s.y for s in train])
    val = evals["validation"]
    xv = slots.transform(val.texts)
    print(f"fitting {len(ev.GBT_GRID)} grid points on {len(y)} rows x {width} word slots...", file=sys.stderr, flush=True)
    best, info = ev.gbt_baseline(x, y, xv, val.y, seed=recipe["seed"], categorical=range(width))
    thr = ev.choose_thresholds(val.labels, ev.gbt_scores(best, xv), recipe.get("alert_fpr", 1e-3))["alert"]
    out: dict[str, Any] = {"model": "HistGradientBoosting on the classifier's word slots", "slots": width,
                           "grid": info["grid"]}
    for name, split in evals.items():
        out[name] = ev.metrics(split.labels, ev.gbt_scores(best, slots.transform(split.texts)), thr)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.token_baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", default="transaction", help="recipe kind (default: transaction)")
    p.add_argument("--splits", nargs="+", default=["test", "stress"], choices=["test", "stress", "test_small"],
                   help="recipe splits to report besides validation (default: test stress)")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    res = fit_and_score(a.kind, a.splits)
    cols = ("auprc", "roc_auc", "recall_at_fpr_0.1%", "recall_at_fpr_0.02%")
    print("| split | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name in ["validation"] + [s for s in a.splits if s != "validation"]:
        print(f"| {name} | " + " | ".join(f"{res[name][c]:.4f}" for c in cols) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
