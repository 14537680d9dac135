"""Everything the direct engine needs from aiokafka that its public API does not give, in one place.

aiokafka is a good client, but three things the worker relies on are not public:

- committing *only as the group member that read the offsets* (``commit_in_generation``):
  ``consumer.commit()`` retries with whatever membership the consumer holds by then;
- stopping a client without a stray ``CancelledError`` ending the caller (``stop_client``,
  aio-libs/aiokafka#647);
- the consumer's fetch position without a round trip, for the lag gauge (``position``), and a
  cheap broker round trip that proves the coordinator is reachable (``round_trip``).

Each use of a private attribute is here, named and explained; when aiokafka changes, this
module and ``tests/test_kafka_adapter.py`` are what to look at. The clients themselves are
built here too (``new_consumer``, ``new_producer``), from the one settings object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.settings import Settings

log = logging.getLogger("streamer.kafka")

Membership = tuple[int, str]


def quiet_client_logs() -> None:
    """Pin aiokafka's logger at ERROR whatever the worker's log level.

    At DEBUG it logs every message's key and value (account ids, amounts) and costs
    about 10 us per output; both engines and every command call this.
    """
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


def client_kwargs(s: Settings) -> dict[str, Any]:
    """Bootstrap servers, client id and TLS/SASL: what every client of the worker shares."""
    return {"bootstrap_servers": s.brokers, "client_id": s.client_id, **s.kafka_security()}


def new_producer(s: Settings) -> AIOKafkaProducer:
    """The output producer: every record acknowledged by all in-sync replicas before it counts."""
    return AIOKafkaProducer(
        **client_kwargs(s), acks="all", linger_ms=2, max_batch_size=256 * 1024, max_request_size=2 * 1024 * 1024,
        request_timeout_ms=s.request_timeout_ms, enable_idempotence=False,
    )


def new_consumer(s: Settings) -> AIOKafkaConsumer:
    """The group consumer: no auto-commit (the checkpoint commits), earliest on a new group."""
    return AIOKafkaConsumer(
        **client_kwargs(s), group_id=s.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=min(1000, s.session_timeout_ms // 3), max_poll_interval_ms=300000,
        max_partition_fetch_bytes=1 << 20, request_timeout_ms=s.request_timeout_ms, fetch_max_wait_ms=s.fetch_max_wait_ms,
    )


async def stop_client(client: Any, timeout: float) -> None:
    """Stop an aiokafka consumer or producer within ``timeout``; never raises unless this task is being cancelled.

    Why: stopping a client is cleanup on the way to a restart, and a failure there must not
    end the worker. aiokafka's fetcher ``close()`` cancels its pending fetch tasks and awaits
    them without catching the cancellation (aio-libs/aiokafka#647), so a consumer stopped while
    a fetch sits in its retry back-off (after a request timed out on a frozen broker) raises
    ``CancelledError`` into the caller although nobody cancelled the caller. Propagated, that
    ended the worker as if it had been cancelled: no restart, /healthz at 503 for good.
    The close is left half done then, so the client's connections are closed here.
    """
    name = type(client).__name__
    try:
        await asyncio.wait_for(client.stop(), timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # a real cancellation of this task
        log.warning("%s.stop() raised a stray CancelledError (a pending fetch was cancelled); closing its connections", name)
        inner = getattr(client, "_client", None)  # private: the half-stopped client's connection pool
        if inner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(inner.close(), timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup: the restart that follows reconnects anyway
        log.warning("%s did not stop cleanly: %r", name, exc)


def membership(consumer: AIOKafkaConsumer) -> Membership | None:
    """(generation, member id) of the consumer in its group now; None without a group coordinator."""
    coord = getattr(consumer, "_coordinator", None)  # private: aiokafka exposes no membership
    return None if coord is None else (coord.generation, coord.member_id)


async def commit_in_generation(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                               member: Membership | None = None) -> bool:
    """Commit ``offsets`` once, as the group member that read them; False (nothing sent) otherwise.

    ``consumer.commit()`` retries a failed request after finding the coordinator again, and the
    retry goes out with whatever membership the consumer holds by then: -1 mid re-join (a
    standalone commit, which brokers accept into a group they no longer know) or the new
    group's. After a broker restart with its data gone, that wrote the old log's offsets into
    the new, empty group; the re-joined consumer started at them and skipped every new record
    below (reproduced with the embedded broker). Here the membership the offsets were read
    under (``member``, from :func:`membership`; default: the current one) must still hold when
    the one request is built, and a retriable failure returns False: the next checkpoint commits.
    """
    from aiokafka import errors as kerr
    from aiokafka.structs import OffsetAndMetadata

    coord = consumer._coordinator  # noqa: SLF001 - aiokafka has no public "commit only as this member"
    if coord is None:
        return False
    member = membership(consumer) if member is None else member
    await coord.ensure_coordinator_known()
    async with coord._commit_lock:  # noqa: SLF001 - the lock aiokafka's own commits take
        subscription = consumer._subscription.subscription  # noqa: SLF001
        assignment = subscription.assignment if subscription is not None else None
        if (assignment is None or member is None or member[0] < 0 or membership(consumer) != member
                or any(tp not in assignment.tps for tp in offsets)):
            return False
        try:  # the request is built from the membership checked above, before its first await
            await coord._do_commit_offsets(assignment, {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})  # noqa: SLF001
        except (kerr.UnknownMemberIdError, kerr.IllegalGenerationError, kerr.RebalanceInProgressError) as exc:
            log.info("commit skipped, the group is rebalancing: %r", exc)
            return False
        except kerr.KafkaError as exc:
            if not exc.retriable:
                raise
            log.info("commit deferred to the next checkpoint: %r", exc)
            return False
    return True


def position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The consumer's next fetch offset for ``tp`` without a broker round trip (None when unknown).

    ``consumer.position()`` is a coroutine that may wait for a reset; the lag gauge only needs
    what the fetcher already knows, which is in the private subscription state.
    """
    with contextlib.suppress(Exception):
        state = consumer._subscription.subscription.assignment.state_value(tp)  # noqa: SLF001
        if state is not None and state.has_valid_position:
            return state.position
    return None


async def round_trip(consumer: AIOKafkaConsumer) -> None:
    """One cheap request to the cluster (a metadata fetch): raises when no broker answers."""
    await consumer._client.fetch_all_metadata()  # noqa: SLF001 - the client's own metadata call


class AiokafkaCommitter:
    """The checkpoint's last step for the direct engine: commit as the member that read the offsets."""

    def __init__(self, consumer: AIOKafkaConsumer):
        self.consumer = consumer

    def snapshot(self) -> Membership | None:
        """Taken before the offsets are read: a re-join while outputs flush voids them."""
        return membership(self.consumer)

    async def commit(self, offsets: dict[Any, int], snapshot: Membership | None) -> bool:
        tps = {TopicPartition(tp[0], tp[1]): o for tp, o in offsets.items()}
        return await commit_in_generation(self.consumer, tps, snapshot)

    async def round_trip(self) -> None:
        await round_trip(self.consumer)


def set_fetch_max_wait(consumer: AIOKafkaConsumer, fetch_max_wait_ms: int) -> None:
    """Change a not yet started consumer's fetch wait (its fetcher is built from it at ``start()``)."""
    consumer._fetch_max_wait_ms = fetch_max_wait_ms  # noqa: SLF001 - for consumers built by other code (Faust)


class MetadataProbe:
    """A group-less consumer of its own, for engines whose group consumer is not ours to use.

    It gives a cheap broker round trip (a metadata request) and the end offsets of the
    input partitions, so the Faust engine can tell a consumer that stopped fetching while
    events wait (:mod:`streamer.fetch_watch`) from an idle one. It joins no group and
    reads no records.
    """

    def __init__(self, s: Settings):
        self.consumer = AIOKafkaConsumer(**client_kwargs(s), group_id=None, enable_auto_commit=False, request_timeout_ms=s.request_timeout_ms)
        self.timeout_s = s.request_timeout_ms / 1000.0

    async def start(self) -> None:
        await self.consumer.start()

    async def round_trip(self) -> None:
        await self.consumer.topics()

    async def end_offsets(self, tps: Any) -> dict[tuple[str, int], int]:
        """The next offset to be written, per ``(topic, partition)`` of ``tps``."""
        if not tps:
            return {}
        got = await self.consumer.end_offsets([TopicPartition(tp[0], tp[1]) for tp in tps])
        return {(tp.topic, tp.partition): o for tp, o in got.items()}

    async def close(self) -> None:
        await stop_client(self.consumer, self.timeout_s)
