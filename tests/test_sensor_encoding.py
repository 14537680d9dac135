"""Sensor encoding (streamer/encoding/sensors.py): features, words, state, checks, reasons."""

from __future__ import annotations

import math

import pytest

from models import dataset as ds
from streamer.encoding import sensors as enc
from streamer.synth.sensors import ASSET_TYPES, generate
from streamer.validation import Invalid, check_sensor
from streamer.windows import context, push

T0 = 1_700_000_000_000
CARD = {"name": "sx", "version": "0", "normalization": {"sensors": {
    s.name: {"mean": s.base, "std": s.noise * 3} for specs in ASSET_TYPES.values() for s in specs}}}


def ev(i: int, readings: dict, asset: str = "a1") -> dict:
    return {"event_id": f"e{i}", "ts": T0 + i * 60_000, "asset_id": asset, "readings": dict(readings)}


def run(readings_seq, card=CARD, asset="a1"):
    """Encode a sequence of readings for one asset the way the worker does; returns (features, text) per event."""
    w: list = []
    out = []
    for i, r in enumerate(readings_seq):
        e = ev(i, r, asset)
        ctx = context(w, e["ts"], enc.WINDOW["max_events"], enc.WINDOW["max_age_ms"])
        f = enc.features(e, ctx, card)
        out.append((f, enc.text(e, ctx, f)))
        rec = enc.record(e)
        rec["o"] = i
        w = push(w, rec, 2 * enc.WINDOW["max_events"], enc.WINDOW["max_age_ms"])
    return out


def wave(i: int, amp: float = 1.0) -> float:
    return 50.0 + amp * math.sin(i / 10.0) + 0.1 * ((i * 7919) % 13 - 6) / 6


def test_texts_are_deterministic_fixed_length_and_in_vocabulary():
    a = [r.text for r in ds.rows(generate(4000, seed=5, n_assets=8), enc, CARD)]
    b = [r.text for r in ds.rows(generate(4000, seed=5, n_assets=8), enc, CARD)]
    assert a == b
    vocab = set(enc.VOCABULARY)
    assert all(len(t.split()) == 31 for t in a)  # + [END] = 32 tokens, the bundle max
    assert {w for t in a for w in t.split()} <= vocab
    assert all(w.isalnum() for w in vocab)  # one token each under the Whitespace pre-tokenizer


def test_vector_matches_feature_names():
    (f, _), = run([{"temp_c": 50.0}])
    assert len(enc.vector(f)) == len(enc.FEATURE_NAMES)
    assert all(math.isfinite(x) for x in enc.vector(f))


def test_unknown_sensor_is_rejected_with_its_name_and_the_fix():
    why = enc.check(ev(0, {"temp_c": 1.0, "spindle_hz": 2.0}), CARD)
    assert "unknown sensor 'spindle_hz'" in why and "sx@0" in why and "streamer model fine-tune" in why
    assert enc.check(ev(0, {"temp_c": 1.0}), CARD) is None
    per_asset = {**CARD, "normalization": {**CARD["normalization"], "assets": {"a1": {"spindle_hz": {"mean": 2, "std": 1}}}}}
    assert enc.check(ev(0, {"spindle_hz": 2.0}, "a1"), per_asset) is None
    assert "spindle_hz" in enc.check(ev(0, {"spindle_hz": 2.0}, "a2"), per_asset)
    assert "unknown sensor" in enc.check(ev(0, {"x": 1.0}), {"name": "n", "version": "1"})


def test_nan_and_inf_are_errors_naming_the_field():
    with pytest.raises(enc.SensorDataError, match=r"readings\.temp_c: must be a finite number"):
        enc.features(ev(0, {"temp_c": float("nan")}), [], CARD)
    with pytest.raises(enc.SensorDataError, match=r"readings\.pressure_bar"):
        enc.features(ev(0, {"temp_c": 1.0, "pressure_bar": float("inf")}), [], CARD)
    with pytest.raises(enc.SensorDataError, match="readings: empty"):
        enc.features(ev(0, {}), [], CARD)
    with pytest.raises(Invalid, match=r"readings\.temp_c: must be a finite number"):
        check_sensor({"event_id": "e", "ts": T0, "asset_id": "a", "readings": {"temp_c": float("nan")}})


def test_spike_scores_high_and_reason_names_the_sensor():
    seq = [{"temp_c": wave(i)} for i in range(300)] + [{"temp_c": 58.0}]
    f, t = run(seq)[-1]
    assert f["top1_name"] == "temp_c" and f["top1_z"] > 5 and f["top1_env"] > 0
    assert any("temp_c" in r and "above the asset's normal" in r for r in enc.reasons(f))
    quiet, _ = run(seq[:-1])[-1]
    assert quiet["max_sev"] < f["max_sev"]


