"""Library API, no Kafka needed: add samples for links, predict one link or many, read metrics.

    from predictor.api import BandwidthPredictor
    bp = BandwidthPredictor.load(mode="auto")          # shipped models
    bp.add_sample("wan0", ts=1764450000, bandwidth_mbps=212.0, latency_ms=84.0)
    p = bp.predict("wan0")                              # LinkPrediction
    print(p.predicted_mbps, p.confidence, p.allocation.action)

It runs the same LinkPredictor as the service, so results match what `pba run` publishes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.forecaster import SOURCE_NAMES, Forecaster
from predictor.link_predictor import LinkPredictor, Round, models_for_mode
from predictor.modes import MODE_NAMES, DetectorRules
from predictor.runtime import SessionSettings, load_models
from schemas.prediction import Allocation

_LATENCY_KEEP = 10_000


@dataclass(frozen=True)
class LinkPrediction:
    link_id: str
    ts: float
    predicted_mbps: float
    reserve_mbps: float
    confidence: float
    mode: str
    source: str
    model_version: str
    allocation: Allocation
    prediction_id: str


class BandwidthPredictor:
    def __init__(self, link_predictor: LinkPredictor) -> None:
        self.link_predictor = link_predictor
        self._per_mode = dict.fromkeys(MODE_NAMES, 0)
        self._per_source = dict.fromkeys(SOURCE_NAMES, 0)
        self._latencies: deque[float] = deque(maxlen=_LATENCY_KEEP)

    @classmethod
    def load(
        cls,
        models_dir: Path | str | None = None,
        mode: str = "auto",
        allow_fallback: bool = False,
        settings: SessionSettings = SessionSettings(),
        max_links: int = 1_000_000,
        rules: DetectorRules = DetectorRules(),
    ) -> BandwidthPredictor:
        models = load_models(models_dir, models_for_mode(mode), settings, allow_fallback)
        return cls(LinkPredictor(Forecaster(models), mode, max_links, rules))

    def add_sample(
        self,
        link_id: str,
        ts: float,
        bandwidth_mbps: float,
        latency_ms: float | None = None,
        packet_loss: float | None = None,
        jitter_ms: float | None = None,
        throughput_mbps: float | None = None,
    ) -> bool:
        """Record one sample; False if it is not newer than the link's newest (ignored)."""
        values = np.array(
            [[bandwidth_mbps, *(math.nan if v is None else v for v in
                                (latency_ms, packet_loss, jitter_ms, throughput_mbps))]],
            dtype=np.float32,
        )
        _, accepted = self.link_predictor.observe([link_id], np.array([ts], dtype=np.float64), values)
        return bool(accepted[0])

    def predict(self, link_id: str) -> LinkPrediction:
        return self.predict_batch([link_id])[0]

    def predict_batch(self, link_ids: Sequence[str]) -> list[LinkPrediction]:
        """Predict several links in one model call per mode."""
        missing = [link for link in link_ids if link not in self.link_predictor.store]
        if missing:
            raise KeyError(f"no samples for link(s) {missing[:5]}; call add_sample first")
        slots = self.link_predictor.store.slots(link_ids)
        started = time.perf_counter()
        batch = self.link_predictor.predict(slots)
        self.link_predictor.apply(batch)  # the caller is sent these: their stream counts stick
        self._latencies.append(time.perf_counter() - started)
        return self._to_predictions(link_ids, batch)

    def _to_predictions(self, link_ids: Sequence[str], batch: Round) -> list[LinkPrediction]:
        r, a = batch.result, batch.allocations
        ids = self.link_predictor.prediction_ids(batch)
        out = []
        for i, link in enumerate(link_ids):
            mode, source = MODE_NAMES[r.mode[i]], SOURCE_NAMES[r.source[i]]
            self._per_mode[mode] += 1
            self._per_source[source] += 1
            out.append(LinkPrediction(
                link_id=link,
                ts=float(batch.ts[i]),
                predicted_mbps=float(r.predicted_mbps[i]),
                reserve_mbps=float(r.reserve_mbps[i]),
                confidence=float(r.confidence[i]),
                mode=mode,
                source=source,
                model_version=r.version[i],
                allocation=a.record(i),
                prediction_id=ids[i],
            ))
        return out

    def metrics(self) -> dict[str, object]:
        """Counts per mode and source, prediction latency (s) percentiles, mode switches."""
        lat = np.array(self._latencies) if self._latencies else np.zeros(1)
        return {
            "predictions_total": sum(self._per_mode.values()),
            "predictions_by_mode": dict(self._per_mode),
            "predictions_by_source": dict(self._per_source),
            "latency_s": {
                "mean": float(lat.mean()),
                "p50": float(np.percentile(lat, 50)),
                "p95": float(np.percentile(lat, 95)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max()),
            },
            "mode_switches_total": self.link_predictor.tracker.switches_total,
            "links_tracked": len(self.link_predictor.store),
            "fallback_active": self.link_predictor.forecaster.models.fallback_active,
        }
