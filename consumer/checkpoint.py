"""Publishing and checkpointing, in one order: a batch's messages are handed to the
producer (flush), every one of them is acknowledged by the broker (acks=all), and only
then are the input offsets they cover committed (at-least-once). Batches complete in
the order they were published; a failed send is sent again, with backoff, before
anything behind it is committed, and a dead letter refused for its size goes again
at once without its value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from consumer.clients import PRODUCER_BATCH_BYTES
from consumer.dead_letters import shorten_dead_letter
from consumer.messages import BatchOutput, Outgoing
from consumer.metrics import Metrics
from predictor.modes import MODE_NAMES

log = logging.getLogger(__name__)

SEND_RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
#: refusals that sending the same message again cannot overcome
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass
class _Chunk:
    """Messages handed to the producer together: one record batch for one partition, or
    one message left to the producer's partitioner. Kept to send again on failure."""

    messages: Outgoing
    rows: list[int]
    partition: int | None


@dataclass
class _InFlight:
    chunks: list[_Chunk]
    offsets: dict[TopicPartition, int]
    futures: list[asyncio.Future[Any]]
    done: asyncio.Future[Any] | None = None
    acked_at: float = 0.0
    attempts: int = 0


class Checkpoint:
    def __init__(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, metrics: Metrics,
                 owned: Callable[[], set[TopicPartition]], on_failure: Callable[[], None]) -> None:
        self._producer = producer
        self._consumer = consumer  # commits the offsets
        self.metrics = metrics
        self._owned = owned  # partitions assigned now: offsets of others are not committed
        self._on_failure = on_failure  # a send failed after the producer's own retries
        self._in_flight: deque[_InFlight] = deque()

    def __len__(self) -> int:
        """Batches published and not yet committed."""
        return len(self._in_flight)

    async def publish(self, output: BatchOutput) -> None:
        """Hand a batch's messages to the producer; its offsets wait for their acknowledgement."""
        chunks = [chunk for messages in output.messages for chunk in _chunks(messages)]
        batch = _InFlight(chunks, output.offsets, [await self._send(c) for c in chunks])
        self._watch(batch)
        self._in_flight.append(batch)

    @staticmethod
    def _watch(batch: _InFlight) -> None:
        """One future for the whole batch; its completion time is the acknowledgement time."""

        def acknowledged(_: asyncio.Future[Any]) -> None:
            batch.acked_at = time.time()

        batch.done = asyncio.ensure_future(asyncio.gather(*batch.futures, return_exceptions=True))
        batch.done.add_done_callback(acknowledged)

    async def _send(self, chunk: _Chunk) -> asyncio.Future[Any]:
        """Hand a chunk to the producer: a whole record batch at once where the partition
        is known (one call instead of one per message). The future fails, rather than this
        call, when the producer refuses the chunk (e.g. its queue for the partition did
        not drain within the request timeout while the broker was away): the chunk is
        then sent again like one whose delivery failed, instead of stopping the service."""
        producer = self._producer
        m = chunk.messages
        try:
            if chunk.partition is None:
                (row,) = chunk.rows
                return await producer.send(m.topic, m.values[row], key=m.keys[row],
                                           headers=m.headers[row] if m.headers else None)
            builder = producer.create_batch()
            for row in chunk.rows:
                headers = m.headers[row] if m.headers else []
                if builder.append(key=m.keys[row], value=m.values[row], timestamp=None,
                                  headers=headers) is None:
                    raise ValueError(f"message {row} for {m.topic} does not fit a record batch")
            return await producer.send_batch(builder, m.topic, partition=chunk.partition)
        except KafkaError as exc:
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused

    async def complete(self, block: bool) -> None:
        """Commit every leading batch whose messages are all acknowledged; with block, wait
        for at least the oldest (backpressure when too much is in flight)."""
        self.metrics.paused.set(1 if block and self._in_flight else 0)
        while self._in_flight:
            batch = self._in_flight[0]
            assert batch.done is not None
            if not batch.done.done():
                if not block:
                    return
                await batch.done
            results = batch.done.result()
            failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
            if failed:
                await self._resend(batch, failed)
                continue
            self._in_flight.popleft()
            self._observe_latency(batch)
            await self._commit(batch.offsets)
            block = False

    async def _resend(self, batch: _InFlight, failed: list[int]) -> None:
        """Publishing failed after the producer's own retries: try again, with backoff,
        without committing. Nothing is skipped; a stuck broker stalls the service instead.
        A dead letter refused for its size goes again at once, shortened."""
        assert batch.done is not None
        errors = batch.done.result()
        waiting = [i for i in failed
                   if not (isinstance(errors[i], TOO_LARGE) and self._shorten(batch.chunks[i], errors[i]))]
        if waiting:
            delay = SEND_RETRY_BACKOFF_S[min(batch.attempts, len(SEND_RETRY_BACKOFF_S) - 1)]
            batch.attempts += 1
            count = sum(len(batch.chunks[i].rows) for i in waiting)
            log.warning("%d messages not acknowledged (%s); resending in %.1f s",
                        count, errors[waiting[0]], delay)
            self._on_failure()
            await asyncio.sleep(delay)
        for i in failed:
            batch.futures[i] = await self._send(batch.chunks[i])
        self._watch(batch)

    def _shorten(self, chunk: _Chunk, error: BaseException) -> bool:
        """A message refused for its size is refused again on every retry, and the offsets
        behind it would never be committed. Only a dead letter can be that large (an input
        message bigger than the dead-letter topic takes): it goes out without the
        original's bytes, which stay readable at the source offset its headers name."""
        m = chunk.messages
        if m.headers is None or not m.dead_letters:
            return False
        shortened = False
        for row in chunk.rows:
            size = len(m.values[row])
            if shorten_dead_letter(m, row, f"{m.topic} refused the size ({error})"):
                shortened = True
                self.metrics.dead_letters_shortened.inc()
                source = {name: value.decode() for name, value in m.headers[row]
                          if name.startswith("pba.source.")}
                log.error("dead letter of %d bytes from %s[%s] offset %s refused by %s for its size; "
                          "published without its value", size, source.get("pba.source.topic"),
                          source.get("pba.source.partition"), source.get("pba.source.offset"), m.topic)
        return shortened

    def _observe_latency(self, batch: _InFlight) -> None:
        acked_ms = (batch.acked_at or time.time()) * 1000.0
        for chunk in batch.chunks:
            m = chunk.messages
            if m.modes is None:
                continue
            rows = np.array(chunk.rows, dtype=np.intp)
            arrival, modes = m.arrival_ms[rows], m.modes[rows]
            seconds = np.maximum(0.0, acked_ms - arrival) / 1000.0
            for code in np.unique(modes).tolist():
                sel = (modes == code) & (arrival > 0)
                self.metrics.end_to_end_seconds.observe((MODE_NAMES[code],), seconds[sel])

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        owned = {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items() if tp in self._owned()}
        if not owned:
            return
        started = time.perf_counter()
        try:
            await self._consumer.commit(owned)
        except KafkaError as exc:
            # the events stay uncommitted and are predicted again (same ids) after a restart
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (%s); those events will be re-read later", exc)
            return
        self.metrics.commit_seconds.observe(time.perf_counter() - started)

    async def drain(self) -> None:
        """Wait until everything published is acknowledged and committed."""
        await self.complete(block=True)
        while self._in_flight:
            await self.complete(block=True)


#: Bytes of keys and values per record batch handed to the producer: half its
#: max_batch_size, leaving room for the per-record framing.
CHUNK_BYTES = PRODUCER_BATCH_BYTES // 2


def _chunks(messages: Outgoing) -> list[_Chunk]:
    """Split messages into producer calls: per partition, in order, CHUNK_BYTES at most."""
    if messages.partitions is None:
        return [_Chunk(messages, [row], None) for row in range(len(messages))]
    chunks = []
    keys, values = messages.keys, messages.values
    for partition in np.unique(messages.partitions).tolist():
        rows: list[int] = []
        size = 0
        for row in np.flatnonzero(messages.partitions == partition).tolist():
            length = len(values[row]) + len(keys[row] or b"")
            if rows and size + length > CHUNK_BYTES:
                chunks.append(_Chunk(messages, rows, partition))
                rows, size = [], 0
            rows.append(row)
            size += length
        chunks.append(_Chunk(messages, rows, partition))
    return chunks
