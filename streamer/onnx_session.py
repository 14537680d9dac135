"""onnxruntime sessions: provider choice with a reasoned CPU fallback, and the batch result every scorer returns.

Provider choice is configuration (``device``): TensorRT, CUDA or CPU. When a GPU
provider was asked for (or ``auto`` found onnxruntime-gpu) but cannot load, the
session says exactly why (which CUDA library is missing), for
``streamer_provider_fallback_total``, and serves on CPU rather than not at all.
Shared by the token model's scorer (``streamer.scorer``) and the sensor model's
(``streamer.sensor_scorer``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import onnxruntime as ort

log = logging.getLogger("streamer.scorer")

GPU_PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}
CPU = "CPUExecutionProvider"
GPU_MAX_BATCH = 1024  # largest batch bucket on a GPU; bigger batches run in chunks of it

# Short, stable reasons for the fallback metric's label (the full text goes to the log).
NO_GPU_BUILD = "no_gpu_build"
MISSING_LIBRARY = "missing_library"
NO_DEVICE = "no_device"
SESSION_ERROR = "session_error"
TENSORRT_UNAVAILABLE = "tensorrt_unavailable"


@dataclass
class ProviderChoice:
    """Where the session really runs, what was asked for, and (after a fallback) why they differ."""

    provider: str  # the provider the session really runs on
    requested: str
    fallback_reason: str | None = None  # human-readable, for the log
    fallback_code: str | None = None  # one of the constants above, for a metric label

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None

    def metric_labels(self) -> dict[str, str]:
        """Bounded label values for ``streamer_provider_fallback`` (no free text, no library versions)."""
        return {"requested": self.requested, "provider": self.provider.replace("ExecutionProvider", "").lower(),
                "reason": self.fallback_code or "none"}


@dataclass(frozen=True)
class TrtProfile:
    """TensorRT optimisation profile: the shapes the engine must cover, so it is built once, not per shape."""

    max_batch: int = GPU_MAX_BATCH
    max_len: int = 128
    opt_batch: int = 64

    def options(self, names: Sequence[str] = ("input_ids", "attention_mask")) -> dict[str, str]:
        def spec(b: int, n: int) -> str:
            return ",".join(f"{name}:{b}x{n}" for name in names)

        return {"trt_profile_min_shapes": spec(1, 1), "trt_profile_opt_shapes": spec(min(self.opt_batch, self.max_batch), self.max_len),
                "trt_profile_max_shapes": spec(self.max_batch, self.max_len)}


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


def gpu_providers(device: str, available: Sequence[str], trt_cache_dir: str = ".cache/trt",
                  trt_profile: TrtProfile | None = None, trt_fp16: bool = True) -> list[Any]:
    """The provider list to try for ``device`` (empty: CPU only).

    TensorRT gets an on-disk engine and timing cache and, with ``trt_profile``, one
    optimisation profile covering every batch and sequence bucket, so an engine is
    built once per model rather than once per new input shape.
    """
    if device == "auto":
        return ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
    if device == "cuda":
        return ["CUDAExecutionProvider"]
    if device == "tensorrt":
        opts: dict[str, Any] = {"trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache_dir,
                                "trt_timing_cache_enable": True, "trt_timing_cache_path": trt_cache_dir,
                                "trt_fp16_enable": bool(trt_fp16)}
        if trt_profile is not None:
            opts.update(trt_profile.options())
        return [("TensorrtExecutionProvider", opts), "CUDAExecutionProvider"]
    return []


def make_session(model_path: Path, device: str = "auto", threads: int = 0, trt_cache_dir: str = ".cache/trt",
                 trt_profile: TrtProfile | None = None, trt_fp16: bool = True) -> tuple[ort.InferenceSession, ProviderChoice]:
    """Create a session on the requested device, falling back to CPU with a reason."""
    available = ort.get_available_providers()
    wanted = gpu_providers(device, available, trt_cache_dir, trt_profile, trt_fp16)
    so = _session_options(threads)
    reason = code = None
    if wanted:
        if "CUDAExecutionProvider" not in available:
            reason = "onnxruntime-gpu is not installed (only CPU providers available: pip install 'streamer[gpu]')"
            code = NO_GPU_BUILD
        else:
            if device == "tensorrt":
                os.makedirs(trt_cache_dir, exist_ok=True)
            try:
                if hasattr(ort, "preload_dlls"):
                    try:
                        ort.preload_dlls()
                    except Exception as exc:  # noqa: BLE001 - the session below reports the real failure
                        log.debug("preload_dlls: %s", exc)
                sess = ort.InferenceSession(str(model_path), so, providers=wanted + [CPU])
                active = sess.get_providers()[0]
                if active != CPU:
                    requested = device if device != "auto" else "cuda"
                    if device == "tensorrt" and active != "TensorrtExecutionProvider":
                        fell = "TensorRT provider did not load (libnvinfer missing?); using CUDA"
                        log.warning("%s", fell)
                        return sess, ProviderChoice(active, requested, fell, TENSORRT_UNAVAILABLE)
                    return sess, ProviderChoice(active, requested)
                reason = "GPU provider did not initialise (see onnxruntime log); no CUDA device visible?"
                code = NO_DEVICE
            except Exception as exc:  # noqa: BLE001 - any provider failure must fall back, not stop the worker
                lib = missing_library(str(exc))
                reason = f"CUDA library {lib} could not be loaded" if lib else f"GPU session failed: {str(exc)[:300]}"
                code = MISSING_LIBRARY if lib else SESSION_ERROR
        log.warning("falling back to CPU for %s: %s", model_path.name, reason)
    sess = ort.InferenceSession(str(model_path), so, providers=[CPU])
    return sess, ProviderChoice(CPU, device, reason, code)


def graph_precision(precision: str, provider: str, variants: Sequence[str]) -> str:
    """Which bundle variant to load for ``precision`` on ``provider``.

    ``auto`` is fp16 on CUDA and fp32 on CPU. TensorRT loads the fp32 graph and
    builds its own fp16 engine from it (``trt_fp16_enable``), which it does
    better than it runs an fp16 ONNX graph full of casts. A missing variant
    falls back to fp32.

    >>> graph_precision("auto", "CUDAExecutionProvider", ["fp32", "fp16"])
    'fp16'
    >>> graph_precision("auto", "TensorrtExecutionProvider", ["fp32", "fp16"])
    'fp32'
    >>> graph_precision("int8", "CPUExecutionProvider", ["fp32"])
    'fp32'
    """
    if provider == "TensorrtExecutionProvider" and precision in ("auto", "fp16"):
        want = "fp32"
    elif precision == "auto":
        want = "fp32" if provider == CPU else "fp16"
    else:
        want = precision
    return want if want in variants else "fp32"


class Scored(NamedTuple):
    """One batch's result: a score per event, what the model says about each (for alert reasons), seconds.

    ``details`` is None for models whose reasons come from the encoding's features alone (the token
    models); a numeric model returns, per event, what it predicted worst, for ``encoding.reasons``.
    """

    scores: np.ndarray
    details: list[Any] | None
    seconds: float
