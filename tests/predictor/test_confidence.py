"""Confidence: the original heuristic as reference, and a calibration that tells the truth."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.confidence import (
    Calibration,
    fit_calibration,
    heuristic_confidence,
    hits,
    reliability_table,
)
from predictor.modes import DATACENTER, INTERNET


def test_hits_use_the_original_20_percent_rule() -> None:
    assert hits(np.array([100, 119, 121, 80.5, 5]), np.array([100, 100, 100, 100, 0])).tolist() == [
        True, True, False, True, False,
    ]


def test_heuristic_matches_the_original_formula() -> None:
    steady = np.full((1, 10), 100.0)
    noisy = np.array([[50, 150] * 5], dtype=float)  # cv = 0.5
    dc, inet = np.array([DATACENTER], np.int8), np.array([INTERNET], np.int8)
    assert heuristic_confidence(steady, dc)[0] == 1.0
    assert heuristic_confidence(noisy, dc)[0] == pytest.approx(0.5)
    assert heuristic_confidence(noisy, inet)[0] == pytest.approx(0.75)
    one = np.array([[np.nan] * 9 + [100.0]])
    assert heuristic_confidence(one, dc)[0] == 0.5


def test_fitted_calibration_is_monotone_and_matches_observed_hit_rates(
    rng: np.random.Generator,
) -> None:
    # synthetic truth: hit probability falls linearly with the score
    score = rng.uniform(0, 1, 50_000)
    truth = 0.95 - 0.8 * score
    hit = rng.uniform(size=score.size) < truth
    cal = fit_calibration(score, hit, "width", bins=20)
    assert np.all(np.diff(cal.y) <= 1e-12)
    test_score = rng.uniform(0, 1, 50_000)
    test_hit = rng.uniform(size=test_score.size) < 0.95 - 0.8 * test_score
    for row in reliability_table(cal(test_score), test_hit):
        assert abs(row["mean_confidence"] - row["hit_rate"]) < 0.05, row


def test_calibration_round_trips_and_refuses_nonsense() -> None:
    cal = Calibration("width", (0.0, 1.0), (0.9, 0.2))
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert cal(np.array([0.5, np.nan, 9.0])).tolist() == pytest.approx([0.55, 0.2, 0.2])
    with pytest.raises(ValueError, match="within 0..1"):
        Calibration.from_dict({"x": [0, 1], "y": [0.5, 1.5]})
    with pytest.raises(ValueError, match="equal-length"):
        Calibration.from_dict({"x": [0, 1], "y": [0.5]})


def test_too_few_points_to_calibrate_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        fit_calibration(np.ones(5), np.ones(5, bool), "width", bins=20)
