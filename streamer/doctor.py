"""``streamer doctor``: check what the worker needs and say what to fix."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import Callable

from streamer.settings import Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"


def _line(status: str, what: str, detail: str) -> str:
    mark = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "FAIL": "[bold red]FAIL[/]"}[status]
    return f"{mark} {what}: {detail}"


async def _kafka_checks(settings: Settings) -> list[tuple[str, str, str]]:
    from aiokafka.admin import AIOKafkaAdminClient

    out = []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.brokers, request_timeout_ms=5000, **settings.kafka_security())
    try:
        await asyncio.wait_for(admin.start(), 8)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return [(FAIL, "broker", f"cannot reach {settings.brokers} ({type(exc).__name__}: {exc}); start one with `streamer broker` or set --brokers / STREAMER_BROKERS")]
    try:
        out.append((OK, "broker", f"reachable at {settings.brokers}"))
        topics = set(await admin.list_topics())
        for t in (settings.transactions_topic, settings.sensors_topic, settings.scores_topic, settings.alerts_topic, settings.dead_letters_topic):
            if not t:
                continue
            if t in topics:
                desc = await admin.describe_topics([t])
                out.append((OK, f"topic {t}", f"{len(desc[0]['partitions'])} partitions"))
            elif settings.create_topics:
                out.append((WARN, f"topic {t}", "missing; the worker will create it at start-up"))
            else:
                out.append((FAIL, f"topic {t}", "missing and --no-create-topics is set; create it on the cluster"))
    finally:
        await admin.close()
    return out


def _bundle_checks(paths: list[str]) -> list[tuple[str, str, str]]:
    from streamer.bundle import BundleError, load_bundle
    from streamer.scorer import make_scorer

    out = []
    for p in paths:
        try:
            b = load_bundle(p)
            sc = make_scorer(b, "cpu", "fp32", 1)
            probe = sc.probe_inputs()
            secs = sc.score_batch(probe).seconds
            m = b.card.get("metrics", {})
            out.append((OK, f"bundle {p}", f"{b.model_id} ({b.kind}), runs: {len(probe)} rows in {secs * 1000:.1f} ms; variants {sorted((b.card.get('variants') or {}).keys())}; metrics {', '.join(f'{k}={v}' for k, v in list(m.items())[:3] if isinstance(v, (int, float)))}"))
        except BundleError as exc:
            out.append((FAIL, f"bundle {p}", str(exc)))
        except Exception as exc:  # noqa: BLE001
            out.append((FAIL, f"bundle {p}", f"does not run: {type(exc).__name__}: {exc}"))
    return out


def _provider_checks(settings: Settings) -> list[tuple[str, str, str]]:
    import onnxruntime as ort

    out = []
    avail = ort.get_available_providers()
    out.append((OK, "onnxruntime", f"{ort.__version__}, providers {avail}"))
    gpu_visible = shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    if gpu_visible:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip().splitlines()
        out.append((OK, "GPU", "; ".join(gpus)))
        if "CUDAExecutionProvider" not in avail:
            out.append((WARN, "GPU provider", "a GPU is visible but onnxruntime-gpu is not installed: pip install 'streamer[gpu]'"))
        if "TensorrtExecutionProvider" in avail and settings.device == "tensorrt":
            out.append((OK, "TensorRT", "provider available (libnvinfer needed at session time)"))
    else:
        status = WARN if settings.device in ("cuda", "tensorrt") else OK
        out.append((status, "GPU", "none visible; the worker runs on CPU" + (" (but --device asks for a GPU: it will fall back, metered)" if status == WARN else "")))
    return out


def run_doctor(settings: Settings, bundles: list[str], emit: Callable[[str], None] | None = None) -> int:
    """Print one line per check; exit code 1 if any check failed."""
    from rich.console import Console

    from streamer.bundle import DEFAULT_BUNDLES

    emit = emit or Console(highlight=False).print
    paths = bundles or [p for p in (settings.transactions_bundle or str(DEFAULT_BUNDLES["transaction"]), settings.sensors_bundle or str(DEFAULT_BUNDLES["sensor"]))]
    results = asyncio.run(_kafka_checks(settings)) + _bundle_checks(paths) + _provider_checks(settings)
    for r in results:
        emit(_line(*r))
    failed = sum(r[0] == FAIL for r in results)
    emit(f"{len(results)} checks, {failed} failed" if failed else f"{len(results)} checks passed")
    return 1 if failed else 0
