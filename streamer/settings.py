"""One settings object for the worker and every command, read from flags and environment.

Each field has a default, an environment variable (``STREAMER_`` + upper-case
name) and a flag (``--name-with-dashes``). Precedence: flag > environment >
default. ``docs/configuration.md`` is generated from this table
(``streamer config --markdown``) and a test keeps it current.

>>> s = Settings.from_env({"STREAMER_MAX_BATCH": "128", "STREAMER_BROKERS": "k1:9092,k2:9092"})
>>> s.max_batch, s.brokers
(128, 'k1:9092,k2:9092')
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping

ENV_PREFIX = "STREAMER_"


def _opt(default: Any, help: str, group: str = "worker", choices: tuple[str, ...] | None = None, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "secret": secret})


@dataclass
class Settings:
    # Kafka
    brokers: str = _opt("127.0.0.1:9092", "Kafka bootstrap servers, HOST:PORT[,...].", "kafka")
    group_id: str = _opt("streamer", "Consumer group id; workers with the same id split the partitions.", "kafka")
    client_id: str = _opt("streamer", "Kafka client id prefix.", "kafka")
    transactions_topic: str = _opt("transactions", "Input topic of transaction events ('' disables).", "topics")
    sensors_topic: str = _opt("sensors", "Input topic of sensor events ('' disables).", "topics")
    scores_topic: str = _opt("scores", "Output topic: one score record per valid event.", "topics")
    alerts_topic: str = _opt("alerts", "Output topic: alerts at or above the bundle's alert threshold.", "topics")
    dead_letters_topic: str = _opt("dead-letters", "Output topic: rejected input messages with the reason.", "topics")
    fetch_max_wait_ms: int = _opt(20, "Longest a fetch waits at the broker for data; bounds idle latency (brokers that do not answer fetches early, like the embedded one, wait this long).", "kafka")
    session_timeout_ms: int = _opt(10000, "Consumer group session timeout: how long a silent member (crashed, frozen) keeps its partitions.", "kafka")
    request_timeout_ms: int = _opt(15000, "Kafka request timeout of the worker's producer and consumer.", "kafka")
    partitions: int = _opt(8, "Partitions for topics the worker or the embedded broker creates.", "topics")
    replication_factor: int = _opt(1, "Replication factor of topics the worker creates (3 on a production cluster).", "topics")
    create_topics: bool = _opt(True, "Create missing topics at start-up (off for clusters where that is not allowed).", "topics")
    security_protocol: str = _opt("PLAINTEXT", "Kafka security protocol.", "security", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    sasl_mechanism: str = _opt("PLAIN", "SASL mechanism.", "security", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    sasl_username: str = _opt("", "SASL user name.", "security")
    sasl_password: str = _opt("", "SASL password (never logged).", "security", secret=True)
    ssl_cafile: str = _opt("", "CA bundle for TLS.", "security")
    ssl_certfile: str = _opt("", "Client certificate for mutual TLS.", "security")
    ssl_keyfile: str = _opt("", "Client key for mutual TLS.", "security")
    # Engine
    engine: str = _opt("direct", "What consumes the input topics: direct (an aiokafka loop, the highest rates) or faust (Faust agents; run as a supervised Faust worker, or with `faust -A streamer.faust_app worker`). Same pipeline, same outputs (docs/architecture.md).", "worker", ("direct", "faust"))
    # Model
    transactions_bundle: str = _opt("", "Transaction model bundle directory (default: the shipped bundle).", "model")
    sensors_bundle: str = _opt("", "Sensor model bundle directory (default: the shipped bundle).", "model")
    device: str = _opt("auto", "Where to run the model: auto (GPU if onnxruntime-gpu can load it), cpu, cuda, tensorrt.", "model", ("auto", "cpu", "cuda", "tensorrt"))
    precision: str = _opt("auto", "Bundle variant: auto (fp16 on GPU, fp32 on CPU), fp32, fp16, int8.", "model", ("auto", "fp32", "fp16", "int8"))
    intra_op_threads: int = _opt(1, "onnxruntime intra-op threads per batch on CPU (0: one per core). Keep intra_op_threads x inflight_batches near the core count: batches in parallel beat threads within a batch (docs/benchmarks.md).", "model")
    trt_cache_dir: str = _opt(".cache/trt", "TensorRT engine cache directory.", "model")
    reload_watch_s: float = _opt(2.0, "Poll the bundle directories this often and hot-reload a changed bundle (0: only on SIGHUP).", "model")
    reload_max_slowdown: float = _opt(2.0, "Refuse a new bundle whose shadow batches run this many times slower than the serving one.", "model")
    reload_shadow_events: int = _opt(256, "Recent events scored by both models before a switch (shadow scoring).", "model")
    # Batching
    max_batch: int = _opt(64, "Largest micro-batch handed to the model.", "batching")
    max_wait_ms: float = _opt(5.0, "Longest time the first event of a batch waits for others.", "batching")
    inflight_batches: int = _opt(3, "Batches scored concurrently (host work overlaps inference; a third batch keeps the model busy while the others stack their windows or wait for the interpreter: docs/benchmarks.md).", "batching")
    queue_events: int = _opt(4096, "Events buffered between the consumer and the model; fetching pauses when full.", "batching")
    # Windows and delivery
    window_events: int = _opt(0, "Events kept per entity window (0: the bundle's trained value).", "windows")
    window_age_s: float = _opt(0.0, "Oldest event kept in a window, seconds (0: the bundle's trained value).", "windows")
    commit_interval_s: float = _opt(1.0, "Checkpoint interval: outputs acknowledged, windows saved, offsets committed.", "delivery")
    max_message_bytes: int = _opt(65536, "Larger input values are dead-lettered as oversized.", "delivery")
    shutdown_timeout_s: float = _opt(20.0, "SIGTERM drains in-flight batches and commits within this bound.", "delivery")
    # Observability
    metrics_port: int = _opt(9108, "Port of /metrics and /healthz (0 disables).", "observability")
    metrics_host: str = _opt("0.0.0.0", "Address the metrics endpoint binds to.", "observability")
    health_stall_s: float = _opt(15.0, "/healthz fails when events wait longer than this without progress.", "observability")
    log_level: str = _opt("INFO", "Log level.", "observability", ("DEBUG", "INFO", "WARNING", "ERROR"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then environment, then explicit overrides (flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in env:
                values[f.name] = _coerce(f.type, env[key], key)
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        s.check()
        return s

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> "Settings":
        names = {f.name for f in fields(cls)}
        return cls.from_env(env, **{k: v for k, v in vars(args).items() if k in names})

    def check(self) -> None:
        """Reject settings that would make the worker misbehave, naming the setting."""
        problems = []
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                problems.append(f"{f.name}={getattr(self, f.name)!r} is not one of {list(choices)}")
        if self.max_batch < 1:
            problems.append("max_batch must be >= 1")
        if self.max_wait_ms < 0:
            problems.append("max_wait_ms must be >= 0")
        if self.inflight_batches < 1:
            problems.append("inflight_batches must be >= 1")
        if self.queue_events < self.max_batch:
            problems.append("queue_events must be >= max_batch")
        if self.partitions < 1:
            problems.append("partitions must be >= 1")
        if self.session_timeout_ms < 1000 or self.request_timeout_ms < 1000:
            problems.append("session_timeout_ms and request_timeout_ms must be >= 1000")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def redacted(self) -> dict[str, Any]:
        """Settings for logs: secrets masked."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = "***" if f.metadata.get("secret") and v else v
        return out

    def kafka_security(self) -> dict[str, Any]:
        """aiokafka keyword arguments for TLS/SASL."""
        kw: dict[str, Any] = {"security_protocol": self.security_protocol}
        if "SSL" in self.security_protocol:
            import ssl

            ctx = ssl.create_default_context(cafile=self.ssl_cafile or None)
            if self.ssl_certfile:
                ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
            kw["ssl_context"] = ctx
        if "SASL" in self.security_protocol:
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username, sasl_plain_password=self.sasl_password)
        return kw


