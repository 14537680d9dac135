"""Security: TLS/SASL settings reach aiokafka; secrets and account ids never reach logs or metrics.

- ``Settings.kafka_security()`` for SASL_SSL + SCRAM-SHA-512 with a CA and a client
  certificate (mutual TLS), and the keyword arguments the worker gives every
  client it builds (producer, group consumer, changelog reader, admin);
- a worker with a SASL password configured, run against the plaintext embedded
  broker, once with SASL_PLAINTEXT (it cannot log in: it must retry, say why and
  report 503) and once with PLAINTEXT (it scores, alerts and dead-letters): the
  password, the user name and every account id are absent from the logs (DEBUG,
  aiokafka included) and from a /metrics scrape;
- the metrics endpoint listens on the configured address only.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import sys
import time

import orjson
import pytest

from streamer.broker import free_port
from streamer.cli import _setup_logging
from streamer.cli import main as cli_main
from streamer.metrics import Metrics, MetricsServer
from streamer.settings import Settings
from streamer.worker import Worker
from tests.conftest import MALFORMED, create, events, read_until, send, settings_for
from tests.reliability import REPO, http_get, wait_until

PASSWORD = "pw-7Qx!never-log-me"
USERNAME = "svc-fraud-scorer-9f2c"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA and a client certificate signed by it (openssl CLI)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=streamer-test-ca")
    run("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=streamer-client")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.pem", "-days", "1")
    return d


def _sasl_ssl(certs, **kw) -> Settings:
    return Settings.from_env(
        {},
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username=USERNAME, sasl_password=PASSWORD,
        ssl_cafile=str(certs / "ca.pem"), ssl_certfile=str(certs / "client.pem"), ssl_keyfile=str(certs / "client.key"), **kw,
    )


def test_kafka_security_for_sasl_ssl_scram_512_with_mutual_tls(certs):
    kw = _sasl_ssl(certs).kafka_security()
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == USERNAME and kw["sasl_plain_password"] == PASSWORD
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert any("streamer-test-ca" in str(c.get("subject")) for c in ctx.get_ca_certs()), "the configured CA is loaded"
    # plaintext and TLS-only configurations carry no SASL credentials at all
    plain = Settings.from_env({}, sasl_username=USERNAME, sasl_password=PASSWORD).kafka_security()
    assert plain == {"security_protocol": "PLAINTEXT"}
    tls = Settings.from_env({}, security_protocol="SSL", ssl_cafile=str(certs / "ca.pem")).kafka_security()
    assert set(tls) == {"security_protocol", "ssl_context"}
    # the environment path (what a container gets) ends up the same
    env = {"STREAMER_SECURITY_PROTOCOL": "SASL_SSL", "STREAMER_SASL_MECHANISM": "SCRAM-SHA-512", "STREAMER_SASL_USERNAME": USERNAME, "STREAMER_SASL_PASSWORD": PASSWORD, "STREAMER_SSL_CAFILE": str(certs / "ca.pem")}
    from_env = Settings.from_env(env).kafka_security()
    assert from_env["sasl_mechanism"] == "SCRAM-SHA-512" and from_env["sasl_plain_password"] == PASSWORD


def test_faust_engine_gives_faust_and_its_own_clients_the_security_settings(certs, tiny_tx_bundle):
    """The Faust engine's app (consumer, producer) and the clients it builds itself get TLS + SASL too."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streamer.faust_app import FaustEngine
    from streamer.kafka_adapter import client_kwargs

    s = _sasl_ssl(certs, brokers="kafka-1:9093,kafka-2:9093", transactions_bundle=str(tiny_tx_bundle), sensors_topic="", device="cpu", metrics_port=0)
    eng = FaustEngine(s)
    creds = eng.app.conf.broker_credentials
    auth = credentials_to_aiokafka_auth(creds)  # what Faust hands its aiokafka consumer and producer
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == USERNAME and auth["sasl_plain_password"] == PASSWORD
    assert isinstance(auth["ssl_context"], ssl.SSLContext) and auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert [str(u) for u in eng.app.conf.broker] == ["kafka://kafka-1:9093", "kafka://kafka-2:9093"]
    own = client_kwargs(s)  # the changelog reader and the metadata probe
    assert own["security_protocol"] == "SASL_SSL" and own["sasl_plain_password"] == PASSWORD


