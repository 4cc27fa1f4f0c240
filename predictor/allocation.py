"""From a prediction to transport parameters a sender can apply.

The original system's formulas and confidence gates, vectorised over a batch. A worked
example (docs/ALLOCATION.md has the derivation): 500 Mbit/s predicted at 80 ms RTT,
2 ms jitter, 0.5 % loss, confidence 0.9:

    streams = int(500 / 10 * 1.0 [20..100 ms] * 1.0 [loss <= 1 %]) = 50
    buffer  = 500e6/8 * 0.080 + 500e6/8 * 0.002 = 5,125,000 -> clamped to 1 MiB = 1,048,576
    chunk   = 1,048,576 / 50 = 20,971 (loss <= 2 %, within 8..128 KiB)
    pacing  = 500e6 * 0.95 / 8 = 59,375,000 bytes/s
    window  = 1,048,576 * 50 = 52,428,800 bytes
    action  = apply (confidence >= 0.8)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.prediction import Allocation

MIN_STREAMS, MAX_STREAMS = 2, 256
MIN_BUFFER, MAX_BUFFER = 16 * 1024, 1024 * 1024
MIN_CHUNK, MAX_CHUNK = 8 * 1024, 128 * 1024
PACING_HEADROOM = 0.95
SKIP_BELOW = 0.6  # confidence gates of the original optimiser
APPLY_AT = 0.8
RESIZE_AT = 0.7  # stream count changes only at this confidence ...
RESIZE_CHANGE = 0.20  # ... and when it changes by more than this fraction

APPLY, HOLD, SKIP = 0, 1, 2
ACTION_NAMES = ("apply", "hold", "skip")

#: RTT assumed when a link reports none, indexed by mode code: typical of the mode
#: (datacenter 1 ms, internet 50 ms, hybrid 10 ms).
DEFAULT_RTT_MS = np.array([1.0, 50.0, 10.0])

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Allocations:
    """Allocation fields for a batch, one entry per prediction."""

    streams: IntArray
    buffer_bytes: IntArray
    chunk_bytes: IntArray
    pacing_bytes_per_s: FloatArray
    window_bytes: IntArray
    action: npt.NDArray[np.int8]

    def record(self, i: int) -> Allocation:
        """Entry i as the message contract's Allocation."""
        return Allocation(
            streams=int(self.streams[i]),
            buffer_bytes=int(self.buffer_bytes[i]),
            chunk_bytes=int(self.chunk_bytes[i]),
            pacing_bytes_per_s=float(self.pacing_bytes_per_s[i]),
            window_bytes=int(self.window_bytes[i]),
            action=ACTION_NAMES[self.action[i]],  # type: ignore[arg-type]
        )


def stream_count(bandwidth_mbps: FloatArray, latency_ms: FloatArray, loss: FloatArray) -> IntArray:
    """The stream count the prediction alone asks for: 1 per 10 Mbit/s, more on short
    paths, fewer on long or lossy ones."""
    bw = np.maximum(np.asarray(bandwidth_mbps, dtype=np.float64), 0.0)
    rtt = np.asarray(latency_ms, dtype=np.float64)
    factor = np.where(rtt > 100, 0.7, np.where(rtt < 20, 1.3, 1.0))
    factor = factor * np.where(_measured(loss) > 0.01, 0.75, 1.0)
    return np.clip(np.floor(np.floor(bw / 10) * factor), MIN_STREAMS, MAX_STREAMS).astype(np.int64)


def kept_streams(wanted: IntArray, confidence: FloatArray, previous: IntArray) -> IntArray:
    """The link's previous stream count unless the prediction is confident and the new
    count differs enough: opening and closing connections costs the sender more than a
    slightly wrong count. Sequential per link: each count depends on the one before."""
    prev = np.asarray(previous, dtype=np.int64)
    change = np.abs(wanted - prev) / np.maximum(prev, 1)
    resize = (prev == 0) | ((np.asarray(confidence) >= RESIZE_AT) & (change > RESIZE_CHANGE))
    return np.where(resize, wanted, prev)


def allocate_streams(
    bandwidth_mbps: FloatArray,
    confidence: FloatArray,
    latency_ms: FloatArray,
    loss: FloatArray,
    jitter_ms: FloatArray,
    streams: IntArray,
) -> Allocations:
    """The other parameters, once each prediction's stream count is settled."""
    bw = np.maximum(np.asarray(bandwidth_mbps, dtype=np.float64), 0.0)
    rtt = np.asarray(latency_ms, dtype=np.float64)
    lost = _measured(loss)
    bytes_per_ms = bw * 1e6 / 8 / 1000
    buffer = np.clip(bytes_per_ms * (rtt + _measured(jitter_ms)), MIN_BUFFER, MAX_BUFFER).astype(np.int64)
    per_stream = buffer / streams
    per_stream = np.where(lost > 0.02, per_stream / 2, per_stream)
    chunk = np.clip(per_stream, MIN_CHUNK, MAX_CHUNK).astype(np.int64)
    pacing = bw * 1e6 * PACING_HEADROOM / 8
    action = np.where(confidence < SKIP_BELOW, SKIP, np.where(confidence >= APPLY_AT, APPLY, HOLD))
    return Allocations(
        streams=streams,
        buffer_bytes=buffer,
        chunk_bytes=chunk,
        pacing_bytes_per_s=pacing,
        window_bytes=buffer * streams,
        action=action.astype(np.int8),
    )


def _measured(values: FloatArray) -> npt.NDArray[np.float64]:
    """Loss or jitter with "not measured" (NaN) as 0."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
