"""The batch processor, without Kafka: rounds, dead letters, link cap."""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
import weakref
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from metrics_support import sample

from consumer.config import ServiceConfig
from consumer.dead_letters import KEPT_KEY_BYTES, OMITTED_HEADER, shorten_dead_letter
from consumer.flags import Flags
from consumer.messages import Message
from consumer.metrics import Metrics
from consumer.processor import RecordProcessor
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor
from predictor.linkstate import ADAPTATION_HEADER, encode_adaptation
from predictor.runtime import load_models


def record(offset: int, value: bytes, key: bytes | None = b"k", partition: int = 0) -> ConsumerRecord:
    return ConsumerRecord("in", partition, offset, 0, 0, key, value, None, 0, len(value), [])


def event(link: str, ts: float, bw: float = 10.0) -> bytes:
    return orjson.dumps({"link_id": link, "ts": ts, "bandwidth_mbps": bw})


def make_processor(models_dir: Path) -> RecordProcessor:
    models = load_models(models_dir, ("internet",))
    link_predictor = LinkPredictor(Forecaster(models), "internet", max_links=100)
    return RecordProcessor(link_predictor, ServiceConfig(), Metrics())


@pytest.fixture
def processor(tiny_models: Path) -> RecordProcessor:
    return make_processor(tiny_models)


def test_a_link_repeated_in_one_batch_gets_one_prediction_per_event_in_order(
        processor: RecordProcessor) -> None:
    records = [record(i, event("a", 100 + i, 10 + i)) for i in range(5)]
    records.append(record(5, event("b", 7)))
    out = processor.process(records)
    preds = [orjson.loads(m.value) for m in out.each()]
    assert [p["ts"] for p in preds if p["link_id"] == "a"] == [100, 101, 102, 103, 104]
    assert [p["predicted_bandwidth_mbps"] for p in preds if p["link_id"] == "a"] == [10, 11, 12, 13, 14]
    assert out.offsets == {TopicPartition("in", 0): 6}


