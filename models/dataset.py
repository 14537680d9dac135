"""Ordered events -> (text, label, vector) rows, exactly as the worker sees them.

Why a single function: train/serve skew is the classic way a streaming model
quietly underperforms. Rows here are built with the same validation
(``streamer.validation``), the same per-entity windows (``streamer.windows.push``
with the bundle's window parameters) and the same encoding module as the worker,
and features are computed *before* the event's own record joins its window.

Kind-agnostic: pass the encoding module (``streamer.encoding.for_kind(kind)``).
No torch here, so evaluation scripts can use it without the training extra.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator, Mapping, Sequence

import orjson

from streamer.validation import ENTITY_FIELD, Invalid, check_sensor, check_transaction
from streamer.windows import context, push

CHECKS = {"transaction": check_transaction, "sensor": check_sensor}


class DataError(ValueError):
    """A training/evaluation row that cannot be used; the message names row and field."""


@dataclass(slots=True)
class Row:
    event_id: str
    entity: str
    text: str
    label: int | None
    vector: list[float]


def window_params(encoding: ModuleType, card: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """(max_events, max_age_ms): the card's window when given, else the encoding's default."""
    w = (card or {}).get("window") or encoding.WINDOW
    return int(w["max_events"]), int(w["max_age_ms"])


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Objects of a JSONL file; a bad line raises :class:`DataError` naming its line number."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno}: not valid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def rows(
    events: Iterable[Mapping[str, Any]],
    encoding: ModuleType,
    card: Mapping[str, Any] | None = None,
    *,
    require_label: bool = True,
    source: str = "events",
) -> Iterator[Row]:
    """Encode an ordered event stream into rows, one per event, in input order.

    Raises :class:`DataError` with the 1-based row number and the offending field
    for any event the worker would dead-letter, or (``require_label``) without a
    0/1 label, so a bad training file fails loudly instead of training on holes.
    """
    check = CHECKS[encoding.KIND]
    entity_field = ENTITY_FIELD[encoding.KIND]
    max_events, max_age_ms = window_params(encoding, card)
    windows: dict[str, list[dict[str, Any]]] = {}
    features, text, vector, record, reject = (
        encoding.features, encoding.text, encoding.vector, encoding.record, encoding.check,
    )
    for i, raw in enumerate(events, 1):
        if not isinstance(raw, Mapping):
            raise DataError(f"{source}: row {i}: expected a JSON object, got {type(raw).__name__}")
        try:
            ev = check(dict(raw))
        except Invalid as exc:
            raise DataError(f"{source}: row {i} (event_id={raw.get('event_id')!r}): {exc}") from None
        if require_label and ev["label"] is None:
            raise DataError(f"{source}: row {i} (event_id={ev['event_id']!r}): missing field: label (0 or 1)")
        why = reject(ev, card)
        if why is not None:
            raise DataError(f"{source}: row {i} (event_id={ev['event_id']!r}): {why}")
        key = ev[entity_field]
        win = windows.get(key, [])
        ctx = context(win, ev["ts"], max_events, max_age_ms)  # the worker's exact definition of the window
        feats = features(ev, ctx, card)
        rec = record(ev)
        rec["o"] = i
        windows[key] = push(win, rec, max_events, max_age_ms)
        yield Row(ev["event_id"], key, text(ev, ctx, feats), ev["label"], vector(feats))


def materialize(
    events: Iterable[Mapping[str, Any]],
    encoding: ModuleType,
    card: Mapping[str, Any] | None = None,
    *,
    limit: int | None = None,
    require_label: bool = True,
    source: str = "events",
) -> tuple[list[str], list[int], list[list[float]]]:
    """Texts, labels and vectors as three parallel lists (label None -> 0)."""
    it = rows(events, encoding, card, require_label=require_label, source=source)
    if limit is not None:
        it = itertools.islice(it, limit)
    texts: list[str] = []
    labels: list[int] = []
    vectors: list[list[float]] = []
    for r in it:
        texts.append(r.text)
        labels.append(int(r.label or 0))
        vectors.append(r.vector)
    return texts, labels, vectors


def token_ids(texts: Sequence[str], tokens: Any, chunk: int = 8192) -> list[list[int]]:
    """Token ids through the bundle's ``TokenEncoder`` (left-truncated, ending with [END])."""
    out: list[list[int]] = []
    for s in range(0, len(texts), chunk):
        out.extend(tokens.ids(texts[s : s + chunk]))
    return out
