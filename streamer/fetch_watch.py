"""Is a consumer that is not ours still fetching? Events waiting in the broker, none arriving.

The Faust engine's group consumer belongs to Faust. Seen in tests under load: after a
broker freeze Faust's consumer marked its coordinator dead and never fetched again,
while the checkpoint's round trips (on a client of the worker's own) kept succeeding,
so /healthz said 200 and the events waited for ever. This compares what the worker has
received per partition with the partitions' end offsets (read by that other client):
a partition is behind when more than ``slack`` offsets past the last event received
exist; the consumer is stalled when a partition is behind and nothing arrived for a
while. One offset of slack per partition, because a transactional producer's commit
marker takes an offset that no consumer ever receives.

>>> w = FetchWatch(now=0.0)
>>> w.received(("in", 0), 10, now=1.0)   # offsets up to 9 arrived
>>> w.stalled({("in", 0): 10}, now=60.0)  # nothing more was written: idle, not stalled
(0, 0.0)
>>> w.stalled({("in", 0): 25}, now=60.0)  # 15 events wait, nothing arrived for 59 s
(15, 59.0)
>>> w.stalled({("in", 1): 7}, now=60.0)   # a partition never received from: caught up at first look
(0, 0.0)
"""

from __future__ import annotations

from typing import Collection, Hashable, Mapping


class FetchWatch:
    """Per owned partition, the next offset received; and when anything last arrived."""

    def __init__(self, now: float, slack: int = 1):
        self.next: dict[Hashable, int] = {}
        self.last = now
        self.slack = slack

    def received(self, tp: Hashable, next_offset: int, now: float) -> None:
        """Events of ``tp`` up to ``next_offset - 1`` arrived at ``now``."""
        if next_offset > self.next.get(tp, -1):
            self.next[tp] = next_offset
        self.last = now

    def idle_since(self, now: float) -> None:
        """Restart the clock (a rebalance, a restore: times when no fetch is expected)."""
        self.last = now

    def forget(self, tps: Collection[Hashable]) -> None:
        """Partitions no longer owned."""
        for tp in tps:
            self.next.pop(tp, None)

    def stalled(self, ends: Mapping[Hashable, int], now: float) -> tuple[int, float]:
        """(events waiting past the slack, seconds since anything arrived); (0, 0.0) when none wait.

        A partition seen here for the first time is taken as caught up at its end offset:
        the worker cannot tell from here where its group's committed offset is.
        """
        waiting = 0
        for tp, end in ends.items():
            seen = self.next.setdefault(tp, end)
            if end - seen > self.slack:
                waiting += end - seen
        return (waiting, now - self.last) if waiting else (0, 0.0)
