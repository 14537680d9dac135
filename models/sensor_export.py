"""ONNX export of the sensor model, parity with torch on the worker's own batches, precision variants.

The graph takes ``streamer.encoding.sensors.stack`` arrays (``values``,
``sensor_ids``, ``sensor_mask``, ``step_mask``) with dynamic batch and sensor
axes and returns the newest step's classifier logit and forecast. Parity is
checked on batches as the worker forms them: several asset types mixed in one
batch (narrow types padded to the widest), cold-start windows with padded steps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch

from models.export import ParityError, quiet_export, session, to_fp16, to_int8
from models.sensor_model import INPUT_NAMES, OUTPUT_NAMES, ExportWrapper, SensorNet
from streamer.encoding import sensors as enc

FP32_TOLERANCE = 1e-4


def export_onnx(model: SensorNet, path: str | Path, example: Mapping[str, np.ndarray]) -> Path:
    path = Path(path)
    wrap = ExportWrapper(model.eval()).eval()
    args = tuple(torch.from_numpy(example[k]) for k in INPUT_NAMES)
    batch = torch.export.Dim("batch", min=1, max=4096)
    sensors = torch.export.Dim("sensors", min=1, max=256)
    shapes = {"values": {0: batch, 2: sensors}, "sensor_ids": {0: batch, 1: sensors},
              "sensor_mask": {0: batch, 1: sensors}, "step_mask": {0: batch}, "step_stats": {0: batch}}
    with quiet_export():
        program = torch.onnx.export(wrap, args, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, dynamo=True,
                                    dynamic_shapes=shapes, external_data=False, verbose=False)
    program.save(str(path))
    onnx.checker.check_model(str(path))
    return path


def parity_batches(inputs: Sequence[Any], card: Mapping[str, Any], sizes: Sequence[int] = (1, 7, 64)) -> list[dict[str, np.ndarray]]:
    """Worker-shaped batches: rows of every type interleaved (mixed widths), early (padded) windows included."""
    by_type: dict[int, list[Any]] = {}
    for inp in inputs:
        by_type.setdefault(inp[0], []).append(inp)
    lanes = [v for _, v in sorted(by_type.items())]
    pool = [lanes[i % len(lanes)][(i // len(lanes)) % len(lanes[i % len(lanes)])] for i in range(max(sizes) * len(lanes))]
    short = sorted(inputs, key=lambda x: x[3])[: max(sizes)]
    out = []
    for j, b in enumerate(sizes):
        out.append(enc.stack(pool[j * 3 : j * 3 + b], card))
        out.append(enc.stack(short[:b], card))
    return out


def _torch(model: SensorNet, a: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    wrap = ExportWrapper(model.eval()).eval()
    with torch.no_grad():
        return [t.numpy() for t in wrap(*(torch.from_numpy(a[k]) for k in INPUT_NAMES))]


def _onnx(sess: Any, a: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return sess.run(OUTPUT_NAMES, {k: a[k] for k in INPUT_NAMES})


def _diff(x: Sequence[np.ndarray], y: Sequence[np.ndarray], smask: np.ndarray) -> float:
    worst = float(np.abs(x[0] - y[0]).max())
    for a, b in zip(x[1:], y[1:]):
        worst = max(worst, float((np.abs(a - b) * smask).max()))
    return worst


def check_parity(model: SensorNet, path: str | Path, batches: Sequence[Mapping[str, np.ndarray]],
                 tolerance: float | None = FP32_TOLERANCE) -> dict[str, Any]:
    """Max abs difference of every output vs torch on real (unpadded) sensors; raises above ``tolerance``."""
    sess = session(path)
    worst = 0.0
    for a in batches:
        worst = max(worst, _diff(_torch(model, a), _onnx(sess, a), a["sensor_mask"]))
    report = {"max_abs_diff": worst, "batches": [list(a["values"].shape) for a in batches]}
    if tolerance is not None and not worst <= tolerance:
        raise ParityError(f"{path}: max abs output diff {worst:.3g} exceeds {tolerance:g} vs torch")
    return report


def compare(ref: str | Path, other: str | Path, batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
    a_s, b_s = session(ref), session(other)
    worst = 0.0
    for a in batches:
        worst = max(worst, _diff(_onnx(a_s, a), _onnx(b_s, a), a["sensor_mask"]))
    return {"max_abs_diff_vs_fp32": worst}


def export_all(model: SensorNet, out: Path, inputs: Sequence[Any], card: Mapping[str, Any],
               variants: Sequence[str] = ("fp16", "int8"), log: Any = print) -> tuple[dict[str, Path], dict[str, Any]]:
    """model.onnx (+ variants) in ``out`` with their parity reports."""
    batches = parity_batches(inputs, card)
    t0 = time.perf_counter()
    # the example must have several sensors and rows: torch.export fixes an axis whose example size is 1
    example = max(batches, key=lambda a: (a["values"].shape[2], a["values"].shape[0]))
    fp32 = export_onnx(model, out / "model.onnx", example)
    checks: dict[str, Any] = {"fp32": {**check_parity(model, fp32, batches), "export_s": round(time.perf_counter() - t0, 1)}}
    graphs = {"fp32": fp32}
    if "fp16" in variants:
        graphs["fp16"] = to_fp16(fp32, out / "model.fp16.onnx")
        checks["fp16"] = compare(fp32, graphs["fp16"], batches)
    if "int8" in variants:
        # onnxruntime's symbolic shape inference cannot follow the dynamic sensor axis through the
        # graph's concatenations: only the ONNX shape inference runs before quantizing
        graphs["int8"] = to_int8(fp32, out / "model.int8.onnx", symbolic_shape=False)
        checks["int8"] = compare(fp32, graphs["int8"], batches)
    log(f"exported {', '.join(graphs)}; fp32 parity {checks['fp32']['max_abs_diff']:.2g}")
    return graphs, checks


def throughput(path: str | Path, batch: Mapping[str, np.ndarray], threads: int = 1, seconds: float = 2.0) -> float:
    """Events/s of the graph alone on one stacked batch (stacking excluded)."""
    sess = session(path, threads)
    _onnx(sess, batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _onnx(sess, batch)
        n += len(batch["values"])
    return n / (time.perf_counter() - t0)
