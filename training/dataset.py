"""Training examples from traces: (raw window, next sample) pairs, fed through the
predictor's own `build_features`, so training sees exactly what serving sees."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from predictor.features import DT, build_features, to_log_ratio
from predictor.window import N_CHANNELS
from training.traces import Trace


def raw_series(trace: Trace) -> np.ndarray:
    """(n, 6) raw channels as the window store records them (dt NaN for the first)."""
    raw = np.empty((len(trace), N_CHANNELS), dtype=np.float32)
    raw[:, :DT] = trace.values
    raw[0, DT] = np.nan
    raw[1:, DT] = np.diff(trace.t_s)
    return raw


def sliding_windows(trace: Trace, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of `steps` samples that has a next sample: (m, steps, 6) raw windows
    and (m,) next bandwidth, where window j ends at sample j + steps - 1."""
    raw = raw_series(trace)
    if len(raw) <= steps:
        return np.empty((0, steps, N_CHANNELS), np.float32), np.empty(0, np.float32)
    windows = sliding_window_view(raw[:-1], steps, axis=0).transpose(0, 2, 1)
    return windows, trace.values[steps:, 0]


def examples(trace: Trace, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (m, steps, F), log-ratio targets (m,), scales (m,)) for one trace."""
    windows, nxt = sliding_windows(trace, steps)
    features, scale = build_features(windows, steps)
    return features, to_log_ratio(nxt, scale), scale
