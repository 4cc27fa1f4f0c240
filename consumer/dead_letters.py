"""Dead letters: bad input goes to the dead-letter topic with its original key and
bytes, and headers that say why it was refused and where it came from. Nothing is lost:
a dead letter too large for the topic goes without its value, saying so, and the
original stays readable at the source offset."""

from __future__ import annotations

import numpy as np
from aiokafka.structs import ConsumerRecord

from consumer.messages import Outgoing
from consumer.metrics import Metrics
from schemas import EventError


def dead_letters(dead: list[tuple[ConsumerRecord, EventError]], topic: str, metrics: Metrics) -> Outgoing:
    """The original bytes and key, with why they were refused and where they came from."""
    headers = []
    for record, error in dead:
        metrics.events_invalid.labels(error.reason).inc()
        headers.append([
            ("pba.error.reason", error.reason.encode()),
            ("pba.error.message", str(error)[:500].encode()),
            ("pba.error.field", (error.field or "").encode()),
            ("pba.source.topic", record.topic.encode()),
            ("pba.source.partition", str(record.partition).encode()),
            ("pba.source.offset", str(record.offset).encode()),
            *((k, v) for k, v in (record.headers or ()) if not k.startswith("pba.")),
        ])
    return Outgoing(
        topic,
        [record.key for record, _ in dead],
        [record.value or b"" for record, _ in dead],
        np.array([record.timestamp for record, _ in dead], dtype=np.int64),
        headers=headers,
    )


#: the header of a shortened dead letter that says what it left out
OMITTED_HEADER = "pba.error.omitted"
#: a refused dead letter keeps its key up to this size
KEPT_KEY_BYTES = 1024


def shorten_dead_letter(messages: Outgoing, row: int, why: str) -> bool:
    """Drop the original value (and the record's own headers, and a key over
    KEPT_KEY_BYTES) from a dead letter that the dead-letter topic refuses for its size,
    saying what was dropped: its pba.source.* headers still name where the original is.
    False when it was shortened already (nothing more to drop)."""
    assert messages.headers is not None and messages.dead_letters, "only dead letters are shortened"
    headers = messages.headers[row]
    if any(name == OMITTED_HEADER for name, _ in headers):
        return False
    dropped = [f"the value ({len(messages.values[row])} bytes)"]
    key = messages.keys[row]
    if key is not None and len(key) > KEPT_KEY_BYTES:
        dropped.append(f"the key ({len(key)} bytes)")
        messages.keys[row] = None
    own = [(name, value) for name, value in headers if name.startswith("pba.")]
    if len(own) < len(headers):
        dropped.append("the record's headers")
    messages.values[row] = b""
    messages.headers[row] = [*own, (OMITTED_HEADER, (
        f"{', '.join(dropped)}: {why}; the original is at pba.source.topic / partition / offset"
    ).encode()[:500])]
    return True


def without_frames(error: EventError) -> EventError:
    """The error without its traceback and context. Kept in a list that the catching
    frame holds, they make a reference cycle (traceback -> frame -> list -> error) that
    keeps the whole batch alive until a full collection: resident memory crept up under
    hostile input once collections became rarer."""
    error.__traceback__ = None
    error.__context__ = None
    return error
