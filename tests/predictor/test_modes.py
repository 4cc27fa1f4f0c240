"""Mode detector: the original rules, plus hysteresis so links near a threshold do not flap."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.modes import (
    DATACENTER,
    HYBRID,
    INTERNET,
    UNDECIDED,
    DetectorRules,
    ModeTracker,
    classify,
    mode_code,
)


def recent(bw: float, lat: float, k: int = 10) -> np.ndarray:
    window = np.full((1, k, 6), np.nan, dtype=np.float32)
    window[0, :, 0] = bw
    window[0, :, 1] = lat
    return window


@pytest.mark.parametrize(
    ("bw", "lat", "expected"),
    [
        (5000, 2, DATACENTER),   # fast and near
        (5000, 80, INTERNET),    # far away, however fast
        (300, 2, INTERNET),      # slow, however near
        (5000, 30, HYBRID),      # in between
        (1000, 9.9, DATACENTER),  # thresholds: >= 1 Gbit/s and < 10 ms
        (999, 9.9, INTERNET),
        (5000, np.nan, HYBRID),  # no latency: fast links are not assumed datacenter
        (20, np.nan, INTERNET),
    ],
)
def test_original_rules_for_an_undecided_link(bw: float, lat: float, expected: int) -> None:
    window = recent(bw, lat)
    got = classify(window[:, :, 0], window[:, :, 1], np.array([UNDECIDED], dtype=np.int8))
    assert got[0] == expected


def run(tracker: ModeTracker, series: list[tuple[float, float]]) -> list[int]:
    mode = np.array([UNDECIDED], dtype=np.int8)
    candidate = np.array([UNDECIDED], dtype=np.int8)
    streak = np.zeros(1, dtype=np.int16)
    seen = []
    for bw, lat in series:
        seen.append(int(tracker.update(recent(bw, lat), mode, candidate, streak)[0]))
    return seen


def test_a_link_hovering_at_the_threshold_does_not_flap() -> None:
    tracker = ModeTracker()
    # latency wobbles around 10 ms: without hysteresis this alternates dc / hybrid
    series = [(5000, 9.5 if i % 2 == 0 else 10.5) for i in range(40)]
    modes = run(tracker, series)
    assert set(modes) == {DATACENTER}
    assert tracker.switches_total == 0


def test_a_sustained_change_switches_after_the_dwell_time() -> None:
    tracker = ModeTracker(DetectorRules(dwell=3))
    modes = run(tracker, [(5000, 2)] * 5 + [(5000, 80)] * 5)
    assert modes[:5] == [DATACENTER] * 5
    assert modes[5:7] == [DATACENTER] * 2  # two samples are not enough
    assert modes[7:] == [INTERNET] * 3
    assert tracker.switches_total == 1


def test_margin_makes_staying_easier_than_entering() -> None:
    current_dc = np.array([DATACENTER], dtype=np.int8)
    current_inet = np.array([INTERNET], dtype=np.int8)
    window = recent(950, 5)  # just under 1 Gbit/s
    assert classify(window[:, :, 0], window[:, :, 1], current_dc)[0] == DATACENTER
    assert classify(window[:, :, 0], window[:, :, 1], current_inet)[0] == INTERNET


def test_unknown_mode_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown mode 'edge'"):
        mode_code("edge")
