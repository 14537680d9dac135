"""The Numenta Anomaly Benchmark: corpus loader and a faithful re-implementation of its scorer.

NAB (Lavin & Ahmad 2015, github.com/numenta/NAB) scores streaming detectors on 58
labelled series. What makes its number what it is, and what this module
reproduces rule for rule:

- Each labelled anomaly is a *window* of rows (``labels/combined_windows.json``).
  A detection inside a window is a true positive worth a scaled sigmoid of its
  position: ``A_tp`` at the window's first row, about 0 at its last. Only the
  earliest (highest-scoring) detection of a window counts; later ones are free.
- A window without a detection costs ``A_fn``.
- A detection outside every window costs ``A_fp`` times a sigmoid of its distance
  past the previous window's end (full ``A_fp`` before any window or more than
  about one window width after it; almost nothing just after a window).
- The first 15% of each series (at most 750 rows) is probation: rows there are
  neither rewarded nor penalized.
- One threshold per detector and profile is chosen over the whole corpus to
  maximize the summed score, and the sum is normalized to 0-100 between the null
  detector (never detects) and the perfect one (detects every window at its start).

The corpus lives in ``../shared/data/nab`` relative to the repository (override
with ``STREAMER_NAB_DIR``): ``data/<group>/<series>.csv`` with ``timestamp,value``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "data" / "nab"
PROBATION_PERCENT = 0.15
WINDOWS_FILE = "labels/combined_windows.json"


@dataclass(frozen=True)
class Profile:
    """NAB cost matrix; weights are magnitudes (``fp`` and ``fn`` are subtracted)."""

    name: str
    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0
    tn: float = 1.0  # part of NAB's matrix; true negatives score 0 in NAB too


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0),
}


@dataclass
class Series:
    """One NAB data file with its anomaly windows as row-index ranges (inclusive)."""

    name: str  # relative path without .csv, e.g. "realKnownCause/nyc_taxi"
    ts: list[int]  # epoch ms (NAB timestamps are zone-less; read as UTC)
    values: list[float]
    windows: list[tuple[int, int]] = field(default_factory=list)

    @property
    def probation(self) -> int:
        return probation_length(len(self.ts))

    def labels(self) -> list[int]:
        """1 inside an anomaly window, else 0 (for evaluation and the k-fold option only)."""
        out = [0] * len(self.ts)
        for a, b in self.windows:
            for i in range(a, b + 1):
                out[i] = 1
        return out


def nab_dir(path: str | Path | None = None) -> Path:
    """The corpus root: ``path``, else ``$STREAMER_NAB_DIR``, else ``../shared/data/nab``."""
    root = Path(path or os.environ.get("STREAMER_NAB_DIR") or DEFAULT_DIR)
    if not (root / WINDOWS_FILE).is_file():
        raise FileNotFoundError(
            f"NAB corpus not found at {root} (expected {WINDOWS_FILE}); set STREAMER_NAB_DIR to the NAB checkout"
        )
    return root


def probation_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """NAB's probationary period: 15% of the rows, at most 15% of 5000.

    >>> probation_length(4032), probation_length(22695)
    (604, 750)
    """
    return int(min(math.floor(percent * n_rows), percent * 5000))


def _parse_ts(text: str) -> int:
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def load_series(root: Path, name: str, windows: Sequence[Sequence[str]] = ()) -> Series:
    """Read ``data/<name>.csv`` and map window timestamps to row indices."""
    ts: list[int] = []
    values: list[float] = []
    with open(root / "data" / f"{name}.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            ts.append(_parse_ts(row["timestamp"]))
            values.append(float(row["value"]))
    index = {t: i for i, t in enumerate(ts)}
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        a, b = _parse_ts(start), _parse_ts(end)
        if a in index and b in index:
            rows.append((index[a], index[b]))
        else:  # NAB requires exact matches; be lenient to rounding in other label files
            ia = next((i for i, t in enumerate(ts) if t >= a), len(ts) - 1)
            ib = max((i for i, t in enumerate(ts) if t <= b), default=0)
            rows.append((ia, ib))
    return Series(name=name, ts=ts, values=values, windows=sorted(rows))


def load_corpus(path: str | Path | None = None, names: Iterable[str] | None = None) -> list[Series]:
    """All (or the named) series of the corpus, sorted by name."""
    root = nab_dir(path)
    labels = json.loads((root / WINDOWS_FILE).read_text())
    wanted = set(names) if names is not None else None
    out = []
    for key in sorted(labels):
        name = key[:-4] if key.endswith(".csv") else key
        if wanted is None or name in wanted:
            out.append(load_series(root, name, labels[key]))
    if wanted is not None and len(out) != len(wanted):
        missing = wanted - {s.name for s in out}
        raise KeyError(f"series not in the NAB corpus: {sorted(missing)}")
    return out


def to_events(series: Series, sensor: str = "value", with_labels: bool = True) -> Iterator[dict]:
    """A series as contract sensor events: asset_id = series name, readings {sensor: value}.

    ``label`` (window membership) is attached for evaluation only; the encoding
    never reads it.
    """
    labels = series.labels() if with_labels else None
    for i, (t, v) in enumerate(zip(series.ts, series.values)):
        ev = {"event_id": f"{series.name}#{i}", "ts": t, "asset_id": series.name, "readings": {sensor: v}}
        if labels is not None:
            ev["label"] = labels[i]
        yield ev


# --- scoring ---------------------------------------------------------------


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: ~+1 at position -1 (a window's start), 0 at its end, -1 far past it.

    >>> round(scaled_sigmoid(-1.0), 4), round(scaled_sigmoid(0.0), 4), scaled_sigmoid(3.5)
    (0.9866, 0.0, -1.0)
    """
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


