"""Seeded synthetic event generators (no torch): used by ``streamer produce`` and by training.

Each kind has a module (``transactions``, ``sensors``) exposing
``generate(n_events, seed, ...) -> Iterator[dict]`` that yields contract-valid
events in time order, each with a ground-truth ``label`` (0/1).
"""

from __future__ import annotations

from types import ModuleType


def for_kind(kind: str) -> ModuleType:
    """The generator module for an event kind."""
    if kind == "transaction":
        from streamer.synth import transactions

        return transactions
    if kind == "sensor":
        from streamer.synth import sensors

        return sensors
    raise ValueError(f"unknown kind {kind!r}: expected 'transaction' or 'sensor'")
