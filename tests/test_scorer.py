"""Scorer: the IO-binding path against the plain one (on CPU), and provider fallbacks with their reasons.

The GPU path cannot run on a CPU-only machine, but the same code runs with the
CPU provider: ``io_binding=True`` uses preallocated per-shape buffers, padded
batch buckets and bound outputs exactly as on CUDA, minus the device copies.
Fallbacks are checked against the real CPU-only onnxruntime (``device='cuda'``
with no CUDA provider) and against a fake onnxruntime for the failures only a
GPU host can produce (a missing CUDA library, TensorRT without libnvinfer).
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest

import onnxruntime as ort
from streamer import scorer as sc
from streamer.bundle import DEFAULT_BUNDLES, load_bundle
from streamer.iobinding import BoundRunner
from streamer.pinned import PinnedAllocator
from streamer.onnx_session import ProviderChoice, missing_library
from streamer.scorer import Scorer
from tests.tiny_bundle import make_tiny_bundle

WORDS = ["amt1", "amt2", "amt3", "g_retail", "hr6", "dnew", "cnew", "mseen", "kseen", "pos"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Tiny bundle with an fp16 variant, so precision choices are visible."""
    from models.export import to_fp16

    out = make_tiny_bundle(tmp_path_factory.mktemp("scorer") / "tx", "transaction", words=WORDS, risky=("dnew", "cnew"))
    to_fp16(out / "model.onnx", out / "model.fp16.onnx")
    card = orjson.loads((out / "card.json").read_bytes())
    card["variants"] = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}
    (out / "card.json").write_bytes(orjson.dumps(card))
    return out


