"""The output contract: a bandwidth prediction with its transport allocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson

Mode = Literal["datacenter", "internet", "hybrid"]
Source = Literal["model", "fallback"]
Action = Literal["apply", "hold", "skip"]


class Allocation(msgspec.Struct, frozen=True):
    """Transport parameters a sender can apply for the predicted bandwidth."""

    streams: int
    buffer_bytes: int
    chunk_bytes: int
    pacing_bytes_per_s: float
    window_bytes: int
    action: Action


class Prediction(msgspec.Struct, frozen=True):
    """One message on the predictions topic; field meanings in prediction.schema.json.

    A msgspec Struct rather than a dataclass: msgspec encodes one in ~2 us, where
    building and dumping the same dict took 7-10 us, and the service encodes one per
    event (docs/BENCHMARKS.md)."""

    prediction_id: str
    link_id: str
    ts: float
    horizon_s: float
    valid_until: float
    predicted_bandwidth_mbps: float
    reserve_mbps: float
    confidence: float
    mode: Mode
    model_version: str
    source: Source
    inference_ms: float
    shadow: bool
    allocation: Allocation
    schema_version: int = 1


_ENCODER = msgspec.json.Encoder()


def encode_prediction(prediction: Prediction) -> bytes:
    """UTF-8 JSON bytes of a prediction, fields in declaration order."""
    return _ENCODER.encode(prediction)


@dataclass(frozen=True)
class PredictionColumns:
    """A batch of predictions column by column, one entry per prediction: what the
    service encodes, so that no object is built per prediction on the hot path.
    Field meanings as in Prediction; the last three are shared by the whole batch."""

    prediction_id: Sequence[str]
    link_id: Sequence[str]
    ts: Sequence[float]
    predicted_bandwidth_mbps: Sequence[float]
    reserve_mbps: Sequence[float]
    confidence: Sequence[float]
    mode: Sequence[str]
    model_version: Sequence[str]
    source: Sequence[str]
    streams: Sequence[int]
    buffer_bytes: Sequence[int]
    chunk_bytes: Sequence[int]
    pacing_bytes_per_s: Sequence[float]
    window_bytes: Sequence[int]
    action: Sequence[str]
    horizon_s: float
    inference_ms: float
    shadow: bool


def encode_predictions(c: PredictionColumns) -> list[bytes]:
    """The bytes encode_prediction gives for each row, encoded in one call: JSON lines
    (no raw newline can occur inside a JSON value), split."""
    horizon, inference_ms, shadow = c.horizon_s, c.inference_ms, c.shadow
    rows = [
        Prediction(pid, link, ts, horizon, ts + horizon, bw, reserve, conf, mode, version,
                   source, inference_ms, shadow,
                   Allocation(streams, buffer, chunk, pacing, window, action))
        for pid, link, ts, bw, reserve, conf, mode, version, source,
        streams, buffer, chunk, pacing, window, action in zip(
            c.prediction_id, c.link_id, c.ts, c.predicted_bandwidth_mbps, c.reserve_mbps,
            c.confidence, c.mode, c.model_version, c.source, c.streams, c.buffer_bytes,
            c.chunk_bytes, c.pacing_bytes_per_s, c.window_bytes, c.action, strict=True)
    ]
    return _ENCODER.encode_lines(rows).split(b"\n")[:-1] if rows else []


def decode_prediction(data: bytes) -> dict[str, Any]:
    """Parse a prediction message as a dict (for subscribers, `pba tail` and tests)."""
    obj = orjson.loads(data)
    if type(obj) is not dict or "prediction_id" not in obj:
        raise ValueError("not a prediction message")
    return obj
