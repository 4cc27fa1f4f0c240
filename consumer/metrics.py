"""Prometheus metrics of the service (documented in docs/METRICS.md).

Labels are bounded sets only (mode, source, reason, partition, predictor): never a link
id, so the number of series stays flat at any number of links.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from predictor.modes import MODE_NAMES
from schemas.event import REASONS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
ERROR_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class ArrayHistogram(Collector):
    """A labelled histogram observed a whole array at a time.

    prometheus_client's Histogram takes one value per call (~1 us each, under a lock);
    per-event histograms on the hot path instead count a batch with one numpy call.
    Exposed exactly like a Histogram (_bucket with le, _sum, _count).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
                 registry: CollectorRegistry, deprecated_name: str | None = None) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        # a former name, exposed with the same series for one release so that dashboards
        # and alerts can move over
        self._names = [(name, documentation)]
        if deprecated_name:
            self._names.append((deprecated_name, f"Deprecated: use {name}. {documentation}"))
        self._bounds = np.array([*buckets, np.inf], dtype=np.float64)
        self._counts: dict[tuple[str, ...], npt.NDArray[np.int64]] = {}
        self._sums: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, labels: tuple[str, ...], values: npt.NDArray[np.floating]) -> None:
        """Count every finite value of `values` under the label values `labels`."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        counts = np.bincount(np.searchsorted(self._bounds, values, side="left"),
                             minlength=self._bounds.size)
        with self._lock:
            if labels in self._counts:
                self._counts[labels] += counts
                self._sums[labels] += float(values.sum())
            else:
                self._counts[labels] = counts
                self._sums[labels] = float(values.sum())

    def describe(self) -> Iterator[HistogramMetricFamily]:
        for name, documentation in self._names:
            yield HistogramMetricFamily(name, documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            series = [(labels, np.cumsum(counts), self._sums[labels])
                      for labels, counts in self._counts.items()]
        for name, documentation in self._names:
            family = HistogramMetricFamily(name, documentation, labels=self.labelnames)
            for labels, cumulative, total in series:
                buckets = [(floatToGoString(b), int(c))
                           for b, c in zip(self._bounds, cumulative, strict=True)]
                family.add_metric(list(labels), buckets, total)
            yield family


class Metrics:
    """All series of one service instance, in their own registry (tests run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "pba_events_consumed_total", "Input messages read from Kafka", registry=r)
        self.events_invalid = Counter(
            "pba_events_invalid_total", "Input messages dead-lettered, by reason", ["reason"], registry=r)
        self.dead_letters_shortened = Counter(
            "pba_dead_letters_shortened_total",
            "Dead letters published without their original value: the dead-letter topic refused the size",
            registry=r)
        self.events_misrouted = Counter(
            "pba_events_misrouted_total",
            "Valid events whose Kafka key is not their link_id (a link's samples may be split "
            "across partitions)", registry=r)
        self.events_late = Counter(
            "pba_events_late_total", "Valid events not newer than their link's newest (not predicted)",
            registry=r)
        self.predictions = Counter(
            "pba_predictions_total", "Predictions published, by mode and source",
            ["mode", "source"], registry=r)
        self.shadow_predictions = Counter(
            "pba_shadow_predictions_total", "Predictions published flagged shadow=true", registry=r)
        self.inference_seconds = Histogram(
            "pba_inference_seconds", "Model inference time per batch, by mode", ["mode"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end_seconds = ArrayHistogram(
            "pba_end_to_end_seconds",
            "From the event's arrival in Kafka (record timestamp) to its prediction's acknowledgement",
            ["mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "pba_batch_size", "Events per processed batch", buckets=BATCH_BUCKETS, registry=r)
        self.links_tracked = Gauge("pba_links_tracked", "Links with a window in memory", registry=r)
        self.links_evicted = Counter(
            "pba_links_evicted_total", "Links forgotten, by reason (idle, cap)", ["reason"], registry=r)
        self.link_cap_reached = Gauge(
            "pba_link_cap_reached", "1 while the link cap forces evictions", registry=r)
        self.consumer_lag = Gauge(
            "pba_consumer_lag", "Messages behind the end of each assigned input partition",
            ["partition"], registry=r)
        self.commit_seconds = Histogram(
            "pba_commit_seconds", "Offset commit latency", buckets=LATENCY_BUCKETS, registry=r)
        self.commit_failures = Counter(
            "pba_commit_failures_total", "Offset commits that failed (retried)", registry=r)
        self.rebalances = Counter(
            "pba_rebalances_total", "Partition assignments and revocations", ["kind"], registry=r)
        self.windows_rebuilt = Counter(
            "pba_rebuild_records_total", "Input records replayed to rebuild windows on assignment",
            registry=r)
        self.mode_switches = Counter(
            "pba_mode_switches_total", "Links whose detected mode changed", registry=r)
        self.hits = Counter(
            "pba_accuracy_hits_total", "Scored predictions within +/-20 % of the next sample",
            ["mode", "predictor"], registry=r)
        self.scored = Counter(
            "pba_accuracy_scored_total", "Predictions scored against the next sample",
            ["mode", "predictor"], registry=r)
        self.last_value_hits = Counter(
            "pba_accuracy_last_value_hits_total", "On the events the models' predictions were scored "
            "on (predictor v3), how often the last value would have been within +/-20 %",
            ["mode"], registry=r)
        self.abs_pct_error = ArrayHistogram(
            "pba_absolute_percentage_error_ratio", "|predicted - actual| / actual of scored predictions",
            ["mode", "predictor"], buckets=ERROR_BUCKETS, registry=r,
            deprecated_name="pba_absolute_percentage_error")  # before 2026-12: a ratio named as one
        self.drift = Gauge(
            "pba_drift_detected", "1 while the drift detector flags sustained error growth",
            ["mode"], registry=r)
        self.model_info = Info("pba_model", "Loaded model versions", registry=r)
        self.fallback_active = Gauge(
            "pba_fallback_active", "1 when a mode is served by the heuristic because its model failed",
            ["mode"], registry=r)
        self.model_load_failures = Counter(
            "pba_model_load_failures_total", "Model (re)loads that failed", registry=r)
        self.ready = Gauge("pba_ready", "1 when partitions are assigned and models loaded", registry=r)
        self.flag_reloads = Counter(
            "pba_flag_reloads_total", "Feature-flag file reloads, by result", ["result"], registry=r)
        self.paused = Gauge(
            "pba_fetch_paused", "1 while fetching is paused because too much is in flight", registry=r)
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Create every labelled series up front, so queries and alerts see 0, not nothing."""
        for reason in REASONS:
            self.events_invalid.labels(reason)
        for reason in ("idle", "cap"):
            self.links_evicted.labels(reason)
        for result in ("ok", "rejected"):
            self.flag_reloads.labels(result)
        for kind in ("assign", "revoke"):
            self.rebalances.labels(kind)
        for mode in MODE_NAMES:
            self.drift.labels(mode)