@dataclass
class Point:
    """One scorable row: its detector score, its weighted NAB value if detected, its window (or None)."""

    score: float
    weight: float
    window: tuple[str, int] | None


def sweep_points(series: Series, scores: Sequence[float], profile: Profile) -> list[Point]:
    """Per-row value of a detection, following NAB's ``Sweeper.calcSweepScore``.

    Rows in probation are dropped (their windows too if they lie entirely in it).
    """
    if len(scores) != len(series.ts):
        raise ValueError(f"{series.name}: {len(scores)} scores for {len(series.ts)} rows")
    prob = series.probation
    wins = list(series.windows)
    out: list[Point] = []
    cur: tuple[int, int] | None = None
    cur_id: tuple[str, int] | None = None
    prev_right: int | None = None
    prev_width = 0.0
    k = 0
    for i, s in enumerate(scores):
        if cur is None and k < len(wins) and i == wins[k][0]:
            cur, cur_id = wins[k], (series.name, k)
            k += 1
        if cur is not None:
            width = float(cur[1] - cur[0] + 1)
            weight = scaled_sigmoid(-(cur[1] - i + 1) / width) * profile.tp / MAX_TP
        elif prev_right is None:
            weight = -1.0 * profile.fp
        else:
            weight = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1.0) if prev_width > 1 else 4.0) * profile.fp
        if i >= prob:
            out.append(Point(float(s), weight, cur_id))
        if cur is not None and i == cur[1]:
            prev_right, prev_width = i, float(cur[1] - cur[0] + 1)
            cur = cur_id = None
    return out


@dataclass
class Sweep:
    """Score of a detector at every distinct threshold (descending thresholds)."""

    thresholds: list[float]
    scores: list[float]
    n_windows: int

    def best(self) -> tuple[float, float]:
        """(threshold, score) with the highest score; ties go to the higher threshold.

        The threshold is the midpoint of the gap between the winning distinct score and the
        next lower one, not the winning score itself: both select the same rows, but a
        threshold equal to some row's score decides that row by an exact float equality,
        which another onnxruntime or numpy build can flip (a reading 6e-8 below the
        recorded NAB threshold, seen after a package update, lost a window's detection).

        >>> Sweep([math.inf, 0.9, 0.5], [-1.0, 0.5, 0.2], 1).best()
        (0.7, 0.5)
        """
        i = max(range(len(self.scores)), key=lambda j: (self.scores[j], self.thresholds[j]))
        t = self.thresholds[i]
        if math.isinf(t):
            return t, self.scores[i]
        lower = self.thresholds[i + 1] if i + 1 < len(self.thresholds) else t - max(abs(t), 1.0)
        return (t + lower) / 2.0, self.scores[i]

    def at(self, threshold: float) -> float:
        """Score when rows with ``score >= threshold`` are detections."""
        best = self.scores[0]
        for t, s in zip(self.thresholds, self.scores):
            if t < threshold:
                break
            best = s
        return best


