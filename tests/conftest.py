"""Shared fixtures: a real embedded broker, unique topics per test, workers in-process.

Tests wait for conditions (assignment, records arriving) with deadlines; they
never sleep for a fixed time hoping something happened.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.broker import EmbeddedBroker, ensure_topics
from streamer.bundle import DEFAULT_BUNDLES
from streamer.settings import Settings
from tests.tiny_bundle import make_tiny_bundle

TX_BUNDLE = DEFAULT_BUNDLES["transaction"]
SENSOR_BUNDLE = DEFAULT_BUNDLES["sensor"]


@pytest.fixture(scope="session")
def broker():
    b = EmbeddedBroker(port=0).start()
    yield b
    b.stop()


@pytest.fixture
def own_broker():
    """A broker of the test's own, for tests that freeze, restart or empty it."""
    b = EmbeddedBroker(port=0).start()
    yield b
    b.stop()


@pytest.fixture
def topics(broker) -> dict[str, str]:
    """Fresh topic names and group id for one test."""
    tag = uuid.uuid4().hex[:8]
    return {
        "transactions": f"tx-{tag}",
        "sensors": f"sn-{tag}",
        "scores": f"scores-{tag}",
        "alerts": f"alerts-{tag}",
        "dead_letters": f"dlq-{tag}",
        "group": f"g-{tag}",
    }


ENGINES = ("direct", "faust")


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """Each reliability test runs once per engine: the direct aiokafka loop and the Faust agents."""
    return request.param


@pytest.fixture(scope="session")
def tiny_tx_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "tx", "transaction", risky=("dnew", "cnew"))


def settings_for(broker: EmbeddedBroker, topics: dict[str, str], partitions: int = 4, **kw: Any) -> Settings:
    base = dict(
        brokers=broker.bootstrap,
        group_id=topics["group"],
        transactions_topic=topics["transactions"],
        sensors_topic="",
        scores_topic=topics["scores"],
        alerts_topic=topics["alerts"],
        dead_letters_topic=topics["dead_letters"],
        partitions=partitions,
        metrics_port=0,
        commit_interval_s=0.5,
    )
    base.update(kw)
    return Settings.from_env({}, **base)


async def create(broker: EmbeddedBroker, topics: dict[str, str], partitions: int = 4) -> None:
    names = [v for k, v in topics.items() if k != "group"]
    await ensure_topics(broker.bootstrap, names, partitions)


async def send(broker: EmbeddedBroker, topic: str, values: Iterable[bytes], key: Callable[[bytes], bytes | None] | None = None) -> int:
    from streamer.producer import key_of

    key = key or key_of
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, acks="all")
    await p.start()
    try:
        futs = [await p.send(topic, v, key=key(v)) for v in values]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return len(futs)


async def read_until(broker: EmbeddedBroker, topics: list[str], done: Callable[[dict[str, list[dict]]], bool], timeout: float = 60.0) -> dict[str, list[dict]]:
    """Read records (as dicts) from the start of ``topics`` until ``done(records)`` or timeout."""
    c = AIOKafkaConsumer(*topics, bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    got: dict[str, list[dict]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batches = await c.getmany(timeout_ms=300)
            for tp, msgs in batches.items():
                got[tp.topic].extend(orjson.loads(m.value) for m in msgs)
            if done(got):
                break
    finally:
        await c.stop()
    return got


async def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def events(kind: str, n: int, seed: int, **kw: Any) -> list[dict]:
    from streamer.synth import for_kind

    return list(itertools.islice(for_kind(kind).generate(n, seed, **kw), n))


MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_utf8"),
    (b'{"event_id": "m1", "ts": 1700000000000, "currency": "EUR", "amount": 3}', "missing_field"),
    (b'{"event_id": "m2", "ts": 1700000000000, "account_id": "a1", "amount": "12", "currency": "EUR"}', "wrong_type"),
    (b'{"event_id": "m3", "ts": 1700000000000, "account_id": "a1", "amount": NaN, "currency": "EUR"}', "invalid_json"),
    (b'{"event_id": "m4", "ts": 1700000000000, "account_id": "a1", "amount": 1e999, "currency": "EUR"}', "invalid_json"),
    (b'{"event_id": "m5", "ts": 1700000000000, "account_id": "a1", "amount": 5, "currency": "EUR", "pad": "' + b"x" * 70000 + b'"}', "oversized"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"event_id": "m6", "ts": "yesterday", "account_id": "a1", "amount": 5, "currency": "EUR"}', "bad_timestamp"),
    (b'{"event_id": "m7", "ts": 1700000000000, "account_id": "a1", "amount": -5, "currency": "EUR"}', "out_of_range"),
]


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)
