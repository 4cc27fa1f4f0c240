"""From a batch of consumed records to the messages to publish: decode, window, predict,
score, encode. CPU work only, no I/O; runs in the service's single inference thread,
which is the only thread that touches the link predictor's state.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.config import ServiceConfig
from consumer.dead_letters import dead_letters, without_frames
from consumer.flags import Flags
from consumer.messages import BatchOutput, Headers, Outgoing
from consumer.metrics import Metrics
from consumer.routing import route
from consumer.scoring import Scoring
from predictor.adaptation import AdaptationState
from predictor.allocation import ACTION_NAMES
from predictor.forecaster import SOURCE_NAMES
from predictor.link_predictor import LinkPredictor, Round, WindowSnapshot
from predictor.linkstate import ADAPTATION_HEADER, encode_adaptation
from predictor.modes import MODE_NAMES
from predictor.rollout import BASELINE, BASELINE_VERSION
from predictor.window import MEASURED_CHANNELS
from schemas import EventError, MetricEvent, decode_event
from schemas.event import BAD_TIMESTAMP
from schemas.prediction import PredictionColumns, encode_predictions

log = logging.getLogger(__name__)

#: the rule aiokafka's producer (and Kafka's Java client) uses to place a keyed message
_PARTITIONER = DefaultPartitioner()


class RecordProcessor:
    def __init__(self, link_predictor: LinkPredictor, config: ServiceConfig, metrics: Metrics) -> None:
        self.link_predictor = link_predictor
        self.config = config
        self.metrics = metrics
        self.flags = Flags()
        self.output_partitions = 0  # partitions of the output topic, 0 = not known (yet)
        self.scoring = Scoring(metrics)
        self._switches_seen = 0
        self._cap_logged = -math.inf
        self._misrouted_logged = -math.inf

    # -- batches ---------------------------------------------------------------------

    def process(self, records: Sequence[ConsumerRecord], now: float | None = None) -> BatchOutput:
        now = time.monotonic() if now is None else now
        out = BatchOutput()
        events: list[tuple[MetricEvent, ConsumerRecord]] = []
        dead: list[tuple[ConsumerRecord, EventError]] = []
        latest = self._latest_ts()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            out.offsets[tp] = max(out.offsets.get(tp, 0), record.offset + 1)
            try:
                events.append((self._decode(record.value, latest), record))
            except EventError as exc:
                dead.append((record, without_frames(exc)))
        if dead:
            out.messages.append(dead_letters(dead, self.config.dlq_topic, self.metrics))
        self._check_keys(events)
        self.metrics.events_consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        self._predict(_rounds(events), now, out)
        self._after_batch()
        return out

    def _check_keys(self, events: list[tuple[MetricEvent, ConsumerRecord]]) -> None:
        """Count (and say, once a minute) events not keyed by their link id. They are
        predicted, but Kafka places a message by its key: one link's samples can then land
        in several partitions, read by several instances, each keeping part of its window."""
        wrong = [(event.link_id, record.key) for event, record in events
                 if record.key != event.link_id.encode()]
        if not wrong:
            return
        self.metrics.events_misrouted.inc(len(wrong))
        if time.monotonic() - self._misrouted_logged > 60:
            self._misrouted_logged = time.monotonic()
            link, key = wrong[0]
            log.warning("%d events in a batch are not keyed by their link_id (e.g. link %r with key %r): "
                        "key each event by its link_id, or a link's window is split across partitions",
                        len(wrong), link[:64], key[:64] if key is not None else None)

    def observe_history(self, records: Sequence[ConsumerRecord], now: float | None = None) -> int:
        """Feed history into the windows without predicting (window rebuild); returns
        the number of samples taken. Bad or late records are skipped silently: they were
        dealt with when first consumed."""
        now = time.monotonic() if now is None else now
        events = []
        latest = self._latest_ts()
        for record in records:
            try:
                events.append((self._decode(record.value, latest), record))
            except EventError:
                continue
        taken = 0
        for round_events in _rounds(events):
            ids, ts, values = _columns(round_events)
            slots, accepted = self.link_predictor.observe(ids, ts, values, now)
            self.link_predictor.store.place(slots, [r.partition for _, r in round_events])
            taken += int(accepted.sum())
        return taken

    def _latest_ts(self) -> float:
        """The newest event time accepted now: a sample stamped far ahead (an agent's clock
        off by hours or years) would make its link drop every real sample as late until
        the clock caught up with it."""
        limit = self.config.max_future_s
        return time.time() + limit if limit > 0 else math.inf

    def _decode(self, value: bytes | None, latest_ts: float) -> MetricEvent:
        event = decode_event(value, self.config.max_event_bytes)
        if event.ts > latest_ts:
            ahead = event.ts - (latest_ts - self.config.max_future_s)
            raise EventError(BAD_TIMESTAMP, f"ts {event.ts:.3f} is {ahead:,.0f} s ahead of this host's "
                             f"clock, more than max_future_s ({self.config.max_future_s:g} s): check the "
                             "agent's clock", "ts")
        return event

    def forget_partitions(self, partitions: set[int]) -> int:
        """Drop the windows of links read from partitions this instance no longer owns."""
        store = self.link_predictor.store
        column = store.column("partition")
        slots = np.flatnonzero(np.isin(column, list(partitions)))
        links = [link for link in (store.link_id(s) for s in slots.tolist()) if link is not None]
        return len(store.remove(links))

    def evict_idle(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        evicted = self.link_predictor.store.evict_idle(now, self.config.idle_evict_s)
        self.metrics.links_evicted.labels("idle").inc(len(evicted))
        self.metrics.links_tracked.set(len(self.link_predictor.store))
        return len(evicted)

    # -- a batch: observed round by round, predicted at once ----------------------------

    def _predict(self, rounds: list[list[tuple[MetricEvent, ConsumerRecord]]], now: float,
                 out: BatchOutput) -> None:
        """Observe each round (a link at most once per round), capturing its windows;
        then predict every round in one forecaster call per predictor, score the previous
        predictions, and emit one message list per predictor.

        Only the first round can bring new links, so only it can evict links for the cap
        (never its own: WindowStore.slots), before anything is captured."""
        batch, kept, actual = self._observe(rounds, now)
        if batch is None:
            return
        made = route(self.link_predictor, self.flags, batch)
        self.scoring.score(self.link_predictor.store, batch, actual, made)
        for predictor, shadow, rows, predicted in made:
            self._emit(predicted, [kept[i] for i in rows.tolist()], predictor, shadow, out)

    def _observe(self, rounds: list[list[tuple[MetricEvent, ConsumerRecord]]], now: float,
                 ) -> tuple[WindowSnapshot | None, list[tuple[MetricEvent, ConsumerRecord]], np.ndarray]:
        """Append each round's samples and capture the windows of the accepted ones."""
        store = self.link_predictor.store
        captured, kept, actual = [], [], []
        for index, events in enumerate(rounds):
            ids, ts, values = _columns(events)
            slots, accepted = self.link_predictor.observe(ids, ts, values, now)
            late = int((~accepted).sum())
            if late:
                self.metrics.events_late.inc(late)
            if not accepted.any():
                continue
            slots = slots[accepted]
            taken = [e for e, ok in zip(events, accepted.tolist(), strict=True) if ok]
            store.place(slots, [r.partition for _, r in taken])
            captured.append(self.link_predictor.capture(slots, index))
            kept += taken
            actual.append(values[accepted, 0])
        if not captured:
            return None, kept, np.empty(0, dtype=np.float32)
        return WindowSnapshot.concatenate(captured), kept, np.concatenate(actual)

    def _emit(self, batch: Round, events: list[tuple[MetricEvent, ConsumerRecord]], predictor: str,
              shadow: bool, out: BatchOutput) -> None:
        r, a = batch.result, batch.allocations
        n = len(events)
        topic = self.config.output_topic
        if shadow and self.config.shadow_topic:
            topic = self.config.shadow_topic
        link_ids = [event.link_id for event, _ in events]
        keys: list[bytes | None] = [link.encode() for link in link_ids]
        modes = [MODE_NAMES[m] for m in r.mode.tolist()]
        sources = [SOURCE_NAMES[s] for s in r.source.tolist()]
        for model, seconds in r.model_seconds.items():  # each model's own time, once a batch
            self.metrics.inference_seconds.labels(model).observe(seconds)
        versions = [BASELINE_VERSION] * n if predictor == BASELINE else r.version
        values = encode_predictions(PredictionColumns(
            prediction_id=self.link_predictor.prediction_ids(batch, versions, shadow),
            link_id=link_ids,
            ts=batch.ts.tolist(),
            predicted_bandwidth_mbps=_finite(r.predicted_mbps).tolist(),
            reserve_mbps=_finite(np.minimum(r.reserve_mbps, r.predicted_mbps)).tolist(),
            confidence=_finite(r.confidence).tolist(),
            mode=modes,
            model_version=versions,
            source=sources,
            streams=a.streams.tolist(),
            buffer_bytes=a.buffer_bytes.tolist(),
            chunk_bytes=a.chunk_bytes.tolist(),
            pacing_bytes_per_s=a.pacing_bytes_per_s.tolist(),
            window_bytes=a.window_bytes.tolist(),
            action=[ACTION_NAMES[x] for x in a.action.tolist()],
            horizon_s=self.config.horizon_s,
            inference_ms=r.inference_s * 1000.0,
            shadow=shadow,
        ))
        arrival = np.fromiter((record.timestamp for _, record in events), dtype=np.int64, count=n)
        partitions = self._partitions(batch.slots, keys) if topic == self.config.output_topic else None
        headers = None if batch.adaptation is None else _adaptation_headers(batch.slots, batch.adaptation)
        out.messages.append(Outgoing(topic, keys, values, arrival, r.mode.copy(), partitions, headers))
        # one metric update per label set, not per event (labels() costs ~15 us)
        if shadow:
            self.metrics.shadow_predictions.inc(n)
        else:
            for (mode, source), count in Counter(zip(modes, sources, strict=True)).items():
                self.metrics.predictions.labels(mode, source).inc(count)

    def _partitions(self, slots: npt.NDArray[np.intp],
                    keys: list[bytes | None]) -> npt.NDArray[np.int32] | None:
        """Each link's output partition, as the producer's default partitioner picks it
        from the key, computed once per link and kept in the store."""
        count = self.output_partitions
        if count <= 0:
            return None
        every = list(range(count))
        return self.link_predictor.store.out_partitions(slots, lambda i: _PARTITIONER(keys[i], every, every))

    def set_output_partitions(self, count: int) -> None:
        """The output topic's partition count (from the producer's metadata); a change
        makes every link's partition be computed again."""
        if count != self.output_partitions:
            self.link_predictor.store.forget_out_partitions()
            self.output_partitions = count

    def _after_batch(self) -> None:
        store = self.link_predictor.store
        self.metrics.links_tracked.set(len(store))
        switches = self.link_predictor.tracker.switches_total
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


def _adaptation_headers(slots: npt.NDArray[np.intp], after: AdaptationState) -> list[Headers]:
    """What each link's adaptation learnt, for a rebuild, on the link's last message of
    the batch only. A rebuild reads back the prediction for a link's newest committed
    sample, and offsets are committed at batch ends only, so that prediction is always
    its link's last in a batch (after: each row's state after it). On every message,
    the header cost the service about 4 % of its end-to-end rate: the broker and every
    reader of the topic handle its bytes."""
    _, from_end = np.unique(slots[::-1], return_index=True)
    last = len(slots) - 1 - from_end
    headers: list[Headers] = [[] for _ in range(len(slots))]
    for row, state in zip(last.tolist(), encode_adaptation(after.take(last)), strict=True):
        headers[row] = [(ADAPTATION_HEADER, state)]
    return headers


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


def _finite(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """NaN, infinite or negative values as 0: the contract's fields are finite and >= 0."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values) & (values >= 0), values, 0.0)