def sweep(points: Sequence[Point], profile: Profile) -> Sweep:
    """NAB's ``calcScoreByThreshold``: lower the threshold one distinct score at a time.

    Starts from "no detections" (every window a false negative); a window's
    first detection swaps its ``-A_fn`` for the detection's value, a later but
    earlier-positioned detection upgrades it, and a detection outside windows
    adds its (negative) value.
    """
    windows = {p.window for p in points if p.window is not None}
    score = -profile.fn * len(windows)
    thresholds, scores = [math.inf], [score]
    best_in: dict[tuple[str, int], float] = {}
    order = sorted(points, key=lambda p: -p.score)
    cur = None
    for p in order:
        if p.score != cur:
            if cur is not None:
                thresholds.append(cur)
                scores.append(score)
            cur = p.score
        if p.window is None:
            score += p.weight
        else:
            prev = best_in.get(p.window)
            if prev is None:
                score += p.weight + profile.fn
                best_in[p.window] = p.weight
            elif p.weight > prev:
                score += p.weight - prev
                best_in[p.window] = p.weight
    if cur is not None:
        thresholds.append(cur)
        scores.append(score)
    return Sweep(thresholds, scores, len(windows))


@dataclass
class Result:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalized(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def perfect_scores(series: Series) -> list[float]:
    """The perfect detector: 1 at the first scorable row of each window, else 0."""
    out = [0.0] * len(series.ts)
    for a, b in series.windows:
        if b >= series.probation:  # windows wholly inside probation are not scored at all
            out[max(a, series.probation)] = 1.0
    return out


def score_corpus(
    corpus: Sequence[Series],
    scores: Mapping[str, Sequence[float]],
    profile: Profile | str = "standard",
    threshold: float | None = None,
) -> Result:
    """NAB score of one detector over ``corpus``; the threshold is optimized unless given."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    points: list[Point] = []
    perfect_points: list[Point] = []
    null_points: list[Point] = []
    for s in corpus:
        points += sweep_points(s, scores[s.name], prof)
        perfect_points += sweep_points(s, perfect_scores(s), prof)
        null_points += sweep_points(s, [0.0] * len(s.ts), prof)
    sw = sweep(points, prof)
    if threshold is None:
        threshold, raw = sw.best()
    else:
        raw = sw.at(threshold)
    null = sweep(null_points, prof).best()[1]
    perfect = sweep(perfect_points, prof).best()[1]
    return Result(prof.name, float(threshold), raw, null, perfect)


def series_breakdown(corpus: Sequence[Series], scores: Mapping[str, Sequence[float]], profile: Profile | str,
                     threshold: float) -> dict[str, dict[str, float]]:
    """Per series at one threshold: windows, windows detected, false positives, and its raw score.

    The raw scores add up to the corpus' raw score at that threshold, so a few series can be
    re-scored on their own to check a recorded result without scoring the whole corpus.

    >>> s = Series("x", list(range(10)), [0.0] * 10, [(6, 7)])
    >>> series_breakdown([s], {"x": [0, 0, 0, 0, 1, 0, 1, 0, 0, 0]}, "standard", 0.5)["x"]
    {'windows': 1, 'detected': 1, 'false_positives': 1, 'raw': 0.89}
    """
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    out: dict[str, dict[str, float]] = {}
    for s in corpus:
        pts = sweep_points(s, scores[s.name], prof)
        wins = {p.window for p in pts if p.window is not None}
        best: dict[tuple[str, int], float] = {}
        fp, n_fp = 0.0, 0
        for p in pts:
            if p.score >= threshold:
                if p.window is None:
                    fp += p.weight
                    n_fp += 1
                else:
                    best[p.window] = max(best.get(p.window, -math.inf), p.weight)
        raw = sum(best.values()) + fp - prof.fn * (len(wins) - len(best))
        out[s.name] = {"windows": len(wins), "detected": len(best), "false_positives": n_fp, "raw": round(raw, 6)}
    return out


def score_all_profiles(corpus: Sequence[Series], scores: Mapping[str, Sequence[float]]) -> dict[str, Result]:
    """Each profile with its own optimized threshold, as NAB reports them."""
    return {name: score_corpus(corpus, scores, name) for name in PROFILES}
