"""The sensor encoding (sensor-v7): asset types, each asset's own normal, the window, the relation statistics, reasons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.encoding import relations
from streamer.encoding import sensors as enc
from streamer.sensor_scorer import score_components
from streamer.windows import context, push

T0 = 1_700_000_000_000
CARD = {"name": "t", "version": "1", "window": {"max_events": 8, "max_age_ms": 10**12}, "sensor_model": {
    "window": 8, "warmup": 32, "slots": {"flow": 1, "current": 2, "temp": 3},
    "types": {"pump": {"sensors": ["current", "flow"], "mean": [10.0, 100.0], "std": [1.0, 5.0], "between": [1.0, 5.0],
                       # current and flow correlate at 0.95 within an asset
                       "precision": np.linalg.inv(np.array([[1.0, 0.95], [0.95, 1.0]])).tolist()},
              "probe": {"sensors": ["temp"], "mean": [20.0], "std": [0.5], "between": [2.0], "precision": [[1.0]]}}}}


def stream(readings: list[dict[str, float]], asset: str = "p1", card: dict = CARD) -> list[tuple[dict, tuple]]:
    """(features, model input) of each reading, through the windows exactly as the worker keeps them."""
    win: list[dict] = []
    out = []
    for i, r in enumerate(readings):
        ev = {"event_id": f"e{i}", "asset_id": asset, "ts": T0 + i * 1000, "readings": dict(r)}
        ctx = context(win, ev["ts"], 8, 10**12)
        f = enc.features(ev, ctx, card)
        out.append((f, enc.model_input(ev, ctx, f)))
        rec = enc.record(ev)
        rec["o"] = i
        win = push(win, rec, 16, 10**12)
    return out


def normal_pump(n: int, seed: int = 0, level: float = 0.0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        load = rng.normal()
        out.append({"current": 10 + level + load + 0.3 * rng.normal(), "flow": 100 + 5 * level + 5 * load + 1.5 * rng.normal()})
    return out


def test_check_names_unknown_sensors_and_the_type_an_event_misses():
    assert enc.check({"readings": {"flow": 1.0, "current": 2.0}}, CARD) is None
    unknown = enc.check({"readings": {"flow": 1.0, "flux": 2.0}}, CARD)
    assert "unknown sensor 'flux'" in unknown and "fine-tune" in unknown
    partial = enc.check({"readings": {"flow": 1.0}}, CARD)
    assert "matches no asset type" in partial and "type 'pump'" in partial and "missing 'current'" in partial


def test_an_asset_whose_sensor_set_changes_is_refused():
    win: list[dict] = []
    ev = {"asset_id": "p1", "ts": T0, "readings": {"flow": 100.0, "current": 10.0}}
    enc.features(ev, win, CARD)
    win.append(enc.record(ev))
    with pytest.raises(enc.SensorDataError, match="sensor set of asset 'p1' changed"):
        enc.features({"asset_id": "p1", "ts": T0 + 1, "readings": {"temp": 20.0}}, win, CARD)


def test_nan_and_inf_and_text_are_errors_naming_the_field():
    for bad, msg in ((math.nan, "finite"), (math.inf, "finite"), ("12", "expected a number")):
        with pytest.raises(enc.SensorDataError, match=rf"readings\.flow: .*{msg}"):
            enc.features({"asset_id": "p", "ts": T0, "readings": {"flow": bad, "current": 1.0}}, [], CARD)


def test_window_is_deterministic_oldest_first_and_padded_at_cold_start():
    rows = stream(normal_pump(20))
    assert [r[1].valid for r in rows[:3]] == [1, 2, 3]  # valid steps grow from one
    f, inp = rows[-1]
    z = enc.standardise([inp])[0][0]
    assert (inp.type_index, z.shape, inp.valid) == (enc.spec(CARD).by_set[frozenset({"flow", "current"})].index, (8, 2), 8)
    np.testing.assert_allclose(z[-1], f["z"], rtol=1e-6)
    again = stream(normal_pump(20))
    np.testing.assert_array_equal(enc.standardise([again[-1][1]])[0][0], z)
    # the first of three readings: padded to the left with itself, nothing repeats, only the last step is real
    z3, rep3, _ = enc.standardise([rows[2][1]])
    np.testing.assert_array_equal(z3[0, :6], np.repeat(z3[0, 5:6], 6, 0))
    assert not rep3.any() and enc.stack([rows[2][1]], CARD)["step_mask"][0].tolist() == [0] * 5 + [1] * 3


def test_cold_start_judges_a_new_asset_on_the_types_spread_widened_by_how_assets_differ():
    # an asset running 1.5 type-sigmas high is ordinary for a new asset, then becomes its own normal
    rows = stream(normal_pump(60, seed=3, level=1.5))
    first = abs(rows[0][0]["z"][0])
    late = np.mean([abs(r[0]["z"][0]) for r in rows[40:]])
    assert rows[0][0]["n_base"] == 0 and rows[-1][0]["n_base"] == 32  # frozen after the warm-up
    assert first < 2.0 and late < 1.5


def test_a_fault_during_the_warm_up_is_not_absorbed_into_the_baseline():
    rs = normal_pump(20)
    rs[10] = {"current": 40.0, "flow": 100.0}  # 30 sigma: gated
    rows = stream(rs)
    assert rows[11][0]["n_base"] == rows[10][0]["n_base"]
    assert abs(rows[12][0]["centre"][0] - 10.0) < 1.0


def test_relation_residual_sees_a_broken_relation_no_single_sensor_shows():
    spec = enc.spec(CARD)
    pump = spec.by_set[frozenset({"flow", "current"})]
    # one sigma up on both: ordinary; one up, one down: each 1 sigma, but 6 sigma from each other's prediction
    r_same, d_same = relations.residuals(np.array([1.0, 1.0]), pump.precision)
    r_broken, d_broken = relations.residuals(np.array([1.0, -1.0]), pump.precision)
    assert np.abs(r_same).max() < 0.5 and np.abs(r_broken).min() > 6.0
    assert d_broken > 20 * d_same


def test_stack_mixes_asset_types_with_padding_and_computes_the_relation_statistics():
    a = stream(normal_pump(12))
    b = stream([{"temp": 20.0 + 0.1 * (i % 3)} for i in range(12)], asset="t1")
    batch = enc.stack([a[-1][1], b[-1][1], a[-2][1]], CARD)
    assert batch["values"].shape == (3, 8, 2, len(enc.CHANNELS))
    np.testing.assert_array_equal(batch["sensor_mask"], [[1, 1], [1, 0], [1, 1]])
    assert batch["sensor_ids"][0].tolist() == [2, 1] and batch["sensor_ids"][1].tolist() == [3, 0]
    z = enc.standardise([a[-1][1]])[0][0, -1].astype(np.float64)
    pump = enc.spec(CARD).by_set[frozenset({"flow", "current"})]
    r, d2 = relations.residuals(z, pump.precision)
    np.testing.assert_allclose(batch["r"][0], r, rtol=1e-5)
    assert batch["d2"][0, -1] == pytest.approx(d2 / 2, rel=1e-5)
    assert batch["values"][1, :, 1, :].sum() == 0  # padding carries nothing


def test_repeat_flag_marks_a_stuck_sensor_and_not_the_padding():
    rs = normal_pump(10) + [{"current": 11.0, "flow": 104.0}] * 4
    rep = enc.standardise([stream(rs)[-1][1]])[1][0]
    assert rep[-3:].tolist() == [[1.0, 1.0]] * 3 and rep[0].tolist() == [0.0, 0.0]
    inp0 = stream(rs[:2])[-1][1]
    assert inp0.valid == 2 and enc.standardise([inp0])[1].sum() == 0


def test_baseline_state_rides_in_the_newest_record_and_restores_the_same_window():
    rs = normal_pump(40)
    win: list[dict] = []
    for i, r in enumerate(rs[:-1]):
        ev = {"asset_id": "p", "ts": T0 + i, "readings": r}
        enc.features(ev, context(win, ev["ts"], 8, 10**12), CARD)
        rec = enc.record(ev)
        rec["o"] = i
        win = push(win, rec, 16, 10**12)
    assert "s" in win[-1] and all("s" not in w for w in win[:-1])
    import orjson

    restored = orjson.loads(orjson.dumps(win))  # what the changelog round trip gives back
    ev = {"asset_id": "p", "ts": T0 + 99, "readings": rs[-1]}
    f1 = enc.features(dict(ev), context(win, ev["ts"], 8, 10**12), CARD)
    f2 = enc.features(dict(ev), context(restored, ev["ts"], 8, 10**12), CARD)
    assert f1["z"] == f2["z"] and f1["n_base"] == f2["n_base"] == 32


def test_reasons_name_the_worst_sensor_and_what_predicts_it():
    feats = stream(normal_pump(3))[-1][0]
    detail = {"worst": [(0, 4.1, [1])], "parts": {"D": 9.0}}
    assert enc.reasons(feats, detail)[0] == "current 4.1σ above what flow predict"
    detail = {"worst": [], "forecast": (1, -5.0), "cause": "a change the model did not expect from the readings before"}
    got = enc.reasons(feats, detail)
    assert got[0] == "flow 5.0σ below the model's forecast" and got[1].startswith("a change")
    assert any(r.startswith("new asset: judged on") for r in got)


def test_score_components_from_a_batch():
    a = stream(normal_pump(12))
    batch = enc.stack([a[-1][1]], CARD)
    z = batch["values"][:, -1, :, 0]
    parts = score_components(batch, np.array([0.5]), z + 1.0, np.zeros_like(z))
    assert parts["E"][0] == pytest.approx(1.0)  # every sensor one forecast sigma off
    assert parts["D"][0] == pytest.approx(batch["d2"][0, -1])
    assert parts["R"][0] == pytest.approx(float((batch["r"][0] ** 2).max()), rel=1e-5)


def test_check_card_refuses_a_broken_sensor_model():
    assert enc.check_card({"sensor_model": {}}) and "types is missing" in enc.check_card({"sensor_model": {}})
    bad = {"sensor_model": {"types": {"x": {"sensors": ["a"], "mean": [0.0], "std": [1.0], "precision": [[-1.0]],
                                            "calibration": {}}}}}
    assert "positive diagonal" in enc.check_card(bad)


def test_a_one_sensor_type_also_measures_novelty_against_its_long_history():
    card = {**CARD, "sensor_model": {**CARD["sensor_model"], "types": {
        "value": {"sensors": ["v"], "mean": [0.0], "std": [1.0], "between": [1.0], "precision": [[1.0]], "novelty": True}}}}
    rng = np.random.default_rng(0)
    rows = stream([{"v": float(100 + 5 * rng.normal())} for _ in range(600)] + [{"v": 160.0}], asset="m", card=card)
    ordinary = [f["novelty"] for f, _ in rows[100:600]]
    assert max(ordinary) < 1.0 and rows[-1][0]["novelty"] > 4.0
    assert rows[-1][1].novelty == rows[-1][0]["novelty"]  # it travels to the scorer with the window
    assert stream([{"flow": 1.0, "current": 2.0}])[0][0]["novelty"] == 0.0  # multi-sensor types: not computed


def test_window_parts_see_a_stuck_sensor_and_a_sensor_that_stopped_following():
    rs = normal_pump(12) + [{"current": 11.0, "flow": 104.0}] * 5
    batch = enc.stack([stream(rs)[-1][1], stream(normal_pump(17))[-1][1]], CARD)
    zeros = np.zeros(2)
    parts = score_components(batch, zeros, batch["values"][:, -1, :, 0], np.zeros((2, 2)))
    assert parts["S"].tolist()[0] == 4.0 and parts["S"][1] <= 1.0  # 5 equal readings: 4 repeats
    # current follows flow, then stops: each reading ordinary, their relation not
    broken = normal_pump(12) + [{"current": 10.0, "flow": 100.0 + 8.0 * (-1) ** i} for i in range(6)]
    b2 = enc.stack([stream(broken)[-1][1], stream(normal_pump(18))[-1][1]], CARD)
    p2 = score_components(b2, zeros, b2["values"][:, -1, :, 0], np.zeros((2, 2)))
    assert p2["Rbar"][0] > 5 * p2["Rbar"][1]


def test_a_stuck_sensor_counts_by_how_rarely_it_repeats_in_normal_running():
    # flow is a coarse gauge that holds its value half the time; current changes every reading
    card = {**CARD, "sensor_model": {**CARD["sensor_model"], "types": {
        "pump": {**CARD["sensor_model"]["types"]["pump"], "repeat_p": [0.001, 0.5]}}}}
    held = normal_pump(12)
    stuck_gauge = held + [{"current": 10.0 + 0.1 * i, "flow": 104.0} for i in range(8)]  # flow: 7 repeats
    stuck_current = held + [{"current": 11.0, "flow": 100.0 + i} for i in range(3)]  # current: 2 repeats
    zeros = np.zeros(2)
    b = enc.stack([stream(stuck_gauge, card=card)[-1][1], stream(stuck_current, card=card)[-1][1]], card)
    parts = score_components(b, zeros, b["values"][:, -1, :, 0], np.zeros((2, 2)))
    assert parts["S"][0] == pytest.approx(7 * math.log10(2), rel=1e-4)  # ~2.1 decades: ordinary for a gauge
    assert parts["S"][1] == pytest.approx(2 * 3.0)  # 6 decades after only 2 repeats
    assert parts["run"].tolist() == [7.0, 2.0]  # the reason still counts readings
    # a card without repeat rates (bundles before 3.2.0) weighs every repeat 1, as before
    plain = enc.stack([stream(stuck_gauge)[-1][1], stream(stuck_current)[-1][1]], CARD)
    assert score_components(plain, zeros, plain["values"][:, -1, :, 0], np.zeros((2, 2)))["S"].tolist() == [7.0, 2.0]


def test_a_sensor_pinned_at_the_edge_of_its_normal_range_is_not_stuck():
    """A flow meter that reads exactly 0 when the pump idles repeats 0 in normal running: those
    repeats neither make S nor make its repeats look common; frozen inside its range, it still counts."""
    from models.sensor_fit import fit_types

    rng = np.random.default_rng(2)
    events = []
    for i in range(600):
        load = rng.normal()
        idle = (i // 40) % 3 == 2  # every third stretch of 40 readings the pump idles
        events.append({"event_id": f"e{i}", "asset_id": "p1", "ts": T0 + i * 1000,
                       "readings": {"current": (1.0 if idle else 10 + load) + 0.3 * rng.normal(),
                                    "flow": 0.0 if idle else max(0.0, 100 + 5 * load + 1.5 * rng.normal())}})
    (fitted,) = fit_types(events, warmup=32, window=8).values()
    q = dict(zip(fitted["sensors"], fitted["repeat_p"]))
    assert fitted["limits"]["lo"][fitted["sensors"].index("flow")] == 0.0
    assert q["flow"] < 0.01  # its 190-odd repeats at 0 are not the flow's repeat rate
    card = {**CARD, "sensor_model": {**CARD["sensor_model"], "types": {
        "pump": {**CARD["sensor_model"]["types"]["pump"], **{k: fitted[k] for k in ("repeat_p", "limits")}}}}}
    held = normal_pump(12)
    idling = held + [{"current": 1.0 + 0.1 * i, "flow": 0.0} for i in range(6)]
    frozen = held + [{"current": 10.0 + 0.1 * i, "flow": 104.0} for i in range(6)]
    zeros = np.zeros(2)
    b = enc.stack([stream(idling, card=card)[-1][1], stream(frozen, card=card)[-1][1]], card)
    parts = score_components(b, zeros, b["values"][:, -1, :, 0], np.zeros((2, 2)))
    assert parts["S"][0] == 0.0 and b["values"][0, :, :, 3].sum() == 0.0
    assert parts["run"][1] == 5.0 and parts["S"][1] > 10.0  # 5 repeats of a flow that never repeats
    # the run is counted in the asset's state, past the window of 8: a gauge frozen for 30 readings
    long = enc.stack([stream(held + [{"current": 10.0 + 0.1 * i, "flow": 104.0} for i in range(30)], card=card)[-1][1]], card)
    assert score_components(long, zeros[:1], long["values"][:, -1, :, 0], np.zeros((1, 2)))["run"][0] == 29.0
    # the count rides in the newest record's state: a changelog round trip mid-run gives the same count
    import orjson

    win: list[dict] = []
    frozen30 = held + [{"current": 10.0 + 0.1 * i, "flow": 104.0} for i in range(30)]
    for i, r in enumerate(frozen30[:-1]):
        ev = {"asset_id": "p", "ts": T0 + i, "readings": r}
        enc.features(ev, context(win, ev["ts"], 8, 10**12), card)
        win = push(win, enc.record(ev), 16, 10**12)
    last = {"asset_id": "p", "ts": T0 + 99, "readings": frozen30[-1]}
    restored = orjson.loads(orjson.dumps(win))
    assert [enc.features(dict(last), context(w, last["ts"], 8, 10**12), card)["runs"] for w in (win, restored)] == [[0, 29]] * 2
    # the same card without limits (bundles before 3.5.0) counts the idle repeats too, in the window alone
    old = {**card, "sensor_model": {**card["sensor_model"], "types": {"pump": {
        k: v for k, v in card["sensor_model"]["types"]["pump"].items() if k != "limits"}}}}
    b_old = enc.stack([stream(idling, card=old)[-1][1]], old)
    assert score_components(b_old, zeros[:1], b_old["values"][:, -1, :, 0], np.zeros((1, 2)))["S"][0] > 10.0
    b_old = enc.stack([stream(held + [{"current": 10.0 + 0.1 * i, "flow": 104.0} for i in range(30)], card=old)[-1][1]], old)
    assert score_components(b_old, zeros[:1], b_old["values"][:, -1, :, 0], np.zeros((1, 2)))["run"][0] == 7.0


def test_repeat_rates_are_fitted_per_sensor_from_normal_running():
    from models.sensor_fit import fit_types

    rng = np.random.default_rng(1)
    events = []
    for i in range(400):
        load = rng.normal()
        events.append({"event_id": f"e{i}", "asset_id": "p1", "ts": T0 + i * 1000,
                       "readings": {"current": 10 + load + 0.3 * rng.normal(), "setpoint": float(50 + 5 * (i // 10))}})
    t = fit_types(events, warmup=32, window=8)
    (fitted,) = t.values()
    q = dict(zip(fitted["sensors"], fitted["repeat_p"]))
    assert q["current"] < 0.01 and 0.85 < q["setpoint"] < 0.95  # the setpoint changes every tenth reading


def _lag_card(coef: np.ndarray, sigma: list[float], static: list[float]) -> dict:
    """CARD's pump with a lag model: current follows flow's recent mean (weight 0.1), not flow now."""
    t = dict(CARD["sensor_model"]["types"]["pump"])
    t["lag"] = {"alphas": [0.5, 0.1], "coef": coef.tolist(), "bias": [0.0, 0.0], "sigma": sigma, "static_sigma": static}
    return {**CARD, "sensor_model": {**CARD["sensor_model"], "types": {"pump": t}}}


def test_recent_history_rides_in_the_state_and_the_window_shows_it_as_it_was_at_each_step():
    card = _lag_card(np.zeros((2, 6)), [1.0, 1.0], [1.0, 1.0])
    rs = normal_pump(40, seed=4)
    rows = stream(rs, card=card)
    f, inp = rows[-1]
    z, _, means = enc.standardise([inp])
    assert means.shape == (1, 2, 2) and inp.warming is False  # the means now (2 weights x 2 sensors); warm-up over (32)
    hist = enc.history_window(z.astype(np.float64), means, (0.5, 0.1), np.array([inp.valid]))[0]
    assert hist.shape == (8, 4)  # 8 steps x (2 weights x 2 sensors), as the stack computes them
    # forward means over every reading, standardised by the asset's normal now, equal the window's history
    x = np.asarray([[r["current"], r["flow"]] for r in rs])
    for j, a in enumerate((0.5, 0.1)):
        m, seen = x[0].copy(), []
        for row in x:
            m = (1 - a) * m + a * row
            seen.append(m.copy())
        want = (np.asarray(seen[-8:]) - np.asarray(f["centre"])) / np.asarray(f["scale"])
        np.testing.assert_allclose(hist[:, 2 * j: 2 * j + 2], want, rtol=1e-4, atol=1e-4)
    # a restart (the changelog's JSON round trip) restores the same means
    import orjson

    win: list[dict] = []
    for i, r in enumerate(rs[:-1]):
        ev = {"asset_id": "p", "ts": T0 + i, "readings": r}
        enc.features(ev, context(win, ev["ts"], 8, 10**12), card)
        win = push(win, {**enc.record(ev), "o": i}, 16, 10**12)
    ev = {"asset_id": "p", "ts": T0 + 99, "readings": rs[-1]}
    f1 = enc.features(dict(ev), context(win, ev["ts"], 8, 10**12), card)
    f2 = enc.features(dict(ev), context(orjson.loads(orjson.dumps(win)), ev["ts"], 8, 10**12), card)
    assert f1["e"] == f2["e"] and len(f1["e"]) == 2


def test_lag_aware_residual_expects_a_sensor_to_lag_and_still_sees_it_stop_following():
    coef = np.zeros((2, 6))
    coef[0, 5] = 0.9  # current <- flow's recent mean (weight 0.1)
    card = _lag_card(coef, [0.2, 10.0], [0.8, 10.0])  # (flow: nothing predicts it here; a wide σ keeps it quiet)
    rng = np.random.default_rng(1)
    flow, cur, rs = 0.0, 0.0, []
    for i in range(120):
        flow = 2.0 if i >= 80 else 0.0  # a step of load at reading 80
        cur = 0.9 * cur + 0.1 * flow
        rs.append({"flow": 100 + 5 * flow + 0.05 * rng.normal(), "current": 10 + 0.9 * cur + 0.01 * rng.normal()})
    rows = stream(rs, card=card)
    a = enc.stack([inp for _, inp in rows], card)
    parts = score_components(a, np.zeros(len(rs)), np.zeros((len(rs), 2)), np.zeros((len(rs), 2)))
    # current lags the step as its history says it should: the lag-aware residual stays small
    assert np.abs(a["lr"][80:, -1, 0]).max() < 2.0 and parts["Lbar"][80:].max() < 2.0
    broken = [dict(r) for r in rs]
    for r in broken[90:]:
        r["current"] += 0.5  # then it runs half an amp high: off what flow's history predicts
    b = enc.stack([inp for _, inp in stream(broken, card=card)], card)
    off = score_components(b, np.zeros(len(rs)), np.zeros((len(rs), 2)), np.zeros((len(rs), 2)))
    assert off["Lbar"][105:].min() > 5 * max(parts["Lbar"][80:].max(), 1.0)