def _texts(n: int, seed: int = 0) -> list[str]:
    """Texts of varied lengths (1..40 words) so batches span every sequence bucket and truncation."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(n)]


def _bundles(tiny: Path) -> list[Path]:
    """The tiny bundle, plus the shipped DeepSeek bundle when it is there and loads (a real MoE graph)."""
    from streamer.bundle import BundleError

    shipped = DEFAULT_BUNDLES["transaction"]
    try:
        load_bundle(shipped)
    except BundleError:  # absent, or built for another encoding version while the two are being updated
        return [tiny]
    return [tiny, shipped]


def _real_texts(bundle_dir: Path, n: int) -> list[str]:
    if bundle_dir.name != "transactions":
        return _texts(n)
    from models.dataset import rows
    from streamer.synth import for_kind

    b = load_bundle(bundle_dir)
    evs = itertools.islice(for_kind("transaction").generate(n_events=n, seed=77), n)
    return [r.text for r in rows(evs, b.encoding, b.card, require_label=False)]


# ---------------------------------------------------------------- IO binding vs plain
@pytest.mark.parametrize("which", [0, 1], ids=["tiny", "shipped"])
def test_io_binding_gives_identical_scores_on_cpu(tiny, which):
    bundles = _bundles(tiny)
    if which >= len(bundles):
        pytest.skip("no loadable shipped transaction bundle")
    b = load_bundle(bundles[which])
    texts = _real_texts(bundles[which], 400)
    plain = Scorer(b, "cpu", "fp32", 1)
    bound = Scorer(b, "cpu", "fp32", 1, io_binding=True)
    assert plain.runner is None and bound.io_binding and bound.runner.device == "cpu"
    for n in (1, 3, 17, 64, 200):
        a, _ = plain.score_texts(texts[:n])
        c, _ = bound.score_texts(texts[:n])
        assert c.shape == (n,)
        np.testing.assert_array_equal(a, c)
    ids, mask = b.tokens.encode(texts[:33])
    np.testing.assert_array_equal(plain.run(ids, mask), bound.run(ids, mask))


@pytest.mark.parametrize("which", [0, 1], ids=["tiny", "shipped"])
def test_padded_batch_buckets_keep_scores_and_reuse_buffers(tiny, which):
    bundles = _bundles(tiny)
    if which >= len(bundles):
        pytest.skip("no loadable shipped transaction bundle")
    b = load_bundle(bundles[which])
    texts = _real_texts(bundles[which], 300)
    plain = Scorer(b, "cpu", "fp32", 1)
    padded = Scorer(b, "cpu", "fp32", 1, io_binding=True, pad_batches=True, max_batch=64)
    sizes = (1, 3, 5, 17, 33, 64, 100)  # 100 > 64: runs as chunks of the largest bucket
    for n in sizes:
        np.testing.assert_allclose(padded.score_texts(texts[:n])[0], plain.score_texts(texts[:n])[0], rtol=0, atol=1e-6)
    batch_sizes = {s[0] for s in padded.runner.shapes()}
    assert batch_sizes <= {1, 2, 4, 8, 16, 32, 64}, batch_sizes
    warm = padded.runner.allocations
    for n in sizes:  # same shapes again: no new buffers
        padded.score_texts(texts[:n])
    assert padded.runner.allocations == warm


def test_io_binding_is_safe_under_concurrent_batches(tiny):
    b = load_bundle(tiny)
    texts = _texts(256, seed=3)
    plain = Scorer(b, "cpu", "fp32", 1)
    bound = Scorer(b, "cpu", "fp32", 1, io_binding=True, pad_batches=True, max_batch=64)
    expected = {n: plain.score_texts(texts[:n])[0] for n in (5, 30, 64)}
    errors: list[str] = []

    def hammer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(150):
            n = int(rng.choice(list(expected)))
            got = bound.score_texts(texts[:n])[0]
            if not np.allclose(got, expected[n], atol=1e-6):
                errors.append(f"batch {n}: max diff {np.abs(got - expected[n]).max()}")

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    shapes = bound.runner.shapes()
    assert bound.runner.allocations <= 3 * len(shapes)  # at most one buffer set per concurrent batch and shape


def test_empty_batch(tiny):
    bound = Scorer(load_bundle(tiny), "cpu", "fp32", 1, io_binding=True, pad_batches=True)
    scores, secs = bound.score_texts([])
    assert scores.shape == (0,) and secs >= 0


def test_bound_runner_rejects_unknown_device(tiny):
    b = load_bundle(tiny)
    with pytest.raises(ValueError, match="cpu or cuda"):
        BoundRunner(Scorer(b, "cpu").session, "tpu", b.tokens.pad_id, b.tokens.end_id, None)


# ---------------------------------------------------------------- fallbacks
@pytest.mark.parametrize("message, lib", [
    ("Error loading libonnxruntime_providers_cuda.so: libcudnn.so.9: cannot open shared object file: No such file or directory", "libcudnn.so.9"),
    ("/x/libonnxruntime_providers_cuda.so: libcublasLt.so.13: cannot open shared object file", "libcublasLt.so.13"),
    ("libcurand.so.10: cannot open shared object file", "libcurand.so.10"),
    ("CUDA failure 100: no CUDA-capable device is detected", None),
])
def test_missing_library_names_the_library(message, lib):
    assert missing_library(message) == lib


def test_cuda_on_cpu_only_onnxruntime_falls_back_with_reason(tiny):
    assert "CUDAExecutionProvider" not in ort.get_available_providers(), "this test needs the CPU-only onnxruntime"
    s = Scorer(load_bundle(tiny), "cuda", "auto", 1)
    assert s.provider == "CPUExecutionProvider"
    assert s.choice.fell_back and "onnxruntime-gpu is not installed" in s.choice.fallback_reason
    assert s.choice.metric_labels() == {"requested": "cuda", "provider": "cpu", "reason": "no_gpu_build"}
    assert s.precision == "fp32" and s.model_path.name == "model.onnx"  # auto: fp32 once on CPU, not the fp16 variant
    assert s.runner is None  # plain CPU path
    assert s.score_texts(["dnew cnew", "amt1"])[0].tolist()[0] > 0.5


def test_auto_on_cpu_only_onnxruntime_is_not_a_fallback(tiny):
    s = Scorer(load_bundle(tiny), "auto", "auto", 1)
    assert s.provider == "CPUExecutionProvider" and not s.choice.fell_back and s.choice.fallback_code is None


class _FakeSession:
    """Stands in for an InferenceSession on a GPU build: records the providers it was given."""

    made: list[list] = []

    def __init__(self, path, so, providers):
        self.providers = providers
        _FakeSession.made.append(providers)
        self.behaviour(providers)

    behaviour = staticmethod(lambda providers: None)
    active = "CUDAExecutionProvider"

    def get_providers(self):
        names = [p[0] if isinstance(p, tuple) else p for p in self.providers]
        return [self.active] if self.active in names else ["CPUExecutionProvider"]


@pytest.fixture
def gpu_build(monkeypatch):
    """onnxruntime pretending to be onnxruntime-gpu; CPU-only sessions stay real."""
    real = ort.InferenceSession
    _FakeSession.made = []

    def session(path, so=None, providers=None):
        if providers == ["CPUExecutionProvider"]:
            return real(path, so, providers=providers)
        return _FakeSession(path, so, providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)
    return _FakeSession


def test_missing_cuda_library_falls_back_with_the_library_named(tiny, gpu_build, monkeypatch, caplog):
    def fail(providers):
        raise RuntimeError("Error loading libonnxruntime_providers_cuda.so: libcublasLt.so.13: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(gpu_build, "behaviour", staticmethod(fail))
    s = Scorer(load_bundle(tiny), "cuda", "auto", 1)
    assert s.provider == "CPUExecutionProvider" and s.precision == "fp32"
    assert s.choice.fallback_reason == "CUDA library libcublasLt.so.13 could not be loaded"
    assert s.choice.metric_labels() == {"requested": "cuda", "provider": "cpu", "reason": "missing_library"}
    assert "libcublasLt.so.13" in caplog.text
    assert gpu_build.made[0][0] == "CUDAExecutionProvider"  # the fp16 graph was tried on CUDA first


def test_gpu_that_does_not_initialise_falls_back(tiny, gpu_build, monkeypatch):
    monkeypatch.setattr(gpu_build, "active", "none")
    choice = sc.make_session(tiny / "model.onnx", "cuda", 1)[1]
    assert choice.provider == "CPUExecutionProvider" and choice.fallback_code == "no_device"


def test_other_session_errors_are_reported_not_raised(tiny, gpu_build, monkeypatch):
    def fail(providers):
        raise RuntimeError("CUDA failure 2: out of memory")

    monkeypatch.setattr(gpu_build, "behaviour", staticmethod(fail))
    choice = sc.make_session(tiny / "model.onnx", "cuda", 1)[1]
    assert choice.fallback_code == "session_error" and "out of memory" in choice.fallback_reason


def test_tensorrt_gets_engine_cache_and_profile_and_reports_cuda_fallback(tiny, gpu_build, tmp_path):
    cache = tmp_path / "trt"
    profile = sc.TrtProfile(max_batch=256, max_len=32)
    sess, choice = sc.make_session(tiny / "model.onnx", "tensorrt", 1, str(cache), profile)
    assert cache.is_dir()
    name, opts = gpu_build.made[0][0]
    assert name == "TensorrtExecutionProvider" and opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(cache)
    assert opts["trt_profile_max_shapes"] == "input_ids:256x32,attention_mask:256x32"
    assert opts["trt_fp16_enable"] is True
    assert choice.provider == "CUDAExecutionProvider" and choice.fallback_code == "tensorrt_unavailable"
    assert choice.metric_labels()["reason"] == "tensorrt_unavailable"


def test_provider_choice_labels_are_bounded():
    c = ProviderChoice("CPUExecutionProvider", "tensorrt", "GPU session failed: " + "x" * 500, "session_error")
    assert c.metric_labels() == {"requested": "tensorrt", "provider": "cpu", "reason": "session_error"}
    assert ProviderChoice("CUDAExecutionProvider", "cuda").metric_labels()["reason"] == "none"


# ---------------------------------------------------------------- pinned host memory
class _FakeCudart:
    """cudaHostAlloc/cudaFreeHost over ordinary memory, recording what was freed."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.live: dict[int, ctypes.Array] = {}
        self.freed: list[int] = []

    def cudaHostAlloc(self, ptr, size, flags):  # noqa: N802 - C name
        if self.fail:
            return 2  # cudaErrorMemoryAllocation
        buf = ctypes.create_string_buffer(size.value)
        addr = ctypes.addressof(buf)
        self.live[addr] = buf
        ptr._obj.value = addr
        return 0

    def cudaFreeHost(self, ptr):  # noqa: N802 - C name
        self.freed.append(ptr.value)
        self.live.pop(ptr.value, None)
        return 0


def test_pinned_allocator_hands_out_usable_arrays_and_frees_them():
    fake = _FakeCudart()
    alloc = PinnedAllocator(fake, "fake")
    a = alloc.empty((4, 8), np.int64)
    a[:] = 7
    assert a.shape == (4, 8) and a.dtype == np.int64 and int(a.sum()) == 7 * 32
    addr = a.ctypes.data
    assert alloc.allocations == 1 and alloc.bytes == 4 * 8 * 8
    del a
    gc.collect()
    assert fake.freed == [addr]


def test_pinned_allocator_failure_is_a_memory_error():
    with pytest.raises(MemoryError, match="cudaHostAlloc"):
        PinnedAllocator(_FakeCudart(fail=True)).empty((2, 2), np.int64)


def test_no_cuda_runtime_means_unpinned_buffers_with_a_reason(monkeypatch):
    from streamer import pinned

    monkeypatch.setattr(pinned, "load_cudart", lambda: (None, "no CUDA runtime (libcudart) could be loaded"))
    alloc, reason = pinned.load_host_allocator()
    assert alloc is None and "libcudart" in reason
