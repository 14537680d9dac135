"""Decode and validate input messages against the contract (../shared/CONTRACT.md).

Every message either becomes a normalized event dict or a rejection reason that
is specific enough for the producer to fix its output. Nothing here raises on bad
input: the worker must never crash or silently drop a message because of what a
producer sent.

>>> ev, err = validate_transaction(b'{"event_id":"e1","ts":1700000000000,"account_id":"a","amount":12.5,"currency":"EUR"}')
>>> err is None and ev["amount"] == 12.5 and ev["ts"] == 1700000000000
True
>>> validate_transaction(b'{"event_id":"e1"}')[1]
'missing required field: ts'
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Callable

import orjson

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_READINGS = 256
MAX_STR_CHARS = 256
# Epoch-millisecond timestamps outside this range are almost always seconds or
# microseconds sent by mistake; reject them rather than window on nonsense.
MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01

CHANNELS = frozenset({"pos", "ecom", "atm", "transfer"})
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_MCC = re.compile(r"^\d{4}$")

Event = dict[str, Any]
Result = tuple[Event | None, str | None]


class Invalid(ValueError):
    """A field failed validation; the message names the field."""


def decode(raw: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse one Kafka value into a JSON object or raise :class:`Invalid`."""
    if raw is None:
        raise Invalid("empty message value (null)")
    if len(raw) > max_bytes:
        raise Invalid(f"message of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"value is not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"value is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Invalid(f"value must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_ts(value: Any, field: str = "ts") -> int:
    """Epoch milliseconds from an int or an ISO 8601 string with a zone."""
    if isinstance(value, bool):
        raise Invalid(f"{field}: expected epoch milliseconds or ISO 8601, got a boolean")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise Invalid(f"{field}: epoch milliseconds must be a whole number, got {value!r}")
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            raise Invalid(f"{field}: timestamp string longer than 64 characters")
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise Invalid(f"{field}: not an ISO 8601 timestamp: {text[:64]!r}") from None
        if dt.tzinfo is None:
            raise Invalid(f"{field}: ISO 8601 timestamp needs a zone (e.g. Z or +01:00): {text!r}")
        ms = int(round(dt.timestamp() * 1000))
    else:
        raise Invalid(f"{field}: expected epoch milliseconds (int) or ISO 8601 string, got {type(value).__name__}")
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise Invalid(f"{field}: {ms} is outside years 2000-2100 in epoch milliseconds (seconds sent by mistake?)")
    return ms


def _string(obj: dict[str, Any], field: str, required: bool, max_chars: int = MAX_STR_CHARS) -> str | None:
    if field not in obj or obj[field] is None:
        if required:
            raise Invalid(f"missing required field: {field}")
        return None
    value = obj[field]
    if not isinstance(value, str):
        raise Invalid(f"{field}: expected a string, got {type(value).__name__}")
    if not value or len(value) > max_chars:
        raise Invalid(f"{field}: length {len(value)} is outside 1-{max_chars} characters")
    return value


def _number(obj: dict[str, Any], field: str, required: bool) -> float | None:
    if field not in obj or obj[field] is None:
        if required:
            raise Invalid(f"missing required field: {field}")
        return None
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{field}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise Invalid(f"{field}: must be a finite number, got {value!r}")
    return value


def _label(obj: dict[str, Any]) -> int | None:
    value = obj.get("label")
    if value is None:
        return None
    if isinstance(value, bool) or value not in (0, 1):
        raise Invalid(f"label: must be 0 or 1, got {value!r}")
    return int(value)


def _common(obj: dict[str, Any], entity_field: str) -> Event:
    event_id = _string(obj, "event_id", True, MAX_ID_CHARS)
    if "ts" not in obj or obj["ts"] is None:
        raise Invalid("missing required field: ts")
    ts = parse_ts(obj["ts"])
    entity = _string(obj, entity_field, True)
    return {"event_id": event_id, "ts": ts, entity_field: entity, "label": _label(obj)}


def check_transaction(obj: dict[str, Any]) -> Event:
    """Normalize a decoded transaction object or raise :class:`Invalid`."""
    ev = _common(obj, "account_id")
    amount = _number(obj, "amount", True)
    if amount < 0:
        raise Invalid(f"amount: must be >= 0, got {amount!r}")
    ev["amount"] = amount
    currency = _string(obj, "currency", True, 3)
    if not _CURRENCY.match(currency):
        raise Invalid(f"currency: expected 3 letters (ISO 4217), got {currency!r}")
    ev["currency"] = currency.upper()
    ev["merchant_id"] = _string(obj, "merchant_id", False)
    mcc = obj.get("mcc")
    if mcc is not None:
        if isinstance(mcc, int) and not isinstance(mcc, bool) and 0 <= mcc <= 9999:
            mcc = f"{mcc:04d}"
        if not isinstance(mcc, str) or not _MCC.match(mcc):
            raise Invalid(f"mcc: expected 4 digits, got {mcc!r}")
    ev["mcc"] = mcc
    country = _string(obj, "country", False, 2)
    if country is not None and not _COUNTRY.match(country):
        raise Invalid(f"country: expected ISO 3166 alpha-2, got {country!r}")
    ev["country"] = country.upper() if country else None
    channel = _string(obj, "channel", False, 16)
    if channel is not None and channel not in CHANNELS:
        raise Invalid(f"channel: expected one of {sorted(CHANNELS)}, got {channel!r}")
    ev["channel"] = channel
    ev["device_id"] = _string(obj, "device_id", False)
    ev["ip"] = _string(obj, "ip", False, 64)
    lat = _number(obj, "lat", False)
    lon = _number(obj, "lon", False)
    if lat is not None and not -90 <= lat <= 90:
        raise Invalid(f"lat: must be within [-90, 90], got {lat!r}")
    if lon is not None and not -180 <= lon <= 180:
        raise Invalid(f"lon: must be within [-180, 180], got {lon!r}")
    ev["lat"], ev["lon"] = lat, lon
    return ev


def check_sensor(obj: dict[str, Any]) -> Event:
    """Normalize a decoded sensor object or raise :class:`Invalid`."""
    ev = _common(obj, "asset_id")
    if "readings" not in obj or obj["readings"] is None:
        raise Invalid("missing required field: readings")
    readings = obj["readings"]
    if not isinstance(readings, dict):
        raise Invalid(f"readings: expected an object of sensor name -> number, got {type(readings).__name__}")
    if not 1 <= len(readings) <= MAX_READINGS:
        raise Invalid(f"readings: {len(readings)} entries, expected 1-{MAX_READINGS}")
    clean: dict[str, float] = {}
    for name, value in readings.items():
        if not name or len(name) > MAX_STR_CHARS:
            raise Invalid(f"readings: sensor name of length {len(name)} is outside 1-{MAX_STR_CHARS}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"readings.{name[:64]}: expected a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise Invalid(f"readings.{name[:64]}: must be a finite number, got {value!r}")
        clean[name] = value
    ev["readings"] = clean
    return ev


def _validator(check: Callable[[dict[str, Any]], Event]) -> Callable[..., Result]:
    def validate(raw: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Result:
        try:
            return check(decode(raw, max_bytes)), None
        except Invalid as exc:
            return None, str(exc)
        except (RecursionError, OverflowError, ValueError, TypeError) as exc:  # defensive: never crash on input
            return None, f"unparseable value: {type(exc).__name__}: {exc}"[:300]

    validate.__doc__ = f"Decode and check one raw value with {check.__name__}; returns (event, None) or (None, reason)."
    return validate


validate_transaction = _validator(check_transaction)
validate_sensor = _validator(check_sensor)

VALIDATORS: dict[str, Callable[..., Result]] = {"transaction": validate_transaction, "sensor": validate_sensor}
ENTITY_FIELD = {"transaction": "account_id", "sensor": "asset_id"}


_REASONS = (  # (text in the error, label): the first match wins
    ("exceeds the", "oversized"),
    ("not valid utf-8", "invalid_utf8"),
    ("not valid json", "invalid_json"),
    ("unparseable", "invalid_json"),
    ("must be a json object", "not_object"),
    ("null", "empty"),
    ("missing required field", "missing_field"),
    ("iso 8601", "bad_timestamp"),
    ("epoch milliseconds", "bad_timestamp"),
    ("finite", "non_finite"),
    ("expected a", "wrong_type"),
    ("unknown sensor", "unknown_sensor"),
    ("sensor set", "sensor_set"),
    ("outside", "out_of_range"),
    ("must be", "out_of_range"),
)
# Every label reason_code can return: the metric series are created for each at start-up.
REASON_CODES = tuple(dict.fromkeys(code for _, code in _REASONS)) + ("invalid_value",)


def reason_code(error: str) -> str:
    """A small, bounded label for a rejection reason (metric label; the full text goes to the dead letter).

    >>> reason_code("missing required field: ts"), reason_code("amount: must be a finite number, got nan")
    ('missing_field', 'non_finite')
    """
    e = error.lower()
    for needle, code in _REASONS:
        if needle in e:
            return code
    return "invalid_value"
