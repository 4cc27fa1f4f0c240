"""The service's Kafka clients, all made from one connection config (bootstrap, TLS,
SASL: ServiceConfig.kafka_security): the group member that consumes the input, the
producer of predictions and dead letters, and a consumer without a group that reads
history for rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumer.config import ServiceConfig

log = logging.getLogger(__name__)

PRODUCER_BATCH_BYTES = 256 * 1024
#: brokers that do not wake a waiting fetch on new data (Tansu) would otherwise add up to
#: the default 500 ms to every event's latency
FETCH_MAX_WAIT_MS = 20
PRODUCER_LINGER_MS = 2


class Clients(NamedTuple):
    consumer: AIOKafkaConsumer  # the group member
    producer: AIOKafkaProducer
    history: AIOKafkaConsumer  # no group: rebuilds read with it


def make_clients(c: ServiceConfig, bootstrap: str) -> Clients:
    security = c.kafka_security()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=c.group_id,
        group_instance_id=c.group_instance_id,
        client_id="pba-stream",
        enable_auto_commit=False,
        auto_offset_reset=c.start_at,
        max_partition_fetch_bytes=max(1 << 20, c.max_event_bytes * 64),
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        session_timeout_ms=int(c.session_timeout_s * 1000),
        heartbeat_interval_ms=max(100, int(c.session_timeout_s * 1000 / 3)),
        **security,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="pba-stream",
        acks="all",
        linger_ms=PRODUCER_LINGER_MS,
        max_batch_size=PRODUCER_BATCH_BYTES,
        compression_type=None if c.compression == "none" else c.compression,
        enable_idempotence=c.idempotent,
        **security,
    )
    history = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        client_id="pba-stream-rebuild",
        enable_auto_commit=False,
        # reading a partition to its end ends with a fetch that finds nothing new:
        # the broker holds it this long (500 ms by default, per partition read back)
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        **security,
    )
    return Clients(consumer, producer, history)


async def connect(config: ServiceConfig, bootstrap: str, stop: asyncio.Event) -> Clients | None:
    """Started clients, retrying with backoff while the broker is unreachable (no crash
    loop); None when stopped first."""
    delay = 0.5
    while not stop.is_set():
        clients = make_clients(config, bootstrap)
        try:
            await clients.producer.start()
            await clients.history.start()
            await clients.consumer.start()
            return clients
        except KafkaError as exc:
            log.warning("cannot reach Kafka at %s (%s); retrying in %.1f s", bootstrap, exc, delay)
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.stop()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
    return None
