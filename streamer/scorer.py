"""The model: an onnxruntime session over a bundle, run off the event loop.

``Scorer`` serves token bundles (tokenize, pad to buckets, run); the sensor
model's windows go to ``streamer.sensor_scorer.SensorScorer``. ``make_scorer``
picks by the bundle, so every caller serves every kind the same way. Sessions
and provider fallback: ``streamer.onnx_session`` (re-exported here).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from streamer.bundle import Bundle
from streamer.iobinding import BoundRunner, batch_buckets
from streamer.onnx_session import CPU, GPU_MAX_BATCH, GPU_PROVIDERS, Scored, TrtProfile, graph_precision, make_session
from streamer.sensor_scorer import SensorScorer
from streamer.tokens import bucket_for

log = logging.getLogger("streamer.scorer")

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
        return SensorScorer(bundle, device, precision, threads, trt_cache_dir)
    return Scorer(bundle, device, precision, threads, trt_cache_dir)
