"""The event codec accepts exactly what metric-event.schema.json accepts, and says why not."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas import MAX_EVENT_BYTES, EventError, decode_event
from schemas.event import REASONS, MetricEvent, _decode_checked, _decode_fast_path

VALID = {
    "link_id": "dc1-rack4:eth0",
    "ts": 1764450000.0,
    "bandwidth_mbps": 9412.5,
    "latency_ms": 0.42,
    "packet_loss": 0.001,
    "jitter_ms": 0.05,
    "throughput_mbps": 6120.0,
    "node_id": "dc1-rack4",
    "peer_id": "dc1-rack7",
}


def with_(**changes: Any) -> dict[str, Any]:
    event = dict(VALID)
    for key, value in changes.items():
        if value is _ABSENT:
            event.pop(key, None)
        else:
            event[key] = value
    return event


_ABSENT = object()

GOOD = [
    VALID,
    {"link_id": "x", "ts": 0, "bandwidth_mbps": 0},
    with_(latency_ms=None, packet_loss=None, jitter_ms=None, throughput_mbps=None),
    with_(latency_ms=_ABSENT, packet_loss=_ABSENT, node_id=_ABSENT, peer_id=None),
    with_(ts="2026-11-29T21:00:00Z"),
    with_(ts="2026-11-29T21:00:00.123456789+05:30"),
    with_(ts="1970-01-01T00:00:00-00:00"),
    with_(schema_version=1),
    with_(unknown_field={"nested": [1, 2, 3]}),
    with_(packet_loss=1),
    with_(link_id="l" * 256),
    with_(link_id="ünïcødé-☃"),
    with_(bandwidth_mbps=1e7),
]

# (event or raw bytes, expected reason, expected field)
BAD: list[tuple[Any, str, str | None]] = [
    (b"", "empty", None),
    (b"not json", "invalid_json", None),
    (b'{"link_id": "a", "ts": 1, "bandwidth_mbps": NaN}', "invalid_json", None),
    (b'{"link_id": "a", "ts": 1, "bandwidth_mbps": 1e400}', "invalid_json", None),
    (b'{"link_id": "a", "ts": 1, "bandwidth_mbps": 1', "invalid_json", None),
    (b'{"link_id": "\xff\xfe", "ts": 1, "bandwidth_mbps": 1}', "invalid_json", None),
    (b"[" * 5000 + b"]" * 5000, "invalid_json", None),
    (b'{"link_id": "a", "link_id": "b", "ts": 1, "bandwidth_mbps": 1}', "duplicate_key", None),
    (b'{"link_id": "a", "ts": 1, "bandwidth_mbps": 1, "bandwidth\\u005fmbps": 2}',
     "duplicate_key", None),
    (b'{"x": {"a": 1, "a": 2}, "link_id": "a", "ts": 1, "bandwidth_mbps": 1}',
     "duplicate_key", None),
    (b'{"link_id": "a", "ts": 1, "bandwidth_mbps": 1, "latency_ms": null, "latency_ms": 2}',
     "duplicate_key", None),
    (b'{"link_id": "a", "ts": "2026-11-29T21:00:00Z", "ts": 5, "bandwidth_mbps": 1}',
     "duplicate_key", None),
    (b"[1, 2]", "not_object", None),
    (b'"a string"', "not_object", None),
    (b"null", "not_object", None),
    (b" " * (MAX_EVENT_BYTES + 1), "too_large", None),
    (with_(link_id=_ABSENT), "missing_field", "link_id"),
    (with_(link_id=None), "missing_field", "link_id"),
    (with_(ts=_ABSENT), "missing_field", "ts"),
    (with_(bandwidth_mbps=_ABSENT), "missing_field", "bandwidth_mbps"),
    (with_(bandwidth_mbps=None), "missing_field", "bandwidth_mbps"),
    (with_(link_id=17), "wrong_type", "link_id"),
    (with_(link_id=""), "out_of_range", "link_id"),
    (with_(link_id="l" * 257), "out_of_range", "link_id"),
    (with_(bandwidth_mbps="100"), "wrong_type", "bandwidth_mbps"),
    (with_(bandwidth_mbps=True), "wrong_type", "bandwidth_mbps"),
    (with_(bandwidth_mbps=-1), "out_of_range", "bandwidth_mbps"),
    (with_(bandwidth_mbps=1e300), "out_of_range", "bandwidth_mbps"),
    (with_(latency_ms=[1]), "wrong_type", "latency_ms"),
    (with_(latency_ms=-0.5), "out_of_range", "latency_ms"),
    (with_(packet_loss=1.5), "out_of_range", "packet_loss"),
    (with_(packet_loss=-0.01), "out_of_range", "packet_loss"),
    (with_(jitter_ms={"v": 1}), "wrong_type", "jitter_ms"),
    (with_(throughput_mbps=-3), "out_of_range", "throughput_mbps"),
    (with_(node_id=5), "wrong_type", "node_id"),
    (with_(peer_id="p" * 300), "out_of_range", "peer_id"),
    (with_(ts=-1), "bad_timestamp", "ts"),
    (with_(ts=1e12), "bad_timestamp", "ts"),
    (with_(ts=True), "wrong_type", "ts"),
    (with_(ts="yesterday"), "bad_timestamp", "ts"),
    (with_(ts="2026-02-30T00:00:00Z"), "bad_timestamp", "ts"),
    (with_(ts="2026-11-29T21:00:00"), "bad_timestamp", "ts"),
    (with_(ts="2026-11-29 21:00:00Z"), "bad_timestamp", "ts"),
    (with_(ts="2026-11-29T21:00:00Z\n"), "bad_timestamp", "ts"),
    (with_(ts="2150-01-01T00:00:00Z"), "bad_timestamp", "ts"),
    (with_(schema_version=2), "unsupported_schema_version", "schema_version"),
    (with_(schema_version="1"), "unsupported_schema_version", "schema_version"),
    (with_(schema_version=True), "unsupported_schema_version", "schema_version"),
]


def raw(event: Any) -> bytes:
    return event if isinstance(event, bytes) else orjson.dumps(event)


@pytest.mark.parametrize("event", GOOD)
def test_valid_events_decode_and_match_the_schema(
    event: dict[str, Any], event_validator: jsonschema.Draft202012Validator
) -> None:
    decoded = decode_event(raw(event))
    event_validator.validate(event)
    assert decoded.link_id == event["link_id"]
    assert decoded.bandwidth_mbps == event["bandwidth_mbps"]


def test_missing_measurements_become_nan_not_zero() -> None:
    decoded = decode_event(orjson.dumps({"link_id": "a", "ts": 5, "bandwidth_mbps": 3}))
    assert math.isnan(decoded.latency_ms) and math.isnan(decoded.packet_loss)
    assert math.isnan(decoded.jitter_ms) and math.isnan(decoded.throughput_mbps)
    assert decoded.node_id is None and decoded.peer_id is None


def test_rfc3339_timestamps_are_unix_seconds() -> None:
    decoded = decode_event(raw(with_(ts="2026-11-29T21:00:00.5+01:00")))
    assert decoded.ts == 1795982400.5  # 2026-11-29T20:00:00.5Z


@pytest.mark.parametrize(("event", "reason", "field"), BAD)
def test_invalid_events_raise_one_typed_error_naming_the_problem(
    event: Any, reason: str, field: str | None, event_validator: jsonschema.Draft202012Validator
) -> None:
    with pytest.raises(EventError) as caught:
        decode_event(raw(event))
    assert caught.value.reason == reason
    assert caught.value.reason in REASONS
    assert caught.value.field == field
    if field is not None:
        assert field in str(caught.value)
    if isinstance(event, dict):
        assert not event_validator.is_valid(event), "schema accepts what the codec rejects"


@pytest.mark.parametrize("schema_fixture", ["event_validator", "prediction_validator"])
def test_schema_examples_validate(schema_fixture: str, request: pytest.FixtureRequest) -> None:
    validator: jsonschema.Draft202012Validator = request.getfixturevalue(schema_fixture)
    examples = validator.schema["examples"]
    assert examples
    for example in examples:
        validator.validate(example)
        if schema_fixture == "event_validator":
            decode_event(orjson.dumps(example))


# --- generated inputs: the codec raises nothing but EventError, and agrees with the schema

_numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -0.0, 0.5, 1e7, 1e7 + 1, 4102444800, 3.6e6]),
)
_timestamps = st.one_of(
    _numbers,
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.from_regex(
        r"\A(19|20|21)\d\d-[01]\d-[0-3]\dT[0-2]\d:[0-6]\d:[0-6]\d(\.\d{1,10})?(Z|[+-][0-2]\d:[0-6]\d)\Z"
    ),
    st.text(max_size=30),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, st.text(max_size=20))
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_field_values = {
    "link_id": st.one_of(st.text(max_size=300), _json),
    "ts": st.one_of(_timestamps, _json),
    "bandwidth_mbps": st.one_of(_numbers, _json),
    "latency_ms": st.one_of(st.none(), _numbers, _json),
    "packet_loss": st.one_of(st.none(), st.floats(-0.1, 1.1), _json),
    "jitter_ms": st.one_of(st.none(), _numbers),
    "throughput_mbps": st.one_of(st.none(), _numbers),
    "node_id": st.one_of(st.none(), st.text(max_size=300), _json),
    "peer_id": st.one_of(st.none(), st.text(max_size=10), _json),
    "schema_version": st.one_of(st.sampled_from([1, 1.0, 2, 0, True, "1"]), _json),
    "extra": _json,
}
_valid_field_values = {
    "link_id": st.text(min_size=1, max_size=256),
    "ts": st.one_of(st.floats(0, 4102444800), st.datetimes().map(lambda d: d.isoformat() + "Z")),
    "bandwidth_mbps": st.floats(0, 1e7),
}
# Half the events are mostly valid, so acceptance is exercised as much as rejection.
_events = st.fixed_dictionaries(
    {}, optional={name: values for name, values in _field_values.items()}
) | st.fixed_dictionaries(
    _valid_field_values,
    optional={name: _field_values[name] for name in ("latency_ms", "packet_loss", "extra")},
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_events)
def test_codec_and_schema_agree_on_generated_events(
    message: dict[str, Any], event_validator: jsonschema.Draft202012Validator
) -> None:
    try:
        data = orjson.dumps(message)
    except orjson.JSONEncodeError:  # e.g. integers beyond 64 bits
        data = json.dumps(message).encode()
    schema_ok = event_validator.is_valid(json.loads(data))
    try:
        decode_event(data)
        codec_ok = True
    except EventError:
        codec_ok = False
    event("accepted" if codec_ok else "rejected")
    assert codec_ok == schema_ok, (message, list(event_validator.iter_errors(json.loads(data))))


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_raise_only_event_error(data: bytes) -> None:
    try:
        decode_event(data)
    except EventError as exc:
        assert exc.reason in REASONS
        assert str(exc)


# --- the msgspec fast path: an optimisation that must never change a decision


def _same(a: MetricEvent, b: MetricEvent) -> bool:
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b, strict=True))


# events with the contract's keys only, so that most of them reach the fast path
_in_range = {"latency_ms": 3.6e6, "packet_loss": 1.0, "jitter_ms": 3.6e6, "throughput_mbps": 1e7}
_usual_events = st.fixed_dictionaries(
    {"link_id": st.text(min_size=1, max_size=256),
     "ts": st.floats(0, 4102444800) | st.integers(0, 4102444800)
     | st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31)).map(
         lambda d: d.isoformat() + "Z"),
     "bandwidth_mbps": st.floats(0, 1e7) | st.integers(0, 10**7)},
    optional={
        **{name: st.floats(0, top) | st.integers(0, int(top)) | st.none()
           for name, top in _in_range.items()},
        "node_id": st.text(max_size=256) | st.none(),
        "peer_id": st.text(max_size=256) | st.none(),
        "schema_version": st.just(1),
    },
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_events | _usual_events)
def test_the_fast_path_decodes_only_what_the_full_checks_accept_and_to_the_same_event(
    message: dict[str, Any],
) -> None:
    try:
        data = orjson.dumps(message)
    except orjson.JSONEncodeError:
        data = json.dumps(message).encode()
    usual = _decode_fast_path(data)
    event("fast path" if usual is not None else "full checks")
    if usual is not None:
        assert _same(usual, _decode_checked(data)), message


@pytest.mark.parametrize("data", [
    orjson.dumps(VALID),
    orjson.dumps({"link_id": "x", "ts": 0, "bandwidth_mbps": 0}),
    orjson.dumps(with_(ts="2026-11-29T21:00:00.5+01:00", schema_version=1)),
    b'{ "link_id" : "a" , "ts" : 1 , "bandwidth_mbps" : 2 }',
])
def test_usual_events_take_the_fast_path(data: bytes) -> None:
    usual = _decode_fast_path(data)
    assert usual is not None and _same(usual, _decode_checked(data))


@pytest.mark.parametrize("data", [
    orjson.dumps(with_(latency_ms=None)),  # explicit null: not absent, counted by the checks
    orjson.dumps(with_(extra=1)),  # unknown keys are not decoded by the fast path
    orjson.dumps(with_(link_id='quote " inside')),  # escapes
    orjson.dumps(with_(schema_version=1.0)),
    b'{"link_id": "a", "ts": 1, "bandwidth_mbps": 1, "bandwidth_mbps": 2}',
])
def test_unusual_events_take_the_full_checks(data: bytes) -> None:
    assert _decode_fast_path(data) is None