def test_worker_gives_every_client_the_security_settings(certs, tiny_tx_bundle, monkeypatch):
    """Producer, group consumer, changelog reader and admin clients all get TLS + SASL, and aiokafka accepts them."""
    s = _sasl_ssl(certs, brokers="kafka-1:9093,kafka-2:9093", transactions_bundle=str(tiny_tx_bundle), sensors_topic="", device="cpu", metrics_port=0, reload_watch_s=0)
    made: list[tuple[str, dict]] = []

    class Stop(Exception):
        pass

    def fake(name, real):
        class Fake:
            def __init__(self, *args, **kwargs):
                real(*args, **kwargs)  # aiokafka validates the combination (ssl_context, mechanism, credentials)
                made.append((name, kwargs))

            async def start(self):
                raise Stop

        return Fake

    async def fake_ensure_topics(bootstrap, topics, partitions, security=None, **kw):
        made.append(("ensure_topics", dict(security or {})))

    async def main():
        from streamer import kafka_adapter, lane
        from streamer.state import restore

        monkeypatch.setattr(kafka_adapter, "AIOKafkaProducer", fake("producer", kafka_adapter.AIOKafkaProducer))
        monkeypatch.setattr(kafka_adapter, "AIOKafkaConsumer", fake("consumer", kafka_adapter.AIOKafkaConsumer))
        monkeypatch.setattr(restore, "AIOKafkaConsumer", fake("changelog reader", restore.AIOKafkaConsumer))
        monkeypatch.setattr(lane, "ensure_topics", fake_ensure_topics)
        from streamer import broker as broker_mod

        monkeypatch.setattr(broker_mod, "AIOKafkaAdminClient", fake("admin", broker_mod.AIOKafkaAdminClient))
        w = Worker(s)
        stop, on_state = asyncio.Event(), lambda state: None
        with pytest.raises(Stop):
            await w.engine.run_once(stop, on_state)  # topic creation, then the changelog admin client
        w.s.create_topics = False
        with pytest.raises(Stop):
            await w.engine.run_once(stop, on_state)  # producer and group consumer
        with pytest.raises(Stop):
            await restore.restore_windows(kafka_adapter.client_kwargs(w.s), "cl", [0], w.lanes["transaction"].intake.store)

    asyncio.run(main())
    names = [n for n, _ in made]
    assert {"admin", "producer", "consumer", "changelog reader", "ensure_topics"} <= set(names), names
    for name, kw in made:
        assert kw["security_protocol"] == "SASL_SSL", name
        assert isinstance(kw["ssl_context"], ssl.SSLContext), name
        assert kw["sasl_mechanism"] == "SCRAM-SHA-512" and kw["sasl_plain_username"] == USERNAME and kw["sasl_plain_password"] == PASSWORD, name
    assert names.count("consumer") == 1 and names.count("changelog reader") == 1, "the group consumer and the changelog reader"
    group = next(kw for n, kw in made if n == "consumer" and kw.get("group_id"))
    assert group["bootstrap_servers"] == "kafka-1:9093,kafka-2:9093" and group["enable_auto_commit"] is False


def _secrets_absent(text: str, what: str, account_ids: set[str]) -> None:
    assert PASSWORD not in text, f"the SASL password appears in {what}"
    assert USERNAME not in text, f"the SASL user name appears in {what}"
    leaked = sorted(a for a in account_ids if a in text)
    assert not leaked, f"account ids appear in {what}: {leaked[:5]}"


