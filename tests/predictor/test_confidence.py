"""Confidence: the fallback's (calibrated, or the original's fixed values where no
calibration ships), and a calibration that tells the truth."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.confidence import (
    Calibration,
    fit_calibration,
    hits,
    reliability_table,
)
from predictor.forecaster import FALLBACK, Forecaster
from predictor.modes import DATACENTER, INTERNET
from predictor.runtime import ModelSet, load_models


def test_hits_use_the_original_20_percent_rule() -> None:
    assert hits(np.array([100, 119, 121, 80.5, 5]), np.array([100, 100, 100, 100, 0])).tolist() == [
        True, True, False, True, False,
    ]


def fallback_confidence(forecaster: Forecaster, bandwidth: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """What the forecaster publishes for windows no model serves (too short for any)."""
    counts = np.sum(~np.isnan(bandwidth), axis=1)
    raw = np.full((*bandwidth.shape, 6), np.nan, np.float32)
    raw[:, :, 0] = bandwidth
    result = forecaster.predict(raw, counts, modes)
    assert (result.source == FALLBACK).all()
    return result.confidence


def test_without_a_fallback_calibration_the_original_fixed_confidence_serves() -> None:
    """No manifest (a models directory that cannot load, --allow-fallback): the original
    system's 0.45 (datacenter) or 0.35, +0.02 per sample seen, +0.2 at most."""
    forecaster = Forecaster(ModelSet({}, None))
    bandwidth = np.array([[np.nan] * 7 + [100.0] * 3, [100.0] * 10, [50.0, 150.0] * 5])
    modes = np.array([DATACENTER, INTERNET, DATACENTER], np.int8)
    np.testing.assert_allclose(fallback_confidence(forecaster, bandwidth, modes), [0.51, 0.55, 0.65])


def test_with_the_shipped_calibration_a_steady_window_is_trusted_more_than_a_noisy_one() -> None:
    forecaster = Forecaster(load_models(None, (), allow_fallback=True))
    assert forecaster.fallback_calibration is not None
    steady, noisy = [100.0] * 10, [50.0, 150.0] * 5  # coefficient of variation 0 and 0.5
    confidence = fallback_confidence(forecaster, np.array([steady, noisy]), np.array([INTERNET] * 2, np.int8))
    cv = np.array([0.0, 0.5])
    np.testing.assert_allclose(confidence, forecaster.fallback_calibration(cv))
    assert confidence[0] > confidence[1]


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
