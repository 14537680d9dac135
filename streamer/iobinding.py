"""Run an onnxruntime session through IO binding on buffers allocated once per shape.

Why: on a GPU the per-batch overheads around the model (allocating input
tensors, copying pageable memory to the device, allocating the output) are of
the same order as the model itself at these sizes. Here every (batch bucket,
sequence bucket) shape gets, the first time it is used:

* host input buffers (pinned on CUDA, see ``streamer.pinned``) that the
  token ids are written into directly (no intermediate arrays),
* device input tensors and a device output tensor (``OrtValue``),
* an ``IOBinding`` with all three bound once.

A batch then costs two host-to-device copies, the run, and one device-to-host
copy of the [B, 2] logits. Batches are padded up to a few batch sizes (powers of
two by default) so the same shapes, and so the same buffers, come back; rows
added by padding are a lone ``[END]`` token and are dropped from the output.

Buffers for a shape live in a small free list: concurrent batches
(``inflight_batches`` > 1) each take their own set, and a set is created only
when every existing one of that shape is busy, so allocation stops after
warm-up (``allocations`` counts them).

On CPU the same code runs with zero-copy CPU tensors (the "device" tensor *is*
the host buffer), which is how the tests check it against the plain path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from streamer.pinned import PinnedAllocator

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Powers of two up to ``max_batch`` (and ``max_batch`` itself when it is not one).

    >>> batch_buckets(64)
    (1, 2, 4, 8, 16, 32, 64)
    >>> batch_buckets(48)
    (1, 2, 4, 8, 16, 32, 48)
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return tuple(out)


def bucket_up(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= ``n`` (``n`` itself when no bucket is large enough).

    >>> bucket_up(5, (1, 2, 4, 8)), bucket_up(9, (1, 2, 4, 8))
    (8, 9)
    """
    for b in buckets:
        if b >= n:
            return b
    return n


@dataclass
class _Slot:
    """Everything one batch of one shape needs, allocated once and reused."""

    shape: tuple[int, int]
    host_ids: np.ndarray
    host_mask: np.ndarray
    dev_ids: ort.OrtValue
    dev_mask: ort.OrtValue
    out: ort.OrtValue | None
    host_out: np.ndarray | None  # CPU only: the output tensor's own memory
    binding: Any