def _coerce(typ: Any, raw: str, where: str) -> Any:
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if typ == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{where}={raw!r}: expected {typ}") from None
    return raw


def add_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...] | None = None) -> None:
    """Add one flag per setting (defaults None, so the environment can fill them)."""
    by_group: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(Settings):
        group = f.metadata["group"]
        if groups is not None and group not in groups:
            continue
        g = by_group.setdefault(group, parser.add_argument_group(group))
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        default = f.default if f.default is not MISSING else None
        help_text = f"{f.metadata['help']} [env {env}; default {default!r}]"
        typ = f.type if isinstance(f.type, str) else f.type.__name__
        if typ == "bool":
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            conv = {"int": int, "float": float}.get(typ, str)
            g.add_argument(flag, dest=f.name, type=conv, default=None, choices=f.metadata.get("choices"), help=help_text)


def reference_markdown() -> str:
    """The configuration reference in docs/, generated so it cannot drift from the code."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `streamer config --markdown` from `streamer/settings.py`; a test fails when this file is stale.",
        "Precedence: command-line flag > environment variable > default.",
        "",
    ]
    current = None
    for f in fields(Settings):
        group = f.metadata["group"]
        if group != current:
            lines += ["", f"## {group}", "", "| flag | environment | default | meaning |", "|---|---|---|---|"]
            current = group
        choices = f.metadata.get("choices")
        meaning = f.metadata["help"] + (f" One of: {', '.join(choices)}." if choices else "")
        default = f.default if f.default != "" else '""'
        lines.append(f"| `--{f.name.replace('_', '-')}` | `{ENV_PREFIX}{f.name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(lines) + "\n"
