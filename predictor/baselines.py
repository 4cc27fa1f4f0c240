"""Simple predictors a user would otherwise pick, vectorised over many windows.

They are the yardstick every accuracy figure is set against (REPORTED_BASELINES), and
the last value is also the fallback and the baseline predictor (predictor/rollout.py; the
original's mean of the last 5 hit +/-20 % less often on every source, docs/MODEL_CARD.md).
Input: bandwidth (n, T), oldest first, NaN before a link's first sample. Output: (n,)
prediction of the next sample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
EWMA_ALPHA = 0.3


def last_value(bandwidth: FloatArray) -> FloatArray:
    return last_present(bandwidth)


def ewma(bandwidth: FloatArray, alpha: float = EWMA_ALPHA) -> FloatArray:
    """Exponentially weighted mean, weights normalised over the samples present."""
    steps = bandwidth.shape[1]
    weights = (1.0 - alpha) ** np.arange(steps - 1, -1, -1, dtype=np.float64)
    present = ~np.isnan(bandwidth)
    total = np.where(present, bandwidth, 0.0) @ weights
    norm = present @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, total / norm, np.nan)


def harmonic_mean(bandwidth: FloatArray, k: int = 5) -> FloatArray:
    """Harmonic mean of the last k samples (the usual throughput estimator in video ABR)."""
    recent = bandwidth[:, -k:].astype(np.float64)
    present = ~np.isnan(recent)
    with np.errstate(divide="ignore"):
        inverse = np.where(present, 1.0 / np.maximum(recent, 1e-9), 0.0)
    n = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, n / inverse.sum(axis=1), np.nan)


def last_present(bandwidth: FloatArray) -> FloatArray:
    """The newest non-NaN value of each row (NaN where a row has none)."""
    present = ~np.isnan(bandwidth)
    idx = bandwidth.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
    out = bandwidth[np.arange(bandwidth.shape[0]), idx].astype(np.float64)
    return np.where(present.any(axis=1), out, np.nan)


BASELINES: dict[str, Callable[[FloatArray], FloatArray]] = {
    "last_value": last_value,
    "ewma": ewma,
    "harmonic_mean_5": harmonic_mean,
}


#: the simple predictors every accuracy figure is set against
REPORTED_BASELINES = ("last_value", "ewma", "harmonic_mean_5")


def walk_forward(bandwidth: FloatArray, name: str, window: int = 60) -> FloatArray:
    """A baseline's prediction after each sample i of one series (from samples <= i),
    for i = 0..n-2: what it would have said for sample i+1."""
    from numpy.lib.stride_tricks import sliding_window_view

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    history = np.asarray(bandwidth[:-1], dtype=np.float64)
    padded = np.concatenate([np.full(window - 1, np.nan), history])
    return BASELINES[name](sliding_window_view(padded, window))
