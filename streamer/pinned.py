"""Page-locked (pinned) host arrays through the CUDA runtime, for the GPU input path.

Why: a host-to-device copy from ordinary (pageable) memory goes through a
driver staging buffer, one extra memcpy per batch and a synchronisation;
from pinned memory the GPU reads the buffer directly by DMA. onnxruntime's
Python API has no pinned allocator of its own, so the scorer asks the CUDA
runtime (``cudaHostAlloc``) directly, preferring the copy of libcudart that
onnxruntime already loaded into the process (``/proc/self/maps``) so that one
runtime owns all of the process's CUDA state.

Without a CUDA runtime, :func:`load_host_allocator` returns None and the reason,
and the scorer uses ordinary numpy arrays: slower copies, same results.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import math
import os
import sys
import weakref
from typing import Any, Protocol, Sequence

import numpy as np

log = logging.getLogger("streamer.pinned")

CUDART_SONAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
CUDA_HOST_ALLOC_PORTABLE = 1  # pinned for every CUDA context in the process, not just the current one


class CudaRuntime(Protocol):
    """The two libcudart entry points we call (a ctypes CDLL, or a fake in tests)."""

    def cudaHostAlloc(self, ptr: Any, size: Any, flags: Any) -> int: ...  # noqa: N802 - C name

    def cudaFreeHost(self, ptr: Any) -> int: ...  # noqa: N802 - C name


def _loaded_cudart_paths() -> list[str]:
    """libcudart files already mapped into this process (onnxruntime.preload_dlls or torch put them there)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libcudart.so" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.isfile(p))


def _wheel_cudart_paths() -> list[str]:
    """libcudart from the nvidia-* wheels on sys.path (where torch and onnxruntime-gpu[cuda] put it)."""
    found: list[str] = []
    for base in sys.path:
        if base and os.path.isdir(os.path.join(base, "nvidia")):
            found += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libcudart.so*")), reverse=True)
    return found


def load_cudart() -> tuple[CudaRuntime | None, str]:
    """The CUDA runtime library and where it came from, or None and why not."""
    errors = []
    for name in _loaded_cudart_paths() + list(CUDART_SONAMES) + _wheel_cudart_paths():
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc).split(":")[0])
            continue
        lib.cudaHostAlloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]
        lib.cudaHostAlloc.restype = ctypes.c_int
        lib.cudaFreeHost.argtypes = [ctypes.c_void_p]
        lib.cudaFreeHost.restype = ctypes.c_int
        return lib, name
    return None, "no CUDA runtime (libcudart) could be loaded"


class PinnedAllocator:
    """Allocates numpy arrays in pinned memory; each buffer is freed when its array is collected."""

    def __init__(self, cudart: CudaRuntime, source: str = "libcudart"):
        self.cudart = cudart
        self.source = source
        self.allocations = 0
        self.bytes = 0

    def empty(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """An uninitialised pinned array; raises MemoryError when the runtime refuses."""
        dt = np.dtype(dtype)
        count = math.prod(shape)
        nbytes = max(1, count * dt.itemsize)
        ptr = ctypes.c_void_p()
        err = self.cudart.cudaHostAlloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes), ctypes.c_uint(CUDA_HOST_ALLOC_PORTABLE))
        if err != 0 or not ptr.value:
            raise MemoryError(f"cudaHostAlloc({nbytes} bytes) failed with CUDA error {err}")
        raw = (ctypes.c_byte * nbytes).from_address(ptr.value)
        fin = weakref.finalize(raw, _free, self.cudart, ptr.value)
        fin.atexit = False  # at interpreter exit the CUDA context may already be gone; the OS reclaims it
        self.allocations += 1
        self.bytes += nbytes
        return np.frombuffer(raw, dtype=dt, count=count).reshape(tuple(shape))


def _free(cudart: CudaRuntime, address: int) -> None:
    err = cudart.cudaFreeHost(ctypes.c_void_p(address))
    if err != 0:
        log.debug("cudaFreeHost(%#x) returned CUDA error %d", address, err)


def load_host_allocator() -> tuple[PinnedAllocator | None, str]:
    """A pinned allocator that has proven it works (one small allocation), or None and the reason."""
    lib, where = load_cudart()
    if lib is None:
        return None, where
    alloc = PinnedAllocator(lib, where)
    try:
        alloc.empty((1,), np.int64)
    except (MemoryError, OSError) as exc:
        return None, f"{where}: {exc}"
    return alloc, where
