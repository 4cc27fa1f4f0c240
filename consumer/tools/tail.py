"""`pba tail`: follow any of the service's topics, as a readable table or as JSON lines.

Each record is shown for what it is: a prediction, a metric event, or a dead letter with
the headers that say why it was refused. Nothing in a record can stop the tail: a field
of the wrong type shows as `?`, a value that is no JSON as its first bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from datetime import datetime
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

HEADER_EVERY = 25
#: the headers of a dead letter (consumer/dead_letters.py) start with this
DEAD_LETTER_PREFIX = "pba."

#: a prediction's columns: name, width, alignment
PREDICTION_COLUMNS = (("link", 28, "<"), ("mode", 10, "<"), ("source", 8, "<"), ("predicted", 12, ">"),
                      ("reserve", 12, ">"), ("conf", 5, ">"), ("action", 6, "<"), ("age", 7, ">"))
PREDICTION_HEADER = " ".join(f"{name:{align}{width}}" for name, width, align in PREDICTION_COLUMNS)
EVENT_HEADER = f"{'link':<28} {'bandwidth':>12} {'latency':>9} {'loss':>7} {'age':>7}"
DEAD_LETTER_HEADER = f"{'dead letter':<28} {'reason':<20} error (source)"


def prediction_cells(p: dict[str, Any], now: float) -> list[str]:
    """One prediction's cells, in PREDICTION_COLUMNS' order."""
    allocation = p.get("allocation")
    action = allocation.get("action", "?") if isinstance(allocation, dict) else "?"
    return [_text(p.get("link_id")), _text(p.get("mode")), _text(p.get("source")),
            _mbps(p.get("predicted_bandwidth_mbps")), _mbps(p.get("reserve_mbps")),
            _fixed(p.get("confidence"), 2), _text(action), _age(p.get("ts"), now)]


def format_row(p: dict[str, Any], now: float) -> str:
    """One prediction as a table row."""
    return " ".join(f"{cell[:width] if name == 'link' else cell:{align}{width}}"
                    for cell, (name, width, align) in zip(prediction_cells(p, now), PREDICTION_COLUMNS,
                                                         strict=True))


def format_event(e: dict[str, Any], now: float) -> str:
    """One metric event as a table row."""
    latency, loss = _number(e.get("latency_ms")), _number(e.get("packet_loss"))
    return (f"{_text(e.get('link_id'))[:28]:<28} {_mbps(e.get('bandwidth_mbps')):>12} "
            f"{'-' if latency is None else f'{latency:.1f} ms':>9} "
            f"{'-' if loss is None else f'{100 * loss:.2f}%':>7} {_age(e.get('ts'), now):>7}")


def dead_letter_headers(record: ConsumerRecord) -> dict[str, str] | None:
    """The pba.* headers of a dead letter, without the prefix; None for any other record
    (a prediction carries a pba.* header too: its link's adaptation state, binary)."""
    headers = dict(record.headers or ())
    if f"{DEAD_LETTER_PREFIX}error.reason" not in headers:
        return None
    return {name[len(DEAD_LETTER_PREFIX):]: value.decode(errors="replace")
            for name, value in headers.items() if name.startswith(DEAD_LETTER_PREFIX)}


def format_dead_letter(record: ConsumerRecord, headers: dict[str, str]) -> str:
    key = (record.key or b"").decode(errors="replace")
    source = f"{headers.get('source.topic', '?')}[{headers.get('source.partition', '?')}]" \
             f"@{headers.get('source.offset', '?')}"
    return (f"{key[:28] or '(no key)':<28} {headers.get('error.reason', '?'):<20} "
            f"{headers.get('error.message', '')} ({source})")


def _text(value: Any) -> str:
    return "?" if value is None else str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fixed(value: Any, digits: int) -> str:
    number = _number(value)
    return "?" if number is None else f"{number:.{digits}f}"


def _mbps(value: Any) -> str:
    v = _number(value)
    if v is None:
        return "?"
    return f"{v / 1000:.2f} Gb/s" if v >= 1000 else f"{v:.1f} Mb/s"


def _age(ts: Any, now: float) -> str:
    """How long ago ts was: epoch seconds or an RFC 3339 date-time, as events carry it."""
    t = _number(ts)
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):
            t = datetime.fromisoformat(ts).timestamp()
    if t is None:
        return "?"
    seconds = now - t
    if abs(seconds) < 120:
        return f"{seconds:.1f}s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


class Table:
    """Rows of mixed kinds, each kind under its own header, repeated every HEADER_EVERY
    rows or when the kind changes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._header: str | None = None
        self._since_header = 0

    def row(self, header: str, line: str) -> None:
        if header != self._header or self._since_header >= HEADER_EVERY:
            print(header, file=self._out)
            self._header, self._since_header = header, 0
        print(line, file=self._out)
        self._since_header += 1


def table_line(record: ConsumerRecord, now: float) -> tuple[str, str]:
    """(header, row) for any record of the service's topics."""
    headers = dead_letter_headers(record)
    if headers is not None:
        return DEAD_LETTER_HEADER, format_dead_letter(record, headers)
    try:
        value = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and "prediction_id" in value:
        return PREDICTION_HEADER, format_row(value, now)
    if isinstance(value, dict) and "bandwidth_mbps" in value:
        return EVENT_HEADER, format_event(value, now)
    shown = (record.value or b"")[:60].decode(errors="replace")
    return "unreadable record", f"{(record.key or b'').decode(errors='replace')[:28]:<28} {shown!r}"


def json_line(record: ConsumerRecord) -> str:
    """The value as it is when it is JSON; a dead letter or any other value as an object
    saying what it holds."""
    headers = dead_letter_headers(record)
    value = (record.value or b"").decode(errors="replace")
    if headers is None:
        try:
            orjson.loads(record.value or b"")
            return value
        except orjson.JSONDecodeError:
            pass
    return orjson.dumps({"key": (record.key or b"").decode(errors="replace"), "value": value,
                         **({"dead_letter": headers} if headers else {})}).decode()


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
    """Print the topic's records until stopped or `max_messages` printed; returns how many."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **(security or {}),
    )
    table = Table(out)
    shown = 0
    try:
        await consumer.start()
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if link is not None and record.key != link.encode():
                        continue
                    if as_json:
                        out.write(json_line(record) + "\n")
                    else:
                        table.row(*table_line(record, time.time()))
                    shown += 1
                    if max_messages is not None and shown >= max_messages:
                        out.flush()
                        return shown
            out.flush()
    finally:
        await consumer.stop()
    return shown
