"""Prediction modes and the per-link mode detector.

The detector applies the original rules to the last 10 samples (datacenter if mean
latency < 10 ms and mean bandwidth >= 1 Gbit/s; internet if mean latency > 50 ms or
bandwidth < 1 Gbit/s; hybrid otherwise) with two additions against flapping: the
thresholds move by a margin in favour of the link's current mode, and a new mode must
hold for `dwell` consecutive samples before the link switches.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from predictor.features import BANDWIDTH, LATENCY

DATACENTER, INTERNET, HYBRID = 0, 1, 2
MODE_NAMES = ("datacenter", "internet", "hybrid")
MODE_CODES = {name: code for code, name in enumerate(MODE_NAMES)}
#: Samples in each model's window: the one home of 30 and 60 (the manifest checks a
#: model's window against it, training builds the models for it)
WINDOW_STEPS = {DATACENTER: 30, INTERNET: 60}
WINDOW_STEPS_BY_NAME = {MODE_NAMES[code]: steps for code, steps in WINDOW_STEPS.items()}
#: Samples a link needs before a model serves it: a shorter history than the window is
#: repeated back in time to fill it (features.repeat_history). Below ten the filled
#: window's model hit less often than the last value on the validation groups.
MODEL_MIN_SAMPLES = 10
#: Per-prediction latency budget of each mode, seconds (hybrid: the larger).
BUDGET_S = {DATACENTER: 0.100, INTERNET: 0.150, HYBRID: 0.150}
DETECTOR_SAMPLES = 10
UNDECIDED = -1

Codes = npt.NDArray[np.int8]


def mode_code(name: str) -> int:
    try:
        return MODE_CODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}; choose one of {', '.join(MODE_NAMES)}") from None


@dataclass(frozen=True)
class DetectorRules:
    dc_latency_ms: float = 10.0
    inet_latency_ms: float = 50.0
    dc_bandwidth_mbps: float = 1000.0
    margin: float = 0.15  # thresholds move by 15 % in favour of the current mode
    dwell: int = 3  # consecutive samples a new mode must hold


def classify(
    bandwidth: npt.NDArray[np.floating],
    latency: npt.NDArray[np.floating],
    current: Codes,
    rules: DetectorRules = DetectorRules(),
) -> Codes:
    """The mode each link's recent samples call for, given its current mode.

    bandwidth, latency: (n, k) recent samples, NaN = missing. Links with no latency
    measured are judged on bandwidth alone: internet below 1 Gbit/s, hybrid above.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN latency rows
        bw = np.nanmean(bandwidth, axis=1)
        lat = np.nanmean(latency, axis=1)
    dc_relax = _relax(current, DATACENTER, rules.margin)
    inet_relax = _relax(current, INTERNET, rules.margin)
    dc_lat = rules.dc_latency_ms * dc_relax
    dc_bw = rules.dc_bandwidth_mbps / dc_relax
    inet_lat = rules.inet_latency_ms / inet_relax
    inet_bw = rules.dc_bandwidth_mbps * inet_relax

    has_lat = ~np.isnan(lat)
    datacenter = has_lat & (lat < dc_lat) & (bw >= dc_bw)
    internet = (has_lat & (lat > inet_lat)) | (bw < inet_bw)
    return np.where(datacenter, DATACENTER, np.where(internet, INTERNET, HYBRID)).astype(np.int8)


def _relax(current: Codes, mode: int, margin: float) -> npt.NDArray[np.float64]:
    """Threshold factor: easier to stay in `mode` (1+m), harder to enter it (1-m).

    Links not yet decided see the plain thresholds.
    """
    return np.where(current == mode, 1 + margin, np.where(current == UNDECIDED, 1.0, 1 - margin))


class ModeTracker:
    """Holds each link's mode with hysteresis; state arrays live in the window store."""

    def __init__(self, rules: DetectorRules = DetectorRules()) -> None:
        self.rules = rules
        self.switches_total = 0

    def update(
        self,
        recent: np.ndarray,
        mode: Codes,
        candidate: Codes,
        streak: npt.NDArray[np.int16],
    ) -> Codes:
        """Advance each link's detector by one sample; returns the modes to use now.

        recent: (n, k, channels) last samples. mode/candidate/streak: the links' state,
        returned updated in place of the caller's copies (caller writes them back).
        """
        wanted = classify(recent[:, :, BANDWIDTH], recent[:, :, LATENCY], mode, self.rules)
        first = mode == UNDECIDED
        same_candidate = wanted == candidate
        streak[:] = np.where(same_candidate, streak + 1, 1)
        candidate[:] = wanted
        switch = ~first & (wanted != mode) & (streak >= self.rules.dwell)
        self.switches_total += int(switch.sum())
        mode[:] = np.where(first | switch, wanted, mode)
        return mode
