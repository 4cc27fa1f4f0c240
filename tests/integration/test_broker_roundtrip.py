"""The embedded broker serves what the service relies on: topics, produce, group consume,
commits, and resuming from committed offsets after a consumer restarts."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kafka_support import committed_total

from consumer.tools.broker import answers_metadata

pytestmark = pytest.mark.integration


async def consume(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    """Read `count` messages as a group member, commit them, then leave the group."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=10_000, max_records=count - len(values))
            if not batches:
                break
            for records in batches.values():
                values.extend(r.value for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    return values


async def test_produce_consume_commit_and_resume(kafka_bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i % 5}".encode())
    finally:
        await producer.stop()

    group = f"g-{topic}"
    first = await consume(kafka_bootstrap, topic, group, 12)
    assert len(first) == 12
    rest = await consume(kafka_bootstrap, topic, group, 8)
    assert sorted(first + rest) == sorted(f"m{i}".encode() for i in range(20))

    assert await committed_total(kafka_bootstrap, topic, group) == 20


def test_pba_broker_command_serves_a_plain_client_and_stops_on_sigterm(unique_name: str) -> None:
    from consumer.tools.broker import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        assert answers_metadata("127.0.0.1", port)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    deadline = time.monotonic() + 5
    while answers_metadata("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not answers_metadata("127.0.0.1", port), "broker outlived `pba broker`"


async def test_missing_topics_are_created_with_the_replicas_the_cluster_can_hold(
    kafka_bootstrap: str, unique_name: str
) -> None:
    from consumer.topics import ensure_topics

    names = [f"{kind}-{unique_name}" for kind in ("in", "out", "in")]
    await ensure_topics(kafka_bootstrap, names, partitions=3)
    await ensure_topics(kafka_bootstrap, names, partitions=3)  # existing: left as they are
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        described = {t["topic"]: t for t in await admin.describe_topics(names[:2])}
    finally:
        await admin.close()
    assert set(described) == set(names)
    for topic in described.values():
        assert len(topic["partitions"]) == 3
        assert {len(p["replicas"]) for p in topic["partitions"]} == {min(3, brokers)}
