"""Helpers for tests against the real broker: produce, read back, run the service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.config import ServiceConfig
from consumer.service import Service


@dataclass
class Topics:
    input: str
    output: str
    dlq: str
    group: str


def event(link: str, ts: float, bw: float, latency: float | None = 80.0) -> bytes:
    return orjson.dumps({"link_id": link, "ts": ts, "bandwidth_mbps": bw, "latency_ms": latency})


def link_events(links: int, per_link: int, t0: float = 1_700_000_000.0) -> list[tuple[bytes, bytes]]:
    """Round-robin events: every link's series is a smooth wave, keyed by link id."""
    out = []
    for i in range(per_link):
        for k in range(links):
            link = f"link-{k:03d}"
            out.append((link.encode(), event(link, t0 + i, 100.0 + 10 * k + 5 * ((i % 10) - 5))))
    return out


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]],
                  **client: Any) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **client)
    await producer.start()
    n = 0
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
        n = len(futures)
    finally:
        await producer.stop()
    return n


async def read(bootstrap: str, topic: str, count: int, timeout: float = 60.0,
               settle: float = 1.5, **client: Any) -> list[ConsumerRecord]:
    """Read `count` messages from the start (then `settle` more seconds to catch extras)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, **client)
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500)
            for recs in got.values():
                records.extend(recs)
            if len(records) >= count:
                deadline = min(deadline, time.monotonic() + settle)
    finally:
        await consumer.stop()
    return records


async def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offset on every partition of the topic (0: none), read
    without joining the group."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        await probe.topics()  # metadata of every topic, so its partitions are known
        partitions = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or ())]
        return {tp: await probe.committed(tp) or 0 for tp in partitions}
    finally:
        await probe.stop()


async def committed_total(bootstrap: str, topic: str, group: str) -> int:
    """The group's committed offsets summed: with one message per offset from 0, the
    number of messages it has finished with."""
    return sum((await committed_offsets(bootstrap, topic, group)).values())


async def read_covering(bootstrap: str, topic: str, events: set[tuple[str, float]],
                        timeout: float, settle: float = 2.0) -> list[ConsumerRecord]:
    """Read predictions from the start until every (link, ts) in `events` has one (then
    `settle` more seconds). Counting records is not enough when some are repeats."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord] = []
    left = set(events)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(recs)
                for r in recs:
                    p = orjson.loads(r.value)
                    left.discard((p["link_id"], p["ts"]))
            if not left:
                deadline = min(deadline, time.monotonic() + settle)
    finally:
        await consumer.stop()
    return records


def predictions(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


@contextlib.asynccontextmanager
async def running_service(config: ServiceConfig) -> AsyncIterator[Service]:
    """The service in this process (same event loop), stopped cleanly on exit."""
    service = Service(config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def service_config(bootstrap: str, topics: Topics, **overrides: Any) -> ServiceConfig:
    base: dict[str, Any] = dict(
        bootstrap=bootstrap, input_topic=topics.input, output_topic=topics.output,
        dlq_topic=topics.dlq, group_id=topics.group, metrics_port=0, mode="internet",
    )
    base.update(overrides)
    return ServiceConfig(**base)


@contextlib.contextmanager
def service_process(bootstrap: str, topics: Topics, *extra: str,
                    env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`pba run` as a real process (for signals, kills and restarts). Its stderr goes to a
    file, not a pipe nobody reads (a full pipe would block the service's logging); a
    failure shows its end (service_stderr)."""
    cmd = [sys.executable, "-m", "consumer.cli", "run", "--bootstrap", bootstrap,
           "--input-topic", topics.input, "--output-topic", topics.output, "--dlq-topic", topics.dlq,
           "--group-id", topics.group, "--metrics-port", "0", *extra]
    with tempfile.NamedTemporaryFile(prefix="pba-run-", suffix=".log") as log:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stderr=log)
        _STDERR[proc.pid] = Path(log.name)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            del _STDERR[proc.pid]


_STDERR: dict[int, Path] = {}  # pid -> the file a service_process writes its stderr to


def service_stderr(proc: subprocess.Popen[Any], last: int | None = None) -> str:
    """What a service_process wrote to stderr so far, or its `last` characters ("" for
    other processes). Read through a file object of its own: seeking the one the
    process writes through would move where its next line goes."""
    log = _STDERR.get(proc.pid)
    if log is None:
        return ""
    return log.read_bytes().decode(errors="replace")[-(last or 0):]


def repo_root() -> Path:
    return Path(__file__).parents[2]


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seconds_until_ready(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> float:
    """Poll /readyz until it answers 200; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"service exited with {proc.returncode} before it was ready; "
                                 f"its stderr ends:\n{service_stderr(proc, 4000)}")
        if ready_now(port):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout:.0f} s")


def ready_now(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def simulate_process(bootstrap: str, topic: str, links: int, rate: float, duration: float,
                     bad_rate: float) -> subprocess.Popen[bytes]:
    """`pba simulate` as a real process: a steady stream, with malformed events mixed in."""
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "simulate", "--bootstrap", bootstrap, "--topic", topic,
         "--links", str(links), "--rate", str(rate), "--duration", str(duration),
         "--bad-rate", str(bad_rate), "--regime", "mixed", "--quiet"])


def classify(values: Iterable[bytes | None]) -> tuple[set[tuple[str, float]], list[bytes]]:
    """Input values as the service must see them: valid events by (link, ts), and the
    values that must be dead-lettered."""
    from schemas import EventError, decode_event

    valid: set[tuple[str, float]] = set()
    bad: list[bytes] = []
    for value in values:
        try:
            event = decode_event(value)
        except EventError:
            bad.append(value or b"")
            continue
        valid.add((event.link_id, event.ts))
    return valid, bad
