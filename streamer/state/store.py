"""Entity windows held by one worker, by source partition, with dirty tracking.

Windows live in memory and are made durable by the changelog (``changelog``):
at every checkpoint the windows that changed are written to a compacted topic,
to the same partition number their events came from, so the worker that is
assigned an input partition after a rebalance finds its windows on the matching
changelog partition whatever partitioner the input's producer used.

Exact replays. An event consumed but not committed when a worker dies is
processed again by the next owner of its partition, and must be scored against
the window it saw the first time. The current window alone cannot give that
back: later events of the entity have pushed records out of it (by count and by
age). So a store that ``replays`` keeps, per entity touched since its partition's
last commit, the window as it was before the first uncommitted record (``base``)
plus the uncommitted records themselves (``tail``); the window an uncommitted
event saw is ``base`` with the tail records before it pushed again, exactly as
they were pushed the first time. ``advance`` (called after each commit) folds
the committed part of the tails into their bases, so the extra memory is bounded
by the uncommitted events (and by ``MAX_TAIL`` per entity). The changelog stores
``{"v": 2, "w": base, "t": tail}`` for such entities and ``{"v": 1, "w": window}``
for the others.

>>> st = WindowStore("transaction", keep_events=2, max_age_ms=10_000, replays=True)
>>> for o in (1, 2, 3):
...     _ = st.push(0, "a", {"o": o, "ts": o * 1000})
>>> [r["o"] for r in st.get(0, "a")]
[2, 3]
>>> [r["o"] for r in st.before(0, "a", 2)]  # what the event at offset 2 saw, although record 1 left the window
[1]
>>> st.advance(0, 3); [r["o"] for r in st.before(0, "a", 3)], st.before(0, "a", 2)
([1, 2], None)
"""

from __future__ import annotations

from typing import Any, Hashable, Iterator

import orjson

from streamer.windows import Record, Window, push

TP = Hashable  # (topic, partition) or aiokafka TopicPartition

# Longest tail of uncommitted records kept per entity (~300 KB in the changelog). An entity
# with more uncommitted events than this replays its oldest ones against the current window
# (``windows.before``), which may miss records that were pushed out since.
MAX_TAIL = 2048


class WindowStore:
    """``{partition: {entity: window}}`` for one kind of event."""

    def __init__(self, kind: str, keep_events: int, max_age_ms: int, replays: bool = False):
        self.kind = kind
        self.keep_events = keep_events  # more than the context needs, so a replay can rebuild an older context
        self.max_age_ms = max_age_ms
        self.replays = replays  # keep base + tail of uncommitted records (the worker; not score-file)
        self._parts: dict[int, dict[str, Window]] = {}
        self._dirty: dict[int, set[str]] = {}
        self._tails: dict[int, dict[str, tuple[Window, list[Record]]]] = {}

    def fresh(self, replays: bool | None = None) -> "WindowStore":
        """An empty store with the same configuration."""
        return WindowStore(self.kind, self.keep_events, self.max_age_ms, self.replays if replays is None else replays)

    def get(self, partition: int, entity: str) -> Window:
        return self._parts.get(partition, {}).get(entity, [])

    def put(self, partition: int, entity: str, window: Window) -> None:
        self._parts.setdefault(partition, {})[entity] = window
        self._dirty.setdefault(partition, set()).add(entity)

    def push(self, partition: int, entity: str, record: Record) -> Window:
        """Append a new (never seen) record to the entity's window; returns the new window."""
        window = self.get(partition, entity)
        new = push(window, record, self.keep_events, self.max_age_ms)
        self.put(partition, entity, new)
        if self.replays:
            tails = self._tails.setdefault(partition, {})
            base, tail = tails.get(entity) or (window, [])
            tail.append(record)
            if len(tail) > MAX_TAIL:
                base = self._fold(base, tail[:-MAX_TAIL])
                del tail[:-MAX_TAIL]
            tails[entity] = (base, tail)
        return new

    def before(self, partition: int, entity: str, offset: int) -> Window | None:
        """The window exactly as it was before the record of ``offset`` was pushed; None if not kept."""
        base, tail = self._tails.get(partition, {}).get(entity) or (None, None)
        if not tail or tail[0].get("o", -1) > offset:
            return None
        return self._fold(base, [r for r in tail if r.get("o", -1) < offset])

    def advance(self, partition: int, committed: int) -> None:
        """Offsets below ``committed`` are committed: they are never replayed, fold them into the bases."""
        tails = self._tails.get(partition)
        if not tails:
            return
        for entity in list(tails):
            base, tail = tails[entity]
            k = 0
            while k < len(tail) and tail[k].get("o", -1) < committed:
                k += 1
            if k == len(tail):
                del tails[entity]  # base + whole tail is the current window
            elif k:
                tails[entity] = (self._fold(base, tail[:k]), tail[k:])

    def _fold(self, window: Window, records: list[Record]) -> Window:
        for r in records:
            window = push(window, r, self.keep_events, self.max_age_ms)
        return window

    def load(self, partition: int, entity: str, window: Window | tuple[Window, list[Record]] | None) -> None:
        """Restore one entity from the changelog (None = tombstone; a (base, tail) pair from a v2 record)."""
        part = self._parts.setdefault(partition, {})
        tails = self._tails.setdefault(partition, {})
        tails.pop(entity, None)
        if window is None:
            part.pop(entity, None)
        elif isinstance(window, tuple):
            base, tail = window
            part[entity] = self._fold(base, tail)
            if tail:
                tails[entity] = (base, list(tail))
        else:
            part[entity] = window

    def drop(self, partition: int) -> None:
        self._parts.pop(partition, None)
        self._dirty.pop(partition, None)
        self._tails.pop(partition, None)

    def partitions(self) -> list[int]:
        return list(self._parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts.values())

    def take_dirty(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(partition, key, value) for every window changed since the last call."""
        dirty, self._dirty = self._dirty, {}
        for partition, entities in dirty.items():
            part = self._parts.get(partition)
            if part is None:
                continue
            tails = self._tails.get(partition, {})
            for entity in entities:
                window = part.get(entity)
                if window is not None:
                    kept = tails.get(entity)
                    yield partition, entity.encode(), encode_state(*kept) if kept else encode_window(window)


def encode_window(window: Window) -> bytes:
    return orjson.dumps({"v": 1, "w": window})


def encode_state(base: Window, tail: list[Record]) -> bytes:
    return orjson.dumps({"v": 2, "w": base, "t": tail})


def decode_window(value: bytes | None) -> Window | None:
    """The stored window of a v1 record (for a v2 record: its base; use ``decode_state``)."""
    if value is None:
        return None
    obj: Any = orjson.loads(value)
    return obj["w"]


def decode_state(value: bytes | None) -> Window | tuple[Window, list[Record]] | None:
    """What ``WindowStore.load`` takes: a window (v1), a (base, tail) pair (v2) or None (tombstone)."""
    if value is None:
        return None
    obj: Any = orjson.loads(value)
    return (obj["w"], obj["t"]) if obj.get("v") == 2 else obj["w"]
