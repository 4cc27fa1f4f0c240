"""Encoded predictions are valid against prediction.schema.json and round-trip."""

from __future__ import annotations

import jsonschema
import msgspec
import pytest

from schemas import (
    Allocation,
    Prediction,
    PredictionColumns,
    decode_prediction,
    encode_prediction,
    encode_predictions,
)

PREDICTION = Prediction(
    prediction_id="0123456789abcdef0123456789abcdef",
    link_id="lte-17",
    ts=1764450000.0,
    horizon_s=1.0,
    valid_until=1764450001.0,
    predicted_bandwidth_mbps=3.2,
    reserve_mbps=2.1,
    confidence=0.64,
    mode="internet",
    model_version="internet-test",
    source="model",
    inference_ms=1.25,
    shadow=False,
    allocation=Allocation(
        streams=2,
        buffer_bytes=16384,
        chunk_bytes=8192,
        pacing_bytes_per_s=380000.0,
        window_bytes=32768,
        action="hold",
    ),
)


def test_encoded_prediction_is_schema_valid_and_round_trips(
    prediction_validator: jsonschema.Draft202012Validator,
) -> None:
    data = encode_prediction(PREDICTION)
    decoded = decode_prediction(data)
    prediction_validator.validate(decoded)
    assert decoded == msgspec.to_builtins(PREDICTION)


def test_schema_rejects_an_unknown_action(
    prediction_validator: jsonschema.Draft202012Validator,
) -> None:
    bad = decode_prediction(encode_prediction(PREDICTION))
    bad["allocation"]["action"] = "maybe"
    assert not prediction_validator.is_valid(bad)


def test_decode_prediction_refuses_other_messages() -> None:
    with pytest.raises(ValueError, match="not a prediction"):
        decode_prediction(b'{"link_id": "x"}')


def test_the_batch_encoder_gives_the_same_bytes_as_the_single_one() -> None:
    second = msgspec.structs.replace(
        PREDICTION, prediction_id="f" * 32, link_id="dc-2", ts=5.5, valid_until=6.5, mode="datacenter",
        source="fallback", confidence=0.91,
        allocation=msgspec.structs.replace(PREDICTION.allocation, action="apply"))
    rows = (PREDICTION, second)
    assert encode_predictions(_columns(rows)) == [encode_prediction(p) for p in rows]


def test_a_batch_encodes_link_ids_with_newlines_and_quotes_one_message_each() -> None:
    odd = msgspec.structs.replace(PREDICTION, link_id='a\nb"c')
    first, second = encode_predictions(_columns((odd, PREDICTION)))
    assert decode_prediction(first)["link_id"] == 'a\nb"c'
    assert decode_prediction(second)["link_id"] == "lte-17"


def _columns(rows: tuple[Prediction, ...]) -> PredictionColumns:
    """The rows as the service hands them to the batch encoder (shared fields from PREDICTION)."""
    return PredictionColumns(
        **{f: [getattr(p, f) for p in rows] for f in (
            "prediction_id", "link_id", "ts", "predicted_bandwidth_mbps", "reserve_mbps", "confidence",
            "mode", "model_version", "source")},
        **{f: [getattr(p.allocation, f) for p in rows] for f in (
            "streams", "buffer_bytes", "chunk_bytes", "pacing_bytes_per_s", "window_bytes", "action")},
        horizon_s=PREDICTION.horizon_s, inference_ms=PREDICTION.inference_ms, shadow=False,
    )
