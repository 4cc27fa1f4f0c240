"""The embedded broker's CPU over a live stream, every 2 s: produce only, then with one
consumer following the topic (what a fetch costs as the log grows; docs/BENCHMARKS.md,
tenth session).

    .venv/bin/python scripts/broker-growth.py [EVENTS_PER_S] [SECONDS]
"""

import asyncio
import os
import subprocess
import sys

from aiokafka import AIOKafkaConsumer

from consumer.clients import FETCH_MAX_WAIT_MS
from consumer.tools.bench import load
from consumer.tools.broker import EmbeddedBroker
from consumer.topics import ensure_topics

rate = float(sys.argv[1]) if len(sys.argv) > 1 else 10_000
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return sum(int(x) for x in fh.read().split()[13:15])


async def stream(bootstrap: str, pid: int, follow: bool) -> list[int]:
    await ensure_topics(bootstrap, ("growth",), partitions=4)
    reader = AIOKafkaConsumer("growth", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                              fetch_max_wait_ms=FETCH_MAX_WAIT_MS)

    async def follow_topic() -> None:
        await reader.start()
        while True:
            await reader.getmany(timeout_ms=100)

    shares: list[int] = []

    async def sample() -> None:
        before = cpu_ticks(pid)
        while True:
            await asyncio.sleep(2)
            now = cpu_ticks(pid)
            shares.append(round((now - before) / os.sysconf("SC_CLK_TCK") / 2 * 100))
            before = now

    tasks = [asyncio.create_task(sample())] + ([asyncio.create_task(follow_topic())] if follow else [])
    events = load.events(200, int(rate * seconds / 200) + 1, "datacenter")
    await load.produce_at(bootstrap, "growth", events, rate)
    for task in tasks:
        task.cancel()
    await reader.stop()
    return shares


for follow in (False, True):
    with EmbeddedBroker() as broker:
        pid = int(subprocess.check_output(["pgrep", "-n", "-x", "tansu"]))
        shares = asyncio.run(stream(broker.bootstrap, pid, follow))
        print("one consumer following" if follow else "produce only", "- broker CPU, % of a core every 2 s:",
              " ".join(map(str, shares)))
