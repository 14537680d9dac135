"""Sensor generator, fault injection, normalization fitting, tiny build + fine-tune with unseen sensors."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import orjson
import pytest

from models import sensor_recipe as sr
from streamer.bundle import DEFAULT_BUNDLES, load_bundle
from streamer.synth import sensors as synth
from streamer.validation import check_sensor

T0 = 1_700_000_000_000


# -- generator ---------------------------------------------------------------------------------


def test_generator_is_seeded_time_ordered_and_contract_valid():
    a = list(synth.generate(5000, seed=11, fault_rate=0.05, n_assets=10))
    assert a == list(synth.generate(5000, seed=11, fault_rate=0.05, n_assets=10))
    assert a != list(synth.generate(5000, seed=12, fault_rate=0.05, n_assets=10))
    assert all(x["ts"] <= y["ts"] for x, y in zip(a, a[1:]))
    assert len({e["event_id"] for e in a}) == len(a)
    for e in a:
        check_sensor(dict(e))  # raises on anything the worker would dead-letter
        assert (e["label"] == 1) == (e["fault_type"] is not None)
    assert 0.02 < sum(e["label"] for e in a) / len(a) < 0.12


def test_generator_covers_every_fault_type_and_asset_type():
    evs = list(synth.generate(60_000, seed=2, fault_rate=0.15, n_assets=40))
    types = collections.Counter(e["fault_type"] for e in evs if e["label"])
    assert set(types) == set(synth.FAULT_TYPES)
    kinds = {e["asset_id"].split("-")[0] for e in evs}
    assert kinds == set(synth.ASSET_TYPES)
    assert sum(e["label"] for e in synth.generate(20_000, seed=2, fault_rate=0.0, n_assets=10)) == 0


def test_drift_changes_the_distribution_not_just_the_seed():
    def noise(drift: float) -> float:
        per: dict[str, list[float]] = collections.defaultdict(list)
        for e in synth.generate(20_000, seed=4, fault_rate=0.0, n_assets=20, drift=drift, asset_types=["pump"]):
            if "temp_c" in e["readings"]:
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
    only = list(synth.inject_faults(normal, seed=1, fault_rate=0.2, kinds=["stuck"]))
    assert {e["fault_type"] for e in only if e["label"]} == {"stuck"}


def test_inject_faults_errors_name_the_field():
    bad = [{"event_id": "x", "ts": T0, "asset_id": "a", "readings": {"temp": float("nan")}}]
    with pytest.raises(ValueError, match=r"readings\.temp: must be a finite number"):
        list(synth.inject_faults(bad))
    with pytest.raises(ValueError, match="unknown fault kinds"):
        list(synth.inject_faults([], kinds=["meteor"]))


# -- normalization -----------------------------------------------------------------------------


def test_fit_normalization_and_its_errors():
    evs = [{"event_id": str(i), "asset_id": "a" if i % 2 else "b", "readings": {"x": float(i), "y": 2.0 * i}}
           for i in range(10)]
    norm = sr.fit_normalization(evs, per_asset=True)
    assert norm["sensors"]["x"]["mean"] == pytest.approx(4.5)
    assert norm["sensors"]["y"]["std"] == pytest.approx(2 * math.sqrt(sum((i - 4.5) ** 2 for i in range(10)) / 9))
    assert set(norm["assets"]) == {"a", "b"}
    with pytest.raises(sr.NormalizationError, match="empty input"):
        sr.fit_normalization([])
    with pytest.raises(sr.NormalizationError, match=r"readings\.flat: constant at 3"):
        sr.fit_normalization([{"readings": {"flat": 3.0, "x": float(i)}} for i in range(5)])
    with pytest.raises(sr.NormalizationError, match=r"readings\.x: must be a finite number, got inf"):
        sr.fit_normalization([{"readings": {"x": math.inf}}])
    with pytest.raises(sr.NormalizationError, match=r"readings\.x of asset 'b': only 1 reading"):
        sr.fit_normalization([{"asset_id": "a", "readings": {"x": 1.0}}, {"asset_id": "a", "readings": {"x": 2.0}},
                              {"asset_id": "b", "readings": {"x": 3.0}}], per_asset=True)
    merged = sr.merge_normalization({"sensors": {"x": {"mean": 0, "std": 1}}}, {"sensors": {"z": {"mean": 1, "std": 2}}})
    assert set(merged["sensors"]) == {"x", "z"}


# -- tiny build + fine-tune with unseen sensor names ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    from models.sensor_pipeline import build

    out = tmp_path_factory.mktemp("tiny") / "sensors"
    build(out, preset="tiny", steps_scale=0.01, data_scale=0.02, nab=False, baselines=False, variants=(),
          measure_speed=False, progress=False, log=lambda m: None)
    return out


def _normal_machine_events(n: int = 900) -> list[dict]:
    return [{"event_id": f"m{a}-{i}", "ts": T0 + i * 10_000, "asset_id": f"mill-{a}",
             "readings": {"spindle_hz": 50 + math.sin(i / 9 + a) + 0.05 * ((i * 31) % 7),
                          "coolant_c": 20 + a + 0.2 * math.cos(i / 17) + 0.03 * ((i * 17) % 5)}}
            for i in range(n // 2) for a in range(2)]


def test_fine_tune_with_unseen_sensor_names_gives_a_loadable_bundle(tiny_bundle, tmp_path):
    from models.sensor_pipeline import fine_tune_sensor
    from streamer.score_file import score_lines

    base = load_bundle(tiny_bundle)
    assert "spindle_hz" not in base.card["normalization"]["sensors"]
    train = tmp_path / "normal.jsonl"
    train.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _normal_machine_events()))
    out = tmp_path / "ft"
    card = fine_tune_sensor(tiny_bundle, train, out, steps=3, replay_events=600, variants=(), progress=False,
                            log=lambda m: None)
    b = load_bundle(out)
    stats = b.card["normalization"]["sensors"]
    assert {"spindle_hz", "coolant_c"} <= set(stats) and stats["spindle_hz"]["std"] > 0
    assert stats["coolant_c"]["mean"] == pytest.approx(20.5, abs=0.1)
    assert set(b.card["normalization"]["assets"]) == {"mill-0", "mill-1"}
    assert "temp_c" in stats  # the base fleet's sensors are still accepted
    assert card["training"]["new_sensors"] == ["coolant_c", "spindle_hz"]
    assert b.card["version"].endswith("+ft") and 0 < b.alert_threshold <= 1
    assert (out / "checkpoint" / "config.json").is_file()
    # the worker's path accepts the new names and still refuses names nobody fitted
    lines = [orjson.dumps(e) for e in _normal_machine_events(40)]
    lines.append(orjson.dumps({"event_id": "z", "ts": T0, "asset_id": "mill-0", "readings": {"torque_nm": 1.0}}))
    res = list(score_lines(lines, out))
    assert all("score" in r for r in res[:-1])
    assert "unknown sensor 'torque_nm'" in res[-1]["error"]


def test_fine_tune_refuses_a_constant_sensor_by_name(tiny_bundle, tmp_path):
    from models.sensor_pipeline import fine_tune_sensor

    evs = _normal_machine_events(200)
    for e in evs:
        e["readings"]["setpoint"] = 7.0
    train = tmp_path / "flat.jsonl"
    train.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in evs))
    with pytest.raises(ValueError, match=r"readings\.setpoint.*constant at 7"):
        fine_tune_sensor(tiny_bundle, train, tmp_path / "x", steps=1, progress=False, log=lambda m: None)


def test_shipped_bundle_card_and_reproduction():
    """The default sensor bundle loads, carries window/normalization/NAB, and its test_small metrics reproduce."""
    from models.pipeline import evaluate_bundle

    path = DEFAULT_BUNDLES["sensor"]
    b = load_bundle(path)
    card = b.card
    assert card["kind"] == "sensor" and card["window"]["max_events"] > 0
    assert "value" in card["normalization"]["sensors"]
    nab = card["metrics"]["nab"]["profiles"]
    assert set(nab) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    assert size < 20 * 2**20
    rep = evaluate_bundle(path, split="test_small")
    rec = card["metrics"]["test_small"]["model"]
    assert rep["model"]["auprc"] == pytest.approx(rec["auprc"], abs=1e-6)
    assert rep["model"]["recall"] == pytest.approx(rec["recall"], abs=1e-6)


# -- the novelty teacher and soft targets --------------------------------------------------------


def test_soft_targets_teach_a_graded_ranking_not_just_a_verdict():
    """Rows whose teacher target is 0.1 / 0.5 / 0.9 end up scored in that order, near those values."""
    import numpy as np
    import torch

    from models import classifier as clf
    from models.train import Stage, TrainConfig, train

    pad_id, end_id = 0, 1
    ids = [[2 + k, 5, end_id] for k in range(3)] * 40  # three kinds of rows, told apart by their first token
    targets = [(0.1, 0.5, 0.9)[r[0] - 2] for r in ids]
    labels = [int(t >= 0.5) for t in targets]

    def pad(rows):
        n = max(map(len, rows))
        a = np.full((len(rows), n), pad_id, dtype=np.int64)
        m = np.zeros((len(rows), n), dtype=np.int64)
        for i, r in enumerate(rows):
            a[i, : len(r)] = r
            m[i, : len(r)] = 1
        return a, m

    model = clf.build(clf.make_config("tiny", 8, pad_id, 8), seed=0)
    stage = Stage("soft", ids, labels, steps=150, lr=1e-2, warmup=5, pos_fraction=0.5, targets=targets)
    train(model, [stage], pad, TrainConfig(batch_size=24, progress=False), log=lambda m: None)
    with torch.no_grad():
        a, m = pad([[2, 5, end_id], [3, 5, end_id], [4, 5, end_id]])
        p = torch.softmax(model(input_ids=torch.from_numpy(a), attention_mask=torch.from_numpy(m)).logits, -1)[:, 1]
    assert p[0] < p[1] < p[2]
    assert p.numpy() == pytest.approx([0.1, 0.5, 0.9], abs=0.12)
    with pytest.raises(ValueError, match="differ in length"):
        train(model, [Stage("bad", ids, labels, steps=1, lr=1e-3, targets=targets[:-1])], pad,
              TrainConfig(batch_size=8, progress=False), log=lambda m: None)


def test_teacher_targets_follow_the_encodings_novelty():
    from models.sensor_pipeline import prepare
    from streamer.encoding import sensors as enc

    data = {"synth": {"n_events": 3000, "seed": 7, "fault_rate": 0.05, "n_assets": 3}}
    card = {"name": "t", "version": "0", "window": dict(enc.WINDOW), "normalization": sr.fit_normalization(sr.events(data))}
    hard = prepare([data], card)
    soft = prepare([{**data, "teacher": True}], card)
    j = enc.FEATURE_NAMES.index("novelty")
    assert hard.targets == [float(y) for y in hard.labels]
    assert len(soft.targets) == 3000 and soft.vectors == hard.vectors
    for t, y, y0, v in zip(soft.targets, soft.labels, hard.labels, soft.vectors):
        assert t == pytest.approx(max(float(y0), sr.teacher(v[j])))
        assert y == int(t >= 0.5)
    assert sum(soft.labels) > sum(hard.labels)  # natural novel readings become positives
    assert any(0.05 < t < 0.95 for t in soft.targets)  # graded, not 0/1
    only = prepare([{**data, "labels": "teacher"}], card)  # the injection label is ignored
    assert only.targets == [sr.teacher(v[j]) for v in only.vectors]
    assert any(y0 == 1 and t < 0.5 for y0, t in zip(hard.labels, only.targets))


def test_shipped_bundle_nab_result_reproduces_on_held_out_series():
    """Re-score four NAB series through the worker path: their per-series results match the card's."""
    from models import nab
    from models.sensor_pipeline import nab_scores

    card = load_bundle(DEFAULT_BUNDLES["sensor"]).card
    rec = card["metrics"]["nab"]
    assert rec["profiles"]["standard"]["score"] >= 60  # the bar, as recorded by the build
    per = rec["standard_per_series"]
    assert len(per) == 58 and sum(r["raw"] for r in per.values()) == pytest.approx(rec["profiles"]["standard"]["raw"], abs=1e-3)
    names = ["realTraffic/speed_7578", "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn",
             "realAdExchange/exchange-3_cpc_results", "realAdExchange/exchange-2_cpm_results"]
    corpus = nab.load_corpus(names=names)
    scores = nab_scores(DEFAULT_BUNDLES["sensor"], corpus, workers=1, log=lambda m: None)
    got = nab.series_breakdown(corpus, scores, "standard", rec["profiles"]["standard"]["threshold"])
    for n in names:
        assert got[n] == pytest.approx(per[n], abs=1e-5), n


