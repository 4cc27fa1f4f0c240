"""The demo's live view: each link's latest live prediction as a row, every prediction
scored against the sample after it beside the last value, dead letters by reason."""

from __future__ import annotations

import orjson
from aiokafka.structs import ConsumerRecord
from rich.console import Console

from consumer.tools.demo_view import LiveView

IN, OUT, DLQ = "in", "out", "dlq"


def record(topic: str, value: dict[str, object] | bytes, headers: list[tuple[str, bytes]] | None = None
           ) -> ConsumerRecord:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return ConsumerRecord(topic, 0, 0, 0, 0, b"l", raw, None, 0, len(raw), headers or [])


def event(ts: float, bw: float) -> ConsumerRecord:
    return record(IN, {"link_id": "l", "ts": ts, "bandwidth_mbps": bw})


def prediction(ts: float, predicted: float, shadow: bool = False, source: str = "model") -> ConsumerRecord:
    return record(OUT, {"link_id": "l", "ts": ts, "predicted_bandwidth_mbps": predicted, "reserve_mbps": 80.0,
                        "confidence": 0.9, "mode": "internet", "source": source, "shadow": shadow,
                        "allocation": {"action": "apply"}})


def test_each_prediction_is_scored_against_the_next_sample_beside_the_last_value() -> None:
    view = LiveView(OUT, IN, DLQ)
    # samples 100, 100, 150: the model says 140 after the second (a hit against 150,
    # where the last value, 100, is not); after the first it said 200 (a miss, the last value hits)
    for taken in (event(1, 100), prediction(1, 200), prediction(1, 90, shadow=True), event(2, 100),
                  prediction(2, 140), event(3, 150)):
        view.take(taken)
    assert (view.scores.scored, view.scores.model, view.scores.last_value) == (2, 1, 1)
    view.take(prediction(3, 150))  # not scored until the sample after it arrives
    assert view.scores.scored == 2
    assert view.sources == {"model": 3}  # the shadow prediction is neither shown nor counted


def test_a_prediction_read_before_the_samples_around_it_is_scored_once_they_come() -> None:
    view = LiveView(OUT, IN, DLQ)
    for taken in (prediction(1, 105), event(1, 100), event(2, 110)):
        view.take(taken)
    assert (view.scores.scored, view.scores.model, view.scores.last_value) == (1, 1, 1)


def test_dead_letters_are_counted_by_reason_and_nothing_unreadable_stops_the_view() -> None:
    view = LiveView(OUT, IN, DLQ)
    view.take(record(DLQ, b"not json", [("pba.error.reason", b"invalid_json")]))
    view.take(record(DLQ, b"{}", [("pba.error.reason", b"missing_field")]))
    view.take(record(DLQ, b"{}", [("pba.error.reason", b"invalid_json")]))
    view.take(record(IN, b"\xff"))
    view.take(record(OUT, {"link_id": "l", "ts": "soon"}))
    assert view.dead_letters == {"invalid_json": 2, "missing_field": 1}
    assert "dead letters 3 (invalid_json 2, missing_field 1)" in view.summary()


def test_the_rendered_view_has_a_row_per_link_and_the_running_figures() -> None:
    view = LiveView(OUT, IN, DLQ)
    for taken in (event(1, 100), prediction(1, 105, source="fallback"), event(2, 104), prediction(2, 1500)):
        view.take(taken)
    view.lag = 12
    console = Console(record=True, width=160)
    console.print(view.render(now=3.0))
    text = console.export_text()
    header, row, summary = text.splitlines()[:3]
    assert header.split() == ["link", "mode", "source", "predicted", "reserve", "conf", "action", "age"]
    assert row.split() == ["l", "internet", "model", "1.50", "Gb/s", "80.0", "Mb/s", "0.90", "apply", "1.0s"]
    assert summary == ("1 links, 2 predictions, 50 % from the models; within +/-20 %: model 100.0 %, "
                       "last value 100.0 % of 1 scored; dead letters 0; consumer lag 12")
