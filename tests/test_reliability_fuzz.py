"""Bad input: generated messages through decoding, validation, windows, encoding and the model.

Property (hypothesis, >= 5,000 messages): ``Intake.accept`` never raises; every
rejection has a reason specific enough to map to a reason code; every valid
message becomes an Item whose event obeys the contract, whose text the model
scores, and whose records serialize. Then a few hundred messages of the same
kinds go through the broker: each valid one is scored, each rejected one is in
dead-letters with its reason and its original bytes.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import string
from collections import Counter
from datetime import datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.bundle import load_bundle
from streamer.intake import Intake, Item, Rejection
from streamer.records import alert_record, dead_letter, score_record
from streamer.scorer import Scorer
from streamer.validation import MAX_TS_MS, MIN_TS_MS, reason_code
from tests.conftest import create, read_until
from tests.reliability import produce, worker_process

REASON_CODES = {"oversized", "invalid_utf8", "invalid_json", "not_object", "empty", "missing_field", "bad_timestamp", "non_finite", "wrong_type", "unknown_sensor", "out_of_range", "invalid_value"}
IDS = [f"dup-{i}" for i in range(5)]  # a small pool: many messages share an event_id

# ---------------------------------------------------------------- strategies
ts_ok = st.one_of(
    st.integers(MIN_TS_MS, MAX_TS_MS),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2098, 12, 31), timezones=st.timezones()).map(lambda d: d.isoformat()),
)
valid_tx = st.fixed_dictionaries(
    {
        "event_id": st.one_of(st.sampled_from(IDS), st.text(min_size=1, max_size=128)),
        "ts": ts_ok,
        "account_id": st.text(min_size=1, max_size=40),
        "amount": st.one_of(st.integers(0, 10**12), st.floats(0, 1e308, allow_nan=False)),
        "currency": st.text(alphabet=string.ascii_letters, min_size=3, max_size=3),
    },
    optional={
        "merchant_id": st.text(min_size=1, max_size=256),
        "mcc": st.one_of(st.integers(0, 9999), st.from_regex(r"\A\d{4}\Z")),
        "country": st.text(alphabet=string.ascii_letters, min_size=2, max_size=2),
        "channel": st.sampled_from(["pos", "ecom", "atm", "transfer"]),
        "device_id": st.text(min_size=1, max_size=64),
        "ip": st.text(min_size=1, max_size=64),
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
        "label": st.sampled_from([0, 1]),
        "extra": st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=10),
    },
)
junk_value = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=300),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=3),
)
FIELDS = ["event_id", "ts", "account_id", "amount", "currency", "merchant_id", "mcc", "country", "channel", "device_id", "ip", "lat", "lon", "label"]


@st.composite
def mutated_tx(draw) -> bytes:
    """A valid transaction with one or more fields removed or replaced by anything."""
    ev = draw(valid_tx)
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        if draw(st.booleans()):
            ev.pop(field, None)
        else:
            ev[field] = draw(junk_value)
    return _dumps_loose(ev)


def _dumps_loose(ev: dict) -> bytes:
    """JSON text with NaN/Infinity literals where the values are not finite (what some producers send)."""
    parts = []
    for k, v in ev.items():
        if isinstance(v, float) and math.isnan(v):
            s = b"NaN"
        elif isinstance(v, float) and math.isinf(v):
            s = b"Infinity" if v > 0 else b"-Infinity"
        else:
            s = orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)
        parts.append(orjson.dumps(k) + b":" + s)
    return b"{" + b",".join(parts) + b"}"


literal_numbers = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" + b"0" * 400, b"9" * 30, b"-0.0", b"1e-400", b"0x10", b"+1", b".5", b"1."])


@st.composite
def number_literal_tx(draw) -> bytes:
    """Non-JSON or extreme number literals in numeric fields (raw text: json.dumps cannot write them)."""
    field = draw(st.sampled_from(["amount", "ts", "lat", "lon", "label", "mcc"]))
    lit = draw(literal_numbers)
    base = {"event_id": draw(st.sampled_from(IDS)), "ts": 1_700_000_000_000, "account_id": "acc-1", "amount": 5.0, "currency": "EUR"}
    base.pop(field, None)
    return orjson.dumps(base)[:-1] + b',"' + field.encode() + b'":' + lit + b"}"


deep = st.one_of(
    st.integers(10, 30_000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(10, 10_000).map(lambda d: b'{"event_id":' * d + b'"x"' + b"}" * d),
    st.integers(10, 5_000).map(lambda d: b'{"event_id":"deep","ts":1700000000000,"account_id":"a","amount":1,"currency":"EUR","extra":' + b"[" * d + b"]" * d + b"}"),
)
megabyte = st.integers(60_000, 1_200_000).map(lambda n: b'{"event_id":"big","ts":1700000000000,"account_id":"a","amount":1,"currency":"EUR","pad":"' + b"x" * n + b'"}')
raw_bytes = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=50).map(lambda b: b'{"event_id":"' + b + b'","ts":1700000000000,"account_id":"a","amount":1,"currency":"EUR"}'),  # invalid UTF-8 inside a string
    st.sampled_from([b"", b"null", b"[]", b'"text"', b"42", b"\xef\xbb\xbf{}", b'{"event_id":"\\ud800"}', b'{"a":1,"a":2}', b"{" * 3, b"\x00" * 10]),
)
duplicate_keys = st.sampled_from(IDS).map(lambda i: ('{"event_id":"' + i + '","ts":1700000000000,"account_id":"a","amount":"12","amount":12,"currency":"EUR"}').encode())
message = st.one_of(
    valid_tx.map(lambda e: ("valid", orjson.dumps(e))),
    mutated_tx().map(lambda b: ("any", b)),
    number_literal_tx().map(lambda b: ("any", b)),
    deep.map(lambda b: ("any", b)),
    megabyte.map(lambda b: ("any", b)),
    raw_bytes.map(lambda b: ("any", b)),
    duplicate_keys.map(lambda b: ("any", b)),
    st.just(("any", None)),  # a null value (tombstone)
)


def check_item(item: Item) -> None:
    ev = item.event
    assert isinstance(ev["event_id"], str) and 1 <= len(ev["event_id"]) <= 128
    assert isinstance(ev["ts"], int) and MIN_TS_MS <= ev["ts"] <= MAX_TS_MS
    assert isinstance(ev["account_id"], str) and ev["account_id"]
    assert isinstance(ev["amount"], float) and math.isfinite(ev["amount"]) and ev["amount"] >= 0
    assert len(ev["currency"]) == 3 and ev["currency"].isalpha() and ev["currency"].isupper()
    assert ev.get("label") in (None, 0, 1)
    assert isinstance(item.inputs, str) and item.inputs.strip()
    rec = score_record(ev, "transaction", 0.5, "m@1", 1, 0.0)
    alert = alert_record(ev, "transaction", 0.99, "critical", 0.5, ["r"], "m@1", 1)
    orjson.dumps(rec), orjson.dumps(alert)


def check_rejection(rej: Rejection, raw: bytes) -> None:
    assert isinstance(rej.error, str) and rej.error.strip(), f"empty reason for {raw[:80]!r}"
    assert reason_code(rej.error) in REASON_CODES
    dl = dead_letter("t", 0, rej.offset, rej.error, raw)
    orjson.dumps(dl)
    kept = base64.b64decode(dl["raw"]) if dl.get("raw_encoding") == "base64" else dl["raw"].encode()
    assert kept == (raw or b"")[: 64 * 1024]


def test_fuzzed_messages_never_escape_and_every_rejection_has_a_reason(tiny_tx_bundle):
    bundle = load_bundle(tiny_tx_bundle)
    scorer = Scorer(bundle, "cpu", "fp32", 1)
    intake = Intake(bundle)  # one intake across all examples: windows keep growing, duplicates pile up
    seen = Counter()
    offset = [0]

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(message, min_size=17, max_size=30))  # 300 examples x >= 17 messages >= 5,100
    def run(messages):
        items = []
        for kind, raw in messages:
            offset[0] += 1
            out = intake.accept("fuzz", offset[0] % 3, offset[0], raw)
            seen["messages"] += 1
            if isinstance(out, Item):
                check_item(out)
                items.append(out)
                seen["items"] += 1
                seen["duplicate_ids"] += out.event["event_id"] in IDS
            else:
                assert isinstance(out, Rejection), type(out)
                assert kind != "valid", f"a contract-valid message was rejected: {out.error} {raw[:200]!r}"
                check_rejection(out, raw)
                seen[reason_code(out.error)] += 1
        if items:
            scores = scorer.score_batch([it.inputs for it in items]).scores
            assert len(scores) == len(items) and all(0.0 <= s <= 1.0 for s in scores.tolist())

    run()
    print(f"\nfuzz: {seen['messages']} messages, {seen['items']} valid (scored; {seen['duplicate_ids']} with a shared event_id), rejections by reason {dict((k, v) for k, v in seen.items() if k in REASON_CODES)}")
    assert seen["messages"] >= 5000
    assert seen["items"] > 500 and sum(seen[k] for k in REASON_CODES) > 1000
    for code in ("oversized", "invalid_utf8", "invalid_json", "not_object", "missing_field", "wrong_type", "bad_timestamp", "empty"):
        assert seen[code] > 0, f"no {code} rejection generated"


# ---------------------------------------------------------------- end to end
def fuzz_messages(rng: random.Random, n: int) -> list[bytes]:
    """Seeded messages of the same kinds as the property test, for the broker run."""
    out = []
    for i in range(n):
        ev = {"event_id": rng.choice(IDS) if rng.random() < 0.1 else f"fz-{i}", "ts": 1_700_000_000_000 + i * 1000, "account_id": f"acc-{rng.randrange(20)}", "amount": round(rng.uniform(0, 500), 2), "currency": "EUR"}
        r = rng.random()
        if r < 0.45:
            v = orjson.dumps(ev)
        elif r < 0.55:
            f = rng.choice(FIELDS[:5])
            ev[f] = rng.choice([None, True, [], {}, "", "x" * 300, -1, 1e308, 2**63 - 1])
            v = orjson.dumps(ev)
        elif r < 0.62:
            v = orjson.dumps(ev)[:-1] + b',"amount":' + rng.choice([b"NaN", b"Infinity", b"1e400", b"-5"]) + b"}"
        elif r < 0.68:
            d = rng.randrange(100, 20_000)
            v = b"[" * d + b"]" * d
        elif r < 0.72:
            v = orjson.dumps(dict(ev, pad="y" * rng.choice([70_000, 300_000, 1_000_000, 1_500_000])))
        elif r < 0.80:
            v = orjson.dumps(ev)[:20] + bytes(rng.randrange(128, 256) for _ in range(5)) + orjson.dumps(ev)[20:]
        elif r < 0.86:
            v = rng.choice([b"", b"null", b"[1,2]", b"\xff\xfe", b"{", b'"s"'])
        elif r < 0.92:
            ev["ts"] = rng.choice(["yesterday", 1_700_000_000, "2023-11-14T22:13:20", "2023-11-14T22:13:20Z", 10**18])
            v = orjson.dumps(ev)
        else:
            v = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
        out.append(v)
    return out


def test_fuzzed_messages_through_the_broker_are_scored_or_dead_lettered(broker, topics, tiny_tx_bundle, engine, tmp_path):
    values = fuzz_messages(random.Random(91), 400)
    oracle = Intake(load_bundle(tiny_tx_bundle))
    # what the worker must do with each message (validation does not depend on the window)
    verdicts = [oracle.validate(v, oracle.max_message_bytes) for v in values]
    valid = [i for i, (ev, err) in enumerate(verdicts) if err is None]
    rejected = [i for i, (ev, err) in enumerate(verdicts) if err is not None]
    want_ids = Counter(verdicts[i][0]["event_id"] for i in valid)

    async def main():
        await create(broker, topics)
        with worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path / "worker.log"):
            where = await produce(broker.bootstrap, topics["transactions"], values, max_request_size=2 << 20)
            got = await read_until(
                broker, [topics["scores"], topics["dead_letters"]],
                lambda g: len(g[topics["scores"]]) >= len(valid) and len(g[topics["dead_letters"]]) >= len(rejected), 90,
            )
        return where, got

    where, got = asyncio.run(main())
    scores, dlq = got[topics["scores"]], got[topics["dead_letters"]]
    assert Counter(r["event_id"] for r in scores) == want_ids, "every valid message scored once (shared event_ids once per message)"
    by_pos = {(d["partition"], d["offset"]): d for d in dlq}
    assert len(by_pos) == len(dlq) == len(rejected)
    for i in rejected:
        d = by_pos[where[i]]
        assert d["topic"] == topics["transactions"] and d["error"] == verdicts[i][1]
        raw = base64.b64decode(d["raw"]) if d.get("raw_encoding") == "base64" else d["raw"].encode()
        assert raw == values[i][: 64 * 1024]
        assert d.get("raw_truncated_from", len(values[i])) == len(values[i])
    print(f"\nfuzz through the broker: {len(values)} messages, {len(valid)} scored, {len(rejected)} dead-lettered "
          f"({dict(Counter(reason_code(verdicts[i][1]) for i in rejected))}), largest {max(map(len, values)):,} bytes")
