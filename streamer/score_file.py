"""``streamer score-file``: the worker's validation, windows, encoding and model, without Kafka.

Events are taken in file order as if they all arrived on one partition, which is
what the worker sees for keyed input (one entity, one partition). One output line
per input line, in input order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from streamer.bundle import load_bundle
from streamer.calibration import DAY_MS
from streamer.intake import Intake, Item
from streamer.scorer import make_scorer


def score_lines(lines: Iterable[bytes], bundle_dir: str | Path, batch: int = 64, device: str = "cpu", precision: str = "fp32",
                threads: int = 0, spans: dict[str, list[int]] | None = None) -> Iterator[dict[str, Any]]:
    """Yield one result dict per input line: event_id, score, alert, severity, or error.

    ``spans``, when given, is filled with each scored entity's first and last event time (ms).
    """
    bundle = load_bundle(bundle_dir)
    scorer = make_scorer(bundle, device, precision, threads)
    intake = Intake(bundle)
    pending: list[tuple[int, Any]] = []

    def flush() -> Iterator[dict[str, Any]]:
        items = [it for _, it in pending if isinstance(it, Item)]
        scores = scorer.score_batch([it.inputs for it in items]).scores.tolist() if items else []
        it_scores = iter(scores)
        for _, out in pending:
            if isinstance(out, Item):
                s = round(float(next(it_scores)), 6)
                sev = bundle.severity(s)
                yield {"event_id": out.event["event_id"], "score": s, "alert": sev is not None, "severity": sev, "model": bundle.model_id}
            else:
                yield {"event_id": _event_id(out.raw), "error": out.error}
        pending.clear()

    for lineno, raw in enumerate(lines):
        out = intake.accept("file", 0, lineno, raw)
        if spans is not None and isinstance(out, Item):
            ts = int(out.event["ts"])
            span = spans.setdefault(str(out.entity), [ts, ts])
            span[0], span[1] = min(span[0], ts), max(span[1], ts)
        pending.append((lineno, out))
        if sum(isinstance(o, Item) for _, o in pending) >= batch:
            yield from flush()
    yield from flush()


def _event_id(raw: bytes | None) -> str | None:
    try:
        obj = orjson.loads(raw or b"")
        v = obj.get("event_id") if isinstance(obj, dict) else None
        return v if isinstance(v, str) else None
    except orjson.JSONDecodeError:
        return None


def score_file(input_path: str | Path, output_path: str | Path, bundle_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Score a JSONL file into another; returns the counts, and the time the scored entities span.

    ``entity_days`` (each entity's last event time minus its first, summed, in days) turns
    the alert count into alerts per asset-day: on a long run of normal readings that is
    the number to hold against a sensor bundle's budget of false alarms per asset-day.
    """
    counts: dict[str, Any] = {"lines": 0, "scored": 0, "errors": 0, "alerts": 0}
    spans: dict[str, list[int]] = {}
    with open(input_path, "rb") as src, open(output_path, "wb") as dst:
        lines = (line.rstrip(b"\r\n") for line in src)
        for rec in score_lines(lines, bundle_dir, spans=spans, **kw):
            counts["lines"] += 1
            if "error" in rec:
                counts["errors"] += 1
            else:
                counts["scored"] += 1
                counts["alerts"] += rec["alert"]
            dst.write(orjson.dumps(rec) + b"\n")
    counts["entities"] = len(spans)
    counts["entity_days"] = sum(last - first for first, last in spans.values()) / DAY_MS
    return counts
