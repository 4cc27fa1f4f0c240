"""Baselines behave as their names say, also while a window is still filling."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.baselines import ewma, harmonic_mean, last_value, walk_forward

NAN = np.nan


def test_last_value() -> None:
    assert last_value(np.array([[1, 2, 3.0], [NAN, NAN, 7.0]])).tolist() == [3, 7]


def test_ewma_weights_recent_samples_more_and_ignores_unfilled_steps() -> None:
    got = ewma(np.array([[NAN, 10.0, 20.0]]), alpha=0.5)[0]
    assert got == pytest.approx((20 + 0.5 * 10) / 1.5)


def test_harmonic_mean_of_the_last_five() -> None:
    got = harmonic_mean(np.array([[100, 1, 2, 4, 4, 4.0]]))[0]
    assert got == pytest.approx(5 / (1 + 0.5 + 0.25 * 3))


def test_unknown_baseline_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown baseline 'median'; choose one of last_value, ewma"):
        walk_forward(np.array([1.0, 2.0, 3.0]), "median")


def test_walk_forward_predicts_each_next_sample_from_the_samples_before_it() -> None:
    series = np.array([10.0, 20.0, 40.0, 80.0])
    assert walk_forward(series, "last_value").tolist() == [10, 20, 40]
    assert walk_forward(series, "harmonic_mean_5")[1] == pytest.approx(2 / (1 / 10 + 1 / 20))
