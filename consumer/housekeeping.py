"""What the service checks every second beside its work: whether the broker answers
(readiness follows it), the consumer lag per partition, and the output topic's
partition count."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from consumer.metrics import Metrics

log = logging.getLogger(__name__)

BROKER_PROBE_TIMEOUT_S = 2.0


async def broker_answers(consumer: AIOKafkaConsumer, bootstrap: str, answered_before: bool) -> bool:
    """A metadata round trip: a frozen or cut-off broker does not make a waiting fetch
    fail (it just returns nothing), so only an answer shows the broker is there. Says
    so in the log when that changes."""
    try:
        await asyncio.wait_for(consumer.topics(), BROKER_PROBE_TIMEOUT_S)
    except (KafkaError, TimeoutError) as exc:
        if answered_before:
            log.warning("Kafka at %s is not answering (%s); not ready until it does",
                        bootstrap, type(exc).__name__)
        return False
    if not answered_before:
        log.warning("Kafka at %s answers again", bootstrap)
    return True


async def update_lag(consumer: AIOKafkaConsumer, assigned: set[TopicPartition], metrics: Metrics) -> None:
    for tp in list(assigned):
        high = consumer.highwater(tp)
        if high is None:
            continue
        with contextlib.suppress(Exception):
            position = await asyncio.wait_for(consumer.position(tp), 0.5)
            metrics.consumer_lag.labels(str(tp.partition)).set(max(0, high - position))


async def partition_count(producer: AIOKafkaProducer, topic: str) -> int | None:
    """The topic's partition count from the producer's metadata; None when unknown now."""
    with contextlib.suppress(KafkaError, asyncio.TimeoutError):
        return len(await asyncio.wait_for(producer.partitions_for(topic), 5))
    return None
