"""The bench's traffic: metric events like an agent's, produced all at once or at a
steady rate, `pba run` in its own process, and its output read back and timed from the
records' own timestamps (so no clock but the broker's is in a figure)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.tools.broker import stop_processes
from consumer.topics import ensure_topics
from predictor.runtime import SessionSettings
from training.generators import realistic

#: how often the live load sends what fell due (the linger of agents' producers)
TICK_MS = 5
_PARTITIONER = DefaultPartitioner()


def events(links: int, per_link: int, mode: str, t0: float = 1.7e9) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(1)
    series = [realistic(mode, per_link, rng).values for _ in range(links)]
    latency = 1.0 if mode == "datacenter" else 80.0
    out = []
    for i in range(per_link):
        for k in range(links):
            link = f"bench-{k:06d}"
            out.append((link.encode(), orjson.dumps({
                "link_id": link, "ts": t0 + i, "bandwidth_mbps": float(series[k][i, 0]),
                "latency_ms": latency})))
    return out


def records(messages: list[tuple[bytes, bytes]]) -> list[ConsumerRecord]:
    return [ConsumerRecord("in", 0, i, 0, 0, k, v, None, len(k), len(v), [])
            for i, (k, v) in enumerate(messages)]


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_at(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]],
                      rate: float) -> dict[tuple[bytes, float], int]:
    """Send at `rate`/s; each message's record timestamp by (key, event ts).

    Agents batch for a few ms like any Kafka producer (Java's default linger is 5 ms):
    every TICK_MS, what fell due since the last tick goes out as one record batch per
    partition. Each record is stamped with the moment it fell due, or one tick before it
    was sent if this generator ran late (the wait of one linger counts in the latency, as
    before a send call; a lag of the generator's own does not). It stands in for agents
    on other hosts, yet runs on the service's cores: it builds the batches itself (each
    key's partition computed once) instead of one producer.send() per message, which
    took a quarter of a core at 12,000 events/s, beside the service it measures."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        every = sorted(await producer.partitions_for(topic))
        place: dict[bytes, int] = {}
        for key, _ in messages:
            if key not in place:
                place[key] = _PARTITIONER(key, every, every)
        stamps = [0] * len(messages)
        futures = []
        started_ms, started = time.time() * 1000.0, time.perf_counter()
        sent = 0
        while sent < len(messages):
            due = min(len(messages), int((time.perf_counter() - started) * rate) + 1)
            # like a producer's linger: the tick's wait counts, a late start of it does not
            not_before = time.time() * 1000.0 - TICK_MS
            batches: dict[int, Any] = {}
            for n in range(sent, due):
                key, value = messages[n]
                stamps[n] = stamp = int(max(started_ms + n * 1000.0 / rate, not_before))
                partition = place[key]
                batch = batches.get(partition)
                if batch is None or batch.append(key=key, value=value, timestamp=stamp) is None:
                    if batch is not None:
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=stamp)
            for partition, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            sent = due
            await asyncio.sleep(TICK_MS / 1000.0)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {(key, orjson.loads(value)["ts"]): stamp
            for (key, value), stamp in zip(messages, stamps, strict=True)}


async def consumed(bootstrap: str, group: str, topic: str, timeout: float,
                   service: subprocess.Popen[bytes]) -> None:
    """Wait until `group` has committed every partition of `topic` to its end (the service
    commits only what its outputs' acknowledgements cover, so its output is complete
    then), asking twice a second: reading the output while the service writes it would
    put a reader's CPU on the cores being measured."""
    watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await watcher.start()
    deadline = time.monotonic() + timeout
    try:
        await watcher.topics()  # the metadata that names the topic's partitions
        partitions = [TopicPartition(topic, p) for p in sorted(watcher.partitions_for_topic(topic) or ())]
        ends = await watcher.end_offsets(partitions)
        while True:
            if service.poll() is not None:
                raise RuntimeError(f"pba run exited with {service.returncode} during the bench")
            committed = [await watcher.committed(tp) for tp in partitions]
            if all(c is not None and c >= ends[tp] for tp, c in zip(partitions, committed, strict=True)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {group} has not consumed {topic} after {timeout:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await watcher.stop()


async def collect(bootstrap: str, topic: str, count: int, timeout: float,
                  service: subprocess.Popen[bytes] | None = None) -> list[ConsumerRecord]:
    """Read `topic` from the start until it holds `count` records (failing if the service
    exits first). Counting the records themselves: Tansu's end offsets are
    not counts."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=200)
    await consumer.start()
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count:
            if service is not None and service.poll() is not None:
                raise RuntimeError(f"pba run exited with {service.returncode} during the bench")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} holds {len(out)} of {count} records after {timeout:.0f} s")
            for recs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


@contextlib.contextmanager
def service(bootstrap: str, run: str, mode: str, settings: SessionSettings,
            members: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    """`pba run --workers members` in its own process, as in production (each member with
    settings' inference threads); stopped with SIGTERM (clean shutdown)."""
    command = [sys.executable, "-m", "consumer.cli", "run", "--bootstrap", bootstrap,
               "--input-topic", f"in-{run}", "--output-topic", f"out-{run}", "--dlq-topic", f"dlq-{run}",
               "--group-id", f"g-{run}", "--mode", mode, "--metrics-port", "0",
               "--precision", settings.precision, "--inference-threads", str(settings.intra_op_threads),
               "--workers", str(members), "--log-level", "WARNING"]
    process = subprocess.Popen(command)
    try:
        yield process
    finally:
        stop_processes([process], 40)


async def topics(bootstrap: str, run: str) -> tuple[str, str]:
    await ensure_topics(bootstrap, (f"in-{run}", f"out-{run}", f"dlq-{run}"), partitions=4)
    return f"in-{run}", f"out-{run}"


def latencies(rate: float, sent: dict[tuple[bytes, float], int],
               records: list[ConsumerRecord]) -> dict[str, float]:
    """Per live event, its output record's timestamp minus its input record's."""
    lat = []
    for r in records:
        t_in = sent.get((r.key, orjson.loads(r.value)["ts"]))
        if t_in is not None:
            lat.append(r.timestamp - t_in)
    ms = np.array(lat, dtype=np.float64)
    return {"rate": rate, "events": len(sent), "measured": len(ms),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}
