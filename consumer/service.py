"""`pba run`: the streaming service, all of its I/O.

Flow: getmany() -> Processor.process (in the one inference thread) -> produce predictions
and dead letters -> when every message of a batch is acknowledged, commit the batch's
offsets (at-least-once). While one batch is in inference the event loop publishes the one
before it; batches are published and committed in order; at most `max_in_flight` wait for
acknowledgement before fetching waits (backpressure).

Rebalances: on revoke, the batch in progress finishes, everything in flight is
acknowledged and committed, and the windows of revoked partitions are dropped. On assign,
consumer/rebuild.py replays each partition's recent history before its committed offset
into the windows (without publishing) and reads back what each link was sent, so a moved
or restarted link predicts with its model at once and a re-sent prediction is the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from consumer.config import ServiceConfig
from consumer.dead_letters import shorten_dead_letter
from consumer.flags import FlagsFile
from consumer.health import HealthServer
from consumer.messages import BatchOutput, Outgoing
from consumer.metrics import Metrics
from consumer.processor import Processor
from consumer.rebuild import Rebuild
from consumer.topics import ensure_topics
from consumer.watch import DirectoryWatch
from predictor.engine import Engine
from predictor.manifest import DEFAULT_MODELS_DIR, ManifestError
from predictor.modes import MODE_NAMES
from predictor.pipeline import Pipeline, models_for_mode
from predictor.runtime import ModelError, ModelSet, SessionSettings, load_models

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
HOUSEKEEPING_S = 1.0
SEND_RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
PRODUCER_BATCH_BYTES = 256 * 1024
#: brokers that do not wake a waiting fetch on new data (Tansu) would otherwise add up to
#: the default 500 ms to every event's latency
FETCH_MAX_WAIT_MS = 20
PRODUCER_LINGER_MS = 2
BROKER_PROBE_TIMEOUT_S = 2.0
#: refusals that sending the same message again cannot overcome
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
#: allocations between young-generation collections (CPython's default is 700)
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collection() -> None:
    """Collect cycles less often, and never among what start-up loaded.

    A batch allocates a few short-lived tuples per event, which reference counting frees;
    with the default threshold the cycle collector ran every few hundred events to find
    nothing and took about a third of the ingest time (docs/BENCHMARKS.md). Freezing
    moves modules, models and configuration out of its sight for good.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


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


