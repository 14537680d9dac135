"""``streamer demo``: embedded broker + synthetic traffic + worker + a live view, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

from streamer.broker import EmbeddedBroker, ensure_topics, port_open
from streamer.metrics import MetricsServer
from streamer.producer import encode_events, produce, synthetic
from streamer.settings import Settings
from streamer.worker import Worker, install_signal_handlers

log = logging.getLogger("streamer.demo")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def render(worker: Worker, rates: dict[str, float], started: float, bootstrap: str, metrics_port: int) -> Any:
    """The live view: throughput, latency, batch sizes and the latest alerts with reasons."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    lat = list(worker.stats.latency_ms)
    batches = list(worker.stats.batches)
    c = worker.stats.counts
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[b]{rates.get('in', 0):,.0f}[/] events/s in",
        f"[b]{rates.get('scored', 0):,.0f}[/] scored/s",
        f"p50 [b]{_pct(lat, 0.5):.1f}[/] ms  p99 [b]{_pct(lat, 0.99):.1f}[/] ms",
        f"batch avg [b]{(sum(batches) / len(batches)) if batches else 0:.1f}[/] max {max(batches) if batches else 0}",
    )
    head.add_row(f"in {c['in']:,}", f"scored {c['scored']:,}", f"alerts {c['alerts']:,}", f"dead letters {c['rejected']:,}")
    models = ", ".join(f"{lane.bundle.model_id} on {lane.scorer.provider.replace('ExecutionProvider', '')}" for lane in worker.lanes.values())
    alerts = Table(expand=True, show_edge=False)
    for col in ("severity", "kind", "entity", "score", "reasons"):
        alerts.add_column(col, overflow="fold", ratio=4 if col == "reasons" else 1)
    from streamer.tail import SEVERITY_STYLE

    for a in reversed(worker.stats.recent_alerts[-10:]):
        sev = a["severity"]
        alerts.add_row(f"[{SEVERITY_STYLE.get(sev, '')}]{sev}[/]", a["kind"], str(a["entity"]), f"{a['score']:.3f}", "; ".join(a["reasons"]) or "-")
    health = worker.health()
    title = f"streamer demo — broker {bootstrap} — {time.monotonic() - started:.0f}s — {'healthy' if health[0] else health[1]}"
    footer = f"models: {models}   metrics: http://127.0.0.1:{metrics_port}/metrics   Ctrl-C stops" if metrics_port else f"models: {models}   Ctrl-C stops"
    return Panel(Group(head, "", "[b]latest alerts[/]", alerts, "", footer), title=title)


async def run_demo(settings: Settings, rate: float, sensor_rate: float, fraud_rate: float, count: int, duration: float, port: int, seed: int) -> dict[str, int]:
    """Run until Ctrl-C (or ``duration`` seconds); returns the worker's counts."""
    broker = EmbeddedBroker(port=port if port and not port_open("127.0.0.1", port) else 0).start()
    bootstrap = broker.bootstrap
    settings.brokers = bootstrap
    tasks: list[asyncio.Task] = []
    server = None
    worker: Worker | None = None
    try:
        await ensure_topics(bootstrap, [settings.transactions_topic, settings.sensors_topic, settings.scores_topic, settings.alerts_topic, settings.dead_letters_topic], settings.partitions)
        worker = Worker(settings)
        if settings.metrics_port:
            with contextlib.suppress(OSError):
                server = MetricsServer(worker.metrics, worker.health, "127.0.0.1", settings.metrics_port).start()
        install_signal_handlers(worker)
        now = int(time.time() * 1000) - 3_600_000
        tasks.append(asyncio.create_task(worker.run()))
        if settings.transactions_topic and rate > 0:
            tx = encode_events(synthetic("transaction", count, seed, fraud_rate, start_ms=now))
            tasks.append(asyncio.create_task(produce(bootstrap, settings.transactions_topic, tx, rate)))
        if settings.sensors_topic and sensor_rate > 0:
            sn = encode_events(synthetic("sensor", count, seed + 1, start_ms=now))
            tasks.append(asyncio.create_task(produce(bootstrap, settings.sensors_topic, sn, sensor_rate)))
        await _live(worker, bootstrap, server.port if server else 0, duration)
        return dict(worker.stats.counts)
    finally:
        for t in tasks[1:]:
            t.cancel()  # producers first, then the worker drains and commits
        if worker is not None:
            worker.stop()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), settings.shutdown_timeout_s + 10)
        if server:
            server.stop()
        broker.stop()


async def _live(worker: Worker, bootstrap: str, metrics_port: int, duration: float) -> None:
    started = time.monotonic()
    last = dict(worker.stats.counts)
    last_t = started
    rates: dict[str, float] = {}
    interactive = sys.stdout.isatty()

    def tick() -> None:
        nonlocal last, last_t
        t = time.monotonic()
        dt = max(1e-6, t - last_t)
        rates.update({k: (worker.stats.counts[k] - last[k]) / dt for k in ("in", "scored")})
        last, last_t = dict(worker.stats.counts), t

    async def until_stop() -> None:
        # the worker's stop event (set by Ctrl-C / SIGTERM) exists only once its run() started: look it up each time
        while not worker.stopping:
            if duration and time.monotonic() - started >= duration:
                return
            await asyncio.sleep(0.1)

    if interactive:
        from rich.live import Live

        with Live(render(worker, rates, started, bootstrap, metrics_port), refresh_per_second=4, screen=False) as live:
            while True:
                waiter = asyncio.create_task(until_stop())
                done, _ = await asyncio.wait([waiter], timeout=1.0)
                tick()
                live.update(render(worker, rates, started, bootstrap, metrics_port))
                if done:
                    return
    else:
        from rich.console import Console

        console = Console()
        while True:
            waiter = asyncio.create_task(until_stop())
            done, _ = await asyncio.wait([waiter], timeout=2.0)
            tick()
            lat = list(worker.stats.latency_ms)
            c = worker.stats.counts
            console.print(
                f"{time.monotonic() - started:5.0f}s  in {c['in']:,} ({rates.get('in', 0):,.0f}/s)  scored {c['scored']:,}  "
                f"alerts {c['alerts']:,}  dead letters {c['rejected']:,}  p50 {_pct(lat, 0.5):.1f} ms  p99 {_pct(lat, 0.99):.1f} ms"
            )
            for a in worker.stats.recent_alerts[-3:]:
                console.print(f"   [b]{a['severity']}[/] {a['kind']} {a['entity']} {a['score']:.3f}: {'; '.join(a['reasons'])}")
            if done:
                return
