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

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from consumer.tools.broker import stop_processes
from consumer.topics import ensure_topics
from predictor.runtime import SessionSettings
from training.generators import realistic

LIVE_LINGER_MS = 2


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
    """Send at `rate`/s; each message's record timestamp by (key, event ts)."""
    # agents batch for a few ms like any Kafka producer (Java's default linger is 5 ms);
    # the record timestamp is taken before that wait, so it counts in the latency
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LIVE_LINGER_MS)
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        for n, (key, value) in enumerate(messages):
            delay = started + n / rate - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value, key=key))
        return {(key, orjson.loads(value)["ts"]): (await f).timestamp
                for (key, value), f in zip(messages, futures, strict=True)}
    finally:
        await producer.stop()


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
