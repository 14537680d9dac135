"""The deployment files are checked against the code they deploy.

No Docker engine or cluster runs here, so compose.yaml, the Dockerfile and the
Kubernetes manifests are checked structurally: every path they name exists,
every STREAMER_* variable is a real setting with a valid value, every port is the
worker's metrics port, every command parses with the real CLI. The Grafana
dashboard (and KEDA's Prometheus query) are checked against a live scrape of a
real worker on the embedded broker: a query naming a metric the worker does not
export fails here rather than as an empty panel in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from dataclasses import fields
from pathlib import Path

import onnxruntime
import orjson
import pytest
import yaml

from streamer.cli import build_parser
from streamer.metrics import Metrics, MetricsServer
from streamer.settings import ENV_PREFIX, Settings, reference_markdown
from streamer.worker import Worker
from streamer.bundle import SEVERITIES
from streamer.validation import REASON_CODES
from tests.conftest import MALFORMED, create, events, send, settings_for, wait_for
from tests.reliability import wait_until, worker_process

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = Settings()
SETTING_ENV = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
CONTRACT_TOPICS = {DEFAULTS.transactions_topic, DEFAULTS.sensors_topic, DEFAULTS.scores_topic, DEFAULTS.alerts_topic, DEFAULTS.dead_letters_topic}
DASHBOARD = ROOT / "deploy/grafana/dashboards/streamer.json"
K8S = ROOT / "deploy/k8s"


# ---------------------------------------------------------------- helpers
def interpolate(value: str) -> str:
    """Compose variable interpolation with every variable unset: ${X:-default} -> default, $$ -> $."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value)
    return value.replace("$$", "$")


def streamer_env(env: dict) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in (env or {}).items() if k.startswith(ENV_PREFIX)}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    """(kind, name) -> manifest, from every YAML file in deploy/k8s."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[(doc["kind"], doc.get("metadata", {}).get("name", path.name))] = doc
    return out


def container_to_host(service: dict, container_path: str) -> Path | None:
    """The repo path a container path comes from, through the service's bind mounts."""
    for vol in service.get("volumes", []):
        src, dst = vol.split(":")[:2]
        if not src.startswith((".", "/")):
            continue  # a named volume
        if container_path == dst or container_path.startswith(dst.rstrip("/") + "/"):
            return (ROOT / src / container_path[len(dst):].lstrip("/")).resolve()
    return None


# ---------------------------------------------------------------- PromQL
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords, labels or variables)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may contain anything
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors, [$__rate_interval]
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before in ".$":
            continue  # 1e3, $variable
        if s[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(0))
    return names


def test_metric_name_parser_finds_metrics_and_nothing_else():
    expr = 'histogram_quantile(0.99, sum by (le, kind) (rate(streamer_end_to_end_seconds_bucket{instance=~"$instance", kind="a b"}[$__rate_interval]))) / on(kind) group_left sum(up) by (kind) > 1e3'
    assert metric_names(expr) == {"streamer_end_to_end_seconds_bucket", "up"}
    assert metric_names("sum(streamer_healthy) and streamer_fetch_paused offset 5m") == {"streamer_healthy", "streamer_fetch_paused"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) for every panel target and template variable query."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p['title']!r}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q or "")
        out.append((f"variable ${var['name']}", m.group(1) if m else q))
    return out


def keda_queries(k8s) -> list[tuple[str, str]]:
    so = k8s[("ScaledObject", "streamer-worker")]
    return [(f"KEDA trigger {t.get('name')}", t["metadata"]["query"]) for t in so["spec"]["triggers"] if t["type"] == "prometheus"]


# ---------------------------------------------------------------- (a) compose
def test_compose_has_the_stack(services):
    assert {"kafka", "topics", "worker", "worker-cpu", "producer", "prometheus", "grafana"} <= set(services)


