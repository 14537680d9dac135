"""What the demo's live view shows: running counts, recent latencies, batch sizes and alerts.

Prometheus metrics are for dashboards; these are for a human at a terminal, kept
in memory with bounded size, fed by the publisher and the intake.

>>> st = LiveStats()
>>> st.count("in", 3); st.count("scored", 2); st.batch(2, [10.0, 30.0])
>>> st.counts["in"], st.counts["scored"], list(st.latency_ms), list(st.batches)
(3, 2, [10.0, 30.0], [2])
"""

from __future__ import annotations

from collections import deque
from typing import Iterable


class LiveStats:
    """Counters and short histories, one per worker process."""

    def __init__(self, keep_alerts: int = 50):
        self.counts = {"in": 0, "scored": 0, "rejected": 0, "alerts": 0}
        self.recent_alerts: list[dict] = []
        self.latency_ms: deque[float] = deque(maxlen=4096)
        self.batches: deque[int] = deque(maxlen=256)
        self._keep = keep_alerts

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def batch(self, size: int, latencies_ms: Iterable[float]) -> None:
        self.batches.append(size)
        self.latency_ms.extend(latencies_ms)

    def alert(self, alert: dict) -> None:
        self.counts["alerts"] += 1
        self.recent_alerts.append(alert)
        if len(self.recent_alerts) > self._keep:
            del self.recent_alerts[: self._keep // 2]
