"""Per-entity windows of recent events: pure functions over plain lists.

A window is a list of compact records (dicts produced by the encoding's
``record``), oldest first. Each record carries ``o``, the source-partition offset
of the event it summarizes, so that a replay after a crash can rebuild the exact
window an event was first scored with instead of counting the event twice.

>>> w = []
>>> w = push(w, {"o": 1, "ts": 1_000}, max_events=2, max_age_ms=10_000)
>>> w = push(w, {"o": 2, "ts": 2_000}, max_events=2, max_age_ms=10_000)
>>> w = push(w, {"o": 3, "ts": 3_000}, max_events=2, max_age_ms=10_000)
>>> [r["o"] for r in w]
[2, 3]
>>> [r["o"] for r in push(w, {"o": 4, "ts": 20_000}, 8, 10_000)]
[4]
>>> [r["o"] for r in before(w, 3)]
[2]

A record may carry the entity's running state under ``STATE`` (the sensor
encoding's long-memory statistics). Only the newest record's state is ever
read, so ``push`` keeps it there alone: the record that stops being the newest
is replaced by a copy without it, which keeps a window's size (and its
changelog message) independent of how large that state is. The record objects
themselves are never changed, so a replay that re-pushes the same records gets
the same states back.

>>> w = push([], {"o": 1, "ts": 0, "s": {"x": [1.0]}}, 8, 10_000)
>>> w = push(w, {"o": 2, "ts": 1, "s": {"x": [2.0]}}, 8, 10_000)
>>> [sorted(r) for r in w]
[['o', 'ts'], ['o', 's', 'ts']]
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]
Window = list[Record]
STATE = "s"


def push(window: Window, record: Record, max_events: int, max_age_ms: int) -> Window:
    """Append ``record`` and evict by count and by event-time age.

    Age is measured against the newest event's time rather than wall time, so a
    replay of old data windows exactly as the live stream did.
    """
    horizon = record["ts"] - max_age_ms
    kept = [r for r in window if r["ts"] >= horizon]
    if kept and STATE in kept[-1]:
        kept[-1] = {k: v for k, v in kept[-1].items() if k != STATE}
    kept.append(record)
    if len(kept) > max_events:
        kept = kept[-max_events:]
    return kept


def before(window: Window, offset: int) -> Window:
    """The part of ``window`` that precedes source offset ``offset``.

    Used when an event is replayed: its own record (and later ones) may already be
    in the restored window, and scoring it again must see what it saw the first time.
    """
    if not window or window[-1].get("o", -1) < offset:
        return window
    return [r for r in window if r.get("o", -1) < offset]


def contains(window: Window, offset: int) -> bool:
    """Whether the event at ``offset`` was already applied to this window."""
    return any(r.get("o") == offset for r in window)


def context(window: Window, ts: int, max_events: int, max_age_ms: int, offset: int | None = None) -> Window:
    """The records an event at time ``ts`` is scored against: the one definition of a window.

    Training (models/dataset.py) and serving both call this, so the model never sees
    a window cut differently from the one it was trained on. ``offset`` excludes the
    event itself and anything after it when a replayed event is scored again.

    >>> w = [{"o": 1, "ts": 0}, {"o": 2, "ts": 5_000}, {"o": 3, "ts": 9_000}]
    >>> [r["o"] for r in context(w, 10_000, max_events=8, max_age_ms=6_000)]
    [2, 3]
    >>> [r["o"] for r in context(w, 10_000, max_events=8, max_age_ms=60_000, offset=3)]
    [1, 2]
    """
    if offset is not None:
        window = before(window, offset)
    horizon = ts - max_age_ms
    if window and window[0]["ts"] < horizon:
        window = [r for r in window if r["ts"] >= horizon]
    return window[-max_events:] if len(window) > max_events else window
