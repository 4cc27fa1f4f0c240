"""Rebuilding the per-link state of newly assigned partitions, before they are predicted.

On assignment, each partition's recent input before the committed offset is read with
a consumer of its own (no group) and replayed into the windows and mode detectors by
the inference thread, while the next partition, and then the predictions topic, are
read. Then each link's stream count and pending scores come back from what it was sent
for its newest replayed sample (predictor/linkstate.py `restore`). A re-sent prediction
is then the one sent before (docs/RELIABILITY.md says when it cannot be).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.config import ServiceConfig
from consumer.metrics import Metrics
from consumer.processor import V1_VERSION, Processor
from predictor.linkstate import LinkState, Sent
from predictor.modes import MODE_CODES

log = logging.getLogger(__name__)

#: longest a partition's history (or the predictions sent) is read before giving up
REBUILD_TIMEOUT_S = 30.0


class Rebuild:
    def __init__(self, config: ServiceConfig, consumer: AIOKafkaConsumer, history: AIOKafkaConsumer,
                 producer: AIOKafkaProducer, processor: Processor, worker: Executor,
                 metrics: Metrics) -> None:
        self._config = config
        self._consumer = consumer  # the group member: committed offsets, and seeks for --start-at latest
        self._history = history  # no group: reads history without moving the member's positions
        self._producer = producer  # its metadata gives the predictions topic's partitions
        self._processor = processor
        self._worker = worker  # the inference thread, the only one that touches per-link state
        self._metrics = metrics

    async def run(self, assigned: set[TopicPartition]) -> tuple[int, int, int]:
        """Rebuild the links of these partitions; returns the samples replayed, the links
        whose state was restored and the predictions read back."""
        loop = asyncio.get_running_loop()
        replays = [replay for tp in sorted(assigned) if (replay := await self._partition(tp))]
        sent = await self._read_sent() if replays else []
        replayed = sum([await replay for replay in replays])
        store = self._processor.pipeline.store
        restored = sum([await loop.run_in_executor(self._worker, restore, store, records)
                        for records in sent])
        return replayed, restored, sum(map(len, sent))

    async def _partition(self, tp: TopicPartition) -> asyncio.Future[int] | None:
        """Read the partition's recent history before the committed offset and hand it to
        the inference thread to replay into the windows; returns the replay's future
        (the number of samples taken), None when there is nothing to replay.

        A group without one that starts at the latest offset is placed at the partition's
        end here, and the history before that end is replayed: the windows then reach up
        to exactly the first event it predicts."""
        c = self._config
        if c.rebuild_max_records == 0 or c.rebuild_seconds == 0:
            return None
        try:
            upto = await self._consumer.committed(tp)
            if not upto and c.start_at == "latest":
                upto = (await self._history.end_offsets([tp]))[tp]
                self._consumer.seek(tp, upto)
            if not upto:
                return None
            first = (await self._history.beginning_offsets([tp]))[tp]
            start = max(first, upto - c.rebuild_max_records)
            with contextlib.suppress(KafkaError, ValueError):
                found = await self._history.offsets_for_times({tp: self._since_ms()})
                if found.get(tp) is not None:
                    start = max(start, min(found[tp].offset, upto))
            if start >= upto:
                return None
            records = await self._read(tp, start, upto)
            self._metrics.windows_rebuilt.inc(len(records))
            log.debug("rebuilding %s from offsets %d..%d: %d records", tp, start, upto, len(records))
            return asyncio.get_running_loop().run_in_executor(self._worker, self._processor.replay, records)
        except KafkaError as exc:
            log.warning("could not rebuild windows for %s (%s); its links warm up again", tp, exc)
            return None

    def _since_ms(self) -> int:
        """The start of what a rebuild reads, in Kafka timestamps: rebuild_seconds ago."""
        return int((time.time() - self._config.rebuild_seconds) * 1000)

    async def _read(self, tp: TopicPartition, start: int, upto: int | None) -> list[ConsumerRecord]:
        """The records of tp from offset start up to upto (exclusive; None: to the end the
        fetches report, since the embedded broker's end offset can be short of the last
        batch), with the history consumer. A busy broker may answer the first fetches
        empty: keep reading, within a time limit, rather than stop at the first empty poll."""
        history = self._history
        history.assign([tp])
        history.seek(tp, start)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + REBUILD_TIMEOUT_S
        while True:
            end = history.highwater(tp) if upto is None else upto
            position = await history.position(tp)
            if end is not None and position >= end:
                break
            if time.monotonic() > deadline:
                log.warning("reading %s stopped after %.0f s at offset %d of %s; its links warm up "
                            "again", tp, REBUILD_TIMEOUT_S, position, end)
                break
            # short polls while the end is not known yet: an empty partition answers no records
            got = await history.getmany(tp, timeout_ms=1000 if end else 100, max_records=5000)
            records.extend(r for r in got.get(tp, []) if upto is None or r.offset < upto)
        return records

    async def _read_sent(self) -> list[list[ConsumerRecord]]:
        """The output topic's last rebuild_seconds, one list per partition: from what each
        link was sent, the rebuild restores its stream count and pending predictions, so
        that a re-sent prediction is the one sent before."""
        c = self._config
        try:
            partitions = await self._producer.partitions_for(c.output_topic)
            tps = [TopicPartition(c.output_topic, p) for p in sorted(partitions)]
            ends = await self._history.end_offsets(tps)  # at most one batch short: see _read
            starts = {tp: max(0, ends[tp] - c.rebuild_max_records) for tp in tps}
            with contextlib.suppress(KafkaError, ValueError):
                since = self._since_ms()
                found = await self._history.offsets_for_times({tp: since for tp in tps})
                starts = {tp: None if found.get(tp) is None else max(starts[tp], found[tp].offset)
                          for tp in tps}  # None: nothing sent since
            return [await self._read(tp, start, None) for tp, start in starts.items() if start is not None]
        except KafkaError as exc:
            log.warning("could not read back the predictions sent (%s); the rebuilt links start "
                        "a fresh stream count", exc)
            return []


def restore(store: LinkState, records: Sequence[ConsumerRecord]) -> int:
    """After Processor.replay: the stream counts and pending predictions of the links, from
    the predictions they were sent (records of one partition of the predictions
    topic, in offset order). Read from the newest back, a link's older predictions
    are not even decoded once a live one older than its newest sample is passed
    (a batch publishes its live predictions before its shadow ones, so only the live
    ones come in event order). Returns the links restored."""
    passed: set[bytes] = set()
    found = []
    for record in reversed(records):
        key = record.key
        if key is None or key in passed:
            continue
        newest = store.newest(key.decode(errors="replace"))
        if newest is None:  # a link this instance does not track
            passed.add(key)
            continue
        sent = _sent(record)
        if sent is None or sent.link_id.encode() != key:
            continue
        if sent.ts == newest:
            found.append(sent)
        elif sent.ts < newest and not sent.shadow:
            passed.add(key)
    return store.restore(reversed(found))


def _sent(record: ConsumerRecord) -> Sent | None:
    """A prediction read back from the predictions topic; None for anything else."""
    try:
        p = orjson.loads(record.value or b"")
        return Sent(p["link_id"], float(p["ts"]), "v1" if p["model_version"] == V1_VERSION else "v3",
                    bool(p["shadow"]), int(p["allocation"]["streams"]), float(p["predicted_bandwidth_mbps"]),
                    MODE_CODES[p["mode"]])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
