"""Entity windows held by one worker, by source partition, with dirty tracking.

Windows live in memory and are made durable by the changelog (``changelog``):
at every checkpoint the windows that changed are written to a compacted topic,
to the same partition number their events came from, so the worker that is
assigned an input partition after a rebalance finds its windows on the matching
changelog partition whatever partitioner the input's producer used.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterator

import orjson

from streamer.windows import Window

TP = Hashable  # (topic, partition) or aiokafka TopicPartition


class WindowStore:
    """``{partition: {entity: window}}`` for one kind of event."""

    def __init__(self, kind: str, keep_events: int):
        self.kind = kind
        self.keep_events = keep_events  # more than the context needs, so a replay can rebuild an older context
        self._parts: dict[int, dict[str, Window]] = {}
        self._dirty: dict[int, set[str]] = {}

    def get(self, partition: int, entity: str) -> Window:
        return self._parts.get(partition, {}).get(entity, [])

    def put(self, partition: int, entity: str, window: Window) -> None:
        self._parts.setdefault(partition, {})[entity] = window
        self._dirty.setdefault(partition, set()).add(entity)

    def load(self, partition: int, entity: str, window: Window | None) -> None:
        """Restore one entity from the changelog (None = tombstone)."""
        part = self._parts.setdefault(partition, {})
        if window is None:
            part.pop(entity, None)
        else:
            part[entity] = window

    def drop(self, partition: int) -> None:
        self._parts.pop(partition, None)
        self._dirty.pop(partition, None)

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
            for entity in entities:
                window = part.get(entity)
                if window is not None:
                    yield partition, entity.encode(), encode_window(window)


def encode_window(window: Window) -> bytes:
    return orjson.dumps({"v": 1, "w": window})


def decode_window(value: bytes | None) -> Window | None:
    if value is None:
        return None
    obj: Any = orjson.loads(value)
    return obj["w"]
