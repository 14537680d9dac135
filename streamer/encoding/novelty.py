"""Long-memory novelty of one sensor: is this reading beyond anything it did in ~8,000 readings?

A sensor alone has no relations to break; what tells a fault from the heavy
tails real metrics show all the time is novelty relative to the sensor's own
long history. The state (80 numbers, O(1) per reading) keeps slowly decaying
envelopes of the value and, per UTC hour, the usual level and spread, so that

- ``env``: how far the reading lies beyond the envelope of everything seen
  (in the sensor's long-run σ), and
- ``renv``: how far its distance from this hour's usual level lies beyond the
  largest such distance seen

are both 0 at the edge of what is familiar and positive beyond it. The
novelty is ``max(env, 0.5 * renv)`` (sensor-v4's headline feature, which held
the shipped bundle at 63.6 on NAB on its own). The sensor-v5 encoding uses it
for one-sensor asset types (``novelty`` in the type), where it is the score.

>>> st, out = None, []
>>> for i in range(400):
...     nov, st = step(10.0 + (i % 7) * 0.1, st, slot=i % 24)
>>> round(nov, 2) <= 0.0
True
>>> round(step(14.0, st, slot=3)[0], 1) > 3.0  # far beyond the familiar range
True
"""

from __future__ import annotations

import math
from typing import Sequence

LONG = 8000  # readings: time constant of the envelopes and long-run statistics
SLOTS = 24
SLOT_ALPHA = 0.05  # per reading: a slot follows a slowly changing daily shape
SLOT_WARM = 6  # readings in an hour slot before it is trusted
SLOT_FLOOR = 0.1  # of the long-run std, added to a slot's own std
MIN_HISTORY = 16  # readings before the envelopes are trusted
RENV_WEIGHT = 0.5
INSIDE, CLIP = 4.0, 50.0
_BASE = 8  # cnt, mean, var, hi, lo, mean |rz|, var |rz|, envelope of |rz|
STATE_LEN = _BASE + 3 * SLOTS
SLOT_MS = 24 * 3600 * 1000 // SLOTS


def _inside(x: float) -> float:
    return CLIP if x > CLIP else -INSIDE if x < -INSIDE else x


def slot_of(ts_ms: int) -> int:
    return int((ts_ms // SLOT_MS) % SLOTS)


def cold(v: float, seed: Sequence[float] = ()) -> list[float]:
    """A state for a sensor without one, seeded from recent values (before ``v``) when there are any."""
    hist = list(seed) or [v]
    n = len(hist)
    m = sum(hist) / n
    var = sum((x - m) ** 2 for x in hist) / n
    return [float(len(seed)), m, var, max(hist), min(hist), 0.0, 0.0, 0.0] + [0.0] * (3 * SLOTS)


def step(v: float, st: Sequence[float] | None, slot: int, seed: Sequence[float] = ()) -> tuple[float, list[float]]:
    """(novelty of ``v``, the state after it)."""
    if st is None or len(st) != STATE_LEN:
        st = cold(v, seed)
    cnt, m, var, hi, lo, rm, rvar, rhi = st[:_BASE]
    prof = list(st[_BASE:])
    sd = max(math.sqrt(var), 1e-6 * (abs(m) + 1.0))
    env = _inside(max(v - hi, lo - v) / sd) if cnt >= MIN_HISTORY else -INSIDE
    pm, pv, pc = prof[slot], prof[SLOTS + slot], prof[2 * SLOTS + slot]
    rz = (v - pm) / (math.sqrt(pv) + SLOT_FLOOR * sd) if pc >= SLOT_WARM else 0.0
    rz = CLIP if rz > CLIP else -CLIP if rz < -CLIP else rz
    arz = abs(rz)
    renv = _inside((arz - rhi) / max(math.sqrt(rvar), 1e-3)) if cnt >= MIN_HISTORY and pc >= SLOT_WARM else -INSIDE
    if pc == 0:
        prof[slot], prof[SLOTS + slot] = v, var
    else:
        dp = v - pm
        prof[slot] = pm + SLOT_ALPHA * dp
        prof[SLOTS + slot] = (1.0 - SLOT_ALPHA) * (pv + SLOT_ALPHA * dp * dp)
    prof[2 * SLOTS + slot] = min(pc + 1.0, SLOT_WARM)
    a = 1.0 / (cnt + 2.0) if cnt + 2.0 < LONG else 1.0 / LONG
    dl = v - m
    m += a * dl
    var = (1.0 - a) * (var + a * dl * dl)
    k = 1.0 / LONG
    hi = v if v > hi else hi - (hi - m) * k
    lo = v if v < lo else lo + (m - lo) * k
    dr = arz - rm
    rm += a * dr
    rvar = (1.0 - a) * (rvar + a * dr * dr)
    rhi = arz if arz > rhi else rhi - (rhi - rm) * k
    return max(env, RENV_WEIGHT * renv), [min(cnt + 1.0, 1e9), m, var, hi, lo, rm, rvar, rhi] + prof
