"""Message contracts: JSON Schema files and the codecs that enforce them."""

from __future__ import annotations

from pathlib import Path

from schemas.event import MAX_EVENT_BYTES, REASONS, EventError, MetricEvent, decode_event
from schemas.prediction import (
    Allocation,
    Prediction,
    PredictionColumns,
    decode_prediction,
    encode_prediction,
    encode_predictions,
)

#: The contract's topics (design.md): every command's default, each named here once
METRICS_TOPIC = "network.metrics"
PREDICTIONS_TOPIC = "bandwidth.predictions"
DEAD_LETTERS_TOPIC = "network.metrics.dlq"

SCHEMA_DIR = Path(__file__).parent
EVENT_SCHEMA_PATH = SCHEMA_DIR / "metric-event.schema.json"
PREDICTION_SCHEMA_PATH = SCHEMA_DIR / "prediction.schema.json"

__all__ = [
    "DEAD_LETTERS_TOPIC",
    "METRICS_TOPIC",
    "PREDICTIONS_TOPIC",
    "EVENT_SCHEMA_PATH",
    "MAX_EVENT_BYTES",
    "PREDICTION_SCHEMA_PATH",
    "REASONS",
    "Allocation",
    "EventError",
    "MetricEvent",
    "Prediction",
    "PredictionColumns",
    "decode_event",
    "decode_prediction",
    "encode_prediction",
    "encode_predictions",
]
