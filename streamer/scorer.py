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
from typing import Any, NamedTuple, Sequence

import numpy as np
import onnxruntime as ort

from streamer.bundle import Bundle
from streamer.iobinding import BoundRunner, batch_buckets
from streamer.tokens import bucket_for

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


def softmax_positive(logits: np.ndarray) -> np.ndarray:
    """P(class 1) from [B, 2] logits, computed stably in float64.

    >>> softmax_positive(np.array([[0.0, 0.0], [0.0, 50.0]], dtype=np.float32)).round(3).tolist()
    [0.5, 1.0]
    """
    z = logits.astype(np.float64)
    if z.ndim == 2 and z.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-z[:, 0]))
    return 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))


class Scored(NamedTuple):
    """One batch's result: a score per event, what the model says about each (for alert reasons), seconds.

    ``details`` is None for models whose reasons come from the encoding's features alone (the token
    models); a numeric model returns, per event, what it predicted worst, for ``encoding.reasons``.
    """

    scores: np.ndarray
    details: list[Any] | None
    seconds: float


class Scorer:
    """Tokenize + run one batch. Thread-safe: onnxruntime sessions allow concurrent ``run``.

    On a GPU the batch goes through :class:`streamer.iobinding.BoundRunner`
    (pinned host buffers and device tensors per shape, batches padded to
    power-of-two sizes). On CPU the plain ``session.run`` path is kept: the
    bench (bench/model.py) measured no gain from IO binding there, and padding
    batches to buckets would only add rows to compute. ``io_binding=True``
    forces the bound path on CPU (tests use it to check it against the plain one).
    """

    def __init__(self, bundle: Bundle, device: str = "auto", precision: str = "auto", threads: int = 0,
                 trt_cache_dir: str = ".cache/trt", *, io_binding: bool | None = None, pad_batches: bool | None = None,
                 max_batch: int = GPU_MAX_BATCH):
        self.bundle = bundle
        variants = bundle.card.get("variants") or {"fp32": "model.onnx"}
        profile = TrtProfile(max_batch=max_batch, max_len=bundle.tokens.max_len)
        trt_fp16 = precision in ("auto", "fp16")
        # Plan for the provider we expect, so the usual case builds one session.
        planned = CPU if device == "cpu" or (device == "auto" and "CUDAExecutionProvider" not in ort.get_available_providers()) else GPU_PROVIDERS.get(device, "CUDAExecutionProvider")
        graph = graph_precision(precision, planned, list(variants))
        self.session, self.choice = make_session(bundle.path / variants[graph], device, threads, trt_cache_dir, profile, trt_fp16)
        actual = graph_precision(precision, self.choice.provider, list(variants))
        if actual != graph:  # the provider is not the planned one (a fallback): load the variant that suits it
            graph = actual
            short = self.choice.provider.replace("ExecutionProvider", "").lower() if self.choice.provider != CPU else "cpu"
            self.session, again = make_session(bundle.path / variants[graph], short, threads, trt_cache_dir, profile, trt_fp16)
            if again.provider != self.choice.provider:
                self.choice = again
        on_gpu = self.choice.provider != CPU
        self.precision = "fp16" if self.choice.provider == "TensorrtExecutionProvider" and trt_fp16 else graph
        self.model_path = bundle.path / variants[graph]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.runner: BoundRunner | None = None
        self.pinned_reason = "not on a GPU"
        if io_binding if io_binding is not None else on_gpu:
            self.runner = self._bound_runner(on_gpu, pad_batches if pad_batches is not None else on_gpu, max_batch)

    def _bound_runner(self, on_gpu: bool, pad: bool, max_batch: int) -> BoundRunner:
        host = None
        if on_gpu:
            from streamer.pinned import load_host_allocator

            host, self.pinned_reason = load_host_allocator()
            if host is None:
                log.warning("input buffers are not pinned (%s): host-to-device copies will be slower", self.pinned_reason)
            else:
                self.pinned_reason = f"pinned via {self.pinned_reason}"
        tokens = self.bundle.tokens
        return BoundRunner(self.session, "cuda" if on_gpu else "cpu", tokens.pad_id, tokens.end_id,
                           batch_buckets(max_batch) if pad else None, host=host)

    @property
    def provider(self) -> str:
        return self.choice.provider

    @property
    def io_binding(self) -> bool:
        return self.runner is not None

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Scores for padded ``input_ids``/``attention_mask`` matrices."""
        if self.runner is not None:
            return softmax_positive(self.runner.run_arrays(ids, mask))
        feeds = {"input_ids": ids, "attention_mask": mask}
        logits = self.session.run([self.output_name], {k: feeds[k] for k in self.input_names})[0]
        return softmax_positive(logits)

    def score_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, float]:
        """Scores for ``texts`` and the seconds spent (tokenization included)."""
        t0 = time.perf_counter()
        tokens = self.bundle.tokens
        if self.runner is not None:
            rows = tokens.ids(texts)
            width = bucket_for(max((len(r) for r in rows), default=1), tokens.buckets, tokens.max_len)
            scores = softmax_positive(self.runner.run_rows(rows, width))
        else:
            ids, mask = tokens.encode(texts)
            scores = self.run(ids, mask)
        return scores, time.perf_counter() - t0

    def probe_inputs(self) -> list[Any]:
        """A few valid inputs (for health checks that run the model without events)."""
        return ["[UNK]"] * 4

    def score_batch(self, inputs: Sequence[Any]) -> Scored:
        """What the pipeline calls: scores for a batch of ``Item.inputs`` (here: texts)."""
        scores, secs = self.score_texts(inputs)
        return Scored(scores, None, secs)


class NoopScorer:
    """A scorer that returns 0 without a model: the bench's measure of the stream path alone."""

    provider = "none"
    precision = "none"

    def __init__(self, bundle: Bundle | None = None):
        self.bundle = bundle

    def score_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, float]:
        return np.zeros(len(texts)), 0.0

    def score_batch(self, inputs: Sequence[Any]) -> Scored:
        return Scored(np.zeros(len(inputs)), None, 0.0)


def make_scorer(bundle: Bundle, device: str = "auto", precision: str = "auto", threads: int = 0,
                trt_cache_dir: str = ".cache/trt") -> Any:
    """The scorer a bundle needs: every caller (worker lanes, score-file, reload, doctor) goes through here,
    so a bundle kind with its own model inputs is served the same way everywhere."""
    if bundle.tokens is None:  # numeric inputs (the sensor model's windows)
        from streamer.sensor_scorer import SensorScorer

        return SensorScorer(bundle, device, precision, threads, trt_cache_dir)
    return Scorer(bundle, device, precision, threads, trt_cache_dir)