def test_kafka_runs_in_kraft_mode_without_zookeeper(services):
    kafka = services["kafka"]
    env = {k: interpolate(str(v)) for k, v in kafka["environment"].items()}
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    for name, svc in services.items():
        text = json.dumps(svc).lower()
        assert "zookeeper" not in text, f"service {name} mentions ZooKeeper"
    # the in-network and the host listeners are both advertised, and the host one is published
    advertised = dict(a.split("://") for a in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    published = {p.split(":")[0] for p in kafka["ports"]}
    host_ports = [addr.rsplit(":", 1)[1] for addr in advertised.values() if addr.startswith("localhost:")]
    assert host_ports and set(host_ports) <= published, (advertised, published)
    internal = [addr for addr in advertised.values() if addr.startswith("kafka:")]
    for name in ("worker", "worker-cpu", "producer"):
        assert streamer_env(services[name]["environment"])["STREAMER_BROKERS"] in internal, name


def test_topics_service_creates_the_contract_topics_with_a_partition_count(services):
    script = interpolate(" ".join(services["topics"]["command"]))
    loop = re.search(r"for t in ([^;]+);", script)
    assert loop and set(loop.group(1).split()) == CONTRACT_TOPICS
    assert "--partitions" in script and "--if-not-exists" in script
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "worker-cpu", "producer"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully", name
    # the worker still creates its changelog topics, so topic creation must stay on
    assert Settings.from_env(streamer_env(services["worker"]["environment"])).create_topics


def test_worker_reserves_a_gpu_and_the_cpu_variant_does_not(services):
    gpu, cpu = services["worker"], services["worker-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert Settings.from_env(streamer_env(gpu["environment"])).device in ("cuda", "tensorrt")
    assert gpu["build"]["args"]["VARIANT"] == "gpu"
    assert "cpu" in cpu["profiles"] and "deploy" not in cpu
    assert Settings.from_env(streamer_env(cpu["environment"])).device == "cpu"
    assert cpu["build"]["args"]["VARIANT"] == "cpu"


def test_every_streamer_variable_is_a_real_setting_with_a_valid_value(services):
    for name, svc in services.items():
        env = streamer_env(svc.get("environment"))
        unknown = set(env) - SETTING_ENV
        assert not unknown, f"service {name}: {sorted(unknown)} are not settings (streamer/settings.py)"
        Settings.from_env(env)  # raises on a value the worker would refuse


def test_commands_parse_with_the_real_cli(services):
    parser = build_parser()
    for name in ("worker", "worker-cpu", "producer"):
        argv = [interpolate(a) for a in services[name]["command"]]
        args = parser.parse_args(argv)  # SystemExit on an unknown flag or command
        assert args.command == argv[0]
    produce = parser.parse_args([interpolate(a) for a in services["producer"]["command"]])
    assert produce.kind == "transactions" and produce.rate > 0


def test_ports_match_the_metrics_port_setting(services):
    port = DEFAULTS.metrics_port
    for name in ("worker", "worker-cpu"):
        svc = services[name]
        assert int(Settings.from_env(streamer_env(svc["environment"])).metrics_port) == port
        assert [p.rsplit(":", 1)[1] for p in svc["ports"]] == [str(port)], name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.M)
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert {t.split(":")[0] for t in targets} == {"worker", "worker-cpu"}
    assert {int(t.split(":")[1]) for t in targets} == {port}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in prom["scrape_configs"])


def test_every_path_compose_references_exists(services):
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: dockerfile"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")):
                assert (ROOT / src).exists(), f"{name}: bind mount {src} does not exist"
    # paths given to programs inside containers resolve, through the mounts, to repo files
    prom_cfg = next(a.split("=", 1)[1] for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    assert container_to_host(services["prometheus"], prom_cfg).is_file()
    grafana = services["grafana"]
    home = container_to_host(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == DASHBOARD.resolve()
    provisioning = container_to_host(grafana, "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards/streamer.yml").read_text())["providers"]
    for prov in providers:
        assert container_to_host(grafana, prov["options"]["path"]) == DASHBOARD.parent.resolve()


def test_grafana_datasource_is_the_one_the_dashboard_uses(services):
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    uids = {d["uid"] for d in ds}
    assert any(d["url"] == "http://prometheus:9090" for d in ds) and "9090" in " ".join(services["prometheus"]["ports"])
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] in uids for p in panels)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dash["panels"])


