"""The output contract: a bandwidth prediction with its transport allocation."""

from __future__ import annotations

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


def decode_prediction(data: bytes) -> dict[str, Any]:
    """Parse a prediction message as a dict (for subscribers, `pba tail` and tests)."""
    obj = orjson.loads(data)
    if type(obj) is not dict or "prediction_id" not in obj:
        raise ValueError("not a prediction message")
    return obj