class Service:
    def __init__(self, config: ServiceConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.models: ModelSet = self._load_models(allow_fallback=config.allow_fallback)
        self._report_models()
        self.pipeline = Pipeline(Engine(self.models), config.mode, config.max_links)
        self.processor = Processor(self.pipeline, config, self.metrics)
        self.flags = FlagsFile(config.flags_file)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pba-inference")
        self._in_flight: deque[_InFlight] = deque()
        self._pending: asyncio.Future[BatchOutput] | None = None  # the batch in inference
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._history: AIOKafkaConsumer | None = None
        self._rebuild: Rebuild | None = None
        self._broker_ok = False
        self.bootstrap = config.bootstrap
        self._apply_flags()

    # -- start-up and shutdown -------------------------------------------------------

    def _report_models(self) -> None:
        versions = {mode: model.version for mode, model in self.models.models.items()}
        self.metrics.model_info.info({k: v for k, v in versions.items()} or {"none": "fallback"})
        for mode in models_for_mode(self.config.mode):
            failed = mode in self.models.unavailable
            self.metrics.fallback_active.labels(mode).set(1 if failed else 0)
            if failed:
                self.metrics.model_load_failures.inc()

    def readiness(self) -> tuple[bool, str]:
        if not self._broker_ok:
            return False, "not connected to Kafka"
        if not self._assigned:
            return False, "no partitions assigned yet"
        if not self.models.models and not self.config.allow_fallback:
            return False, "no models loaded"
        return True, f"{len(self._assigned)} partitions, models {sorted(self.models.models) or 'fallback'}"

    def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaConsumer]:
        c = self.config
        security = c.kafka_security()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=c.group_id,
            group_instance_id=c.group_instance_id,
            client_id="pba-stream",
            enable_auto_commit=False,
            auto_offset_reset=c.start_at,
            max_partition_fetch_bytes=max(1 << 20, c.max_event_bytes * 64),
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=int(c.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(c.session_timeout_s * 1000 / 3)),
            **security,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="pba-stream",
            acks="all",
            linger_ms=PRODUCER_LINGER_MS,
            max_batch_size=PRODUCER_BATCH_BYTES,
            compression_type=None if c.compression == "none" else c.compression,
            enable_idempotence=c.idempotent,
            **security,
        )
        history = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            client_id="pba-stream-rebuild",
            enable_auto_commit=False,
            # reading a partition to its end ends with a fetch that finds nothing new:
            # the broker holds it this long (500 ms by default, per partition read back)
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **security,
        )
        return consumer, producer, history

    async def _start_clients(self, stop: asyncio.Event) -> bool:
        """Connect, retrying with backoff while the broker is unreachable (no crash loop)."""
        delay = 0.5
        while not stop.is_set():
            consumer, producer, history = self._clients()
            try:
                await producer.start()
                await history.start()
                await consumer.start()
            except KafkaError as exc:
                log.warning("cannot reach Kafka at %s (%s); retrying in %.1f s", self.bootstrap, exc, delay)
                for client in (consumer, producer, history):
                    with contextlib.suppress(Exception):
                        await client.stop()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
                continue
            self._consumer, self._producer, self._history = consumer, producer, history
            self._rebuild = Rebuild(self.config, consumer, history, producer, self.processor, self._worker,
                                    self.metrics)
            c = self.config
            topics = (c.input_topic, c.output_topic, c.dlq_topic, *filter(None, [c.shadow_topic]))
            await ensure_topics(self.bootstrap or "", topics, security=c.kafka_security())
            await self._update_output_partitions()
            consumer.subscribe([self.config.input_topic], listener=_Rebalance(self))
            self._broker_ok = True
            return True
        return False

    async def run(self, stop: asyncio.Event) -> None:
        server = None
        if self.config.metrics_port:
            server = HealthServer(self.config.metrics_bind, self.config.metrics_port,
                                  self.metrics.registry, self.readiness).start()
            log.info("metrics and health on http://%s:%d/metrics", self.config.metrics_bind, server.port)
        housekeeping = asyncio.create_task(self._housekeeping(stop))
        tune_garbage_collection()
        try:
            if await self._start_clients(stop):
                log.info("consuming %s as group %s, publishing to %s", self.config.input_topic,
                         self.config.group_id, self.config.output_topic)
                await self._consume(stop)
        finally:
            housekeeping.cancel()
            await self._shutdown()
            if server:
                server.stop()
            self._worker.shutdown(wait=True)

    async def _shutdown(self) -> None:
        """Finish what is in flight, commit, leave the group, within the configured time."""
        try:
            async with asyncio.timeout(self.config.shutdown_timeout_s):
                async with self._lock:
                    await self._drain()
        except (TimeoutError, KafkaError) as exc:
            log.error("shutdown did not finish cleanly (%s); uncommitted events will be re-read", exc)
        for client in (self._consumer, self._history, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self.metrics.ready.set(0)

    # -- the loop --------------------------------------------------------------------

    async def _consume(self, stop: asyncio.Event) -> None:
        """Poll, start the batch, publish the previous one, commit what is acknowledged.

        A batch starts as soon as the one before it leaves inference, before that one is
        published: the event loop's own Python (publishing, parsing fetches, committing)
        then runs while ONNX Runtime holds the cores without the GIL, instead of the
        inference thread waiting for it.
        """
        loop = asyncio.get_running_loop()
        batch_max = self.config.batch_max
        while not stop.is_set():
            running = self._pending
            records = await self._poll(0 if running else POLL_TIMEOUT_MS, batch_max)
            if records is None:
                continue
            if running is not None:
                await asyncio.wait((running,))
                # what the fetcher brought in meanwhile joins this batch
                records += await self._poll(0, batch_max - len(records)) or []
            elif records and self.config.batch_wait_ms:
                # micro-batching: a short wait lets a busy stream fill one bigger ONNX batch
                records += await self._poll(self.config.batch_wait_ms, batch_max - len(records)) or []
            async with self._lock:
                # records fetched before a revocation are the new owner's: it reads them again
                # (they are not committed) with the windows that this instance just dropped
                assigned = self._assigned
                records = [r for r in records if (r.topic, r.partition) in assigned]
                finished = await self._take_pending()
                if records:
                    self._pending = loop.run_in_executor(self._worker, self.processor.process, records)
                if finished is not None:
                    await self._publish(finished)
                idle = not records and finished is None
                await self._complete(block=idle or len(self._in_flight) >= self.config.max_in_flight)

    async def _poll(self, timeout_ms: int, max_records: int) -> list[ConsumerRecord] | None:
        """Records from the consumer (none asked when max_records < 1); None when the
        fetch failed, after a pause."""
        assert self._consumer is not None
        if max_records < 1:
            return []
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            self._broker_ok = False
            log.warning("fetch failed (%s); retrying", exc)
            await asyncio.sleep(0.5)
            return None
        return [r for recs in batches.values() for r in recs]

    async def _take_pending(self) -> BatchOutput | None:
        """The batch in inference, once finished (its predictions are not published yet)."""
        running, self._pending = self._pending, None
        return None if running is None else await running

    async def _publish(self, output: BatchOutput) -> None:
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
        assert producer is not None
        m = chunk.messages
        try:
            if chunk.partition is None:
                (row,) = chunk.rows
                return await producer.send(m.topic, m.values[row], key=m.keys[row],
                                           headers=m.headers[row] if m.headers else None)
            builder = producer.create_batch()
            for row in chunk.rows:
                if builder.append(key=m.keys[row], value=m.values[row], timestamp=None) is None:
                    raise ValueError(f"message {row} for {m.topic} does not fit a record batch")
            return await producer.send_batch(builder, m.topic, partition=chunk.partition)
        except KafkaError as exc:
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused

    async def _complete(self, block: bool) -> None:
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
            self._broker_ok = False
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
        if m.headers is None:
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
        assert self._consumer is not None
        owned = {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items() if tp in self._assigned}
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

    async def _drain(self) -> None:
        finished = await self._take_pending()
        if finished is not None:
            await self._publish(finished)
        await self._complete(block=True)
        while self._in_flight:
            await self._complete(block=True)

    # -- rebalance -------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        async with self._lock:
            await self._drain()
            self._assigned -= revoked
            partitions = {tp.partition for tp in revoked if tp.topic == self.config.input_topic}
            if partitions:
                dropped = await asyncio.get_running_loop().run_in_executor(
                    self._worker, self.processor.forget_partitions, partitions)
                log.info("revoked %d partitions, dropped %d links", len(revoked), dropped)
        self.metrics.ready.set(1 if self.readiness()[0] else 0)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        started = time.perf_counter()
        # the lock keeps the main loop from predicting a new event of a link before that
        # link's history is back in its window (the fetcher starts as soon as we are assigned)
        async with self._lock:
            assert self._rebuild is not None
            replayed, restored, read_back = await self._rebuild.run(assigned)
            self._assigned |= assigned
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        log.info("assigned %d partitions; rebuilt windows from %d records and the state of %d links from "
                 "the predictions they were sent (%d read back) in %.2f s", len(assigned), replayed,
                 restored, read_back, time.perf_counter() - started)

    # -- models and flags --------------------------------------------------------------

    async def reload_models(self) -> bool:
        """Load the models directory again (SIGHUP, or its files changed and settled) and swap the
        new set in between two batches. A set that fails validation is refused and the
        running models stay."""
        loop = asyncio.get_running_loop()
        try:
            models = await loop.run_in_executor(None, self._load_models, False)
        except (ManifestError, ModelError) as exc:
            self.metrics.model_load_failures.inc()
            log.error("model reload refused, keeping %s: %s", self._versions(), exc)
            return False
        await loop.run_in_executor(self._worker, self.pipeline.swap_engine, Engine(models))
        old = self._versions()
        self.models = models
        self._report_models()
        log.warning("models reloaded: %s -> %s", old, self._versions())
        return True

    def _load_models(self, allow_fallback: bool) -> ModelSet:
        """Start-up may fall back per the config; a reload must be complete or is refused."""
        return load_models(
            self.config.models,
            models_for_mode(self.config.mode),
            SessionSettings(intra_op_threads=self.config.inference_threads, precision=self.config.precision),
            allow_fallback=allow_fallback,
        )

    def _versions(self) -> dict[str, str]:
        return {mode: model.version for mode, model in self.models.models.items()}

    def _apply_flags(self) -> None:
        flags = self.flags.flags
        mode = flags.mode or self.config.mode
        if mode != self.pipeline.mode:
            missing = set(models_for_mode(mode)) - set(self.models.models)
            try:
                if missing and not self.config.allow_fallback:
                    raise ValueError(f"no {', '.join(sorted(missing))} model loaded")
                self.pipeline.set_mode(mode)
                log.warning("mode switched to %s by the flags file", mode)
            except ValueError as exc:
                log.error("flags ask for mode %s, refused: %s", mode, exc)
        self.processor.flags = flags

    # -- background ------------------------------------------------------------------

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Every second: flags file, models directory, idle eviction, consumer lag, readiness."""
        loop = asyncio.get_running_loop()
        evict_every = max(1.0, min(60.0, self.config.idle_evict_s / 10))
        last_evict = time.monotonic()
        models = DirectoryWatch(self.config.models or DEFAULT_MODELS_DIR)
        while not stop.is_set():
            await asyncio.sleep(HOUSEKEEPING_S)
            reloaded = self.flags.poll()
            if reloaded is not None:
                self.metrics.flag_reloads.labels("ok" if reloaded else "rejected").inc()
                await loop.run_in_executor(self._worker, self._apply_flags)
            if models.settled_change():
                await self.reload_models()
            if time.monotonic() - last_evict >= evict_every:
                last_evict = time.monotonic()
                await loop.run_in_executor(self._worker, self.processor.evict_idle)
            await self._probe_broker()
            await self._update_lag()
            if self._producer is not None:
                await self._update_output_partitions()
            self.metrics.ready.set(1 if self.readiness()[0] else 0)

    async def _probe_broker(self) -> None:
        """Readiness follows the broker: a metadata round trip each second. A frozen or
        cut-off broker does not make a waiting fetch fail (it just returns nothing), so
        only an answer shows the broker is there."""
        if self._consumer is None:
            return
        try:
            await asyncio.wait_for(self._consumer.topics(), BROKER_PROBE_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:
            if self._broker_ok:
                log.warning("Kafka at %s is not answering (%s); not ready until it does",
                            self.bootstrap, type(exc).__name__)
            self._broker_ok = False
            return
        if not self._broker_ok:
            log.warning("Kafka at %s answers again", self.bootstrap)
        self._broker_ok = True

    async def _update_output_partitions(self) -> None:
        """Tell the processor how many partitions the output topic has (it places each
        link's predictions by key, as the producer's partitioner would)."""
        assert self._producer is not None
        with contextlib.suppress(KafkaError, asyncio.TimeoutError):
            partitions = await asyncio.wait_for(self._producer.partitions_for(self.config.output_topic), 5)
            if len(partitions) != self.processor.output_partitions:
                await asyncio.get_running_loop().run_in_executor(
                    self._worker, self.processor.set_output_partitions, len(partitions))

    async def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in list(self._assigned):
            high = consumer.highwater(tp)
            if high is None:
                continue
            with contextlib.suppress(Exception):
                position = await asyncio.wait_for(consumer.position(tp), 0.5)
                self.metrics.consumer_lag.labels(str(tp.partition)).set(max(0, high - position))


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


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: Service) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.on_assigned(set(assigned))


async def serve(config: ServiceConfig) -> int:
    """Run until SIGTERM/SIGINT; start the embedded broker when no bootstrap is given."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = None
    service = Service(config)
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = asyncio.create_task(service.reload_models())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    if config.bootstrap is None:
        from consumer.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        service.bootstrap = broker.bootstrap
        print(f"no --bootstrap given: started the embedded broker at {broker.bootstrap}", flush=True)
    try:
        await service.run(stop)
    finally:
        if broker is not None:
            broker.stop()
    log.info("stopped")
    return 0
