"""Output records: scores, alerts and dead letters, as the contract fixes them.

Pure functions; the sinks only serialize and send what these return.

>>> alert_id("e1", "transactions@1.0.0") == alert_id("e1", "transactions@1.0.0")
True
>>> dead_letter("transactions", 0, 7, "missing required field: ts", b"\\xff", at_ms=1)["raw_encoding"]
'base64'
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

KIND_ENTITY = {"transaction": "account_id", "sensor": "asset_id"}


def now_ms() -> int:
    return int(time.time() * 1000)


def alert_id(event_id: str, model: str) -> str:
    """Deterministic from event and model, so a replay after a crash yields the same id."""
    return hashlib.sha256(f"{model}\x00{event_id}".encode()).hexdigest()[:32]


def score_record(event: dict[str, Any], kind: str, score: float, model: str, scored_at: int, latency_ms: float) -> dict[str, Any]:
    return {
        "event_id": event["event_id"],
        "entity": event[KIND_ENTITY[kind]],
        "kind": kind,
        "ts": event["ts"],
        "score": round(float(score), 6),
        "model": model,
        "scored_at": scored_at,
        "latency_ms": round(latency_ms, 3),
    }


def alert_record(event: dict[str, Any], kind: str, score: float, severity: str, threshold: float, reasons: list[str], model: str, scored_at: int) -> dict[str, Any]:
    return {
        "alert_id": alert_id(event["event_id"], model),
        "event_id": event["event_id"],
        "entity": event[KIND_ENTITY[kind]],
        "kind": kind,
        "score": round(float(score), 6),
        "severity": severity,
        "threshold": threshold,
        "reasons": reasons,
        "model": model,
        "ts": event["ts"],
        "scored_at": scored_at,
    }


def dead_letter(topic: str, partition: int, offset: int, error: str, raw: bytes | None, at_ms: int | None = None, max_raw: int = 64 * 1024) -> dict[str, Any]:
    """Record a rejected message with its coordinates; the raw value is kept (truncated past ``max_raw``)."""
    rec: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "error": error, "at": at_ms or now_ms()}
    raw = raw if raw is not None else b""
    if len(raw) > max_raw:
        rec["raw_truncated_from"] = len(raw)
        raw = raw[:max_raw]
    try:
        rec["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        rec["raw"] = base64.b64encode(raw).decode("ascii")
        rec["raw_encoding"] = "base64"
    return rec