def test_dockerfile_installs_the_worker_without_torch_and_has_a_gpu_variant():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert "pip install ." in text and 'pip install ".[gpu]"' in text
    assert "torch" not in re.sub(r"#.*", "", text) and "[train" not in text and "[dev" not in text
    assert re.search(r'^ENTRYPOINT \["streamer"\]', text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for src in line.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} missing"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^gpu = \[", pyproject, re.M), "the gpu extra the image installs"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# ---------------------------------------------------------------- (b) Kubernetes
def test_kustomization_lists_every_manifest_but_the_example_secret(k8s):
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    assert all((K8S / r).is_file() for r in listed)
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}


def _worker(k8s) -> tuple[dict, dict, dict]:
    dep = k8s[("Deployment", "streamer-worker")]
    pod = dep["spec"]["template"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "worker")
    return dep, pod, container


def _config(k8s) -> dict[str, str]:
    _, _, container = _worker(k8s)
    names = [s["configMapRef"]["name"] for s in container["envFrom"]]
    assert len(names) == 1
    return k8s[("ConfigMap", names[0])]["data"]


def test_configmap_holds_real_settings_and_no_secrets(k8s):
    data = _config(k8s)
    assert set(data) <= SETTING_ENV, sorted(set(data) - SETTING_ENV)
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    Settings.from_env(data)
    assert "STREAMER_SASL_PASSWORD" not in data


def test_probes_hit_healthz_on_the_metrics_port(k8s):
    _, pod, c = _worker(k8s)
    port = int(Settings.from_env(_config(k8s)).metrics_port)
    assert port == DEFAULTS.metrics_port
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named["metrics"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert named.get(get["port"], get["port"]) == port, probe
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port and ann["prometheus.io/path"] == "/metrics"


def test_worker_gets_a_gpu_the_password_from_a_secret_and_time_to_drain(k8s):
    _, pod, c = _worker(k8s)
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    env = {e["name"]: e for e in c.get("env", [])}
    assert set(env) <= SETTING_ENV
    ref = env["STREAMER_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"] and "value" not in env["STREAMER_SASL_PASSWORD"]
    settings = Settings.from_env(_config(k8s))
    assert "SASL" in settings.security_protocol
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s


def test_podmonitor_and_pdb_select_the_worker_pods(k8s):
    _, pod, c = _worker(k8s)
    labels = pod["metadata"]["labels"]
    pm = k8s[("PodMonitor", "streamer-worker")]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in c["ports"]}
    assert all(ep["port"] in ports and ep["path"] == "/metrics" for ep in pm["spec"]["podMetricsEndpoints"])
    pdb = k8s[("PodDisruptionBudget", "streamer-worker")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}  # the Kafka scaler's names


