"""Sensor events -> the model's input arrays, through the worker's own validation, windows and encoding.

Training, calibration and evaluation all read their inputs from here, and here
from ``streamer.encoding.sensors`` exactly as the worker's intake does (the same
``context`` and ``push`` with the card's window, ``features`` before the
event's record joins its window, ``stack`` for the batch arrays), so the model
never sees a number computed two ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from models.dataset import DataError
from streamer.encoding import sensors as enc
from streamer.validation import Invalid, check_sensor
from streamer.windows import context, push

ARRAYS = ("values", "sensor_ids", "sensor_mask", "step_mask", "step_stats", "d2", "r")


@dataclass
class Encoded:
    """One stream's events, encoded: model inputs and what is known about each event, in stream order."""

    inputs: list[tuple[int, np.ndarray, np.ndarray, int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    fault_types: list[str | None] = field(default_factory=list)
    assets: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    n_base: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def extend(self, other: "Encoded") -> None:
        for name in ("inputs", "labels", "fault_types", "assets", "event_ids", "n_base", "ts"):
            getattr(self, name).extend(getattr(other, name))

    def take(self, rows: Sequence[int]) -> "Encoded":
        out = Encoded()
        for name in ("inputs", "labels", "fault_types", "assets", "event_ids", "n_base", "ts"):
            src = getattr(self, name)
            setattr(out, name, [src[i] for i in rows])
        return out


def encode(events: Iterable[Mapping[str, Any]], card: Mapping[str, Any], *, source: str = "events") -> Encoded:
    """Encode an ordered stream; a row the worker would dead-letter raises :class:`DataError` naming it."""
    window = card.get("window") or enc.WINDOW
    max_events, max_age = int(window["max_events"]), int(window["max_age_ms"])
    windows: dict[str, list[dict[str, Any]]] = {}
    out = Encoded()
    for i, raw in enumerate(events, 1):
        try:
            ev = check_sensor(dict(raw))
        except Invalid as exc:
            raise DataError(f"{source}: row {i} (event_id={raw.get('event_id')!r}): {exc}") from None
        why = enc.check(ev, card)
        if why is not None:
            raise DataError(f"{source}: row {i} (event_id={ev['event_id']!r}): {why}")
        key = ev["asset_id"]
        win = windows.get(key, [])
        ctx = context(win, ev["ts"], max_events, max_age)
        try:
            feats = enc.features(ev, ctx, card)
        except enc.SensorDataError as exc:
            raise DataError(f"{source}: row {i} (event_id={ev['event_id']!r}): {exc}") from None
        out.inputs.append(enc.model_input(ev, ctx, feats))
        rec = enc.record(ev)
        rec["o"] = i
        windows[key] = push(win, rec, 2 * max_events, max_age)
        out.labels.append(int(raw.get("label") or 0))
        out.fault_types.append(raw.get("fault_type"))
        out.assets.append(key)
        out.event_ids.append(ev["event_id"])
        out.n_base.append(int(feats["n_base"]))
        out.ts.append(int(ev["ts"]))
    return out


def arrays(inputs: Sequence[tuple[int, np.ndarray, np.ndarray, int]], card: Mapping[str, Any],
           chunk: int = 4096) -> dict[str, np.ndarray]:
    """``enc.stack`` over all rows of one asset type (same width), in chunks to bound peak memory."""
    parts = [enc.stack(inputs[s : s + chunk], card) for s in range(0, len(inputs), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS} if parts else {}


def by_type(data: Encoded) -> dict[int, list[int]]:
    """Row indices per asset type index (training batches are drawn within one type: no padding)."""
    out: dict[int, list[int]] = {}
    for i, inp in enumerate(data.inputs):
        out.setdefault(inp[0], []).append(i)
    return out


def row_batches(data: Encoded, size: int = 512) -> Iterator[np.ndarray]:
    """Row indices in batches of one asset type each, every row once (evaluation)."""
    for rows in by_type(data).values():
        for s in range(0, len(rows), size):
            yield np.asarray(rows[s : s + size])


def batches(data: Encoded, card: Mapping[str, Any], size: int = 512) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row indices, arrays) of each of the ``row_batches``."""
    for idx in row_batches(data, size):
        yield idx, enc.stack([data.inputs[i] for i in idx], card)
