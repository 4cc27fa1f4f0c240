"""Rebuilding the per-link state of newly assigned partitions, before they are predicted.

On assignment, each partition's recent input before the committed offset is read with
a consumer of its own (no group) and replayed into the windows and mode detectors by
the inference thread while the next partition is read. Then each link's stream count
and pending scores come back from what it was sent for its newest replayed sample
(predictor/linkstate.py `restore`), the predictions topic read from its end back only
as far as the replayed links need. A re-sent prediction is then the one sent before
(docs/RELIABILITY.md says when it cannot be).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.config import ServiceConfig
from consumer.metrics import Metrics
from consumer.processor import RecordProcessor
from predictor.linkstate import ADAPTATION_HEADER, LinkState, Sent
from predictor.modes import MODE_CODES
from predictor.rollout import served_by

log = logging.getLogger(__name__)

#: longest a partition's history (or the predictions sent) is read before giving up
REBUILD_TIMEOUT_S = 30.0


class Rebuild:
    def __init__(self, config: ServiceConfig, consumer: AIOKafkaConsumer, history: AIOKafkaConsumer,
                 producer: AIOKafkaProducer, processor: RecordProcessor, worker: Executor,
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
        replays = [replay for tp in sorted(assigned) if (replay := await self._partition(tp))]
        replayed = sum([await future for future, _ in replays])
        if not replays:
            return 0, 0, 0
        restored, read_back = await self._restore_sent(set().union(*(links for _, links in replays)))
        return replayed, restored, read_back

    async def _partition(self, tp: TopicPartition) -> tuple[asyncio.Future[int], set[bytes]] | None:
        """Read the partition's recent history before the committed offset and hand it to
        the inference thread to replay into the windows; returns the replay's future
        (the number of samples taken) and the links replayed, None when there is
        nothing to replay.

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
            observe = self._processor.observe_history
            replay = asyncio.get_running_loop().run_in_executor(self._worker, observe, records)
            return replay, {r.key for r in records if r.key is not None}
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

    async def _restore_sent(self, links: set[bytes]) -> tuple[int, int]:
        """Restore each replayed link's stream count and pending predictions from what it
        was sent for its newest replayed sample, so that a re-sent prediction is the one
        sent before. The predictions topic is read from its end back, in spans four
        times longer each, and no further than rebuild_seconds: the prediction a link
        needs is usually among the last few (a busy link's newest sample was predicted
        just before the crash), so reading every prediction of rebuild_seconds, as it
        once did, took a second of a restart. Returns the links restored and the
        predictions read."""
        c = self._config
        loop = asyncio.get_running_loop()
        store = self._processor.link_predictor.store
        sent = await loop.run_in_executor(self._worker, SentState, store, links)
        read = 0
        try:
            partitions = await self._producer.partitions_for(c.output_topic)
            tps = [TopicPartition(c.output_topic, p) for p in sorted(partitions)]
            ends = await self._history.end_offsets(tps)  # at most one batch short: see _read
            floors = {tp: max(0, ends[tp] - c.rebuild_max_records) for tp in tps}
            with contextlib.suppress(KafkaError, ValueError):
                found = await self._history.offsets_for_times({tp: self._since_ms() for tp in tps})
                floors = {tp: None if found.get(tp) is None else max(floors[tp], found[tp].offset)
                          for tp in tps}  # None: nothing sent since
            spans: dict[TopicPartition, tuple[int, int | None]] = {
                tp: (ends[tp], None) for tp, floor in floors.items() if floor is not None}
            span = max(1024, 4 * len(links) // max(1, len(tps)))
            while spans and not sent.complete():
                for tp, (upper, upto) in list(spans.items()):
                    floor = floors[tp]
                    assert floor is not None
                    start = max(floor, upper - span)
                    records = await self._read(tp, start, upto)
                    read += len(records)
                    await loop.run_in_executor(self._worker, sent.take, records)
                    if start > floor:
                        spans[tp] = (start, start)
                    else:
                        del spans[tp]
                span *= 4
        except KafkaError as exc:
            log.warning("could not read back the predictions sent (%s); the rebuilt links without "
                        "theirs start a fresh stream count", exc)
        return await loop.run_in_executor(self._worker, sent.restore), read


class SentState:
    """The per-link state found in the predictions sent, read from the newest back in
    spans (each span's records in offset order, newer spans first): for each link,
    what it was sent for its newest sample. A link is settled once its live
    prediction for that sample, or a live one for an older sample, is passed (a batch
    publishes its live predictions before its shadow ones, so only the live ones come
    in event order), and its older predictions are not even decoded."""

    def __init__(self, store: LinkState, links: Iterable[bytes] = ()) -> None:
        self._store = store
        # the tracked links whose state is still to be found (keys of events that were
        # dead-lettered or evicted are not tracked)
        self._pending = {key for key in links if store.newest(key.decode(errors="replace")) is not None}
        self._passed: set[bytes] = set()
        self._found: list[Sent] = []  # newest first

    def complete(self) -> bool:
        return not self._pending

    def take(self, records: Sequence[ConsumerRecord]) -> None:
        for record in reversed(records):
            key = record.key
            if key is None or key in self._passed:
                continue
            newest = self._store.newest(key.decode(errors="replace"))
            if newest is None:  # a link this instance does not track
                self._passed.add(key)
                continue
            sent = _sent(record)
            if sent is None or sent.link_id.encode() != key:
                continue
            if sent.ts == newest:
                self._found.append(sent)
            if sent.ts <= newest and not sent.shadow:
                self._passed.add(key)
                self._pending.discard(key)

    def restore(self) -> int:
        """Apply what was found (store.restore); returns the links restored."""
        return self._store.restore(reversed(self._found))


def restore(store: LinkState, records: Sequence[ConsumerRecord]) -> int:
    """After RecordProcessor.observe_history: the stream counts and pending predictions of the links, from
    the predictions they were sent (the records of one partition of the predictions
    topic, in offset order). Returns the links restored."""
    sent = SentState(store)
    sent.take(records)
    return sent.restore()


def _sent(record: ConsumerRecord) -> Sent | None:
    """A prediction read back from the predictions topic; None for anything else."""
    try:
        p = orjson.loads(record.value or b"")
        adaptation = dict(record.headers or ()).get(ADAPTATION_HEADER)
        return Sent(p["link_id"], float(p["ts"]), served_by(p["model_version"]),
                    bool(p["shadow"]), int(p["allocation"]["streams"]), float(p["predicted_bandwidth_mbps"]),
                    MODE_CODES[p["mode"]], adaptation)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
