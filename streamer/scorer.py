"""The model: an onnxruntime session over a bundle, run off the event loop.

Provider choice is configuration (``device``): TensorRT, CUDA or CPU. When a GPU
provider was asked for (or ``auto`` found onnxruntime-gpu) but cannot load, the
scorer says exactly why (which CUDA library is missing), counts it in
``streamer_provider_fallback_total`` and serves on CPU rather than not at all.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from streamer.bundle import Bundle

log = logging.getLogger("streamer.scorer")

GPU_PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass
class ProviderChoice:
    provider: str  # the provider the session really runs on
    requested: str
    fallback_reason: str | None = None


def missing_library(message: str) -> str | None:
    """The shared library named in a loader error, e.g. ``libcublasLt.so.13``.

    >>> missing_library("Error loading libonnxruntime_providers_cuda.so: libcudnn.so.9: cannot open shared object file")
    'libcudnn.so.9'
    """
    found = re.findall(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", message)
    return found[-1] if found else None


def _session_options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def make_session(model_path: Path, device: str = "auto", threads: int = 0, trt_cache_dir: str = ".cache/trt") -> tuple[ort.InferenceSession, ProviderChoice]:
    """Create a session on the requested device, falling back to CPU with a reason."""
    available = ort.get_available_providers()
    wanted: list = []
    if device == "auto":
        if "CUDAExecutionProvider" in available:
            wanted = ["CUDAExecutionProvider"]
    elif device == "tensorrt":
        os.makedirs(trt_cache_dir, exist_ok=True)
        wanted = [
            ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache_dir, "trt_fp16_enable": True}),
            "CUDAExecutionProvider",
        ]
    elif device == "cuda":
        wanted = ["CUDAExecutionProvider"]
    so = _session_options(threads)
    reason = None
    if wanted:
        if not any(p == "CUDAExecutionProvider" for p in available):
            reason = "onnxruntime-gpu is not installed (only CPU providers available: pip install 'streamer[gpu]')"
        else:
            try:
                if hasattr(ort, "preload_dlls"):
                    try:
                        ort.preload_dlls()
                    except Exception as exc:  # noqa: BLE001 - the session below reports the real failure
                        log.debug("preload_dlls: %s", exc)
                sess = ort.InferenceSession(str(model_path), so, providers=wanted + ["CPUExecutionProvider"])
                active = sess.get_providers()[0]
                if active != "CPUExecutionProvider":
                    requested = device if device != "auto" else "cuda"
                    fell = None
                    if device == "tensorrt" and active != "TensorrtExecutionProvider":
                        fell = "TensorRT provider did not load (libnvinfer missing?); using CUDA"
                        log.warning("%s", fell)
                    return sess, ProviderChoice(active, requested, fell)
                reason = "GPU provider did not initialise (see onnxruntime log); no CUDA device visible?"
            except Exception as exc:  # noqa: BLE001 - any provider failure must fall back, not stop the worker
                lib = missing_library(str(exc))
                reason = f"CUDA library {lib} could not be loaded" if lib else f"GPU session failed: {str(exc)[:300]}"
        log.warning("falling back to CPU for %s: %s", model_path.name, reason)
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return sess, ProviderChoice("CPUExecutionProvider", device, reason)


def softmax_positive(logits: np.ndarray) -> np.ndarray:
    """P(class 1) from [B, 2] logits, computed stably in float64.

    >>> softmax_positive(np.array([[0.0, 0.0], [0.0, 50.0]], dtype=np.float32)).round(3).tolist()
    [0.5, 1.0]
    """
    z = logits.astype(np.float64)
    if z.ndim == 2 and z.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-z[:, 0]))
    return 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))


class Scorer:
    """Tokenize + run one batch. Thread-safe: onnxruntime sessions allow concurrent ``run``."""

    def __init__(self, bundle: Bundle, device: str = "auto", precision: str = "auto", threads: int = 0, trt_cache_dir: str = ".cache/trt"):
        self.bundle = bundle
        variants = bundle.card.get("variants") or {"fp32": "model.onnx"}
        model_path = bundle.model_path
        self.session, self.choice = make_session(model_path, device, threads, trt_cache_dir)
        on_gpu = self.choice.provider != "CPUExecutionProvider"
        want = precision if precision != "auto" else ("fp16" if on_gpu else "fp32")
        if want not in variants:
            want = "fp32"
        if bundle.path / variants[want] != model_path:
            model_path = bundle.path / variants[want]
            self.session, self.choice = make_session(model_path, self.choice.provider.replace("ExecutionProvider", "").lower() if on_gpu else "cpu", threads, trt_cache_dir)
        self.precision = want
        self.model_path = model_path
        names = [i.name for i in self.session.get_inputs()]
        self.input_names = names
        self.output_name = self.session.get_outputs()[0].name

    @property
    def provider(self) -> str:
        return self.choice.provider

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        logits = self.session.run([self.output_name], {k: feeds[k] for k in self.input_names})[0]
        return softmax_positive(logits)

    def score_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, float]:
        """Scores for ``texts`` and the seconds spent (tokenization included)."""
        t0 = time.perf_counter()
        ids, mask = self.bundle.tokens.encode(texts)
        scores = self.run(ids, mask)
        return scores, time.perf_counter() - t0


class NoopScorer:
    """A scorer that returns 0 without a model: the bench's measure of the stream path alone."""

    provider = "none"
    precision = "none"

    def __init__(self, bundle: Bundle | None = None):
        self.bundle = bundle

    def score_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, float]:
        return np.zeros(len(texts)), 0.0
