"""One message in, one scorable item or one rejection out: the worker's per-event step.

Validation, the bundle's own checks, windowing and encoding happen here, in
consumption order, before batching: a window always reflects every earlier event
of its entity, whatever order batches finish in. ``streamer score-file`` runs the
same code without Kafka, which is why the two give the same scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from streamer.bundle import Bundle
from streamer.records import KIND_ENTITY
from streamer.state import WindowStore
from streamer.validation import MAX_MESSAGE_BYTES, VALIDATORS
from streamer.windows import context


@dataclass(slots=True)
class Item:
    """A valid event on its way to the model."""

    kind: str
    tp: Any
    offset: int
    event: dict[str, Any]
    entity: str
    feats: dict[str, Any]
    inputs: Any  # what the scorer takes: the words of a token model, the window of a numeric one
    received: float = field(default_factory=time.time)  # wall clock at receipt, for latency_ms


@dataclass(slots=True)
class Rejection:
    tp: Any
    offset: int
    error: str
    raw: bytes | None


class Intake:
    """Validation + windows + encoding for one kind, bound to one bundle."""

    def __init__(self, bundle: Bundle, max_events: int = 0, max_age_s: float = 0.0, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.kind = bundle.kind
        self.bundle = bundle
        self.encoding = bundle.encoding
        # token models take the encoding's words; an encoding with numeric inputs defines model_input
        self.model_input = getattr(self.encoding, "model_input", None) or self.encoding.text
        self.validate = VALIDATORS[self.kind]
        self.entity_field = KIND_ENTITY[self.kind]
        trained = bundle.card.get("window") or getattr(self.encoding, "WINDOW", {})
        self.max_events = int(max_events or trained.get("max_events", 32))
        self.max_age_ms = int(max_age_s * 1000) if max_age_s else int(trained.get("max_age_ms", 86_400_000))
        self.max_message_bytes = max_message_bytes
        self.store = WindowStore(self.kind, keep_events=2 * self.max_events, max_age_ms=self.max_age_ms)

    def rebind(self, bundle: Bundle) -> None:
        """Serve a new bundle of the same kind and encoding (hot reload keeps the windows)."""
        self.bundle = bundle

    def accept(self, tp: Any, partition: int, offset: int, raw: bytes | None, received: float | None = None) -> Item | Rejection:
        event, error = self.validate(raw, self.max_message_bytes)
        if error is None:
            error = self.encoding.check(event, self.bundle.card)
        if error is not None:
            return Rejection(tp, offset, error, raw)
        entity = event[self.entity_field]
        window = self.store.get(partition, entity)
        replay = bool(window) and window[-1].get("o", -1) >= offset
        seen = self.store.before(partition, entity, offset) if replay else None  # exact, when the store kept it
        if seen is not None:
            ctx = context(seen, event["ts"], self.max_events, self.max_age_ms)
        else:
            ctx = context(window, event["ts"], self.max_events, self.max_age_ms, offset if replay else None)
        try:
            feats = self.encoding.features(event, ctx, self.bundle.card)
            inputs = self.model_input(event, ctx, feats)
        except (ValueError, ArithmeticError) as exc:  # an event the encoding cannot represent: reject, never guess
            return Rejection(tp, offset, f"cannot encode event: {exc}", raw)
        if not replay:
            rec = self.encoding.record(event)
            rec["o"] = offset
            self.store.push(partition, entity, rec)
        return Item(self.kind, tp, offset, event, entity, feats, inputs, received if received is not None else time.time())
