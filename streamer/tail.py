"""``streamer tail``: follow a topic in a form a person can read at a glance."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
from aiokafka import AIOKafkaConsumer

SEVERITY_STYLE = {"low": "cyan", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}


def _time(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def format_record(topic: str, value: bytes | None) -> str:
    """One line (rich markup) for a record of a known topic; raw JSON otherwise."""
    try:
        r = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return (value or b"").decode("utf-8", "replace")[:200]
    if not isinstance(r, dict):
        return str(r)[:200]
    if "alert_id" in r:
        sev = r.get("severity", "?")
        style = SEVERITY_STYLE.get(sev, "")
        reasons = "; ".join(r.get("reasons") or []) or "-"
        return f"{_time(r.get('ts'))} [{style}]{sev.upper():8}[/] {r.get('kind', '')[:4]} {r.get('entity')!s:14} score {r.get('score', 0):.3f}  {reasons}"
    if "score" in r and "event_id" in r:
        return f"{_time(r.get('ts'))} {r.get('kind', '')[:4]} {r.get('entity')!s:14} {r.get('event_id')!s:20} score {r.get('score', 0):.4f}  {r.get('latency_ms', 0):.1f} ms  {r.get('model', '')}"
    if "error" in r and "offset" in r:
        return f"{_time(r.get('at'))} [red]REJECTED[/] {r.get('topic')}[{r.get('partition')}]@{r.get('offset')}: {r.get('error')}"
    return orjson.dumps(r).decode()[:300]


async def follow(brokers: str, topic: str, emit: Callable[[str], None], from_beginning: bool = False, count: int = 0, security: dict | None = None, idle_exit_s: float = 0.0) -> int:
    """Print records until ``count`` were shown (0 = forever) or nothing came for ``idle_exit_s``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=brokers, group_id=None, auto_offset_reset="earliest" if from_beginning else "latest", enable_auto_commit=False, **(security or {}))
    await consumer.start()
    n = 0
    idle = 0.0
    try:
        while not count or n < count:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                idle += 0.5
                if idle_exit_s and idle >= idle_exit_s:
                    break
                continue
            idle = 0.0
            for msgs in batches.values():
                for m in msgs:
                    emit(format_record(topic, m.value))
                    n += 1
                    if count and n >= count:
                        return n
    except asyncio.CancelledError:
        pass
    finally:
        await consumer.stop()
    return n
