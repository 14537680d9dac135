"""Prometheus metrics and the /metrics + /healthz endpoint.

Metric names are part of the operator contract: the Grafana dashboard in
deploy/grafana and docs/operations.md refer to them, and a test checks the
dashboard against a live scrape. Labels never carry entity ids, card numbers or
secrets: only kinds, topics, partitions, reasons, severities, models, providers.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streamer.bundle import SEVERITIES
from streamer.validation import REASON_CODES

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """All worker metrics on one registry (one per worker, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.events_in = Counter("streamer_events_in", "Input messages consumed.", ["kind"], registry=r)
        self.events_scored = Counter("streamer_events_scored", "Events scored and published.", ["kind"], registry=r)
        self.events_rejected = Counter("streamer_events_rejected", "Input messages rejected to dead-letters.", ["kind", "reason"], registry=r)
        self.alerts = Counter("streamer_alerts", "Alerts published.", ["kind", "severity"], registry=r)
        self.batch_size = Histogram("streamer_batch_size", "Events per model batch.", ["kind"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("streamer_queue_wait_seconds", "Time from receipt until the event's batch starts scoring.", ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("streamer_inference_seconds", "Model time per batch (tokenize + run).", ["kind"], buckets=FAST_BUCKETS, registry=r)
        self.end_to_end = Histogram("streamer_end_to_end_seconds", "From the worker's receipt of an event to publication of its score.", ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("streamer_consumer_lag", "Messages behind the end of the partition.", ["topic", "partition"], registry=r)
        self.queue_depth = Gauge("streamer_queue_depth", "Events received but not yet published.", registry=r)
        self.model_info = Gauge("streamer_model_info", "The serving model (value 1).", ["kind", "model", "provider", "precision"], registry=r)
        self.provider_fallback = Counter("streamer_provider_fallback", "Times a requested GPU provider could not load and CPU was used.", ["kind", "requested", "reason"], registry=r)
        self.model_busy = Counter("streamer_model_busy_seconds", "Seconds the model spent running batches (rate() = utilisation).", ["kind", "provider"], registry=r)
        self.gpu_utilization = Gauge("streamer_gpu_utilization_ratio", "GPU utilisation reported by NVML (absent without a GPU).", ["gpu"], registry=r)
        self.commits = Counter("streamer_commits", "Offset commits after outputs were acknowledged.", registry=r)
        self.commit_failures = Counter("streamer_commit_failures", "Checkpoints that failed (outputs not acknowledged or commit refused).", registry=r)
        self.reconnects = Counter("streamer_reconnects", "Times the pipeline restarted its Kafka clients after an error.", registry=r)
        self.paused = Gauge("streamer_fetch_paused", "1 while fetching is paused because the queue is full (backpressure).", registry=r)
        self.healthy = Gauge("streamer_healthy", "1 when the worker can consume and score.", registry=r)
        self.reloads = Counter("streamer_model_reloads", "Model hot-reload attempts.", ["kind", "result"], registry=r)
        self.windows = Gauge("streamer_windows", "Entity windows held in memory.", ["kind"], registry=r)
        self.restored = Counter("streamer_windows_restored", "Windows restored from the changelog.", ["kind"], registry=r)

    def init_series(self, lanes: Mapping[str, Any]) -> None:
        """Create every labelled series of the configured kinds at zero, before the first event.

        Why: a Prometheus series that was never touched does not exist, so a fresh worker's
        dashboard shows "no data" and an alert rule on ``rate(...)`` or ``absent(...)`` misfires
        until traffic happens to create it. ``lanes`` maps kind to an object with the serving
        ``scorer`` and ``bundle`` (a :class:`streamer.lane.Lane`).
        """
        for kind, lane in lanes.items():
            for family in (self.events_in, self.events_scored, self.restored, self.batch_size, self.queue_wait, self.inference, self.end_to_end):
                family.labels(kind)
            self.windows.labels(kind).set(0)
            for reason in REASON_CODES:
                self.events_rejected.labels(kind, reason)
            for severity in SEVERITIES:
                self.alerts.labels(kind, severity)
            for result in ("accepted", "refused"):
                self.reloads.labels(kind, result)
            scorer = lane.scorer
            self.model_busy.labels(kind, scorer.provider)
            choice = getattr(scorer, "choice", None)
            if choice is not None:
                labels = choice.metric_labels()
                self.provider_fallback.labels(kind, labels["requested"], labels["reason"])

    def model_changed(self, kind: str, old_model: str, old_scorer: Any, new_model: str, new_scorer: Any) -> None:
        """A hot reload: the info series moves to the new model (the old one is removed, not left at 1)."""
        try:
            self.model_info.remove(kind, old_model, old_scorer.provider, old_scorer.precision)
        except KeyError:
            pass
        self.model_info.labels(kind, new_model, new_scorer.provider, new_scorer.precision).set(1)
        self.model_busy.labels(kind, new_scorer.provider)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """/metrics and /healthz on a background thread (the event loop stays free)."""

    def __init__(self, metrics: Metrics, health: Callable[[], tuple[bool, str]], host: str = "0.0.0.0", port: int = 9108):
        self.metrics, self.health = metrics, health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.startswith("/metrics"):
                    body, ctype, code = outer.metrics.scrape(), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/healthz"):
                    ok, why = outer.health()
                    body, ctype, code = (why + "\n").encode(), "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"see /metrics and /healthz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def poll_gpu(metrics: Metrics, stop: threading.Event, every_s: float = 2.0) -> None:
    """Export NVML utilisation when pynvml and a GPU exist; silently absent otherwise."""
    try:
        import pynvml  # type: ignore

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return
    while not stop.wait(every_s):
        for i, h in enumerate(handles):
            metrics.gpu_utilization.labels(str(i)).set(pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
    time.sleep(0)
