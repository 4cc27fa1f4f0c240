"""`pba tail`: follow the predictions topic, as a readable table or as JSON lines."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer

HEADER = (f"{'link':<28} {'mode':<10} {'source':<8} {'predicted':>12} {'reserve':>12} "
          f"{'conf':>5} {'action':<6} {'age':>7}")
HEADER_EVERY = 25


def format_row(p: dict[str, Any], now: float) -> str:
    age = now - float(p.get("ts", now))
    return (f"{str(p.get('link_id', '?'))[:28]:<28} {p.get('mode', '?'):<10} {p.get('source', '?'):<8} "
            f"{_mbps(p.get('predicted_bandwidth_mbps')):>12} {_mbps(p.get('reserve_mbps')):>12} "
            f"{float(p.get('confidence', 0)):>5.2f} {p.get('allocation', {}).get('action', '?'):<6} "
            f"{_age(age):>7}")


def _mbps(value: Any) -> str:
    v = float(value or 0.0)
    return f"{v / 1000:.2f} Gb/s" if v >= 1000 else f"{v:.1f} Mb/s"


def _age(seconds: float) -> str:
    if abs(seconds) < 120:
        return f"{seconds:.1f}s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


async def tail(
    bootstrap: str,
    topic: str,
    as_json: bool = False,
    from_beginning: bool = False,
    max_messages: int | None = None,
    link: str | None = None,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
    security: dict[str, Any] | None = None,
) -> int:
    """Print predictions until stopped or `max_messages` printed; returns how many."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **(security or {}),
    )
    shown = 0
    try:
        await consumer.start()
        if not as_json:
            print(HEADER, file=out, flush=True)
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if link is not None and record.key != link.encode():
                        continue
                    if as_json:
                        out.write(record.value.decode(errors="replace") + "\n")
                    else:
                        try:
                            prediction = orjson.loads(record.value)
                        except orjson.JSONDecodeError:
                            continue
                        if shown and shown % HEADER_EVERY == 0:
                            print(HEADER, file=out)
                        print(format_row(prediction, time.time()), file=out)
                    shown += 1
                    if max_messages is not None and shown >= max_messages:
                        out.flush()
                        return shown
            out.flush()
    finally:
        await consumer.stop()
    return shown
