from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from predictor.window import MEASURED_CHANNELS

SampleMaker = Callable[..., np.ndarray]


def _samples(bandwidth: list[float] | np.ndarray, latency: float = np.nan) -> np.ndarray:
    bw = np.asarray(bandwidth, dtype=np.float32)
    values = np.full((len(bw), MEASURED_CHANNELS), np.nan, dtype=np.float32)
    values[:, 0] = bw
    values[:, 1] = latency
    return values


@pytest.fixture
def samples() -> SampleMaker:
    """samples(bandwidths, latency=nan) -> (n, 5) measured channels, the rest missing."""
    return _samples


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)