def test_a_batch_reaches_the_producer_as_one_message_list_per_topic(processor: RecordProcessor) -> None:
    """Rounds are concatenated in order, so the producer gets a few record batches per
    partition for the whole batch instead of a few per round."""
    processor.set_output_partitions(3)
    records = [record(i, event(link, 100 + i // 3, 1 + i)) for i, link in enumerate("abc" * 4)]
    records.append(record(12, b"bad"))
    out = processor.process(records)
    dead, predictions = out.messages  # dead letters are known first
    assert (predictions.topic, dead.topic) == (processor.config.output_topic, processor.config.dlq_topic)
    assert len(predictions) == 12 and len(predictions.arrival_ms) == 12
    assert predictions.modes is not None and len(predictions.modes) == 12
    assert predictions.partitions is not None and len(predictions.partitions) == 12
    for link in "abc":
        ts = [orjson.loads(v)["ts"] for k, v in zip(predictions.keys, predictions.values, strict=True)
              if k == link.encode()]
        assert ts == [100, 101, 102, 103]


def test_each_links_adaptation_rides_on_its_last_prediction_of_the_batch_only(
        processor: RecordProcessor) -> None:
    """The rebuild reads back the prediction for a link's newest committed sample, and
    offsets are committed at batch ends: that is each link's last message of a batch,
    and it carries the state the link holds after the batch, byte for byte."""
    records = [record(i, event(link, 100 + i // 3, 1 + i)) for i, link in enumerate("abc" * 4)]
    messages = processor.process(records).each()
    with_state = [i for i, m in enumerate(messages) if ADAPTATION_HEADER in dict(m.headers or [])]
    last = {m.key: i for i, m in enumerate(messages)}
    assert len(messages) == 12 and with_state == sorted(last.values())
    store = processor.link_predictor.store
    for key, i in last.items():
        (state,) = encode_adaptation(store.adaptation(np.array([store.slot(key.decode())])))
        assert dict(messages[i].headers or [])[ADAPTATION_HEADER] == state


@pytest.mark.parametrize("shadow", [False, True])
def test_a_batch_predicts_and_scores_as_its_events_one_by_one_would(tiny_models: Path, shadow: bool) -> None:
    """Rounds are predicted in one forecaster call, yet every event's prediction, allocation
    and score are those of processing the events one at a time."""
    rng = np.random.default_rng(3)
    records = [record(i, event(f"l{i % 3 if i < 150 else i % 7}", 1000 + i, float(rng.uniform(5, 50))))
               for i in range(200)]
    at_once, one_by_one = make_processor(tiny_models), make_processor(tiny_models)
    for p in (at_once, one_by_one):
        p.flags = Flags(rollout_percent=60, shadow=shadow)
    together = [m for b in range(0, 200, 50) for m in at_once.process(records[b:b + 50]).each()]
    alone = [m for r in records for m in one_by_one.process([r]).each()]
    assert _comparable(together) == _comparable(alone)
    for predictor in ("v3", "v1"):
        for counter in ("pba_accuracy_scored_total", "pba_accuracy_hits_total"):
            metric = sample(at_once.metrics, counter, mode="internet", predictor=predictor)
            assert metric == sample(one_by_one.metrics, counter, mode="internet", predictor=predictor)
        assert sample(at_once.metrics, "pba_accuracy_scored_total", mode="internet", predictor=predictor) > 20


def _comparable(messages: list[Message]) -> list[tuple[str, bytes | None, bytes]]:
    """Messages without the ONNX time they report, in a fixed order."""
    def without_timing(value: bytes) -> bytes:
        return orjson.dumps({k: v for k, v in orjson.loads(value).items() if k != "inference_ms"},
                            option=orjson.OPT_SORT_KEYS)
    return sorted((m.topic, m.key, without_timing(m.value)) for m in messages)


def test_bad_records_become_dead_letters_and_offsets_still_advance(processor: RecordProcessor) -> None:
    out = processor.process([record(0, b"{oops", key=b"x"), record(1, event("a", 1))])
    dead = [m for m in out.each() if m.topic == "network.metrics.dlq"]
    assert len(dead) == 1 and dead[0].value == b"{oops" and dead[0].key == b"x"
    assert dict(dead[0].headers or [])["pba.error.reason"] == b"invalid_json"
    assert list(out.offsets.values()) == [2]


def test_an_event_stamped_far_ahead_of_the_clock_is_dead_lettered_and_does_not_block_its_link(
    processor: RecordProcessor,
) -> None:
    now = time.time()
    out = processor.process([record(0, event("a", now - 3)), record(1, event("a", now + 7200)),
                             record(2, event("a", now - 2))])
    dead = [m for m in out.each() if m.topic == "network.metrics.dlq"]
    live = [orjson.loads(m.value) for m in out.each() if m.topic == "bandwidth.predictions"]
    assert [p["ts"] for p in live] == [now - 3, now - 2]  # the next real sample is not "late"
    (letter,) = dead
    headers = dict(letter.headers or [])
    assert headers["pba.error.reason"] == b"bad_timestamp" and headers["pba.error.field"] == b"ts"
    assert b"s ahead of this host's clock, more than max_future_s (3600 s)" in headers["pba.error.message"]
    assert processor.observe_history([record(3, event("b", now + 7200)), record(4, event("b", now - 1))]) == 1


def test_without_a_limit_an_event_ahead_of_the_clock_is_taken(tiny_models: Path) -> None:
    processor = make_processor(tiny_models)
    processor.config = dataclasses.replace(processor.config, max_future_s=0)
    out = processor.process([record(0, event("a", time.time() + 7200))])
    assert [m.topic for m in out.each()] == ["bandwidth.predictions"]


def test_events_not_keyed_by_their_link_are_predicted_counted_and_named_once_a_minute(
    processor: RecordProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "consumer.processor")
    first = processor.process([record(0, event("a", 1), key=b"a"), record(1, event("b", 1), key=b"node-7"),
                               record(2, event("c", 1), key=None)])
    processor.process([record(3, event("b", 2), key=b"node-7")])
    assert len(first.each()) == 3
    assert sample(processor.metrics, "pba_events_misrouted_total") == 3
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("2 events in a batch are not keyed by their link_id (e.g. link 'b' with key "
                              "b'node-7'): key each event by its link_id")


def test_a_refused_dead_letter_keeps_its_reason_and_source_and_says_what_it_dropped(
    processor: RecordProcessor,
) -> None:
    big_key = b"k" * (KEPT_KEY_BYTES + 1)
    bad = ConsumerRecord("in", 3, 7, 0, 0, big_key, b"x" * 5000, None, 0, 5000, [("trace", b"1")])
    (letters,) = processor.process([bad]).messages

    assert shorten_dead_letter(letters, 0, "too big for the topic")
    headers = dict(letters.headers[0]) if letters.headers else {}
    assert letters.values[0] == b"" and letters.keys[0] is None
    assert "trace" not in headers
    assert headers["pba.error.reason"] == b"invalid_json"
    assert (headers["pba.source.partition"], headers["pba.source.offset"]) == (b"3", b"7")
    assert headers[OMITTED_HEADER].decode() == (
        f"the value (5000 bytes), the key ({len(big_key)} bytes), the record's headers: "
        "too big for the topic; the original is at pba.source.topic / partition / offset")
    assert not shorten_dead_letter(letters, 0, "refused again")  # nothing more to drop


def test_a_refused_dead_letter_keeps_a_short_key(processor: RecordProcessor) -> None:
    (letters,) = processor.process([record(1, b"x" * 5000, key=b"link-1")]).messages
    assert shorten_dead_letter(letters, 0, "too big")
    assert letters.keys[0] == b"link-1" and letters.values[0] == b""
    headers = dict(letters.headers[0] if letters.headers else [])
    assert headers[OMITTED_HEADER].startswith(b"the value (5000 bytes): ")


def test_a_batch_with_dead_letters_is_freed_without_the_cycle_collector(processor: RecordProcessor) -> None:
    """A dead letter's error must not tie the batch to a reference cycle: with collections
    rare, such cycles kept whole batches resident under hostile input."""
    records = [record(0, event("a", 1)), record(1, b"not json"), record(2, b'{"ts": 1')]
    watched = weakref.ref(records[0])
    gc.disable()
    try:
        out = processor.process(records)
        assert len(out.each()) == 3  # one prediction, two dead letters
        del records, out
        assert watched() is None, "the batch is still referenced after processing"
    finally:
        gc.enable()


def test_the_link_cap_evicts_and_says_so(processor: RecordProcessor,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        processor.process([record(i, event(f"l{i}", 1)) for i in range(80)])
        out = processor.process([record(100 + i, event(f"m{i}", 2)) for i in range(70)])
    assert len(out.each()) == 70
    assert len(processor.link_predictor.store) <= 100
    assert sample(processor.metrics, "pba_links_evicted_total", reason="cap") >= 50
    assert sample(processor.metrics, "pba_link_cap_reached") == 1
    assert "link cap of 100 reached" in caplog.text
    assert len(processor.process([record(200, event("new", 2))]).each()) == 1


def test_a_batch_with_more_links_than_the_cap_predicts_each_from_its_own_window(
        processor: RecordProcessor) -> None:
    """No link of a batch is evicted for another of the same batch: the store holds them
    all until the next batch evicts back down to the cap."""
    out = processor.process([record(i, event(f"l{i}", 1, bw=float(i + 1))) for i in range(150)])
    predicted = {orjson.loads(m.value)["link_id"]: orjson.loads(m.value)["predicted_bandwidth_mbps"]
                 for m in out.each()}
    assert predicted == {f"l{i}": float(i + 1) for i in range(150)}  # the last value, its own
    assert len(processor.link_predictor.store) == 150
    processor.process([record(200, event("new", 2))])
    assert len(processor.link_predictor.store) <= 100


def test_replay_fills_windows_without_publishing(processor: RecordProcessor) -> None:
    taken = processor.observe_history([record(i, event("a", i)) for i in range(70)] + [record(70, b"bad")])
    assert taken == 70
    out = processor.process([record(71, event("a", 70))])
    assert orjson.loads(out.each()[0].value)["source"] == "model"


def test_each_models_time_is_recorded_once_per_batch_under_its_own_mode(tiny_models: Path) -> None:
    """In auto mode a batch with both kinds of link runs both models: each histogram
    gets its own model's time once (it used to get both models' time, once per mode)."""
    models = load_models(tiny_models, ("datacenter", "internet"))
    metrics = Metrics()
    p = RecordProcessor(LinkPredictor(Forecaster(models), "auto", max_links=100), ServiceConfig(mode="auto"),
                        metrics)

    def observed(mode: str, what: str) -> float:
        return sample(metrics, f"pba_inference_seconds_{what}", mode=mode)

    def link_event(link: str, ts: float, latency_ms: float) -> bytes:
        # datacenter: >= 1 Gbit/s under 10 ms; internet: over 50 ms
        return orjson.dumps({"link_id": link, "ts": ts, "bandwidth_mbps": 3000.0 + ts % 7,
                             "latency_ms": latency_ms})

    for step in range(80):  # fill both windows: 30 datacenter samples, 60 internet ones
        p.process([record(2 * step, link_event("dc", 1000 + step, 0.3), key=b"dc"),
                   record(2 * step + 1, link_event("wan", 1000 + step, 80.0), key=b"wan")])
    before = {m: (observed(m, "count"), observed(m, "sum")) for m in ("datacenter", "internet")}
    out = p.process([record(500, link_event("dc", 2000, 0.3), key=b"dc"),
                     record(501, link_event("wan", 2000, 80.0), key=b"wan")])
    sources = {orjson.loads(m.value)["link_id"]: orjson.loads(m.value) for m in out.each()}
    assert {s["mode"] for s in sources.values()} == {"datacenter", "internet"}
    assert all(s["source"] == "model" for s in sources.values())
    counts = {m: observed(m, "count") - before[m][0] for m in before}
    assert counts == {"datacenter": 1.0, "internet": 1.0}
    spent = sum(observed(m, "sum") - before[m][1] for m in before)
    assert spent == pytest.approx(sources["dc"]["inference_ms"] / 1000.0)


@pytest.mark.parametrize("pattern, last_value_hits", [("steady", True), ("alternating", False)])
def test_the_last_values_hits_are_counted_on_the_events_the_models_are_scored_on(
        processor: RecordProcessor, pattern: str, last_value_hits: bool) -> None:
    """Beside the live hit rate, the last value's on the same events: every one on a
    steady link, none on a link that doubles and halves each second."""
    def bandwidth(i: int) -> float:
        return 100.0 if pattern == "steady" or i % 2 else 200.0

    for i in range(90):  # past the internet window: the models serve
        processor.process([record(i, event("a", 1000 + i, bandwidth(i)), key=b"a")])
    metrics = processor.metrics
    scored = sample(metrics, "pba_accuracy_scored_total", mode="internet", predictor="v3")
    hits = sample(metrics, "pba_accuracy_last_value_hits_total", mode="internet")
    assert scored == 89  # every sample after the first scores the prediction before it
    assert hits == (scored if last_value_hits else 0)
