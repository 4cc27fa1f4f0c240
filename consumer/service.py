"""`pba run`: the streaming service, all of its I/O.

Flow: clients.py connects -> getmany() -> Processor.process (in the one inference
thread) -> checkpoint.py produces predictions and dead letters and, when every message
of a batch is acknowledged, commits the batch's offsets (at-least-once). While one batch is in inference the event loop publishes the one
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.checkpoint import Checkpoint
from consumer.clients import connect
from consumer.config import ServiceConfig
from consumer.flags import FlagsFile
from consumer.health import HealthServer
from consumer.messages import BatchOutput
from consumer.metrics import Metrics
from consumer.processor import Processor
from consumer.rebuild import Rebuild
from consumer.topics import ensure_topics
from consumer.watch import DirectoryWatch
from predictor.engine import Engine
from predictor.manifest import DEFAULT_MODELS_DIR, ManifestError
from predictor.pipeline import Pipeline, models_for_mode
from predictor.runtime import ModelError, ModelSet, SessionSettings, load_models

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
HOUSEKEEPING_S = 1.0
BROKER_PROBE_TIMEOUT_S = 2.0
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
        await ensure_topics(self.bootstrap or "", topics, security=c.kafka_security())
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
        checkpoint = self._checkpoint
        assert checkpoint is not None
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