class BoundRunner:
    """Logits for token rows through IO binding; thread-safe (one buffer set per concurrent batch)."""

    def __init__(self, session: ort.InferenceSession, device: str, pad_id: int, end_id: int,
                 buckets: Sequence[int] | None, device_id: int = 0, host: PinnedAllocator | None = None):
        """``device``: "cpu" or "cuda" (where inputs and output live); ``buckets``: batch sizes to pad to
        (None: run each batch at its own size). Batches above the largest bucket run in chunks of it."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, not {device!r}")
        self.session = session
        self.device = device
        self.device_id = device_id
        self.pad_id, self.end_id = int(pad_id), int(end_id)
        self.buckets = tuple(sorted(buckets)) if buckets else None
        self.host = host if device == "cuda" else None
        self.input_names = [i.name for i in session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask"}
        if unknown:
            raise ValueError(f"graph inputs {sorted(unknown)} are not input_ids/attention_mask")
        out = session.get_outputs()[0]
        self.output_name = out.name
        self.out_dtype = ORT_TYPES.get(out.type, np.float32)
        width = out.shape[1] if len(out.shape) == 2 else None
        self.out_width = width if isinstance(width, int) and width > 0 else None
        self._free: dict[tuple[int, int], list[_Slot]] = {}
        self._lock = threading.Lock()
        self.allocations = 0  # buffer sets created (stops growing after warm-up)
        self.runs = 0

    # ------------------------------------------------------------- buffers
    def _host_array(self, shape: tuple[int, int]) -> np.ndarray:
        if self.host is not None:
            return self.host.empty(shape, np.int64)
        return np.empty(shape, dtype=np.int64)

    def _new_slot(self, shape: tuple[int, int]) -> _Slot:
        host_ids, host_mask = self._host_array(shape), self._host_array(shape)
        binding = self.session.io_binding()
        host_out = None
        if self.device == "cpu":
            dev_ids = ort.OrtValue.ortvalue_from_numpy(host_ids)  # zero copy: the host buffer is the tensor
            dev_mask = ort.OrtValue.ortvalue_from_numpy(host_mask)
        else:
            dev_ids = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.int64, "cuda", self.device_id)
            dev_mask = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.int64, "cuda", self.device_id)
        named = {"input_ids": dev_ids, "attention_mask": dev_mask}
        for name in self.input_names:
            binding.bind_ortvalue_input(name, named[name])
        out = None
        if self.out_width is not None:
            if self.device == "cpu":
                host_out = np.empty((shape[0], self.out_width), dtype=self.out_dtype)
                out = ort.OrtValue.ortvalue_from_numpy(host_out)
            else:
                out = ort.OrtValue.ortvalue_from_shape_and_type((shape[0], self.out_width), self.out_dtype, "cuda", self.device_id)
            binding.bind_ortvalue_output(self.output_name, out)
        else:  # output width unknown: let onnxruntime allocate it on the device each run
            binding.bind_output(self.output_name, self.device, self.device_id)
        self.allocations += 1
        return _Slot(shape, host_ids, host_mask, dev_ids, dev_mask, out, host_out, binding)

    def _acquire(self, shape: tuple[int, int]) -> _Slot:
        with self._lock:
            free = self._free.setdefault(shape, [])
            if free:
                return free.pop()
        return self._new_slot(shape)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            self._free[slot.shape].append(slot)

    def shapes(self) -> list[tuple[int, int]]:
        """Shapes that have buffers (for tests and the doctor)."""
        with self._lock:
            return sorted(self._free)

    # ------------------------------------------------------------- running
    def _batch_size(self, n: int) -> int:
        return bucket_up(n, self.buckets) if self.buckets else n

    def _chunk(self) -> int | None:
        return self.buckets[-1] if self.buckets else None

    def run_rows(self, rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        """Logits for token-id rows right-padded to ``width`` (rows longer than it keep their last tokens)."""
        chunk = self._chunk()
        if chunk and len(rows) > chunk:
            return np.concatenate([self.run_rows(rows[s : s + chunk], width) for s in range(0, len(rows), chunk)])
        slot = self._acquire((self._batch_size(len(rows)), int(width)))
        try:
            ids, mask = slot.host_ids, slot.host_mask
            ids.fill(self.pad_id)
            mask.fill(0)
            for i, r in enumerate(rows):
                n = min(len(r), width)
                if n:
                    ids[i, :n] = r[len(r) - n :]
                    mask[i, :n] = 1
            self._fill_padding(ids, mask, len(rows))
            return self._run(slot, len(rows))
        finally:
            self._release(slot)

    def run_arrays(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Logits for already padded ``input_ids``/``attention_mask`` matrices (the public ``Scorer.run``)."""
        n, width = ids.shape
        chunk = self._chunk()
        if chunk and n > chunk:
            return np.concatenate([self.run_arrays(ids[s : s + chunk], mask[s : s + chunk]) for s in range(0, n, chunk)])
        slot = self._acquire((self._batch_size(n), int(width)))
        try:
            slot.host_ids[:n] = ids
            slot.host_mask[:n] = mask
            self._fill_padding(slot.host_ids, slot.host_mask, n)
            return self._run(slot, n)
        finally:
            self._release(slot)

    def _fill_padding(self, ids: np.ndarray, mask: np.ndarray, n: int) -> None:
        """Rows past ``n`` become a lone [END] token: a valid row (never all padding) that is cheap to run."""
        if n < len(ids):
            ids[n:] = self.pad_id
            mask[n:] = 0
            ids[n:, 0] = self.end_id
            mask[n:, 0] = 1

    def _run(self, slot: _Slot, n: int) -> np.ndarray:
        if self.device == "cuda":  # pinned host -> device, synchronous, before the run is queued
            slot.dev_ids.update_inplace(slot.host_ids)
            slot.dev_mask.update_inplace(slot.host_mask)
        self.session.run_with_iobinding(slot.binding)
        self.runs += 1
        if slot.host_out is not None:
            logits = slot.host_out[:n].copy()  # the buffer is reused by the next batch of this shape
        elif slot.out is not None:
            logits = slot.out.numpy()[:n]  # the one device -> host copy
        else:
            logits = slot.binding.copy_outputs_to_cpu()[0][:n]
        return logits.astype(np.float32, copy=False)
