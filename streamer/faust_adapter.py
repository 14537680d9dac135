"""What the Faust engine needs from faust-streaming beyond its public API, in one place.

- Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` hard-coded. A
  broker that holds a fetch for the whole wait when no data is there (the embedded
  one does) then adds up to 1.5 s to an idle worker's latency; the worker's
  ``fetch_max_wait_ms`` setting is applied to that consumer here
  (:func:`use_fetch_max_wait`).
- A no-op monitor (:class:`QuietMonitor`): Faust's default monitor does bookkeeping for
  every message and event (counters, dict updates, timestamps) that the worker's own
  Prometheus metrics already cover.
"""

from __future__ import annotations

import types
from typing import Any

from faust.sensors.monitor import Monitor

from streamer.kafka_adapter import set_fetch_max_wait


def use_fetch_max_wait(app: Any, fetch_max_wait_ms: int) -> None:
    """Make ``app``'s consumer thread build its aiokafka consumer with ``fetch_max_wait_ms``."""
    thread = app.consumer._thread  # noqa: SLF001 - Faust's consumer thread, which creates the aiokafka consumer on start
    original = thread._create_worker_consumer  # noqa: SLF001

    def create(self: Any, transport: Any) -> Any:
        consumer = original(transport)
        set_fetch_max_wait(consumer, fetch_max_wait_ms)
        return consumer

    thread._create_worker_consumer = types.MethodType(create, thread)  # noqa: SLF001


class QuietMonitor(Monitor):
    """Faust's monitor without its per-message and per-event bookkeeping (the worker exports its own metrics)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass
