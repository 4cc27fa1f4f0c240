"""Page-Hinkley flags a sustained rise in error, not noise, and clears when it is over."""

from __future__ import annotations

import numpy as np

from consumer.drift import PageHinkley


def errors(rng: np.random.Generator, level: float, n: int) -> np.ndarray:
    return np.abs(rng.normal(level, 0.05, n))


def test_steady_error_does_not_alarm() -> None:
    detector = PageHinkley()
    assert not detector.update(errors(np.random.default_rng(0), 0.1, 50_000))


def test_a_sustained_rise_alarms_and_stays_flagged_while_it_lasts() -> None:
    rng = np.random.default_rng(1)
    detector = PageHinkley()
    detector.update(errors(rng, 0.1, 5_000))
    assert detector.update(errors(rng, 0.6, 500))
    assert detector.update(errors(rng, 0.6, 5_000))


def test_the_alarm_clears_when_error_returns_to_its_old_level() -> None:
    rng = np.random.default_rng(2)
    detector = PageHinkley()
    detector.update(errors(rng, 0.1, 5_000))
    assert detector.update(errors(rng, 0.6, 1_000))
    assert not detector.update(errors(rng, 0.1, 2_000))
    assert not detector.update(errors(rng, 0.1, 5_000))