def test_keda_scales_the_worker_on_the_groups_lag_of_the_input_topics(k8s):
    dep, _, c = _worker(k8s)
    s = Settings.from_env(_config(k8s))
    so = k8s[("ScaledObject", "streamer-worker")]["spec"]
    assert so["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert "replicas" not in dep["spec"], "KEDA owns the replica count"
    kafka = [t for t in so["triggers"] if t["type"] == "kafka"]
    assert {t["metadata"]["topic"] for t in kafka} == {s.transactions_topic, s.sensors_topic} - {""}
    secret = c["env"][[e["name"] for e in c["env"]].index("STREAMER_SASL_PASSWORD")]["valueFrom"]["secretKeyRef"]["name"]
    for t in kafka:
        md = t["metadata"]
        assert md["consumerGroup"] == s.group_id and md["bootstrapServers"] == s.brokers
        assert int(md["lagThreshold"]) > 0
        assert md["sasl"] == KEDA_SASL[s.sasl_mechanism], "KEDA must authenticate like the worker"
        assert (md.get("tls") == "enable") == ("SSL" in s.security_protocol)
        auth = k8s[("TriggerAuthentication", t["authenticationRef"]["name"])]
        assert {r["name"] for r in auth["spec"]["secretTargetRef"]} == {secret}
    assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"] <= s.partitions, "more workers than partitions sit idle"


# ---------------------------------------------------------------- (c) dashboard vs a live worker
# Series that exist only on a GPU machine; the scrape must still declare the family
# (HELP/TYPE) with the queried sample name. The test below provokes every other
# conditional series for real: a CPU-only machine asked for CUDA falls back (metered),
# and touching the bundle directory makes the worker hot-reload it.
GPU_ONLY = {"streamer_gpu_utilization_ratio"}


def parse_exposition(text: str) -> tuple[set[str], dict[str, str]]:
    """(sample names with a value, {sample name a declared family would have: its type})."""
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    declared = {}
    for name, typ in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if typ == "counter":
            declared[name if name.endswith("_total") else name + "_total"] = typ
        elif typ == "histogram":
            declared.update({name + s: typ for s in ("_bucket", "_sum", "_count")})
        else:
            declared[name] = typ
    return samples, declared


def test_every_dashboard_and_keda_query_uses_metrics_a_live_worker_exports(broker, topics, tiny_tx_bundle, k8s):
    queries = dashboard_queries() + keda_queries(k8s)
    used = {name: where for where, expr in queries for name in metric_names(expr)}
    assert len(used) >= 15, "the dashboard should cover the worker's metrics"
    valid = [orjson.dumps(e) for e in events("transaction", 40, seed=7)]
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    device = "cpu" if has_cuda else "cuda"  # without onnxruntime-gpu, "cuda" falls back to CPU and counts it
    conditional = GPU_ONLY | ({"streamer_provider_fallback_total"} if has_cuda else set())
    malformed = [raw for raw, _ in MALFORMED[:3]]

    async def scrape_live() -> str:
        await create(broker, topics)
        worker = Worker(settings_for(broker, topics, transactions_bundle=str(tiny_tx_bundle), device=device, reload_watch_s=0.2))
        server = MetricsServer(worker.metrics, worker.health, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{server.port}"
        task = asyncio.create_task(worker.run())
        try:
            await wait_for(lambda: len(worker.assigned) == 4, 30, "partition assignment")
            await send(broker, topics["transactions"], valid + malformed)
            os.utime(tiny_tx_bundle / "card.json")  # the bundle "changed": the watcher reloads it (same model, accepted)
            try:
                await wait_for(lambda: worker.stats.counts["scored"] >= len(valid) and worker.stats.counts["rejected"] >= len(malformed), 60, "events scored and rejected")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: counts {worker.stats.counts}, health {worker.health()}") from None
            wanted = set(used) - conditional
            text = ""
            for _ in range(100):  # lag, windows and commits appear at the next checkpoints
                text = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/metrics", timeout=5).read().decode())
                if wanted <= parse_exposition(text)[0]:
                    break
                await asyncio.sleep(0.1)
            health = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/healthz", timeout=5))
            assert health.status == 200
            return text
        finally:
            worker.stop()
            await task
            server.stop()

    text = asyncio.run(scrape_live())
    samples, declared = parse_exposition(text)
    missing = {n: w for n, w in used.items() if n not in samples and not (n in conditional and n in declared)}
    assert not missing, f"queries use metrics the worker does not export: {missing}"
    assert worker_alerted(text), "the run should have produced alerts, so their series were really checked"
    # counters only make sense as rates: a raw _total on a panel is a bug
    for where, expr in queries:
        for name in metric_names(expr):
            if declared.get(name) == "counter":
                for m in re.finditer(rf"(?<![\w:]){name}(?![\w:])", expr):
                    assert re.search(r"\b(rate|irate|increase)\(\s*$", expr[:m.start()]), f"{where}: counter {name} outside rate()/increase()"
            if name.endswith("_bucket"):
                assert "histogram_quantile" in expr and re.search(r"by \([^)]*\ble\b", expr), f"{where}: {name} without histogram_quantile by le"


def test_dashboard_finds_every_series_before_the_first_event(broker, topics, tiny_tx_bundle, engine, tmp_path, k8s):
    """A fresh worker (either engine) exports every series the dashboard and KEDA query, with the
    configured kind's labels, before any traffic: no panel or alert rule sees an absent series."""
    queries = dashboard_queries() + keda_queries(k8s)
    used = {name: where for where, expr in queries for name in metric_names(expr)}
    topic = topics["transactions"]

    async def scrape_idle() -> dict:
        await create(broker, topics)
        with worker_process(broker, topics, tiny_tx_bundle, engine, tmp_path / "worker.log") as w:
            await wait_until(lambda: len(w.assigned(topic)) == 4, 90, "the partition assignment")
            return w.metrics()

    samples = asyncio.run(scrape_idle())
    names = {n for n, _ in samples}
    missing = {n: w for n, w in used.items() if n not in names and n not in GPU_ONLY}
    assert not missing, f"series absent before the first event: {missing}"
    kind_labelled = {n for (n, ls) in samples if any(k == "kind" for k, _ in ls)}
    for name in set(used) & kind_labelled:
        assert any(n == name and ("kind", "transaction") in ls for (n, ls) in samples), f"{name} has no kind=transaction series"
    assert samples[("streamer_events_in_total", frozenset({("kind", "transaction")}))] == 0, "this scrape must precede all traffic"
    rejected = {dict(ls)["reason"] for (n, ls) in samples if n == "streamer_events_rejected_total"}
    assert rejected == set(REASON_CODES), "every dead-letter reason series exists at zero"
    assert {dict(ls)["severity"] for (n, ls) in samples if n == "streamer_alerts_total"} == set(SEVERITIES)


def worker_alerted(text: str) -> bool:
    return bool(re.search(r'^streamer_alerts_total\{[^}]*severity="\w+"\} [1-9]', text, re.M))


# ---------------------------------------------------------------- (d) docs
def test_configuration_reference_is_current():
    assert (ROOT / "docs/configuration.md").read_text() == reference_markdown(), "regenerate: streamer config --markdown > docs/configuration.md"


def test_operations_doc_explains_every_exported_metric():
    ops = (ROOT / "docs/operations.md").read_text()
    families = {m.name for m in Metrics().registry.collect()}
    sample = {"counter": "{}_total", "histogram": "{}_bucket"}
    for fam in Metrics().registry.collect():
        shown = sample.get(fam.type, "{}").format(fam.name)
        assert f"`{shown}`" in ops, f"docs/operations.md has no row for {shown}"
    assert len(families) >= 20


def test_contract_doc_names_every_output_field():
    from streamer.records import alert_record, dead_letter, score_record

    doc = (ROOT / "docs/contract.md").read_text()
    ev = {"event_id": "e", "ts": 1, "account_id": "a"}
    recs = [score_record(ev, "transaction", 0.5, "m@1", 1, 1.0), alert_record(ev, "transaction", 0.9, "high", 0.5, ["r"], "m@1", 1),
            dead_letter("t", 0, 1, "bad", b"\xff" * 70000)]
    for rec in recs:
        for key in rec:
            assert f"`{key}`" in doc, f"docs/contract.md does not describe the output field {key}"
    assert "-windows`" in doc and "raw_truncated_from" in doc


# ---------------------------------------------------------------- (e) every command has --help
def _command_paths() -> list[list[str]]:
    def walk(parser, prefix):
        out = []
        for action in parser._actions:
            if getattr(action, "choices", None) and hasattr(action, "add_parser"):
                for name, sub in action.choices.items():
                    out.append(prefix + [name])
                    out += walk(sub, prefix + [name])
        return out

    return walk(build_parser(), [])


def test_readme_lists_every_command():
    top = {p[0] for p in _command_paths()}
    lists = [m for m in re.findall(r"`streamer ([a-z| -]+)`", (ROOT / "README.md").read_text()) if "|" in m]
    assert lists, "README has no `streamer a | b | ...` command list"
    assert {c.strip() for c in lists[0].split("|")} == top


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_help_exits_zero(path):
    exe = Path(sys.executable).with_name("streamer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "streamer.cli"]
    out = subprocess.run(cmd + path + ["--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{shlex.join(path)} --help: {out.stderr[-500:]}"
    assert out.stdout.startswith("usage: streamer " + " ".join(path))
