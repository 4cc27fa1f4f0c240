"""The bench's traffic against the embedded broker: the live load is sent at its rate, in
the partitions Kafka's default partitioner picks, stamped as it says; the end-to-end wait
ends only once a group has committed all of its input."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from consumer.tools.bench import load
from consumer.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_the_live_load_is_sent_at_its_rate_in_each_keys_partition_as_stamped(
    kafka_bootstrap: str, topic: str
) -> None:
    await ensure_topics(kafka_bootstrap, (topic,), partitions=4)
    messages = load.events(20, 15, "datacenter")  # 300 events at 1,000/s: 0.3 s
    started_ms = time.time() * 1000.0
    sent = await load.produce_at(kafka_bootstrap, topic, messages, 1000.0)
    elapsed_ms = time.time() * 1000.0 - started_ms
    assert elapsed_ms >= 290  # paced, not all at once
    assert len(sent) == len(messages)
    stamps = list(sent.values())
    assert stamps == sorted(stamps)  # in the order they fell due
    assert stamps[-1] - stamps[0] >= 290 - load.TICK_MS
    records = await load.collect(kafka_bootstrap, topic, len(messages), 60)
    partitioner, every = DefaultPartitioner(), [0, 1, 2, 3]
    for r in records:
        assert r.timestamp == sent[(r.key, orjson.loads(r.value)["ts"])]
        assert r.partition == partitioner(r.key, every, every)


def _idle_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


async def test_the_end_to_end_wait_ends_only_when_the_group_has_committed_the_input(
    kafka_bootstrap: str, topic: str, unique_name: str
) -> None:
    await ensure_topics(kafka_bootstrap, (topic,), partitions=2)
    await load.produce(kafka_bootstrap, topic, load.events(10, 5, "datacenter"))
    group = f"g-{unique_name}"
    service = _idle_process()
    try:
        with pytest.raises(TimeoutError, match=group):  # nothing committed yet
            await load.consumed(kafka_bootstrap, group, topic, 1.0, service)
        reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
        await reader.start()
        try:
            partitions = [TopicPartition(topic, p) for p in (0, 1)]
            reader.assign(partitions)  # commits without joining the group
            ends = await reader.end_offsets(partitions)
            await reader.commit({partitions[0]: OffsetAndMetadata(ends[partitions[0]], "")})
            with pytest.raises(TimeoutError):  # one partition of two
                await load.consumed(kafka_bootstrap, group, topic, 1.0, service)
            waiting = asyncio.create_task(load.consumed(kafka_bootstrap, group, topic, 30.0, service))
            await asyncio.sleep(0.7)
            assert not waiting.done()
            await reader.commit({tp: OffsetAndMetadata(ends[tp], "") for tp in partitions})
            await asyncio.wait_for(waiting, 10)
        finally:
            await reader.stop()
    finally:
        service.kill()
        service.wait()


async def test_the_end_to_end_wait_fails_when_the_service_exits(
    kafka_bootstrap: str, topic: str, unique_name: str
) -> None:
    await ensure_topics(kafka_bootstrap, (topic,), partitions=1)
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        await load.consumed(kafka_bootstrap, f"g-{unique_name}", topic, 30.0, exited)
