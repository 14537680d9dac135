"""Per-entity window state: the in-memory store, its changelog records, and the restore from them.

- ``store``: :class:`WindowStore`, windows by source partition with dirty tracking and the
  records kept for exact replays, and the changelog record format;
- ``restore``: :func:`restore_windows`, reading a changelog's partitions back into a store
  when the worker is assigned them.

The pure windowing functions (push, context) are in ``streamer.windows``.
"""

from streamer.state.store import MAX_TAIL, WindowStore, decode_state, decode_window, encode_state, encode_window

__all__ = ["MAX_TAIL", "WindowStore", "decode_state", "decode_window", "encode_state", "encode_window"]