def test_sensor_build_fine_tunes_a_local_base_checkpoint_with_lora(tmp_path):
    """``--base DIR``: a tiny random DeepSeek causal LM saved to disk is LoRA-tuned, merged and exported."""
    import torch
    from transformers import DeepseekV3ForCausalLM

    from models import classifier as clf
    from models.sensor_pipeline import build

    cfg = clf.make_config("tiny", 600, 0, 32)  # vocabulary larger than the bundle's: embeddings are resized
    torch.manual_seed(0)
    DeepseekV3ForCausalLM(cfg).save_pretrained(tmp_path / "base")
    out = tmp_path / "sensors"
    card = build(out, base=tmp_path / "base", lora={"rank": 4, "alpha": 8}, steps_scale=0.005, data_scale=0.02,
                 nab=False, baselines=False, variants=(), measure_speed=False, progress=False, log=lambda m: None)
    assert card["architecture"]["init"] == {"base": str(tmp_path / "base"), "lora": {"rank": 4, "alpha": 8}}
    b = load_bundle(out)
    assert b.card["version"] == "2.0.0" and 0 < b.alert_threshold <= 1
    assert b.card["tokenizer"]["vocab_size"] == len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"])
    assert card["variant_checks"]["fp32"]["vs_torch"]["max_abs_logit_diff"] < 1e-4  # merged adapters export exactly
