"""Helpers for the reliability tests (tests/test_reliability_*.py).

A worker as a real subprocess (so it can be SIGKILLed and SIGTERMed), a producer
that remembers where each event landed (partition, offset), a background reader
that collects every output record while the test does other things, and the
group's committed offsets as the broker holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamer.broker import EmbeddedBroker
from streamer.producer import key_of

REPO = Path(__file__).resolve().parents[1]


def worker_cmd(broker: EmbeddedBroker, topics: dict[str, str], bundle: Path, **flags: Any) -> list[str]:
    """``python -m streamer.cli worker ...`` for ``topics`` (the conftest ``topics`` dict)."""
    base = {
        "brokers": broker.bootstrap,
        "group-id": topics["group"],
        "transactions-topic": topics["transactions"],
        "sensors-topic": "",
        "scores-topic": topics["scores"],
        "alerts-topic": topics["alerts"],
        "dead-letters-topic": topics["dead_letters"],
        "bundle": str(bundle),
        "metrics-port": 0,
        "partitions": 4,
        "device": "cpu",
        "intra-op-threads": 1,
        "reload-watch-s": 0,
    }
    base.update({k.replace("_", "-"): v for k, v in flags.items()})
    cmd = [sys.executable, "-m", "streamer.cli", "worker"]
    for k, v in base.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def _running_in_group(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies waiting to be reaped do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


class WorkerProcess:
    """One worker subprocess; its output goes to ``log`` (appended, shared by incarnations).

    With ``metrics_port``, its /metrics and /healthz can be read (:meth:`metrics`, :meth:`assigned`).
    """

    def __init__(self, cmd: list[str], log: Path, metrics_port: int = 0):
        self.metrics_port = metrics_port
        self.log = log
        self._fh = open(log, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.started = time.time()
        # its own process group: a kill reaches the Faust engine's worker child as well as its supervisor
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> float:
        """SIGKILL to the worker's processes; returns a wall-clock time by which all of them were gone.

        Every record this incarnation scored carries an earlier ``scored_at``. (Taking the
        time when the signal was sent, as this did, let the Faust engine's worker child,
        which dies with its supervisor a moment later, score events stamped after it.)
        """
        self._kill_group()
        self._fh.close()
        return time.time()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while _running_in_group(self.proc.pid):  # the group's other processes (a child the supervisor started)
            assert time.monotonic() < deadline, f"worker process group {self.proc.pid} still running 10 s after SIGKILL"
            time.sleep(0.01)

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM; returns (exit code or None if still running after ``timeout``, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        return rc, time.monotonic() - t0

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """The worker's /metrics now ({} when nothing answers): (sample name, labels) -> value."""
        code, text = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return parse_samples(text) if code == 200 else {}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 when absent)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= ls)

    def assigned(self, topic: str) -> set[int]:
        """Partitions of ``topic`` the worker owns with their windows restored (it exports their lag from then on)."""
        return {int(dict(ls)["partition"]) for (n, ls) in self.metrics() if n == "streamer_consumer_lag" and dict(ls).get("topic") == topic}

    def close(self) -> None:
        if self.proc.poll() is None:
            self._kill_group()
        if not self._fh.closed:
            self._fh.close()


@contextlib.contextmanager
def worker_process(broker: EmbeddedBroker, topics: dict[str, str], bundle: Path, engine: str, log: Path, **flags: Any) -> Iterator[WorkerProcess]:
    """A worker subprocess of ``engine`` with /metrics and /healthz on a free port; SIGTERMed (then killed) on exit."""
    from streamer.broker import free_port

    port = free_port()
    w = WorkerProcess(worker_cmd(broker, topics, bundle, engine=engine, metrics_port=port, metrics_host="127.0.0.1", **flags), log, port)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.terminate(30)
        w.close()


def parse_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text exposition -> {(sample name, frozenset of (label, value)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        out[(name, labels)] = float(value)
    return out


async def produce(bootstrap: str, topic: str, values: Iterable[bytes], rate: float = 0.0, key: Any = key_of, max_request_size: int = 1 << 20, record: bool = True) -> list[tuple[int, int]]:
    """Send values (paced at ``rate``/s when > 0); returns (partition, offset) of each, in order (``record``)."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_request_size=max_request_size)
    await p.start()
    where: list[tuple[int, int]] = []
    try:
        values = list(values)
        chunk = 200 if rate <= 0 else max(1, int(rate / 20))
        t0 = time.monotonic()
        for i in range(0, len(values), chunk):
            futs = [await p.send(topic, v, key=key(v)) for v in values[i : i + chunk]]
            for md in await asyncio.gather(*futs):
                if record:
                    where.append((md.partition, md.offset))
            if rate > 0:
                ahead = (i + chunk) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await p.stop()
    return where


class Collector:
    """Reads output topics from the beginning in the background; ``records[topic]`` grows as they arrive."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: dict[str, list[dict]] = {t: [] for t in topics}
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "Collector":
        self._consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4 << 20)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, msgs in batches.items():
                self.records[tp.topic].extend(orjson.loads(m.value) for m in msgs)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until everything in the topics now has been read (position at or past each end offset)."""
        tps = [tp for tp in self._consumer.assignment()]
        ends = await self._consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"collector did not reach the end of {self.topics} within {timeout:.0f}s")
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets on ``topic`` as the broker holds them (missing partitions: 0)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(group, partitions=[TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await admin.close()
    return {p: (got[TopicPartition(topic, p)].offset if TopicPartition(topic, p) in got and got[TopicPartition(topic, p)].offset >= 0 else 0) for p in range(partitions)}


async def wait_until(cond: Any, timeout: float, what: str, every: float = 0.05) -> float:
    """Wait for ``cond()`` with a deadline; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - t0


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (Linux)."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def leak_a_cancellation_on_stop(consumer) -> asyncio.Task:
    """Put ``consumer`` in the state a frozen broker left it in: a fetch task in its retry back-off.

    aiokafka's fetcher ``close()`` cancels and awaits such tasks without catching the
    cancellation (aio-libs/aiokafka#647), so ``consumer.stop()`` then raises ``CancelledError``
    into its caller. That is what, once in a few runs of the frozen-broker test above, ended
    the worker for good after the broker came back (/healthz stuck at 503).
    """
    backoff = asyncio.create_task(asyncio.sleep(3600), name="fetch-in-retry-backoff")
    consumer._fetcher._pending_tasks.add(backoff)  # noqa: SLF001 - the library's own state, as it was seen
    return backoff
