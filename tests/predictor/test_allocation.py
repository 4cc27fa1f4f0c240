"""Allocation formulas and gates against hand-worked cases (predictor/allocation.py,
docs/ALLOCATION.md), through the link predictor's own path from a link's window to its
allocation: the latest latency, loss and jitter of the window, the mode's RTT when none
was measured, and the stream count the link was last sent."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from predictor.allocation import APPLY, HOLD, SKIP
from predictor.forecaster import BatchResult
from predictor.link_predictor import LinkPredictor

NAN = float("nan")


class Predicts:
    """Stands in for the forecaster (the allocation is under test, not the models): every
    window predicts `bandwidth` at `confidence`."""

    def __init__(self) -> None:
        self.bandwidth, self.confidence = 0.0, 0.0

    def predict(self, raw: np.ndarray, counts: npt.NDArray[np.int64], modes: npt.NDArray[np.int8],
                use_models: bool = True) -> BatchResult:
        n = len(raw)
        return BatchResult(np.full(n, self.bandwidth), np.full(n, 0.8 * self.bandwidth),
                           np.full(n, self.confidence), np.full(n, NAN), modes.copy(),
                           np.zeros(n, np.int8), ["test"] * n, {})


class Link:
    """One link of a link predictor: measured samples in, published allocations out."""

    def __init__(self, mode: str = "internet") -> None:
        self.forecaster = Predicts()
        # the allocation of the forecast as it is: no per-link adaptation in between
        self.link_predictor = LinkPredictor(self.forecaster, mode, adaptation=None)  # type: ignore[arg-type]
        self.ts = 0.0

    def allocation(self, bandwidth: float, confidence: float, rtt: float = NAN, loss: float = NAN,
                   jitter: float = NAN) -> dict[str, float]:
        """Observe one sample with these measurements, predict `bandwidth` at `confidence`,
        publish it (the link keeps its stream count) and return its allocation."""
        self.ts += 1.0
        values = np.array([[bandwidth, rtt, loss, jitter, NAN]], dtype=np.float32)
        slots, accepted = self.link_predictor.observe(["link"], np.array([self.ts]), values)
        assert accepted.all()
        self.forecaster.bandwidth, self.forecaster.confidence = bandwidth, confidence
        batch = self.link_predictor.predict(slots)
        self.link_predictor.apply(batch)
        a = batch.allocations
        return {field: getattr(a, field)[0] for field in a.__dataclass_fields__}


def one(bandwidth: float, confidence: float, rtt: float, loss: float = NAN, jitter: float = NAN,
        previous: int | None = None) -> dict[str, float]:
    link = Link()
    if previous is not None:  # at 30 ms and no loss a link gets one stream per 10 Mbit/s
        assert link.allocation(10.0 * previous, 0.95, rtt=30)["streams"] == previous
    return link.allocation(bandwidth, confidence, rtt, loss, jitter)


def test_worked_example_from_the_docs() -> None:
    a = one(500, 0.9, 80, loss=0.005, jitter=2)
    assert a["streams"] == 50
    assert a["buffer_bytes"] == 1_048_576  # 5,125,000 clamped to 1 MiB
    assert a["chunk_bytes"] == 20_971
    assert a["pacing_bytes_per_s"] == 59_375_000
    assert a["window_bytes"] == 1_048_576 * 50
    assert a["action"] == APPLY


def test_short_rtt_scales_streams_up_and_buffer_is_the_bandwidth_delay_product() -> None:
    a = one(100, 0.7, 5, jitter=1)
    assert a["streams"] == 13  # int(100 / 10) * 1.3
    assert a["buffer_bytes"] == 75_000  # 12,500 bytes/ms * (5 ms RTT + 1 ms jitter)
    assert a["chunk_bytes"] == 8_192  # 75,000 / 13 = 5,769, raised to the 8 KiB floor
    assert a["window_bytes"] == 75_000 * 13


def test_long_rtt_and_loss_scale_streams_down_and_loss_halves_chunks() -> None:
    a = one(1000, 0.85, 150, loss=0.03)
    assert a["streams"] == 52  # int(100 * 0.7 * 0.75) = 52
    assert a["buffer_bytes"] == 1_048_576
    assert a["chunk_bytes"] == 10_082  # 1,048,576 / 52 / 2


def test_without_a_measured_rtt_the_modes_typical_one_is_assumed() -> None:
    internet = Link("internet").allocation(100, 0.9)  # 50 ms
    assert internet["streams"] == 10 and internet["buffer_bytes"] == 12_500 * 50
    datacenter = Link("datacenter").allocation(100, 0.9)  # 1 ms: short, more streams
    assert datacenter["streams"] == 13 and datacenter["buffer_bytes"] == 16_384  # 12,500 raised


def test_the_latest_measured_latency_counts_not_a_missing_newer_one() -> None:
    link = Link()
    link.allocation(100, 0.9, rtt=150)
    assert link.allocation(1000, 0.9)["streams"] == 70  # still 150 ms: 100 * 0.7


def test_clamps() -> None:
    assert one(1, 0.9, 30)["streams"] == 2
    assert one(1, 0.9, 30)["buffer_bytes"] == 16_384
    assert one(1, 0.9, 30)["chunk_bytes"] == 8_192
    assert one(1e5, 0.9, 30)["streams"] == 256


def test_confidence_gates() -> None:
    assert one(100, 0.59, 30)["action"] == SKIP
    assert one(100, 0.6, 30)["action"] == HOLD
    assert one(100, 0.79, 30)["action"] == HOLD
    assert one(100, 0.8, 30)["action"] == APPLY


def test_stream_count_changes_only_when_confident_and_large() -> None:
    assert one(300, 0.9, 30, previous=20)["streams"] == 30  # +50 % at 0.9: resize
    assert one(300, 0.65, 30, previous=20)["streams"] == 20  # not confident enough
    assert one(220, 0.9, 30, previous=20)["streams"] == 20  # +10 %: keep
    assert one(300, 0.5, 30)["streams"] == 30  # nothing sent yet
