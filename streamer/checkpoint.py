"""Which input offsets may be committed: the at-least-once bookkeeping.

An offset is committable only when every output that depends on it (its score,
its alert, or its dead letter) has been handed to the producer, and the commit
itself happens only after the producer has flushed them (see ``worker``). Offsets
complete out of order (dead letters are sent at once, scores after the model), so
each partition keeps its offsets in consumption order and the commit point is the
first one still open.

>>> cp = Checkpoint()
>>> for o in (10, 11, 12): cp.track(("t", 0), o)
>>> cp.done(("t", 0), 11); cp.committable()
{}
>>> cp.done(("t", 0), 10); cp.committable()
{('t', 0): 12}
>>> cp.done(("t", 0), 12); cp.committable(), cp.pending()
({('t', 0): 13}, 0)
"""

from __future__ import annotations

from collections import deque
from typing import Hashable

TP = Hashable


class Checkpoint:
    def __init__(self) -> None:
        self._open: dict[TP, deque[int]] = {}
        self._finished: dict[TP, set[int]] = {}
        self._next: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def track(self, tp: TP, offset: int) -> None:
        """Register a consumed offset, in consumption order."""
        self._open.setdefault(tp, deque()).append(offset)
        self._finished.setdefault(tp, set())

    def done(self, tp: TP, offset: int) -> None:
        """All outputs of ``offset`` were handed to the producer."""
        q = self._open.get(tp)
        if q is None:
            return  # partition was revoked meanwhile
        fin = self._finished[tp]
        fin.add(offset)
        while q and q[0] in fin:
            fin.discard(q[0])
            self._next[tp] = q.popleft() + 1

    def committable(self) -> dict[TP, int]:
        """Next offsets to commit, for partitions that advanced since the last commit."""
        return {tp: o for tp, o in self._next.items() if self._committed.get(tp) != o}

    def committed(self, offsets: dict[TP, int]) -> None:
        self._committed.update(offsets)

    def pending(self, tp: TP | None = None) -> int:
        """Offsets consumed but not yet done (all partitions, or one)."""
        if tp is not None:
            return len(self._open.get(tp, ()))
        return sum(len(q) for q in self._open.values())

    def forget(self, tps: list[TP]) -> None:
        """Drop partitions that were revoked or will be re-read from the last commit."""
        for tp in tps:
            for d in (self._open, self._finished, self._next, self._committed):
                d.pop(tp, None)
