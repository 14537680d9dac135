"""ONNX export of the classifier, parity checks, and fp16 / int8 variants.

Why these steps: the worker serves ``model.onnx`` with onnxruntime only, so the
export must be checked against torch on the exact inputs the worker builds
(right-padded token matrices of varied lengths from ``TokenEncoder``), not on one
example batch. The experts run through the dense implementation (see
``models.classifier``) because the stock MoE kernels do not export and an eager
trace would bake in the routes of the example batch.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.classifier import use_dense_experts

INPUTS = ["input_ids", "attention_mask"]
OUTPUT = "logits"
FP32_TOLERANCE = 1e-4


class ParityError(AssertionError):
    """The exported graph disagrees with torch beyond tolerance."""


class _Logits(torch.nn.Module):
    """Wrapper so the graph has exactly one output, ``logits`` [B, 2] float32."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()


@contextmanager
def quiet_export() -> Iterator[None]:
    """Around ``torch.onnx.export``: no gradients, no warnings, the exporters' loggers at ERROR (restored after)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "onnxscript")]
        old = [lg.level for lg in quiet]
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(quiet, old):
                lg.setLevel(lv)


def export_onnx(model: torch.nn.Module, path: str | Path, pad_id: int, end_id: int, example_len: int = 24,
                opset: int | None = None) -> Path:
    """Export with dynamic batch and sequence axes; inputs int64, output float32 [B, 2]."""
    path = Path(path)
    model = use_dense_experts(model).eval()
    wrapped = _Logits(model).eval()
    ids = torch.full((3, example_len), pad_id, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, n in enumerate((example_len, example_len - 5, 7)):
        ids[i, : n - 1] = torch.arange(3, 3 + n - 1) % max(4, model.config.vocab_size - 3) + 3
        ids[i, n - 1] = end_id
        mask[i, :n] = 1
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=4096)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    kwargs: dict[str, Any] = dict(input_names=INPUTS, output_names=[OUTPUT], dynamo=True, dynamic_shapes=shapes,
                                  external_data=False, verbose=False)
    if opset is not None:
        kwargs["opset_version"] = opset
    with quiet_export():
        program = torch.onnx.export(wrapped, (ids, mask), kwargs=None, **kwargs)
    program.save(str(path))
    onnx.checker.check_model(str(path))
    return path


def session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session like the worker's (sequential execution, fixed intra-op threads)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_logits(sess: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return sess.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]


def torch_logits(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.float().numpy()


def parity_batches(tokens: Any, texts: Sequence[str], batch_sizes: Sequence[int] = (1, 7, 64)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Padded batches of varied sizes and lengths, built with the worker's TokenEncoder.

    Texts are cut to different word counts so batches mix short and long rows and
    land in several padding buckets.
    """
    out = []
    pool = sorted(texts, key=lambda t: -len(t.split()))[: max(batch_sizes) * 2] or [""]
    for j, b in enumerate(batch_sizes):
        chunk = [pool[(j * 7 + i) % len(pool)] for i in range(b)]
        out.append(tokens.encode(chunk))  # full length: the longest bucket
        cut = []
        for i, t in enumerate(chunk):
            words = t.split()
            keep = len(words) - (i * 5 + j) % (len(words) + 1)  # 0 .. all words, newest kept
            cut.append(" ".join(words[len(words) - keep :]))
        out.append(tokens.encode(cut))
        short = 6 + 8 * j  # whole batch in a shorter bucket
        out.append(tokens.encode([" ".join(t.split()[-short:]) for t in cut]))
    return out


def check_parity(model: torch.nn.Module, onnx_path: str | Path, batches: Sequence[tuple[np.ndarray, np.ndarray]],
                 tolerance: float | None = FP32_TOLERANCE) -> dict[str, Any]:
    """Max abs logit diff and argmax agreement vs torch; raises above ``tolerance`` (None: report only)."""
    sess = session(onnx_path)
    worst, agree, total = 0.0, 0, 0
    shapes = []
    for ids, mask in batches:
        a = torch_logits(model, ids, mask)
        b = run_logits(sess, ids, mask)
        worst = max(worst, float(np.abs(a - b).max()))
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        total += len(a)
        shapes.append(list(ids.shape))
    report = {"max_abs_logit_diff": worst, "argmax_agreement": agree / max(1, total), "batches": shapes}
    if tolerance is not None and not worst <= tolerance:
        raise ParityError(f"{onnx_path}: max abs logit diff {worst:.3g} exceeds {tolerance:g} vs torch")
    return report


def to_fp16(src: str | Path, dst: str | Path) -> Path:
    """fp16 weights and compute with fp32 inputs/outputs (for GPUs; no CPU gain)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(m, str(dst))
    return Path(dst)


def to_int8(src: str | Path, dst: str | Path, symbolic_shape: bool = True) -> Path:
    """Dynamic int8 weight quantization; shape pre-processing first or quantize_dynamic fails.

    ``symbolic_shape=False`` runs only the ONNX shape inference in that pre-processing, for
    graphs whose dynamic axes onnxruntime's symbolic shape inference cannot follow.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(str(src), pre, skip_symbolic_shape=not symbolic_shape)
        quantize_dynamic(pre, str(dst), weight_type=QuantType.QInt8)
    return Path(dst)


def compare_sessions(ref: str | Path, other: str | Path, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Parity of a precision variant against the fp32 graph (logits and softmax scores)."""
    a_s, b_s = session(ref), session(other)
    worst_l, worst_p, agree, total = 0.0, 0.0, 0, 0
    for ids, mask in batches:
        a, b = run_logits(a_s, ids, mask), run_logits(b_s, ids, mask)
        worst_l = max(worst_l, float(np.abs(a - b).max()))
        worst_p = max(worst_p, float(np.abs(softmax1(a) - softmax1(b)).max()))
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        total += len(a)
    return {"max_abs_logit_diff": worst_l, "max_abs_score_diff": worst_p, "argmax_agreement": agree / max(1, total)}


def softmax1(logits: np.ndarray) -> np.ndarray:
    """P(class 1) = sigmoid(l1 - l0), computed in float64 (the score the worker publishes)."""
    d = logits[:, 1].astype(np.float64) - logits[:, 0].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-d))


def throughput(path: str | Path, tokens: Any, texts: Sequence[str], batch: int = 64, threads: int = 1,
               seconds: float = 2.0) -> float:
    """Events/s of the graph alone on padded batches of real texts (tokenization excluded)."""
    sess = session(path, threads)
    ids, mask = tokens.encode(list(texts[:batch]))
    run_logits(sess, ids, mask)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run_logits(sess, ids, mask)
        n += len(ids)
    return n / (time.perf_counter() - t0)
