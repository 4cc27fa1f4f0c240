"""Allocation formulas and gates against hand-worked cases (see predictor/allocation.py)."""

from __future__ import annotations

import numpy as np

from predictor.allocation import APPLY, HOLD, SKIP, allocate


def one(bw: float, conf: float, rtt: float, loss: float = np.nan, jitter: float = np.nan,
        previous: int | None = None) -> dict[str, float]:
    a = allocate(np.array([bw]), np.array([conf]), np.array([rtt]), np.array([loss]),
                 np.array([jitter]), None if previous is None else np.array([previous]))
    return {field: getattr(a, field)[0] for field in a.__dataclass_fields__}


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
    assert one(300, 0.5, 30, previous=0)["streams"] == 30  # nothing sent yet
