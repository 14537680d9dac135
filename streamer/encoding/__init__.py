"""Event -> features -> text: the one encoding used by training and by the worker.

Each kind has a module here (``transactions``, ``sensors``) that is imported by
``models/`` for training and by the worker for scoring, so the model never sees a
feature computed two different ways (no train/serve skew). Nothing here imports
torch.

Every encoding module defines:

- ``KIND`` ("transaction" or "sensor") and ``ENCODING_VERSION`` (a string stored in
  the bundle's card; the worker refuses a bundle whose version it does not know), and
  optionally ``READS``: older versions whose cards it still scores exactly as they were.
- ``record(event) -> dict``: the compact, JSON-serializable summary kept in the
  entity's window (the worker adds ``o``, the source offset).
- ``check(event, card) -> str | None``: a rejection reason for an event that this
  bundle cannot score truthfully (for example a sensor name with no fitted
  normalization), else None.
- ``features(event, window, card) -> dict``: named features of the newest event
  in the context of ``window`` (previous records, oldest first, newest excluded).
- ``text(event, window, feats) -> str``: whitespace-separated words, oldest
  context first and the newest event last (left truncation drops old context).
- ``vector(feats) -> list[float]`` and ``FEATURE_NAMES``: the same features as
  numbers, for the tree and streaming baselines.
- ``reasons(feats, detail) -> list[str]``: short human-readable reasons for an alert; ``detail`` is
  what the scorer said about the event (``Scored.details``; None for the token models).
- optionally ``model_input(event, window, feats)``: what the scorer takes when it is not ``text``'s
  words (a numeric model's window).
"""

from __future__ import annotations

from types import ModuleType


def for_kind(kind: str) -> ModuleType:
    """The encoding module for a bundle or event kind."""
    if kind == "transaction":
        from streamer.encoding import transactions

        return transactions
    if kind == "sensor":
        from streamer.encoding import sensors

        return sensors
    raise ValueError(f"unknown kind {kind!r}: expected 'transaction' or 'sensor'")


def reads(encoding: ModuleType, version: str | None) -> bool:
    """Whether ``encoding`` scores cards of ``version``: its own, or an older one it lists in ``READS``."""
    return version in (encoding.ENCODING_VERSION, *getattr(encoding, "READS", ()))