def test_stuck_sensor_and_multi_sensor_faults():
    base = [{"temp_c": wave(i), "pressure_bar": wave(i, 2) / 10, "flow_lpm": 300 + 3 * wave(i)} for i in range(300)]
    stuck = base + [{**base[-1], "temp_c": 50.123} for _ in range(12)]
    for j, r in enumerate(stuck[300:]):
        r["pressure_bar"] = wave(300 + j, 2) / 10
        r["flow_lpm"] = 300 + 3 * wave(300 + j)
    f, _ = run(stuck)[-1]
    assert any(r.startswith("temp_c stuck at 50.12 for 12 readings") for r in enc.reasons(f))
    together = base + [{"temp_c": 70.0, "pressure_bar": 9.0, "flow_lpm": 500.0}]
    f, t = run(together)[-1]
    assert f["n_dev"] == 3
    assert "3 sensors deviating together" in enc.reasons(f)
    assert "k3" in t.split()


def test_long_memory_state_rides_in_records_and_survives_a_missing_state():
    seq = [{"temp_c": wave(i)} for i in range(200)]
    e = ev(200, {"temp_c": 50.0})
    w = []
    for i, r in enumerate(seq):
        x = ev(i, r)
        enc.features(x, w, CARD)
        w.append(enc.record(x))
    assert "s" in w[-1] and w[-1]["s"]["temp_c"][0] == 200.0  # readings folded into the state so far
    f_state = enc.features(dict(e), w[-128:], CARD)
    # a window whose records lack the state (older encoding, or record() without features()) cold-starts
    bare = [{"ts": r["ts"], "r": r["r"]} for r in w[-128:]]
    f_cold = enc.features(dict(e), bare, CARD)
    assert f_cold["long_n"] == 128 and f_state["long_n"] == 200
    assert f_cold["top1_z"] == f_state["top1_z"]  # the short-window part does not depend on the state


def test_new_extreme_after_a_long_history_breaches_the_envelope_once():
    seq = [{"temp_c": wave(i, 3)} for i in range(2000)] + [{"temp_c": 56.0}] * 3
    out = run(seq)
    envs = [f["top1_env"] for f, _ in out[-3:]]
    assert envs[0] > 1 and envs[1] < 0.01 and envs[2] < 0.01  # the repeat is (almost) no longer outside the range


def test_empty_window_and_short_history_use_the_card():
    (f, t), = run([{"temp_c": 55.0 + 3 * 0.4 * 5}], card=CARD)  # card: mean 55, std 1.2
    assert f["n_hist"] == 0 and f["top1_z"] == pytest.approx(5.0)
    assert t.split()[6] == "w0"  # the model sees that the asset is new


def test_constant_sensor_that_finally_moves_scores_finite_and_high():
    seq = [{"temp_c": 20.0}] * 100 + [{"temp_c": 20.5}]
    f, _ = run(seq)[-1]
    assert f["top1_z"] == enc.CLIP and math.isfinite(f["max_sev"])


def test_card_window_is_the_module_default():
    assert set(enc.WINDOW) == {"max_events", "max_age_ms"}
    assert enc.KIND == "sensor" and enc.ENCODING_VERSION.startswith("sensor-")


def _daily(hours: float) -> float:
    """A sensor with a daily rhythm: 40 at 06:00 UTC, 60 at 18:00, a little noise."""
    return 50.0 - 10.0 * math.cos(2 * math.pi * (hours - 6.0) / 24.0) + 0.2 * math.sin(hours * 7.3)


def test_in_range_reading_at_the_wrong_hour_is_novel_for_the_time_of_day():
    step = 10 * 60_000  # ten days of 10-minute readings, then one more reading at 06:00 or at 18:00
    day0 = (T0 // 86_400_000 + 1) * 86_400_000  # midnight UTC
    w: list = []
    for i in range(10 * 144):
        e = {"event_id": f"e{i}", "ts": day0 + i * step, "asset_id": "a1", "readings": {"temp_c": _daily(i / 6.0)}}
        enc.features(e, context(w, e["ts"], 128, enc.WINDOW["max_age_ms"]), CARD)
        rec = enc.record(e)
        rec["o"] = i
        w = push(w, rec, 128, enc.WINDOW["max_age_ms"])
    assert sum("s" in r for r in w) == 1 and "s" in w[-1]  # the state rides on the newest record only

    def at(hour: int, value: float) -> dict:
        e = {"event_id": "x", "ts": day0 + 10 * 86_400_000 + hour * 3_600_000, "asset_id": "a1",
             "readings": {"temp_c": value}}
        return enc.features(e, context(w, e["ts"], 128, enc.WINDOW["max_age_ms"]), CARD)

    wrong = at(6, 58.0)  # 58 is ordinary at 18:00 and inside the sensor's all-time range, but not at 06:00
    assert wrong["top1_env"] < 0 and wrong["top1_renv"] > 0 and wrong["top1_rz"] > 10
    assert wrong["novelty"] == pytest.approx(enc.RENV_WEIGHT * wrong["top1_renv"])
    assert any("this hour of the day" in r for r in enc.reasons(wrong))
    usual = at(18, 58.0)
    assert usual["top1_renv"] < 0 and usual["novelty"] < 0 and abs(usual["top1_rz"]) < 3
