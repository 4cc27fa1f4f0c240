"""The one definition of the model's input: a window of raw samples -> a feature tensor.

Training and serving both call `build_features`; nothing else may compute model inputs.

Scale-free by construction: bandwidth and throughput enter relative to the window's mean
bandwidth (the *scale*), so a model trained on 5 Mbit/s cellular traces applies unchanged
to a 10 Gbit/s datacenter link. The model's outputs are log-ratios to the same scale
(see `to_log_ratio` / `from_log_ratio`).

Missing measurements are NaN in the raw window. Each optional channel gets a presence
mask (1 = measured, 0 = not) and the value 0 where missing, so the model can tell
"not measured" from "zero". A missing bandwidth cannot occur (the codec requires it).
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

# Raw window channels, in this order, as stored by WindowStore.
BANDWIDTH, LATENCY, LOSS, JITTER, THROUGHPUT, DT = range(6)
RAW_CHANNELS = ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "throughput_mbps", "dt_s")

# Model input features per step, in this order. Part of the model contract: the manifest
# records this list and loading refuses a model trained on another.
FEATURES = (
    "bw_rel",          # bandwidth / scale, clipped to 0..8
    "bw_log_rel",      # log(max(bandwidth / scale, 1e-3)), -6.9..2.1
    "latency_log",     # log1p(latency_ms) / log1p(1000)
    "latency_mask",
    "loss_sqrt",       # sqrt(packet_loss): spreads the small losses that matter
    "loss_mask",
    "jitter_log",      # log1p(jitter_ms) / log1p(1000)
    "jitter_mask",
    "throughput_rel",  # throughput / scale, clipped to 0..8
    "throughput_mask",
    "gap_log",         # log(dt / median dt of the window): 0 for a regular step, >0 over gaps
)
FEATURE_VERSION = "rel-mean-v1"
N_FEATURES = len(FEATURES)

#: Smallest scale (Mbit/s): an all-zero window predicts ~0 instead of dividing by zero.
MIN_SCALE = 1e-6
_REL_CLIP = 8.0
_LOG_FLOOR = 1e-3
_LOG_1000 = float(np.log1p(1000.0))
#: Log-ratios to the window scale that the models learn and publish: e^-7 (0.09 %) to
#: e^3 (20x). Training clips its targets to it and serving its outputs, both here, so
#: what is published never lies beyond what any model was taught.
LOG_RATIO_RANGE = (-7.0, 3.0)

FloatArray = npt.NDArray[np.float32]


def window_scale(bandwidth: npt.NDArray[np.floating]) -> FloatArray:
    """Per-window reference level: mean bandwidth over the steps given. Shape (B, T) -> (B,)."""
    return np.maximum(bandwidth.mean(axis=1), MIN_SCALE).astype(np.float32)


def build_features(raw: npt.NDArray[np.floating], steps: int) -> tuple[FloatArray, FloatArray]:
    """Model input for the last `steps` samples of each window.

    raw: (B, T, 6) float, channels RAW_CHANNELS, oldest first, T >= steps, NaN = missing.
    Returns (features (B, steps, N_FEATURES) float32, scale (B,) float32).
    """
    if raw.ndim != 3 or raw.shape[2] != len(RAW_CHANNELS):
        raise ValueError(f"raw window must be (batch, time, {len(RAW_CHANNELS)}), got {raw.shape}")
    if raw.shape[1] < steps:
        raise ValueError(f"window has {raw.shape[1]} steps, model needs {steps}")
    window = np.asarray(raw[:, -steps:, :], dtype=np.float32)
    # channel-major: every step below reads and writes contiguous (B, T) planes; the same
    # operations on strided (B, T, C) slices took twice as long (np.log into a strided
    # output falls off numpy's vectorised loops), for bit-identical features
    channels = np.ascontiguousarray(np.moveaxis(window, 2, 0))
    bw = channels[BANDWIDTH]
    scale = window_scale(bw)
    inv = (1.0 / scale)[:, None]

    planes = np.empty((N_FEATURES, window.shape[0], steps), dtype=np.float32)
    rel = bw * inv
    np.clip(rel, 0.0, _REL_CLIP, out=planes[0])
    np.log(np.maximum(rel, _LOG_FLOOR), out=planes[1])
    _masked(np.log1p(channels[LATENCY]) / _LOG_1000, planes, 2)
    _masked(np.sqrt(channels[LOSS]), planes, 4)
    _masked(np.log1p(channels[JITTER]) / _LOG_1000, planes, 6)
    _masked(np.clip(channels[THROUGHPUT] * inv, 0.0, _REL_CLIP), planes, 8)
    planes[10] = _gap_log(channels[DT])
    return np.ascontiguousarray(np.moveaxis(planes, 0, 2)), scale


def repeat_history(raw: npt.NDArray[np.floating],
                   counts: npt.NDArray[np.integer]) -> npt.NDArray[np.floating]:
    """Windows of links with fewer samples than the window holds, filled by repeating the
    samples they have back in time, as if the link's short history had been going on all
    along; full windows come back as they are.

    Why: a new link's first window-length of samples was served by the last value alone.
    From ten samples on the internet model on a window so filled hits +/-20 % more often
    than the last value on the traces' validation groups (docs/ADAPTATION.md, "The models
    from the tenth sample"); repeating the history did better there than holding its first
    sample or mirroring it. The repeated first sample keeps its unknown step (dt NaN, a
    gap of 0: see _gap_log), so the seam reads as a regular step.

    raw: (B, T, channels), oldest first, the steps before a link's first sample NaN;
    counts: samples each link has seen (>= 1).
    """
    steps = raw.shape[1]
    have = np.minimum(np.asarray(counts, dtype=np.intp), steps)
    short = np.flatnonzero(have < steps)
    if short.size == 0:
        return raw
    filled = raw.copy()
    first = steps - have[short][:, None]  # where each short link's own samples start
    at = first + np.mod(np.arange(steps)[None, :] - first, have[short][:, None])
    filled[short] = np.take_along_axis(raw[short], at[:, :, None], axis=1)
    return filled


def _masked(values: npt.NDArray[np.floating], planes: FloatArray, feature: int) -> None:
    present = ~np.isnan(values)
    np.copyto(planes[feature], np.where(present, values, 0.0))
    planes[feature + 1] = present


def _gap_log(dt: FloatArray) -> FloatArray:
    """log(dt / typical dt): 0 on a regular step, positive across a gap in the series."""
    valid = np.where(dt > 0, dt, np.nan)
    # a window sampled at one steady interval (the usual case) has that interval as its
    # median: min == max finds those rows for a fraction of a median's cost
    typical = valid.min(axis=1, keepdims=True)  # NaN where a step is unknown
    uneven = np.flatnonzero(typical[:, 0] != valid.max(axis=1))
    if uneven.size:
        typical[uneven] = np.median(valid[uneven], axis=1, keepdims=True)
        unknown = uneven[np.isnan(typical[uneven, 0])]
        if unknown.size:  # only those rows need the (much slower) nanmedian
            with warnings.catch_warnings():  # all-NaN rows: no step known yet
                warnings.simplefilter("ignore", RuntimeWarning)
                typical[unknown] = np.nanmedian(valid[unknown], axis=1, keepdims=True)
    with np.errstate(all="ignore"):  # NaN / inf rows are replaced just below
        ratio = valid / typical
    gap = np.log(np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0))
    return np.clip(gap, 0.0, 5.0).astype(np.float32)


def to_log_ratio(target_mbps: npt.NDArray[np.floating], scale: FloatArray) -> FloatArray:
    """Training target: log of the next bandwidth relative to the window's scale, inside
    LOG_RATIO_RANGE (an outage's zero at its floor)."""
    low, high = LOG_RATIO_RANGE
    with np.errstate(divide="ignore"):
        ratio = np.log(target_mbps / scale)
    return np.clip(ratio, low, high).astype(np.float32)


def from_log_ratio(log_ratio: npt.NDArray[np.floating], scale: FloatArray) -> FloatArray:
    """Inverse of `to_log_ratio`: a model output -> Mbit/s, the one decoding that serving,
    training and evaluation share."""
    return (np.exp(np.clip(log_ratio, *LOG_RATIO_RANGE)) * scale).astype(np.float32)
