"""The output contract: a bandwidth prediction with its transport allocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Mode = Literal["datacenter", "internet", "hybrid"]
Source = Literal["model", "fallback"]
Action = Literal["apply", "hold", "skip"]


@dataclass(frozen=True, slots=True)
class Allocation:
    """Transport parameters a sender can apply for the predicted bandwidth."""

    streams: int
    buffer_bytes: int
    chunk_bytes: int
    pacing_bytes_per_s: float
    window_bytes: int
    action: Action


@dataclass(frozen=True, slots=True)
class Prediction:
    """One message on the predictions topic; field meanings in prediction.schema.json."""

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


def encode_prediction(prediction: Prediction) -> bytes:
    """UTF-8 JSON bytes of a prediction (orjson serialises the dataclasses natively)."""
    return orjson.dumps(prediction)


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
    """The bytes encode_prediction gives for each row (same fields, same order)."""
    dumps, horizon, inference_ms, shadow = orjson.dumps, c.horizon_s, c.inference_ms, c.shadow
    return [
        dumps({
            "prediction_id": pid, "link_id": link, "ts": ts, "horizon_s": horizon,
            "valid_until": ts + horizon, "predicted_bandwidth_mbps": bw, "reserve_mbps": reserve,
            "confidence": conf, "mode": mode, "model_version": version, "source": source,
            "inference_ms": inference_ms, "shadow": shadow,
            "allocation": {"streams": streams, "buffer_bytes": buffer, "chunk_bytes": chunk,
                           "pacing_bytes_per_s": pacing, "window_bytes": window, "action": action},
            "schema_version": 1,
        })
        for pid, link, ts, bw, reserve, conf, mode, version, source,
        streams, buffer, chunk, pacing, window, action in zip(
            c.prediction_id, c.link_id, c.ts, c.predicted_bandwidth_mbps, c.reserve_mbps,
            c.confidence, c.mode, c.model_version, c.source, c.streams, c.buffer_bytes,
            c.chunk_bytes, c.pacing_bytes_per_s, c.window_bytes, c.action, strict=True)
    ]


def decode_prediction(data: bytes) -> dict[str, Any]:
    """Parse a prediction message as a dict (for subscribers, `pba tail` and tests)."""
    obj = orjson.loads(data)
    if type(obj) is not dict or "prediction_id" not in obj:
        raise ValueError("not a prediction message")
    return obj
