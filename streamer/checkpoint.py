"""The checkpoint: the one place where the worker decides that input is done with.

``Checkpoint.commit()`` runs the whole sequence, in this order, for either engine:

1. every output handed to the sink so far is acknowledged by the broker (scores,
   alerts, dead letters); a failed one raises :class:`~streamer.sinks.DeliveryFailed`
   and nothing is committed;
2. the windows that changed are written to their changelog partition (the partition
   number their events came from) and acknowledged too;
3. the input offsets whose outputs were all handed over are committed, by the
   engine's :class:`Committer` (the direct engine commits as the group member that
   read them; the Faust engine acknowledges the events and lets Faust commit);
4. the windows are advanced: below a committed offset nothing is replayed, so the
   records kept for exact replays are folded away.

Which offsets may be committed is :class:`Offsets`' bookkeeping. Offsets complete
out of order (dead letters are sent at once, scores after the model), so each
partition keeps its offsets in consumption order and the commit point is the first
one still open:

>>> book = Offsets()
>>> for o in (10, 11, 12): book.track(("t", 0), o)
>>> book.done(("t", 0), 11); book.committable()
{}
>>> book.done(("t", 0), 10); book.committable()
{('t', 0): 12}
>>> book.done(("t", 0), 12); book.committable(), book.pending()
({('t', 0): 13}, 0)
"""

from __future__ import annotations

from collections import deque
from typing import Any, Collection, Hashable, Mapping, Protocol

from streamer.sinks import Sink
from streamer.state import WindowStore

TP = Hashable  # (topic, partition): aiokafka's TopicPartition and Faust's TP are such tuples


class Offsets:
    """Consumed offsets per partition, and how far each partition may be committed."""

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
        """All outputs of ``offset`` were handed to the sink."""
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

    def committed(self, offsets: Mapping[TP, int]) -> None:
        self._committed.update(offsets)

    def pending(self, tp: TP | None = None) -> int:
        """Offsets consumed but not yet done (all partitions, or one)."""
        if tp is not None:
            return len(self._open.get(tp, ()))
        return sum(len(q) for q in self._open.values())

    def forget(self, tps: Collection[TP]) -> None:
        """Drop partitions that were revoked or will be re-read from the last commit."""
        for tp in tps:
            for d in (self._open, self._finished, self._next, self._committed):
                d.pop(tp, None)


class Committer(Protocol):
    """How an engine commits input offsets (step 3)."""

    def snapshot(self) -> Any:
        """Whatever must still hold at commit time, taken before the offsets are read (group membership)."""

    async def commit(self, offsets: dict[TP, int], snapshot: Any) -> bool:
        """Commit ``offsets`` (next offset to read, per partition); False when nothing was committed."""

    async def round_trip(self) -> None:
        """A cheap request that proves the cluster answers (when there was nothing to commit)."""


class Checkpoint:
    """Outputs acknowledged -> changed windows to their changelog -> offsets committed -> windows advanced."""

    def __init__(self, offsets: Offsets, sink: Sink, committer: Committer, changelogs: Mapping[str, tuple[str, WindowStore]]):
        self.offsets = offsets
        self.sink = sink
        self.committer = committer
        self.changelogs = changelogs  # input topic -> (changelog topic, its windows)

    async def commit(self, assigned: Collection[TP]) -> dict[TP, int]:
        """One checkpoint; returns the offsets committed ({} when none were). Raises DeliveryFailed."""
        snapshot = self.committer.snapshot()  # before the offsets: a re-join while flushing voids them
        offsets = self.offsets.committable()
        for changelog, store in self.changelogs.values():
            for partition, key, value in store.take_dirty():
                await self.sink.send(changelog, value, key, partition)
        await self.sink.flush()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets or not await self.committer.commit(offsets, snapshot):
            await self.committer.round_trip()
            return {}
        self.offsets.committed(offsets)
        for tp, o in offsets.items():
            self.changelogs[tp[0]][1].advance(tp[1], o)
        return offsets
