"""Training features are the serving features: same windows, same function, same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from predictor.features import build_features
from predictor.window import WindowStore
from training.dataset import examples, sliding_windows
from training.traces import read_trace


def test_training_windows_equal_the_service_windows(sample_traces: list[Path]) -> None:
    for path in sample_traces[:4]:
        trace = read_trace(path)
        steps = 30
        train_windows, targets = sliding_windows(trace, steps)
        store = WindowStore(length=steps)
        slot = store.slots(["link"])
        served = []
        for i in range(len(trace) - 1):
            store.append(slot, trace.t_s[i:i + 1], trace.values[i:i + 1])
            if i >= steps - 1:
                served.append(store.windows(slot)[0])
        served_windows = np.stack(served)
        np.testing.assert_array_equal(train_windows, served_windows)
        np.testing.assert_array_equal(targets, trace.values[steps:, 0])
        f_train, _ = build_features(train_windows, steps)
        f_served, _ = build_features(served_windows, steps)
        np.testing.assert_array_equal(f_train, f_served)


def test_examples_are_finite_and_aligned(sample_traces: list[Path]) -> None:
    trace = read_trace(sample_traces[0])
    features, target, scale = examples(trace, 60)
    assert len(features) == len(target) == len(scale) == len(trace) - 60
    assert np.isfinite(features).all() and np.isfinite(target).all()
