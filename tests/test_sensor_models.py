"""Sensor data, type fitting, training, fine-tuning from normal running, the shipped bundle and the benchmarks."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from models import sensor_fit as fit
from streamer.bundle import DEFAULT_BUNDLES, load_bundle
from streamer.synth import sensors as synth
from streamer.validation import check_sensor

T0 = 1_700_000_000_000
SHIPPED = DEFAULT_BUNDLES["sensor"]


# -- generator ---------------------------------------------------------------------------------


def test_generator_is_seeded_time_ordered_and_contract_valid():
    a = list(synth.generate(5000, seed=11, fault_rate=0.05, n_assets=10))
    assert a == list(synth.generate(5000, seed=11, fault_rate=0.05, n_assets=10))
    assert a != list(synth.generate(5000, seed=12, fault_rate=0.05, n_assets=10))
    assert all(x["ts"] <= y["ts"] for x, y in zip(a, a[1:]))
    assert len({e["event_id"] for e in a}) == len(a)
    sets: dict[str, frozenset] = {}
    for e in a:
        check_sensor(dict(e))  # raises on anything the worker would dead-letter
        assert (e["label"] == 1) == (e["fault_type"] is not None)
        assert sets.setdefault(e["asset_id"], frozenset(e["readings"])) == frozenset(e["readings"])
    assert 0.02 < sum(e["label"] for e in a) / len(a) < 0.12


def test_generator_covers_every_fault_type_and_asset_type():
    evs = list(synth.generate(60_000, seed=2, fault_rate=0.15, n_assets=40))
    types = collections.Counter(e["fault_type"] for e in evs if e["label"])
    assert set(types) == set(synth.FAULT_TYPES)
    assert {e["asset_id"].split("-")[0] for e in evs} == set(synth.ASSET_TYPES)
    assert sum(e["label"] for e in synth.generate(20_000, seed=2, fault_rate=0.0, n_assets=10)) == 0


def test_drift_changes_the_distribution_not_just_the_seed():
    def noise(drift: float) -> float:
        per: dict[str, list[float]] = collections.defaultdict(list)
        for e in synth.generate(20_000, seed=4, fault_rate=0.0, n_assets=20, drift=drift, asset_types=["pump"]):
            per[e["asset_id"]].append(e["readings"]["temp_c"])
        d = [abs(b - a) for v in per.values() for a, b in zip(v, v[1:])]
        return sum(d) / len(d)

    assert noise(1.0) > 1.1 * noise(0.0)


def test_inject_faults_labels_only_injected_readings_and_keeps_the_rest():
    normal = [{"event_id": f"e{i}", "ts": T0 + i * 1000, "asset_id": "m1",
               "readings": {"spindle_hz": 50 + math.sin(i / 7), "coolant_c": 20 + 0.1 * (i % 5)}} for i in range(3000)]
    out = list(synth.inject_faults(normal, seed=1, fault_rate=0.1))
    assert out == list(synth.inject_faults(normal, seed=1, fault_rate=0.1))
    assert 0.04 < sum(e["label"] for e in out) / len(out) < 0.2
    for a, b in zip(normal, out):
        assert a["event_id"] == b["event_id"] and a["ts"] == b["ts"]
        if not b["label"]:
            assert b["readings"] == a["readings"]
    assert all(e["label"] == 0 for e in out[: synth.MIN_HISTORY])
    only = list(synth.inject_faults(normal, seed=1, fault_rate=0.2, kinds=["decoupled"]))
    assert {e["fault_type"] for e in only if e["label"]} == {"decoupled"}


def test_inject_faults_errors_name_the_field():
    bad = [{"event_id": "x", "ts": T0, "asset_id": "a", "readings": {"temp": float("nan")}}]
    with pytest.raises(ValueError, match=r"readings\.temp: must be a finite number"):
        list(synth.inject_faults(bad))
    with pytest.raises(ValueError, match="unknown fault kinds"):
        list(synth.inject_faults([], kinds=["meteor"]))


# -- fitting an asset type from normal running -----------------------------------------------------


def mill(n_per_asset: int = 500, assets: int = 2, seed: int = 0, names: tuple[str, ...] = ("spindle_hz", "coolant_c", "motor_a")) -> list[dict]:
    """A new asset type (names the base never saw): motor current follows spindle speed, coolant lags it."""
    rng = np.random.default_rng(seed)
    out = []
    for a in range(assets):
        speed, cool = 0.0, 0.0
        for i in range(n_per_asset):
            speed = 0.95 * speed + 0.3 * rng.normal()
            cool = 0.9 * cool + 0.1 * speed + 0.05 * rng.normal()
            r = {names[0]: 50 + 2 * speed + 0.1 * rng.normal(), names[1]: 20 + a + cool + 0.05 * rng.normal(),
                 names[2]: 8 + 0.5 * speed + 0.05 * rng.normal()}
            out.append({"event_id": f"mill-{a}-{i}", "ts": T0 + i * 10_000 + a, "asset_id": f"mill-{a}",
                        "readings": {k: round(v, 4) for k, v in r.items()}})
    return sorted(out, key=lambda e: e["ts"])


def test_fit_types_finds_the_type_its_relations_and_its_errors():
    types = fit.fit_types(mill())
    t = types["mill"]
    assert t["sensors"] == ["coolant_c", "motor_a", "spindle_hz"] and t["assets"] == 2
    assert t["relation_strength"] > 0.9 and not t["own_scale"]
    assert np.allclose(np.asarray(t["precision"]), np.asarray(t["precision"]).T)
    with pytest.raises(fit.FitError, match="need at least 64"):
        fit.fit_types(mill(20, 1))
    flat = [{**e, "readings": {**e["readings"], "motor_a": 8.0}} for e in mill()]
    with pytest.raises(fit.FitError, match="sensor 'motor_a' is constant"):
        fit.fit_types(flat)
    changing = mill()
    changing[300] = {**changing[300], "readings": {"spindle_hz": 1.0, "coolant_c": 2.0}}
    with pytest.raises(fit.FitError, match=r"row 301 .*reported sensors .*missing \['motor_a'\]"):
        fit.fit_types(changing)
    inf = mill()
    inf[7] = {**inf[7], "readings": {**inf[7]["readings"], "coolant_c": math.inf}}
    with pytest.raises(fit.FitError, match=r"row 8 .*readings\.coolant_c: must be a finite number"):
        fit.fit_types(inf)


def test_held_out_rows_keep_their_place_in_the_stream_the_lag_model_is_fitted_on():
    from models.sensor_pipeline import HELD, split_by_asset

    whole, train, held = split_by_asset(mill(1200, 3), 0.2, warmup=128)
    assert len(whole) == len(train) + len(held) and held and all(HELD in e for e in held)
    gapped = fit.fit_types(train)["mill"]
    unbroken = fit.fit_types(whole, held_key=HELD)["mill"]
    assert unbroken["readings"] == gapped["readings"] == len(train)  # the held-out rows fit nothing
    assert unbroken["mean"] == gapped["mean"]
    coolant = unbroken["sensors"].index("coolant_c")
    # a history mean that spans a held-out gap reads as a jump: cut out, the rows blur the lag
    assert unbroken["lag"]["sigma"][coolant] < 0.85 * gapped["lag"]["sigma"][coolant], (unbroken["lag"], gapped["lag"])
    bad = [dict(e) for e in whole]
    k = next(i for i, e in enumerate(bad) if HELD in e)
    bad[k]["readings"] = {**bad[k]["readings"], "motor_a": math.nan}
    with pytest.raises(fit.FitError, match=rf"row {k + 1} .*readings\.motor_a"):  # held-out rows are checked too
        fit.fit_types(bad, held_key=HELD)


def _rows(n: int, assets: int, labels: np.ndarray | None = None):
    from types import SimpleNamespace

    from models import sensor_data as sd

    data = sd.Encoded()
    data.inputs = [SimpleNamespace(type_index=0)] * n
    data.labels = [int(x) for x in (labels if labels is not None else np.zeros(n))]
    data.assets = [f"mill-{i * assets // n}" for i in range(n)]
    return data


def test_the_lag_aware_spread_widens_where_units_of_a_type_differ_in_gain():
    """Units of one type follow the same load with different gains: far from the operating point an
    asset's normal was learned at, the type's relation misses by more, and the fit says by how much."""
    from streamer.encoding import relations

    rng = np.random.default_rng(4)
    evs = []
    for a, gain in enumerate((0.6, 0.8, 1.0, 1.2, 1.4)):
        load = 0.0
        for i in range(1500):
            load = 0.995 * load + 0.1 * rng.normal()  # wanders over +-1 or so
            r = {"load_kw": 100 + 10 * load + 0.5 * rng.normal(), "temp_c": 40 + 5 * gain * load + 0.5 * rng.normal()}
            evs.append({"event_id": f"u{a}-{i}", "ts": T0 + i * 10_000 + a, "asset_id": f"unit-{a}",
                        "readings": {k: round(v, 4) for k, v in r.items()}})
    lag = fit.fit_types(sorted(evs, key=lambda e: e["ts"]))["unit"]["lag"]
    k = 1  # temp_c (sensors in name order)
    assert lag["kappa"][k] > 0.05 and lag["sigma0"][k] < lag["sigma"][k]
    coef = np.asarray(lag["coef"])
    bias, sigma0, kappa = (np.asarray(lag[key]) for key in ("bias", "sigma0", "kappa"))
    hist = np.zeros((1, coef.shape[1] - 2))
    # the temperature 1 σ above what the load predicts: at the asset's own operating point, and with the load 4 σ out
    for level, widened in ((0.0, False), (4.0, True)):
        z = np.array([[level, 0.0]])
        p = float((np.concatenate([z, hist + level], -1) @ coef.T + bias)[0, k])
        z[0, k] = p + float(sigma0[k])
        r = relations.lagged(z, hist + level, coef, bias, sigma0, kappa)[0, k]
        assert (r < 0.8) if widened else (r == pytest.approx(1.0, abs=0.05)), (level, r, p, lag["kappa"])


def _constructed_parts(seed: int, n: int = 2000, m: int = 2000) -> tuple:
    """(card of the mill type, rng, labels, normal parts, injected parts): every part noise until a test shapes it."""
    from streamer.sensor_scorer import PARTS

    card = {"name": "t", "version": "0", "sensor_model": {"window": 16, "warmup": 128, "types": fit.fit_types(mill())}}
    card["sensor_model"]["types"]["mill"]["cadence_ms"] = 10_000.0
    rng = np.random.default_rng(seed)
    y = (rng.random(m) < 0.1).astype(int)
    normal = {k: rng.exponential(size=n) for k in PARTS}
    injected = {k: rng.exponential(size=m) for k in PARTS}
    return card, rng, y, normal, injected


@pytest.mark.parametrize("episode", [False, True])
def test_a_part_that_alarms_on_the_held_out_halves_is_set_aside(episode):
    """The strongest part on the injected faults, Rbar, is chosen unless one held-out stretch of normal
    running pushes it over the budget when judged with a calibration fitted on the other half."""
    from models.sensor_calibrate import calibrate

    card, rng, y, normal, injected = _constructed_parts(3)
    n, m = len(normal["D"]), len(y)
    injected["Rbar"] = injected["Rbar"] + 10.0 * y
    injected["R"] = injected["Rbar"].copy()
    injected["R"][np.flatnonzero(y)[:2]] = 0.0  # R misses two faulty rows: a little below Rbar
    normal["S"], injected["S"] = np.zeros(n), np.zeros(m)  # no sensor repeats a reading
    halves = (np.arange(n) >= n // 2).astype(int)
    if episode:
        normal["Rbar"][1500:1506] = 40.0  # one stretch of the second half, far beyond the first half's tail
    report = calibrate(card, normal, _rows(n, 4), injected, _rows(m, 4, y), {"mill": 1e-4}, halves, log=lambda m: None)
    table = report["auprc_on_injected_by_parts"]
    assert table["Rbar"] > table["R"] > table["Rbar"] - 0.01  # near-equals: the fewest parts, the best AUPRC
    if not episode:  # S, for stuck sensors, joins the choice: here it costs nothing
        assert report["combine"] == ["Rbar", "S"] and not report["set_aside_for_new_asset_alarms"]
    else:
        assert report["combine"] == ["R", "S"], report["set_aside_for_new_asset_alarms"]
        assert "mill (held-out halves)" in report["set_aside_for_new_asset_alarms"]["Rbar"]
    check = report["false_alarms"]["mill"]["heldout_check"]  # the chosen combination's
    assert not check["suspect"] and check["readings"] == n


@pytest.mark.parametrize("case", ["helps", "costs", "alarms"])
def test_the_stuck_sensor_part_joins_the_choice_unless_it_costs_or_alarms(case):
    """S sees a sensor frozen inside its range, which nothing else sees; as one fault kind among many it
    hardly moves the AUPRC of the mix, so it joins the automatic choice unless that costs AUPRC or
    alarms on normal running."""
    from models.sensor_calibrate import calibrate

    card, rng, y, normal, injected = _constructed_parts(5)
    n, m = len(normal["D"]), len(y)
    faulty = np.flatnonzero(y)
    injected["Rbar"] = injected["Rbar"] + 10.0 * y
    injected["Rbar"][faulty[:1]] = 0.0  # a stuck-sensor row: Rbar misses it
    normal["S"], injected["S"] = np.zeros(n), np.zeros(m)
    injected["S"][faulty[:1]] = 12.0  # a run of repeats of a sensor that never repeats
    if case == "costs":  # an S that fires on a fifth of the normal readings drowns Rbar
        normal["S"] = np.where(rng.random(n) < 0.2, 12.0, 0.0)
        injected["S"] = np.where(rng.random(m) < 0.2, 12.0, injected["S"])
    if case == "alarms":  # one long run in the second half of the held-out readings
        normal["S"][1500:1506] = 40.0
    halves = (np.arange(n) >= n // 2).astype(int)
    report = calibrate(card, normal, _rows(n, 4), injected, _rows(m, 4, y), {"mill": 1e-4}, halves, log=lambda m: None)
    table, stuck = report["auprc_on_injected_by_parts"], report["stuck_part"]
    assert table["Rbar+S"] < table["Rbar"] + 0.01 or case == "alarms"  # S alone would not earn its place
    assert stuck["tried"] == "Rbar+S"
    if case == "helps":
        assert report["combine"] == ["Rbar", "S"] and stuck["added"] and table["Rbar+S"] > table["Rbar"]
    else:
        assert report["combine"] == ["Rbar"] and not stuck["added"]
        assert ("AUPRC" if case == "costs" else "held-out halves") in stuck["why_not"]


def test_assets_of_very_different_spreads_are_scaled_by_their_own():
    rng = np.random.default_rng(1)
    evs = [{"event_id": f"{a}-{i}", "ts": T0 + i, "asset_id": f"m{a}", "readings": {"v": float(10**a * rng.normal())}}
           for a in range(4) for i in range(200)]
    assert fit.fit_types(evs)["v"]["own_scale"]


# -- training, resume, determinism --------------------------------------------------------------


def _pools(card_types: dict, evs: list[dict]):
    from models import sensor_data as sd
    from models import sensor_train as st
    from models.sensor_pipeline import make_card

    card = make_card("t", "0", card_types, fit.assign_slots(card_types, None, 16), 8, 64)
    normal = sd.encode(evs, card)
    injected = sd.encode(list(synth.inject_faults(evs, seed=3, fault_rate=0.1)), card)
    return st.pools(normal, injected, card, min_base=16)


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    import torch

    from models import sensor_model as sm
    from models import sensor_train as st

    evs = mill(300)
    pools = _pools(fit.fit_types(evs, warmup=64, window=8), evs)
    cfg = st.SensorTrainConfig(steps=12, batch_size=16, checkpoint_every=6, select_every=6, progress=False, warmup=2)

    def run(resume=None, stop_at=None):
        model = sm.build("tiny", 8, 16, seed=0)

        def log(msg):
            if stop_at and msg.startswith(f"step {stop_at}/"):
                raise KeyboardInterrupt

        try:
            st.train(model, pools, cfg, checkpoint_dir=tmp_path / "ck", resume=resume, log=log)
        except KeyboardInterrupt:
            return None
        return {k: v.clone() for k, v in model.state_dict().items()}

    a = run()
    b = run()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert run(stop_at=6) is None  # interrupted after the step-6 checkpoint
    c = run(resume=tmp_path / "ck")
    assert all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="other data or settings"):
        st.train(sm.build("tiny", 8, 16), pools, st.SensorTrainConfig(steps=20, progress=False), resume=tmp_path / "ck",
                 log=lambda m: None)


# -- a tiny base bundle, fine-tuned on a new asset type -------------------------------------------


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from models.sensor_pipeline import build

    out = tmp_path_factory.mktemp("tiny") / "sensors"
    build(out, preset="tiny", steps_scale=0.02, data_scale=0.04, nab=False, baselines=False, variants=(),
          measure_speed=False, progress=False, warmup=24, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def fine_tuned(tiny_base, tmp_path_factory) -> tuple[Path, Path]:
    from models.sensor_pipeline import fine_tune_sensor

    tmp = tmp_path_factory.mktemp("ft")
    train = tmp / "normal.jsonl"
    train.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in mill(1200, 3)))
    out = tmp / "mill-bundle"
    # the product's warm-up (the tiny base's 24 readings leave a slow sensor's own level too uncertain
    # for a window part: docs/model-card.md, Limits)
    fine_tune_sensor(tiny_base, train, out, steps=40, threads=1, progress=False, variants=(), warmup_readings=128,
                     log=lambda m: None)
    return out, train


def test_fine_tune_learns_a_new_asset_type_from_normal_running(fine_tuned):
    out, _ = fine_tuned
    b = load_bundle(out)
    card = b.card
    assert set(card["sensor_model"]["types"]) == {"mill"}
    assert {"spindle_hz", "coolant_c", "motor_a"} <= set(card["training"]["new_sensors"])
    v = card["metrics"]["validation"]
    fa = v["false_alarms"]["mill"]
    assert fa["heldout_readings"] > 500 and 0.0 <= fa["heldout_false_alarm_rate"] < 0.02
    chosen = v["types"]["mill"]
    # the coolant lags the spindle: the static window parts would read every change of load as a broken
    # relation; the lag-aware model predicts the coolant from the spindle's recent history far better
    assert not {"Rbar", "Dbar"} & set(chosen["combine"]) and chosen["auprc_on_injected_by_parts"]
    lag = card["sensor_model"]["types"]["mill"]["lag"]
    coolant = card["sensor_model"]["types"]["mill"]["sensors"].index("coolant_c")
    assert lag["sigma"][coolant] < 0.6 * lag["static_sigma"][coolant], lag
    assert not fa["new_asset_check"]["suspect"] and fa["new_asset_check"]["assets"] == 3
    assert card["sensor_model"]["types"]["mill"]["combine"] == chosen["combine"]
    held = card["metrics"]["held_out_injected"]
    assert {"model", "pca_t2q", "pca_t2q_per_asset", "iforest"} <= set(held)
    assert held["model"]["auprc"] > 0.3
    assert card["thresholds"]["alert"] == pytest.approx(0.3) and card["sensor_model"]["types"]["mill"]["alert_p"] > 0


def test_fine_tuned_bundle_scores_a_relation_fault_and_says_which_sensor(fine_tuned):
    from streamer.intake import Intake, Item
    from streamer.scorer import make_scorer

    out, _ = fine_tuned
    b = load_bundle(out)
    scorer, intake = make_scorer(b, "cpu", "fp32", 1), Intake(b)
    evs = mill(400, 1, seed=9)
    for e in evs[300:340]:  # motor current 2 A high for the same speed: every reading within its range
        e["readings"]["motor_a"] = round(e["readings"]["motor_a"] + 1.0, 4)
    items = [intake.accept("t", 0, i, orjson.dumps({**e, "asset_id": "mill-new"})) for i, e in enumerate(evs)]
    assert all(isinstance(it, Item) for it in items)
    res = scorer.score_batch([it.inputs for it in items])
    scores = res.scores
    assert scores[300:340].mean() > 3 * scores[200:300].mean()
    alerted = [i for i in range(300, 340) if res.details[i] is not None]
    assert alerted, "the relation fault raised no alert"
    reasons = b.encoding.reasons(items[alerted[0]].feats, res.details[alerted[0]])
    assert reasons[0].startswith("motor_a") and "predict" in reasons[0], reasons
    assert np.mean(scores[:128] >= b.alert_threshold) < 0.02  # no alert storm while the new asset warms up


def test_a_lasting_small_offset_is_caught_and_a_lagging_sensor_raises_no_false_alarms(tiny_base, fine_tuned, tmp_path):
    """The automatic choice (a lag-aware window part on the mill) against ``--parts R,Rbar`` (the static one).

    Both see a lasting offset a few noise σ off the relation, reading after reading; on fresh
    normal running the static window part alarms where the coolant lags a change of speed.
    """
    from models.sensor_pipeline import fine_tune_sensor
    from streamer.intake import Intake
    from streamer.scorer import make_scorer

    from models.cli import main as model_cli

    _, train = fine_tuned
    with pytest.raises(ValueError, match="unknown part 'rbar'"):  # refused before the long run
        fine_tune_sensor(tiny_base, train, tmp_path / "bad", parts="R,rbar", log=lambda m: None)
    assert model_cli(["fine-tune", "--bundle", str(tiny_base), "--train", str(train), "--out", str(tmp_path / "bad"),
                      "--parts", "R,Q"]) == 2 and not (tmp_path / "bad").exists()
    token_bundle = str(DEFAULT_BUNDLES["transaction"])
    assert model_cli(["fine-tune", "--bundle", token_bundle, "--train", str(train), "--out", str(tmp_path / "bad"),
                      "--parts", "R"]) == 2
    out = tmp_path / "mill-rbar"
    fine_tune_sensor(tiny_base, train, out, steps=40, threads=1, progress=False, variants=(), parts="R,Rbar",
                     measure_speed=False, baselines=False, warmup_readings=128, log=lambda m: None)
    b = load_bundle(out)
    v = b.card["metrics"]["validation"]
    assert b.card["sensor_model"]["types"]["mill"]["combine"] == ["R", "Rbar"] == v["combine"]
    assert v["chosen_by"] == "operator (--parts)" and v["automatic"] and v["auprc_on_injected_by_parts"]["R+Rbar"]
    assert b.card["training"]["parts"] == ["R", "Rbar"]
    # enough readings per sensor: the tails are fitted on the training readings too (the held-out ones are too few)
    assert v["false_alarms"]["mill"]["calibrated_on"].startswith("training and held-out readings")
    auto = load_bundle(fine_tuned[0])

    def alerts(bundle, events, asset=None):
        scorer, intake = make_scorer(bundle, "cpu", "fp32", 1), Intake(bundle)
        items = [intake.accept("t", 0, i, orjson.dumps({**e, "asset_id": asset or e["asset_id"]}))
                 for i, e in enumerate(events)]
        return scorer.score_batch([it.inputs for it in items]).scores >= bundle.alert_threshold

    evs = mill(600, 1, seed=11)
    for e in evs[300:500]:  # motor current 0.2 A high for the same speed: ~3.5 σ of what speed predicts
        e["readings"]["motor_a"] = round(e["readings"]["motor_a"] + 0.2, 4)
    for bundle in (b, auto):
        caught = alerts(bundle, evs, "mill-offset")[316:500].mean()
        assert caught > 0.8, (bundle.card["sensor_model"]["types"]["mill"]["combine"], caught)
    fresh = mill(2872, 3, seed=21)  # 8,616 normal readings of three new mills: the budget allows about one alert
    static, lagged = int(alerts(b, fresh).sum()), int(alerts(auto, fresh).sum())
    assert lagged <= 12 and static > 2 * max(lagged, 5), (static, lagged)


def test_fine_tune_refuses_bad_normal_data_naming_the_row(tiny_base, tmp_path):
    from models.dataset import DataError
    from models.sensor_pipeline import fine_tune_sensor

    def attempt(events_or_text) -> str:
        p = tmp_path / "bad.jsonl"
        if isinstance(events_or_text, str):
            p.write_text(events_or_text)
        else:
            p.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events_or_text))
        with pytest.raises(DataError) as exc:
            fine_tune_sensor(tiny_base, p, tmp_path / "out", steps=2, threads=1, progress=False, variants=(), log=lambda m: None)
        return str(exc.value)

    assert "need at least 64" in attempt(mill(20, 1))
    assert "constant" in attempt([{**e, "readings": {**e["readings"], "motor_a": 8.0}} for e in mill(200, 1)])
    lines = [json.dumps(e) for e in mill(100, 1)]
    lines[2] = lines[2].replace('"motor_a": ', '"motor_a": NaN, "was": ', 1)  # what json.dumps writes for nan
    assert "line 3" in attempt("\n".join(lines)) and "not valid JSON" in attempt("\n".join(lines))
    labelled = [{**e, "label": 1} for e in mill(100, 1)]
    assert "normal running only" in attempt(labelled)


def test_score_file_with_the_fine_tuned_bundle_equals_the_scorer(fine_tuned, tmp_path):
    from streamer.score_file import score_file

    out, train = fine_tuned
    evs = mill(200, 1, seed=5)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in evs) + b'{"event_id": "bad", "ts": 1}\n')
    counts = score_file(src, tmp_path / "out.jsonl", out)
    rows = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert counts["scored"] == 200 and counts["errors"] == 1 and "error" in rows[-1]
    assert counts["entities"] == 1 and counts["entity_days"] == pytest.approx(199 * 10_000 / 86_400_000)  # alerts/asset-day
    assert all(0.0 <= r["score"] <= 1.0 for r in rows[:-1])


# -- the shipped bundle -----------------------------------------------------------------------------


def test_shipped_bundle_card_and_reproduction():
    b = load_bundle(SHIPPED)
    card = b.card
    assert card["encoding_version"] == "sensor-v9" and card["architecture"]["class"].startswith("SensorNet")
    assert card["architecture"]["backbone_config"]["model_type"] == "deepseek_v3"
    for name, t in card["sensor_model"]["types"].items():
        assert t["calibration"] and t["alert_p"] > 0, name
        assert len(t["limits"]["lo"]) == len(t["limits"]["hi"]) == len(t["sensors"]), name
        if len(t["sensors"]) > 1:  # the lag-aware σ widens away from the operating point on every shipped type
            assert len(t["lag"]["kappa"]) == len(t["sensors"]) and max(t["lag"]["kappa"]) > 0, name
    from models.sensor_evaluate import evaluate_bundle

    got = evaluate_bundle(SHIPPED, split="test_small")["model"]
    want = card["metrics"]["test_small"]["model"]
    for k in ("auprc", "roc_auc", "f1", "fpr", "recall"):
        assert got[k] == pytest.approx(want[k], abs=1e-6), k


def test_shipped_bundle_nab_records_reproduce_through_the_worker_path():
    from models import nab
    from models.sensor_nab import nab_scores

    card = load_bundle(SHIPPED).card
    rec = card["metrics"]["nab"]
    names = sorted(rec["standard_per_series"])[:: max(1, len(rec["standard_per_series"]) // 3)][:3]
    corpus = nab.load_corpus(names=names)
    scores = nab_scores(SHIPPED, corpus, workers=1, log=lambda m: None)
    got = nab.series_breakdown(corpus, scores, "standard", rec["profiles"]["standard"]["threshold"])
    for n in names:
        assert got[n] == rec["standard_per_series"][n], n


def test_tennessee_eastman_beats_pca_t2_at_the_same_false_alarm_rate(tmp_path):
    """The TEP bar, through the documented command's code: fine-tune the shipped bundle on d00, stream every run."""
    from models import tep

    if not (tep.DATA / "d00.dat").is_file():
        pytest.fail(f"the Tennessee Eastman data is missing at {tep.DATA}")
    from models.sensor_pipeline import fine_tune_sensor

    normal = tep.write_normal(tmp_path / "d00.jsonl")
    out = tmp_path / "tep"
    fine_tune_sensor(SHIPPED, normal, out, steps=60, threads=1, progress=False, variants=(), measure_speed=False,
                     baselines=False, log=lambda m: None)
    report = tep.evaluate(out)
    assert report["far_d00_te"] <= 0.05
    mean = report["mean_detection_rate_without_3_9_15"]
    assert mean["model"] > mean["pca_t2"] + 0.05, mean
    assert len(report["detection_rate"]["model"]) == 21