def test_no_secret_or_account_id_in_logs_or_metrics(broker, topics, tiny_tx_bundle, caplog):
    evs = events("transaction", 1500, seed=111, fraud_rate=0.05, n_accounts=200)
    account_ids = {e["account_id"] for e in evs}
    # malformed messages that carry account ids (they go to dead-letters, never to logs)
    bad = [raw for raw, _ in MALFORMED] + [orjson.dumps({"event_id": "s1", "ts": 1, "account_id": evs[0]["account_id"], "amount": 1, "currency": "EUR"})]
    # What `streamer worker --log-level DEBUG` logs: everything of ours at DEBUG, aiokafka at ERROR
    # (cli._setup_logging pins it: aiokafka's DEBUG output prints every message's key and value).
    aiokafka_level = logging.getLogger("aiokafka").level
    _setup_logging("DEBUG")
    assert logging.getLogger("aiokafka").getEffectiveLevel() >= logging.ERROR
    caplog.set_level(logging.DEBUG)

    async def main():
        await create(broker, topics)
        # 1. SASL against a plaintext listener: cannot log in, keeps retrying, says so without the password
        s1 = settings_for(broker, topics, transactions_bundle=str(tiny_tx_bundle), device="cpu", reload_watch_s=0, log_level="DEBUG",
                          security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username=USERNAME, sasl_password=PASSWORD,
                          request_timeout_ms=3000, session_timeout_ms=6000)
        w1 = Worker(s1)
        server1 = MetricsServer(w1.metrics, w1.health, "127.0.0.1", 0).start()
        t1 = asyncio.create_task(w1.run())
        try:
            await wait_until(lambda: w1.metrics.reconnects._value.get() >= 1, 60, "the SASL worker to give up a first attempt")
            code, why = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server1.port}/healthz")
            scrape1 = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{server1.port}/metrics"))[1]
        finally:
            w1.stop()
            await asyncio.wait_for(t1, 30)
            server1.stop()
        assert code == 503, (code, why)
        # 2. the same credentials configured, plaintext protocol: it runs; nothing of them shows anywhere
        s2 = settings_for(broker, topics, transactions_bundle=str(tiny_tx_bundle), device="cpu", reload_watch_s=0, log_level="DEBUG",
                          sasl_username=USERNAME, sasl_password=PASSWORD)
        w2 = Worker(s2)
        server2 = MetricsServer(w2.metrics, w2.health, "127.0.0.1", 0).start()
        t2 = asyncio.create_task(w2.run())
        try:
            await send(broker, topics["transactions"], [orjson.dumps(e) for e in evs] + bad)
            got = await read_until(broker, [topics["scores"], topics["alerts"], topics["dead_letters"]],
                                   lambda g: len(g[topics["scores"]]) >= len(evs) and len(g[topics["dead_letters"]]) >= len(bad), 90)
            scrape2 = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{server2.port}/metrics"))[1]
        finally:
            w2.stop()
            await t2
            server2.stop()
        return why, scrape1, scrape2, got

    try:
        why, scrape1, scrape2, got = asyncio.run(main())
    finally:
        logging.getLogger("aiokafka").setLevel(aiokafka_level)
    assert got[topics["alerts"]] and len(got[topics["dead_letters"]]) == len(bad), "the run exercised alerts and dead letters"
    logs = caplog.text
    assert "pipeline restarting" in logs and "UnsupportedSaslMechanism" in logs and "restored" in logs
    for text, what in ((logs, "the logs"), (scrape1, "the /metrics scrape (SASL run)"), (scrape2, "the /metrics scrape"), (why, "/healthz")):
        _secrets_absent(text, what, account_ids)
    assert "streamer_events_scored_total" in scrape2 and "streamer_alerts_total" in scrape2 and "streamer_events_rejected_total" in scrape2
    print(f"\nsecurity: {len(caplog.records)} log records (streamer at DEBUG, aiokafka at ERROR as the CLI sets it) and 2 scrapes ({len(scrape1) + len(scrape2):,} bytes): no password, user name or any of {len(account_ids)} account ids; SASL login failure -> /healthz 503: {why.strip()[:120]}")


def test_config_and_startup_log_mask_the_password(capsys, monkeypatch):
    monkeypatch.setenv("STREAMER_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAMER_SASL_USERNAME", USERNAME)
    assert cli_main(["config"]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out and "sasl_password = '***'" in out


def test_metrics_endpoint_binds_the_configured_address_only():
    server = MetricsServer(Metrics(), lambda: (True, "ok"), host="127.0.0.2", port=0).start()
    try:
        assert server.server.server_address[0] == "127.0.0.2"
        assert http_get(f"http://127.0.0.2:{server.port}/healthz")[0] == 200
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", server.port)) != 0, "answers on an address it was not configured for"
    finally:
        server.stop()


def test_worker_command_passes_metrics_host(broker, topics, tiny_tx_bundle, tmp_path):
    """``streamer worker --metrics-host`` reaches the server (checked on a real process)."""
    port = free_port("127.0.0.2")
    cmd = [sys.executable, "-m", "streamer.cli", "worker", "--brokers", broker.bootstrap, "--group-id", topics["group"], "--transactions-topic", topics["transactions"],
           "--sensors-topic", "", "--bundle", str(tiny_tx_bundle), "--device", "cpu", "--metrics-host", "127.0.0.2", "--metrics-port", str(port), "--reload-watch-s", "0"]
    with open(tmp_path / "worker.log", "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while http_get(f"http://127.0.0.2:{port}/metrics")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        proc.terminate()
        proc.wait(30)
