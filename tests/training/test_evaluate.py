"""The model card's interval on "model minus best baseline" tells a difference from noise."""

from __future__ import annotations

import numpy as np

from training.evaluate import Evaluation, Scores, hit_rate_gap_interval


def evaluation(model_hits: np.ndarray, baseline_hits: np.ndarray) -> Evaluation:
    actual = np.full(model_hits.size, 100.0)
    model = np.where(model_hits, 100.0, 200.0)
    baseline = np.where(baseline_hits, 100.0, 200.0)
    return Evaluation(Scores.of(model, actual), {"last_value": Scores.of(baseline, actual)},
                      np.full(actual.size, 0.5), model, actual, {"last_value": baseline}, {}, 0.0,
                      Scores.of(model, actual), 0.9, 0.9)


def test_a_model_that_always_wins_has_an_interval_at_plus_one() -> None:
    ev = evaluation(np.ones(1000, dtype=bool), np.zeros(1000, dtype=bool))
    assert hit_rate_gap_interval(ev, "last_value") == (1.0, 1.0)


def test_for_two_equally_good_predictors_the_interval_covers_zero_about_95_times_in_100() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(100):
        ev = evaluation(rng.random(300) < 0.5, rng.random(300) < 0.5)
        low, high = hit_rate_gap_interval(ev, "last_value", draws=500)
        covered += low <= 0 <= high
    assert 85 <= covered <= 100


def test_more_rows_give_a_narrower_interval() -> None:
    rng = np.random.default_rng(5)
    small = hit_rate_gap_interval(evaluation(rng.random(300) < 0.5, rng.random(300) < 0.5), "last_value")
    large = hit_rate_gap_interval(evaluation(rng.random(30_000) < 0.5, rng.random(30_000) < 0.5),
                                  "last_value")
    assert large[1] - large[0] < (small[1] - small[0]) / 5


def test_a_real_two_point_lead_on_many_rows_excludes_zero() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(100_000) < 0.6
    better = base | (rng.random(100_000) < 0.05)  # wins about 2 points more often
    low, high = hit_rate_gap_interval(evaluation(better, base), "last_value")
    assert 0.01 < low < high < 0.03
