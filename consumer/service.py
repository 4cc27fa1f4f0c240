"""`pba run`: the streaming service, all of its I/O.

Flow: clients.py connects -> getmany() -> RecordProcessor.process (in the one inference
thread) -> checkpoint.py produces predictions and dead letters and, when every message
of a batch is acknowledged, commits the batch's offsets (at-least-once). While one
batch is in inference the event loop publishes the one before it; batches are
published and committed in order; at most `max_in_flight` wait for acknowledgement
before fetching waits (backpressure).

Rebalances: on revoke, the batch in progress finishes, everything in flight is
acknowledged and committed, and the windows of revoked partitions are dropped. On assign,
consumer/rebuild.py replays each partition's recent history before its committed offset
into the windows (without publishing) and reads back what each link was sent, so a moved
or restarted link predicts with its model at once and a re-sent prediction is the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.checkpoint import Checkpoint
from consumer.clients import connect
from consumer.config import ServiceConfig
from consumer.flags import FlagsFile
from consumer.health import HealthServer, Heartbeat
from consumer.housekeeping import broker_answers, partition_count, update_lag
from consumer.messages import BatchOutput
from consumer.metrics import Metrics
from consumer.processor import RecordProcessor
from consumer.rebuild import Rebuild
from consumer.serving import apply_flags, load_model_set, report_models, versions
from consumer.topics import ensure_topics
from consumer.watch import DirectoryWatch
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor
from predictor.manifest import DEFAULT_MODELS_DIR, ManifestError
from predictor.runtime import ModelError, ModelSet

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
HOUSEKEEPING_S = 1.0


class Service:
    def __init__(self, config: ServiceConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.models: ModelSet = load_model_set(config, allow_fallback=config.allow_fallback)
        report_models(self.models, config, self.metrics)
        self.link_predictor = LinkPredictor(Forecaster(self.models), config.mode, config.max_links)
        self.processor = RecordProcessor(self.link_predictor, config, self.metrics)
        self.flags = FlagsFile(config.flags_file)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pba-inference")
        self._checkpoint: Checkpoint | None = None
        self._pending: asyncio.Future[BatchOutput] | None = None  # the batch in inference
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._history: AIOKafkaConsumer | None = None
        self._rebuild: Rebuild | None = None
        self._broker_ok = False
        self.bootstrap = config.bootstrap
        self.heartbeat = Heartbeat(config.liveness_timeout_s)
        self._apply_flags()

    def _apply_flags(self) -> None:
        """The flags file's flags from the next batch on (in the inference thread)."""
        apply_flags(self.flags.flags, self.config, self.models, self.link_predictor)
        self.processor.flags = self.flags.flags

    # -- start-up and shutdown -------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self._broker_ok:
            return False, "not connected to Kafka"
        if not self._assigned:
            return False, "no partitions assigned yet"
        if not self.models.models and not self.config.allow_fallback:
            return False, "no models loaded"
        return True, f"{len(self._assigned)} partitions, models {sorted(self.models.models) or 'fallback'}"

    async def _start_clients(self, stop: asyncio.Event) -> bool:
        """Connect (retrying while the broker is unreachable), make sure the topics exist
        and join the group."""
        clients = await connect(self.config, self.bootstrap or "", stop)
        if clients is None:
            return False
        self._consumer, self._producer, self._history = clients
        self._rebuild = Rebuild(self.config, clients.consumer, clients.history, clients.producer,
                                self.processor, self._worker, self.metrics)
        self._checkpoint = Checkpoint(clients.producer, clients.consumer, self.metrics,
                                      lambda: self._assigned, self._send_failed)
        c = self.config
        topics = (c.input_topic, c.output_topic, c.dlq_topic, *filter(None, [c.shadow_topic]))
        if c.create_topic_partitions:
            await ensure_topics(self.bootstrap or "", topics, partitions=c.create_topic_partitions,
                                security=c.kafka_security())
        await self._update_output_partitions()
        clients.consumer.subscribe([c.input_topic], listener=_Rebalance(self))
        self._broker_ok = True
        return True

    def _send_failed(self) -> None:
        self._broker_ok = False

    async def run(self, stop: asyncio.Event) -> None:
        server = None
        if self.config.metrics_port:
            server = HealthServer(self.config.metrics_bind, self.config.metrics_port,
                                  self.metrics.registry, self.readiness, self.heartbeat.liveness).start()
            log.info("metrics and health on http://%s:%d/metrics", self.config.metrics_bind, server.port)
        housekeeping = asyncio.create_task(self._housekeeping(stop))
        beat = asyncio.create_task(self.heartbeat.run(stop))
        try:
            if await self._start_clients(stop):
                log.info("consuming %s as group %s, publishing to %s", self.config.input_topic,
                         self.config.group_id, self.config.output_topic)
                await self._consume(stop)
        finally:
            housekeeping.cancel()
            beat.cancel()
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
        checkpoint = self._checkpoint
        assert checkpoint is not None
        while not stop.is_set():
            self.heartbeat.polled()
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
                    await checkpoint.publish(finished)
                idle = not records and finished is None
                await checkpoint.complete(block=idle or len(checkpoint) >= self.config.max_in_flight)

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

    async def _drain(self) -> None:
        """Finish the batch in inference, publish it, and wait until all is committed."""
        assert self._checkpoint is not None
        finished = await self._take_pending()
        if finished is not None:
            await self._checkpoint.publish(finished)
        await self._checkpoint.drain()

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
            with self.heartbeat.rebuilding():
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
            models = await loop.run_in_executor(None, load_model_set, self.config, False)
        except (ManifestError, ModelError) as exc:
            self.metrics.model_load_failures.inc()
            log.error("model reload refused, keeping %s: %s", versions(self.models), exc)
            return False
        await loop.run_in_executor(self._worker, self.link_predictor.swap_forecaster, Forecaster(models))
        old, self.models = self.models, models
        report_models(models, self.config, self.metrics)
        log.warning("models reloaded: %s -> %s", versions(old), versions(models))
        return True

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
            if self._consumer is not None:
                self._broker_ok = await broker_answers(self._consumer, self.bootstrap or "", self._broker_ok)
                await update_lag(self._consumer, self._assigned, self.metrics)
                await self._update_output_partitions()
            self.metrics.ready.set(1 if self.readiness()[0] else 0)

    async def _update_output_partitions(self) -> None:
        """Tell the processor how many partitions the output topic has (it places each
        link's predictions by key, as the producer's partitioner would)."""
        assert self._producer is not None
        count = await partition_count(self._producer, self.config.output_topic)
        if count is not None and count != self.processor.output_partitions:
            await asyncio.get_running_loop().run_in_executor(
                self._worker, self.processor.set_output_partitions, count)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: Service) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.on_assigned(set(assigned))
