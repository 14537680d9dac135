"""Traffic for the worker: synthetic events at a rate, or a replay of a JSONL/CSV file."""

from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator

import orjson
from aiokafka import AIOKafkaProducer

from streamer.records import KIND_ENTITY

KINDS = {"transactions": "transaction", "sensors": "sensor"}


def synthetic(kind: str, count: int, seed: int, rate_of_positives: float | None = None, start_ms: int | None = None) -> Iterator[dict[str, Any]]:
    """Events from the seeded generator of ``kind`` (fraud or fault rate as given, else its default)."""
    from streamer.synth import for_kind

    gen = for_kind(kind)
    kw: dict[str, Any] = {}
    if rate_of_positives is not None:
        kw["fraud_rate" if kind == "transaction" else "fault_rate"] = rate_of_positives
    if start_ms is not None:
        kw["start_ms"] = start_ms
    return gen.generate(count, seed, **kw)


def read_file(path: str | Path) -> Iterator[bytes]:
    """Raw values from a JSONL file (one object a line) or a CSV file (header row; sensor columns become readings)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                yield orjson.dumps(_csv_event(row))
    else:
        with open(path, "rb") as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line


_TX_FIELDS = {"event_id", "ts", "account_id", "amount", "currency", "merchant_id", "mcc", "country", "channel", "device_id", "ip", "lat", "lon", "label"}


def _num(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v else f


def _csv_event(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as an event: transaction columns as they are, other columns of a sensor row as readings."""
    row = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
    if "asset_id" in row:
        ev: dict[str, Any] = {k: _num(row.pop(k)) if k in ("ts", "label") else row.pop(k) for k in ("event_id", "ts", "asset_id", "label") if k in row}
        ev["readings"] = {k: _num(v) for k, v in row.items()}
        return ev
    return {k: (_num(v) if k in ("ts", "amount", "lat", "lon", "label") else v) for k, v in row.items() if k in _TX_FIELDS}


def key_of(value: bytes) -> bytes | None:
    """Entity key of a raw value when it parses, else None (the worker dead-letters it anyway)."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        for field in KIND_ENTITY.values():
            v = obj.get(field)
            if isinstance(v, str):
                return v.encode()
    return None


async def paced(values: Iterable[bytes], rate: float) -> AsyncIterator[list[bytes]]:
    """Chunks of values released at ``rate`` per second (0 = as fast as possible)."""
    chunk: list[bytes] = []
    size = 500 if rate <= 0 else max(1, int(rate / 100))
    start = time.monotonic()
    sent = 0
    for v in values:
        chunk.append(v)
        if len(chunk) >= size:
            yield chunk
            sent += len(chunk)
            chunk = []
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    if chunk:
        yield chunk


async def produce(brokers: str, topic: str, values: Iterable[bytes], rate: float = 0.0, security: dict | None = None, progress: Any = None) -> int:
    """Send values keyed by entity; returns how many the broker acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5, max_batch_size=256 * 1024, acks="all", **(security or {}))
    await producer.start()
    n = 0
    try:
        async for chunk in paced(values, rate):
            futs = [await producer.send(topic, v, key=key_of(v)) for v in chunk]
            await asyncio.gather(*futs)
            n += len(futs)
            if progress is not None:
                progress(len(futs))
    finally:
        await producer.stop()
    return n


def encode_events(events: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for ev in events:
        yield orjson.dumps(ev)
