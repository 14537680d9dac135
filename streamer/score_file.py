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
from streamer.intake import Intake, Item
from streamer.scorer import make_scorer


def score_lines(lines: Iterable[bytes], bundle_dir: str | Path, batch: int = 64, device: str = "cpu", precision: str = "fp32", threads: int = 0) -> Iterator[dict[str, Any]]:
    """Yield one result dict per input line: event_id, score, alert, severity, or error."""
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
        pending.append((lineno, intake.accept("file", 0, lineno, raw)))
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


def score_file(input_path: str | Path, output_path: str | Path, bundle_dir: str | Path, **kw: Any) -> dict[str, int]:
    counts = {"lines": 0, "scored": 0, "errors": 0, "alerts": 0}
    with open(input_path, "rb") as src, open(output_path, "wb") as dst:
        lines = (line.rstrip(b"\r\n") for line in src)
        for rec in score_lines(lines, bundle_dir, **kw):
            counts["lines"] += 1
            if "error" in rec:
                counts["errors"] += 1
            else:
                counts["scored"] += 1
                counts["alerts"] += rec["alert"]
            dst.write(orjson.dumps(rec) + b"\n")
    return counts
