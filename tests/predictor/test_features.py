"""The feature function: scale-free, explicit about missing data, aware of gaps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from predictor.features import (
    BANDWIDTH,
    DT,
    FEATURES,
    JITTER,
    LATENCY,
    LOG_RATIO_RANGE,
    N_FEATURES,
    THROUGHPUT,
    build_features,
    from_log_ratio,
    repeat_history,
    to_log_ratio,
)


def raw_window(rng: np.random.Generator, n: int = 4, steps: int = 60) -> np.ndarray:
    raw = np.full((n, steps, 6), np.nan, dtype=np.float32)
    raw[:, :, BANDWIDTH] = rng.uniform(1, 20, (n, steps))
    raw[:, :, LATENCY] = rng.uniform(10, 90, (n, steps))
    raw[:, :, THROUGHPUT] = raw[:, :, BANDWIDTH] * 0.7
    raw[:, :, DT] = 1.0
    return raw


def col(name: str) -> int:
    return FEATURES.index(name)


def test_shape_and_last_steps(rng: np.random.Generator) -> None:
    raw = raw_window(rng)
    features, scale = build_features(raw, 30)
    assert features.shape == (4, 30, N_FEATURES) and features.dtype == np.float32
    assert scale == pytest.approx(raw[:, -30:, BANDWIDTH].mean(axis=1), rel=1e-5)


def test_features_do_not_depend_on_the_link_scale(rng: np.random.Generator) -> None:
    """A 5 Mbit/s cellular pattern and the same pattern at 10 Gbit/s look the same."""
    small = raw_window(rng)
    large = small.copy()
    large[:, :, BANDWIDTH] *= 2000
    large[:, :, THROUGHPUT] *= 2000
    f_small, s_small = build_features(small, 60)
    f_large, s_large = build_features(large, 60)
    np.testing.assert_allclose(f_small, f_large, atol=1e-5)
    np.testing.assert_allclose(s_large, s_small * 2000, rtol=1e-5)


def test_missing_measurements_are_masked_not_zero(rng: np.random.Generator) -> None:
    raw = raw_window(rng, n=1, steps=30)
    raw[0, 10:, LATENCY] = np.nan
    raw[0, :, JITTER] = np.nan
    raw[0, 5, JITTER] = 0.0  # a real zero stays distinguishable from missing
    features, _ = build_features(raw, 30)
    lat, lat_mask = features[0, :, col("latency_log")], features[0, :, col("latency_mask")]
    assert (lat_mask[:10] == 1).all() and (lat_mask[10:] == 0).all()
    assert (lat[10:] == 0).all() and (lat[:10] > 0).all()
    jit_mask = features[0, :, col("jitter_mask")]
    assert jit_mask[5] == 1 and jit_mask.sum() == 1
    assert np.isfinite(features).all()


def test_gap_shows_in_the_gap_feature(rng: np.random.Generator) -> None:
    raw = raw_window(rng, n=1, steps=30)
    raw[0, 20, DT] = 30.0  # 30 steps without a measurement before sample 20
    gap = build_features(raw, 30)[0][0, :, col("gap_log")]
    assert gap[20] == pytest.approx(np.log(30.0), rel=1e-5)
    assert (np.delete(gap, 20) == 0).all()


@pytest.mark.parametrize("pattern", ["steady", "jittered", "gaps", "warming up", "unknown"])
def test_the_gap_feature_is_the_log_of_each_step_over_the_window_median_step(
    rng: np.random.Generator, pattern: str
) -> None:
    """Whatever path computes the typical step (steady windows skip the median), the
    feature is log(step / median of the known steps), clipped to 0..5, 0 where unknown."""
    raw = raw_window(rng, n=64, steps=30)
    dt = raw[:, :, DT]
    dt[:] = 1.0
    if pattern == "jittered":
        dt += rng.normal(0.0, 0.02, dt.shape).astype(np.float32)
    elif pattern == "gaps":
        dt[rng.random(dt.shape) < 0.1] = rng.choice([3.0, 30.0, 0.0])
    elif pattern == "warming up":
        dt[:, :12] = np.nan
    elif pattern == "unknown":
        dt[::2] = np.nan
    gap = build_features(raw, 30)[0][:, :, col("gap_log")]
    valid = np.where(dt > 0, dt, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.log(valid / np.nanmedian(valid, axis=1, keepdims=True))
    expected = np.clip(np.where(np.isfinite(expected), expected, 0.0), 0.0, 5.0)
    np.testing.assert_allclose(gap, expected, rtol=1e-6, atol=1e-7)
    if pattern == "steady":
        assert (gap == 0).all()


def test_an_all_zero_window_stays_finite() -> None:
    raw = np.zeros((1, 30, 6), dtype=np.float32)
    features, scale = build_features(raw, 30)
    assert np.isfinite(features).all() and scale[0] > 0
    assert from_log_ratio(np.zeros(1, np.float32), scale)[0] < 1e-5


def test_log_ratio_round_trips(rng: np.random.Generator) -> None:
    scale = rng.uniform(1, 1e4, 50).astype(np.float32)
    target = rng.uniform(0.1, 3, 50).astype(np.float32) * scale
    np.testing.assert_allclose(from_log_ratio(to_log_ratio(target, scale), scale), target, rtol=1e-5)


def test_targets_and_outputs_share_one_range_beyond_which_nothing_is_published() -> None:
    """Training clips its targets and serving its outputs to the same LOG_RATIO_RANGE:
    an output past the range publishes its edge (serving clipped at e^10 = 22,000x the
    window scale, evaluation at e^3, before one function decoded both)."""
    low, high = LOG_RATIO_RANGE
    scale = np.array([100.0, 100.0, 100.0], np.float32)
    decoded = from_log_ratio(np.array([9.0, -15.0, 0.5], np.float32), scale)
    np.testing.assert_allclose(decoded, np.exp([high, low, 0.5]) * 100.0, rtol=1e-6)
    targets = to_log_ratio(np.array([1e6, 0.0, 165.0]), scale)
    np.testing.assert_allclose(targets, [high, low, np.log(1.65)], rtol=1e-6)


def test_too_short_a_window_is_refused(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="needs 60"):
        build_features(raw_window(rng, steps=30), 60)


def test_a_short_history_is_repeated_back_in_time_to_fill_the_window(rng: np.random.Generator) -> None:
    raw = raw_window(rng, n=3, steps=10)
    raw[0, :6] = np.nan  # 4 samples seen
    raw[0, 6, DT] = np.nan  # the link's first sample: its step unknown
    raw[1, :3] = np.nan  # 7 samples seen
    counts = np.array([4, 7, 25])  # the third link's window is full
    filled = repeat_history(raw, counts)
    assert not np.isnan(filled[:, :, BANDWIDTH]).any()
    own = raw[0, 6:, BANDWIDTH]
    np.testing.assert_array_equal(filled[0, :, BANDWIDTH], np.concatenate([own[2:], own, own]))
    np.testing.assert_array_equal(filled[1, 3:], raw[1, 3:])  # its own samples where they were
    np.testing.assert_array_equal(filled[1, :3], raw[1, 7:10])  # the newest ones before them
    np.testing.assert_array_equal(filled[2], raw[2])
    assert np.isnan(raw[0, :6]).all()  # the caller's windows are left as they were


def test_the_seam_of_a_repeated_history_reads_as_a_regular_step(rng: np.random.Generator) -> None:
    raw = raw_window(rng, n=1, steps=12)
    raw[0, :8] = np.nan
    raw[0, 8, DT] = np.nan  # four samples, the first one's step unknown
    features, _ = build_features(repeat_history(raw, np.array([4])), 12)
    np.testing.assert_array_equal(features[0, :, col("gap_log")], 0.0)


def test_full_windows_come_back_untouched(rng: np.random.Generator) -> None:
    raw = raw_window(rng)
    assert repeat_history(raw, np.array([60, 61, 500, 60])) is raw
