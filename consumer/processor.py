"""From a batch of consumed records to the messages to publish: decode, window, predict,
score, encode. CPU work only, no I/O; runs in the service's single inference thread,
which is the only thread that touches the pipeline's state.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.config import ServiceConfig
from consumer.drift import PageHinkley
from consumer.flags import Flags, rollout_bucket
from consumer.metrics import Metrics
from predictor.confidence import HIT_TOLERANCE
from predictor.engine import SOURCE_NAMES
from predictor.modes import BUDGET_S, DATACENTER, MODE_NAMES
from predictor.pipeline import Pipeline, Round
from predictor.window import MEASURED_CHANNELS
from schemas import EventError, MetricEvent, decode_event
from schemas.prediction import Prediction, encode_prediction

log = logging.getLogger(__name__)

V1_VERSION = "v1-last-value"
#: Share of a batch's time allowed for inference before the fallback takes over: half the
#: tightest budget (100 ms), leaving the rest for Kafka and queueing.
INFERENCE_DEADLINE_S = 0.05
PREDICTORS = ("v3", "v1")


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
    arrival_ms: int = 0  # Kafka timestamp of the input record
    mode: str = ""  # for the end-to-end latency label; "" for dead letters


@dataclass
class BatchOutput:
    messages: list[Outgoing] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit


class Processor:
    def __init__(self, pipeline: Pipeline, config: ServiceConfig, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.config = config
        self.metrics = metrics
        self.flags = Flags()
        store = pipeline.store
        store.add_column("bucket", np.int8, -1)
        store.add_column("partition", np.int32, -1)
        for predictor in PREDICTORS:
            store.add_column(f"pending_{predictor}", np.float32, np.nan)
        store.add_column("pending_mode", np.int8, 0)
        self.drift = {mode: PageHinkley() for mode in MODE_NAMES}
        self._switches_seen = 0
        self._cap_logged = -math.inf

    # -- batches ---------------------------------------------------------------------

    def process(self, records: Sequence[ConsumerRecord], now: float | None = None) -> BatchOutput:
        now = time.monotonic() if now is None else now
        out = BatchOutput()
        events: list[tuple[MetricEvent, ConsumerRecord]] = []
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            out.offsets[tp] = max(out.offsets.get(tp, 0), record.offset + 1)
            try:
                events.append((decode_event(record.value, self.config.max_event_bytes), record))
            except EventError as exc:
                out.messages.append(self._dead_letter(record, exc))
        self.metrics.events_consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        for round_events in _rounds(events):
            self._round(round_events, now, out)
        self._after_batch()
        return out

    def replay(self, records: Sequence[ConsumerRecord], now: float | None = None) -> int:
        """Feed history into the windows without predicting (window rebuild); returns
        the number of samples taken. Bad or late records are skipped silently: they were
        dealt with when first consumed."""
        now = time.monotonic() if now is None else now
        events = []
        for record in records:
            try:
                events.append((decode_event(record.value, self.config.max_event_bytes), record))
            except EventError:
                continue
        taken = 0
        for round_events in _rounds(events):
            ids, ts, values = _columns(round_events)
            slots, accepted = self.pipeline.observe(ids, ts, values, now)
            self.pipeline.store.column("partition")[slots] = [r.partition for _, r in round_events]
            taken += int(accepted.sum())
        return taken

    def forget_partitions(self, partitions: set[int]) -> int:
        """Drop the windows of links read from partitions this instance no longer owns."""
        store = self.pipeline.store
        column = store.column("partition")
        slots = np.flatnonzero(np.isin(column, list(partitions)))
        links = [link for link in (store.link_id(s) for s in slots.tolist()) if link is not None]
        return len(store.remove(links))

    def evict_idle(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        evicted = self.pipeline.store.evict_idle(now, self.config.idle_evict_s)
        self.metrics.links_evicted.labels("idle").inc(len(evicted))
        self.metrics.links_tracked.set(len(self.pipeline.store))
        return len(evicted)

    # -- one round: each link at most once -------------------------------------------

    def _round(
        self, events: list[tuple[MetricEvent, ConsumerRecord]], now: float, out: BatchOutput
    ) -> None:
        ids, ts, values = _columns(events)
        store = self.pipeline.store
        slots, accepted = self.pipeline.observe(ids, ts, values, now)
        late = int((~accepted).sum())
        if late:
            self.metrics.events_late.inc(late)
        if not accepted.any():
            return
        slots = slots[accepted]
        kept = [e for e, ok in zip(events, accepted.tolist(), strict=True) if ok]
        store.column("partition")[slots] = [r.partition for _, r in kept]
        self._score(slots, values[accepted, 0])

        flags = self.flags
        bucket = store.column("bucket")
        new = bucket[slots] < 0
        if new.any():
            bucket[slots[new]] = [rollout_bucket(e.link_id) for (e, _), n in zip(kept, new, strict=True) if n]
        v3 = np.zeros(len(slots), dtype=bool) if flags.kill_switch else bucket[slots] < flags.rollout_percent

        deadline = self._deadline(kept)
        live_v3 = np.flatnonzero(v3)
        live_v1 = np.flatnonzero(~v3)
        if flags.shadow:
            live_v1 = np.arange(len(slots))
            live_v3 = np.empty(0, dtype=np.intp)
            self._emit(self.pipeline.predict(slots, deadline), kept, "v3", True, out,
                       np.arange(len(slots)))
        if live_v3.size:
            self._emit(self.pipeline.predict(slots[live_v3], deadline), kept, "v3", False, out, live_v3)
        if live_v1.size:
            self._emit(self.pipeline.predict(slots[live_v1], use_models=False), kept, "v1", False,
                       out, live_v1)

    @staticmethod
    def _deadline(events: list[tuple[MetricEvent, ConsumerRecord]]) -> float | None:
        """Inference deadline for a round, or None when catching up on a backlog.

        Live events get half the tightest budget; a model that would take longer is
        replaced by the fallback to keep the budget. Events already older than the budget
        when read (a backlog after a restart or an outage) have missed it anyway: they get
        the model, which is then also the fastest way through the backlog.
        """
        oldest_ms = min((r.timestamp for _, r in events if r.timestamp > 0), default=0)
        if oldest_ms and time.time() - oldest_ms / 1000.0 > BUDGET_S[DATACENTER]:
            return None
        return time.perf_counter() + INFERENCE_DEADLINE_S

    def _emit(self, batch: Round, events: list[tuple[MetricEvent, ConsumerRecord]], predictor: str,
              shadow: bool, out: BatchOutput, rows: np.ndarray) -> None:
        r, a = batch.result, batch.allocations
        store = self.pipeline.store
        store.column(f"pending_{predictor}")[batch.slots] = r.predicted_mbps
        if predictor == "v3":
            store.column("pending_mode")[batch.slots] = r.mode
        ids = self.pipeline.prediction_ids(batch)
        horizon = self.config.horizon_s
        topic = self.config.output_topic
        if shadow and self.config.shadow_topic:
            topic = self.config.shadow_topic
        modes = [MODE_NAMES[m] for m in r.mode.tolist()]
        sources = [SOURCE_NAMES[s] for s in r.source.tolist()]
        if r.inference_s > 0:
            for mode in set(m for m, s in zip(modes, sources, strict=True) if s == "model"):
                self.metrics.inference_seconds.labels(mode).observe(r.inference_s)
        for i, row in enumerate(rows.tolist()):
            event, record = events[row]
            version = V1_VERSION if predictor == "v1" else r.version[i]
            prediction = Prediction(
                prediction_id=ids[i],
                link_id=event.link_id,
                ts=event.ts,
                horizon_s=horizon,
                valid_until=event.ts + horizon,
                predicted_bandwidth_mbps=_finite(r.predicted_mbps[i]),
                reserve_mbps=_finite(min(r.reserve_mbps[i], r.predicted_mbps[i])),
                confidence=_finite(r.confidence[i]),
                mode=modes[i],  # type: ignore[arg-type]
                model_version=version,
                source=sources[i],  # type: ignore[arg-type]
                inference_ms=r.inference_s * 1000.0,
                shadow=shadow,
                allocation=a.record(i),
            )
            out.messages.append(Outgoing(topic, event.link_id.encode(), encode_prediction(prediction),
                                         None, record.timestamp, modes[i]))
        # one metric update per label set, not per event (labels() costs ~15 us)
        if shadow:
            self.metrics.shadow_predictions.inc(len(rows))
        else:
            for (mode, source), count in Counter(zip(modes, sources, strict=True)).items():
                self.metrics.predictions.labels(mode, source).inc(count)

    def _score(self, slots: np.ndarray, actual: np.ndarray) -> None:
        """Score each link's previous prediction now that its next sample has arrived."""
        store = self.pipeline.store
        modes = store.column("pending_mode")[slots]
        for predictor in PREDICTORS:
            pending = store.column(f"pending_{predictor}")
            predicted = pending[slots]
            scored = ~np.isnan(predicted) & (actual > 0)
            pending[slots] = np.nan
            if not scored.any():
                continue
            error = np.abs(predicted[scored] - actual[scored]) / actual[scored]
            for code in np.unique(modes[scored]).tolist():
                mode = MODE_NAMES[code]
                sel = modes[scored] == code
                self.metrics.scored.labels(mode, predictor).inc(int(sel.sum()))
                self.metrics.hits.labels(mode, predictor).inc(int((error[sel] < HIT_TOLERANCE).sum()))
                hist = self.metrics.abs_pct_error.labels(mode, predictor)
                for value in error[sel].tolist():
                    hist.observe(value)
                if predictor == "v3":
                    self._update_drift(mode, error[sel])

    def _update_drift(self, mode: str, errors: np.ndarray) -> None:
        detector = self.drift[mode]
        was = detector.drifting
        now = detector.update(errors)
        self.metrics.drift.labels(mode).set(1 if now else 0)
        if now and not was:
            log.warning("drift: %s prediction error rose and stays high (baseline mean APE %.3f); "
                        "check the links or retrain", mode, detector.baseline)
        elif was and not now:
            log.warning("drift: %s prediction error is back to its earlier level", mode)

    def _after_batch(self) -> None:
        store = self.pipeline.store
        self.metrics.links_tracked.set(len(store))
        switches = self.pipeline.tracker.switches_total
        if switches > self._switches_seen:
            self.metrics.mode_switches.inc(switches - self._switches_seen)
            self._switches_seen = switches
        if store.cap_evictions_total:
            self.metrics.links_evicted.labels("cap").inc(store.cap_evictions_total)
            self.metrics.link_cap_reached.set(1)
            if time.monotonic() - self._cap_logged > 60:
                self._cap_logged = time.monotonic()
                log.warning("link cap of %d reached: evicted the %d least recently seen links "
                            "(raise --max-links or add instances)", store.max_links,
                            store.cap_evictions_total)
            store.cap_evictions_total = 0
        elif len(store) < store.max_links:
            self.metrics.link_cap_reached.set(0)

    def _dead_letter(self, record: ConsumerRecord, error: EventError) -> Outgoing:
        self.metrics.events_invalid.labels(error.reason).inc()
        headers = [
            ("pba.error.reason", error.reason.encode()),
            ("pba.error.message", str(error)[:500].encode()),
            ("pba.error.field", (error.field or "").encode()),
            ("pba.source.topic", record.topic.encode()),
            ("pba.source.partition", str(record.partition).encode()),
            ("pba.source.offset", str(record.offset).encode()),
            *((k, v) for k, v in (record.headers or ()) if not k.startswith("pba.")),
        ]
        return Outgoing(self.config.dlq_topic, record.key, record.value or b"", headers, record.timestamp)


def _rounds(
    events: list[tuple[MetricEvent, ConsumerRecord]],
) -> list[list[tuple[MetricEvent, ConsumerRecord]]]:
    """Split a batch so each link appears at most once per round, in arrival order."""
    rounds: list[list[tuple[MetricEvent, ConsumerRecord]]] = []
    seen: dict[str, int] = {}
    for item in events:
        k = seen.get(item[0].link_id, 0)
        seen[item[0].link_id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(item)
    return rounds


def _columns(events: list[tuple[MetricEvent, ConsumerRecord]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = [e.link_id for e, _ in events]
    ts = np.fromiter((e.ts for e, _ in events), dtype=np.float64, count=len(events))
    values = np.array([e[2:2 + MEASURED_CHANNELS] for e, _ in events], dtype=np.float32).reshape(
        len(events), MEASURED_CHANNELS)
    return ids, ts, values


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) and value >= 0 else 0.0
