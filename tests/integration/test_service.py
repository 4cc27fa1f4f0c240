"""`pba run` against the real (embedded) broker: one prediction per valid event, dead
letters unchanged with headers, restarts and a second instance lose nothing, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from typing import Any

import aiokafka.consumer.fetcher
import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from kafka_support import (
    Topics,
    committed_offsets,
    committed_total,
    event,
    free_port,
    link_events,
    predictions,
    produce,
    read,
    running_service,
    seconds_until_ready,
    service_config,
    service_process,
    service_stderr,
)
from metrics_support import sample

from predictor.modes import MODEL_MIN_SAMPLES

pytestmark = pytest.mark.integration

BAD = [
    (b"bad-1", b"not json at all"),
    (b"bad-2", orjson.dumps({"link_id": "x", "ts": 1, "bandwidth_mbps": -5})),
    (None, orjson.dumps({"ts": 1, "bandwidth_mbps": 5})),
    (b"bad-4", b"\xff\xfe\x00"),
    (b"bad-5", orjson.dumps({"link_id": "x", "ts": 1, "bandwidth_mbps": 5, "schema_version": 9})),
]


def by_link(preds: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in sorted(preds, key=lambda p: p["ts"]):
        out[p["link_id"]].append(p)
    return out


async def test_one_schema_valid_prediction_per_valid_event_and_bad_ones_dead_lettered(
    kafka_bootstrap: str, topics: Topics, prediction_schema: jsonschema.Draft202012Validator
) -> None:
    links, per_link = 6, 70
    good = link_events(links, per_link)
    await produce(kafka_bootstrap, topics.input, good[:200] + BAD + good[200:])
    async with running_service(service_config(kafka_bootstrap, topics)):
        out = await read(kafka_bootstrap, topics.output, len(good))
        dead = await read(kafka_bootstrap, topics.dlq, len(BAD))

    preds = predictions(out)
    assert len(preds) == len(good)
    assert len({p["prediction_id"] for p in preds}) == len(good)
    for record, p in zip(out, preds, strict=True):
        prediction_schema.validate(p)
        assert record.key == p["link_id"].encode()
    for link, series in by_link(preds).items():
        first = MODEL_MIN_SAMPLES - 1  # the fallback serves a link's first nine samples
        assert [p["source"] for p in series] == ["fallback"] * first + ["model"] * (per_link - first), link
        assert all(p["mode"] == "internet" for p in series)

    assert sorted(r.value for r in dead) == sorted(value for _, value in BAD)
    for record in dead:
        headers = dict(record.headers)
        assert headers["pba.source.topic"] == topics.input.encode()
        assert int(headers["pba.source.offset"]) >= 0 and headers["pba.error.reason"]
        original_key = next(k for k, v in BAD if v == record.value)
        assert record.key == original_key


async def test_predictions_the_producer_refuses_are_sent_again_and_the_service_keeps_running(
    kafka_bootstrap: str, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka raises, instead of failing the delivery, when a partition's queue does not
    drain within the request timeout (a broker away for longer than that): those
    predictions are sent again like failed deliveries, exactly once each in the end."""
    refusals = 3
    send_batch = AIOKafkaProducer.send_batch

    async def refusing(self: AIOKafkaProducer, batch: Any, topic: str, *, partition: int) -> Any:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise KafkaTimeoutError("the partition's queue did not drain (test)")
        return await send_batch(self, batch, topic, partition=partition)

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", refusing)
    good = link_events(4, 40)
    await produce(kafka_bootstrap, topics.input, good)
    async with running_service(service_config(kafka_bootstrap, topics, mode="datacenter")):
        out = await read(kafka_bootstrap, topics.output, len(good), timeout=30)
    assert refusals == 0
    assert sorted((p["link_id"], p["ts"]) for p in predictions(out)) == sorted(
        (p["link_id"], p["ts"]) for p in map(orjson.loads, (value for _, value in good)))


#: Kafka's codec numbers in a record batch's attributes
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.mark.parametrize("codec", sorted(CODECS))
async def test_compressed_input_is_predicted_and_outputs_are_compressed_when_asked(
    kafka_bootstrap: str, topics: Topics, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Producers often compress (librdkafka and Java clients offer all four codecs): a
    batch the consumer cannot decompress would stall its partition for good."""
    good = link_events(3, 65)
    await produce(kafka_bootstrap, topics.input, good + BAD[:1], compression_type=codec)
    async with running_service(service_config(kafka_bootstrap, topics, compression=codec)):
        await read(kafka_bootstrap, topics.dlq, 1, settle=0)
        await read(kafka_bootstrap, topics.output, len(good), settle=0)

    seen: list[int] = []

    def spy(data: bytes) -> Any:  # what the reading consumer's fetcher unpacks
        records = MemoryRecords(data)
        next_batch = records.next_batch

        class Recording:
            def __getattr__(self, name: str) -> Any:
                return getattr(records, name)

            def next_batch(self) -> Any:
                batch = next_batch()
                if batch is not None:
                    seen.append(batch.compression_type)
                return batch

        return Recording()

    monkeypatch.setattr(aiokafka.consumer.fetcher, "MemoryRecords", spy)
    out = await read(kafka_bootstrap, topics.output, len(good))
    dead = await read(kafka_bootstrap, topics.dlq, 1)
    assert sorted((p["link_id"], p["ts"]) for p in predictions(out)) == sorted(
        (orjson.loads(v)["link_id"], orjson.loads(v)["ts"]) for _, v in good)
    assert [p["source"] for p in predictions(out)].count("model") == 3 * (65 - (MODEL_MIN_SAMPLES - 1))
    assert [r.value for r in dead] == [BAD[0][1]]
    assert seen and set(seen) == {CODECS[codec]}


async def test_a_dead_letter_too_large_for_its_topic_goes_without_its_value_and_commits_go_on(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """An input message bigger than the producer (or the dead-letter topic) takes: sent as
    it is, it would be refused on every retry and no offset behind it committed again."""
    good = link_events(3, 10)
    huge = orjson.dumps({"link_id": "huge", "ts": 1, "bandwidth_mbps": 1, "pad": "x" * 1_500_000})
    await produce(kafka_bootstrap, topics.input, [*good[:15], (b"huge", huge), *good[15:]],
                  max_request_size=4 << 20)
    async with running_service(service_config(kafka_bootstrap, topics)) as service:
        out = await read(kafka_bootstrap, topics.output, len(good), settle=0)
        (dead,) = await read(kafka_bootstrap, topics.dlq, 1)
        deadline = time.monotonic() + 20
        while await committed_total(kafka_bootstrap, topics.input, topics.group) < len(good) + 1:
            assert time.monotonic() < deadline, "commits stopped at the refused dead letter"
            await asyncio.sleep(0.2)
        shortened = sample(service.metrics, "pba_dead_letters_shortened_total")

    assert len(predictions(out)) == len(good)
    headers = dict(dead.headers)
    assert dead.key == b"huge" and dead.value == b""
    assert headers["pba.error.reason"] == b"too_large"
    omitted = headers["pba.error.omitted"].decode()
    assert omitted.startswith(f"the value ({len(huge)} bytes): {topics.dlq} refused the size")
    assert headers["pba.source.topic"] == topics.input.encode() and int(headers["pba.source.offset"]) >= 0
    assert shortened == 1


async def test_late_and_duplicate_events_are_counted_not_predicted(
    kafka_bootstrap: str, topics: Topics
) -> None:
    messages = [(b"a", event("a", 100.0, 10)), (b"a", event("a", 101.0, 11)),
                (b"a", event("a", 101.0, 12)), (b"a", event("a", 99.0, 13)),
                (b"a", event("a", 102.0, 14))]
    await produce(kafka_bootstrap, topics.input, messages)
    async with running_service(service_config(kafka_bootstrap, topics)) as service:
        out = await read(kafka_bootstrap, topics.output, 3)
        late = sample(service.metrics, "pba_events_late_total")
    assert [p["ts"] for p in predictions(out)] == [100.0, 101.0, 102.0]
    assert late == 2


async def test_restart_rebuilds_windows_and_loses_nothing(
    kafka_bootstrap: str, topics: Topics
) -> None:
    links, per_link = 4, 90
    events = link_events(links, per_link)
    first, second = events[: links * 70], events[links * 70:]
    config = service_config(kafka_bootstrap, topics)
    await produce(kafka_bootstrap, topics.input, first)
    async with running_service(config):
        await read(kafka_bootstrap, topics.output, len(first))
    await produce(kafka_bootstrap, topics.input, second)
    async with running_service(config):
        out = await read(kafka_bootstrap, topics.output, len(events))
    preds = predictions(out)
    assert len(preds) == len(events) and len({p["prediction_id"] for p in preds}) == len(events)
    for series in by_link(preds).values():
        after_restart = series[70]
        assert after_restart["source"] == "model", "window was not rebuilt after the restart"


async def test_a_new_group_starting_at_the_end_skips_the_backlog_and_predicts_with_its_models_at_once(
    kafka_bootstrap: str, topics: Topics
) -> None:
    links = 4
    events = link_events(links, 90)
    backlog, live = events[: links * 70], events[links * 70:]
    await produce(kafka_bootstrap, topics.input, backlog[:-links])
    for message in backlog[-links:]:  # the newest backlog event of each link in a batch of its own
        await produce(kafka_bootstrap, topics.input, [message])
    async with running_service(service_config(kafka_bootstrap, topics, start_at="latest")) as service:
        for _ in range(80):
            if service.readiness()[0]:
                break
            await asyncio.sleep(0.25)
        assert service.readiness()[0], "never assigned"
        await produce(kafka_bootstrap, topics.input, live)
        preds = predictions(await read(kafka_bootstrap, topics.output, len(live)))
    predicted = Counter((p["link_id"], p["ts"]) for p in preds)
    assert set(predicted.values()) == {1}
    live_keys = {(k.decode(), orjson.loads(v)["ts"]) for k, v in live}
    assert live_keys <= set(predicted), "a live event was not predicted"
    # Kafka's end offset is exact; the embedded broker answers with the base offset of a
    # partition's newest record batch, so that batch (one event here) is read again
    newest = {(k.decode(), orjson.loads(v)["ts"]) for k, v in backlog[-links:]}
    assert set(predicted) - live_keys <= newest, "the backlog was predicted"
    assert {p["source"] for p in preds} == {"model"}, "the windows were not rebuilt from the backlog"


async def test_two_instances_split_the_links_and_lose_nothing(
    kafka_bootstrap: str, topics: Topics
) -> None:
    events = link_events(12, 30)
    await produce(kafka_bootstrap, topics.input, events)
    config = service_config(kafka_bootstrap, topics)
    async with running_service(config) as a, running_service(config) as b:
        out = await read(kafka_bootstrap, topics.output, len(events), timeout=90)
        served_a, served_b = (sum(sample(member.metrics, "pba_predictions_total", mode="internet", source=s)
                                  for s in ("model", "fallback")) for member in (a, b))
    preds = predictions(out)
    ids = Counter(p["prediction_id"] for p in preds)
    keys = {(p["link_id"], p["ts"]) for p in preds}
    assert len(keys) == len(events), "an event has no prediction"
    for p in preds:  # any repeat is an exact repeat (same event, same id)
        assert ids[p["prediction_id"]] >= 1
    assert len(ids) == len(keys)
    assert served_a > 0 and served_b > 0, "one instance got no partitions"
    assert served_a + served_b >= len(events)


def test_sigterm_exits_zero_after_committing(kafka_bootstrap: str, topics: Topics) -> None:
    events = link_events(3, 20)
    asyncio.run(produce(kafka_bootstrap, topics.input, events))
    with service_process(kafka_bootstrap, topics, "--mode", "internet") as proc:
        out = asyncio.run(read(kafka_bootstrap, topics.output, len(events), settle=0.5))
        assert len(out) == len(events)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert time.monotonic() - started < 15
    # committed: a new member of the group has nothing left to predict
    with service_process(kafka_bootstrap, topics, "--mode", "internet") as proc:
        again = asyncio.run(read(kafka_bootstrap, topics.output, len(events) + 1, timeout=12))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert len(again) == len(events)


async def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """Each existing topic of names, with its partition count."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = [n for n in names if n in set(await admin.list_topics())]
        # (describe_topics([]) describes every topic)
        described = await admin.describe_topics(existing) if existing else []
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


def test_missing_topics_are_created_with_the_partitions_asked_for_or_not_at_all(
    kafka_bootstrap: str, topics: Topics
) -> None:
    mine = [topics.input, topics.output, topics.dlq]
    port = free_port()
    with service_process(kafka_bootstrap, topics, "--mode", "datacenter", "--metrics-port", str(port),
                         "--create-topic-partitions", "6") as proc:
        seconds_until_ready(port, 60, proc)
        assert asyncio.run(partition_counts(kafka_bootstrap, mine)) == dict.fromkeys(mine, 6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    left = Topics(*(f"{name}-left" for name in (topics.input, topics.output, topics.dlq, topics.group)))
    with service_process(kafka_bootstrap, left, "--mode", "datacenter", "--create-topic-partitions", "0",
                         "--log-level", "INFO") as proc:
        time.sleep(6)
        # (the embedded broker creates a topic a client asks metadata for, as Kafka does with
        # auto.create.topics.enable: the input and output here; nothing asks for the dead letters')
        created = asyncio.run(partition_counts(kafka_bootstrap, [left.dlq]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "created topics" not in service_stderr(proc)
    assert created == {}


def test_bad_configuration_is_refused_with_every_problem_named() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run", "--bootstrap", "nonsense", "--mode", "auto",
         "--metrics-port", "70000", "--output-topic", "network.metrics"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "bootstrap 'nonsense' must look like HOST:PORT" in done.stderr
    assert "metrics_port must be 0..65535" in done.stderr
    assert "topics must all differ" in done.stderr


def test_without_a_bootstrap_it_refuses_to_start_unless_the_embedded_broker_is_asked_for() -> None:
    """A missing or misspelt bootstrap setting stops start-up (it used to start an
    in-memory broker and report ready); --embedded-broker serves from one, for real."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("PBA_")}
    run = [sys.executable, "-m", "consumer.cli", "run", "--mode", "datacenter"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60, env=environ)
    assert done.returncode == 2
    assert "no Kafka bootstrap address: give --bootstrap HOST:PORT (env PBA_KAFKA_BOOTSTRAP)" in done.stderr
    done = subprocess.run(run, capture_output=True, text=True, timeout=60,
                          env={**environ, "PBA_BOOTSTRAP": "kafka-1:9092"})
    assert done.returncode == 2
    assert "PBA_BOOTSTRAP is not a setting; did you mean PBA_KAFKA_BOOTSTRAP?" in done.stderr
    port = free_port()
    proc = subprocess.Popen([*run, "--embedded-broker", "--metrics-port", str(port)], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        seconds_until_ready(port, 60, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "--embedded-broker: started an in-memory broker at 127.0.0.1:" in (proc.stdout or "").read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_metrics_port_in_use_is_refused_with_the_fix_not_a_traceback() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "consumer.cli", "run", "--bootstrap", "127.0.0.1:1",
             "--mode", "datacenter", "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot serve /metrics, /healthz and /readyz on 0.0.0.0:{port}" in done.stderr
    assert "choose another --metrics-port" in done.stderr and "Traceback" not in done.stderr


def test_a_restart_re_predicts_uncommitted_events_with_the_same_ids(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """A restart from offsets committed before predictions that were already published
    (what a crash between publish and commit leaves): the restarted member rebuilds its
    windows and each link's state from history and re-predicts those events with the
    same ids and payloads, losing nothing. The crash is staged: the group's offsets are
    moved back to where the service had committed while it went on predicting (a
    batch's end, like every offset it commits)."""
    events = link_events(8, 150)
    asyncio.run(produce(kafka_bootstrap, topics.input, events[:700]))
    with service_process(kafka_bootstrap, topics, "--mode", "auto") as proc:
        asyncio.run(read(kafka_bootstrap, topics.output, 700, settle=0.5))
        committed = asyncio.run(offsets_once_committed(kafka_bootstrap, topics.input, topics.group, 700))
        asyncio.run(produce(kafka_bootstrap, topics.input, events[700:800]))
        asyncio.run(read(kafka_bootstrap, topics.output, 800, settle=0.5))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    asyncio.run(commit_offsets(kafka_bootstrap, topics.input, topics.group, committed))
    asyncio.run(produce(kafka_bootstrap, topics.input, events[800:]))
    with service_process(kafka_bootstrap, topics, "--mode", "auto") as proc:
        out = asyncio.run(read(kafka_bootstrap, topics.output, len(events) + 100, timeout=90, settle=2.0))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    by_event: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for p in predictions(out):
        by_event[(p["link_id"], p["ts"])].append({**p, "inference_ms": 0})
    assert len(by_event) == len(events), "an event has no prediction"
    repeated = [v for v in by_event.values() if len(v) > 1]
    assert len(repeated) == 100
    assert {p["source"] for v in repeated for p in v} == {"model"}, "the models serve the re-sent ones"
    for versions in repeated:
        assert len({p["prediction_id"] for p in versions}) == 1, versions
        assert len({orjson.dumps(p) for p in versions}) == 1, versions


async def offsets_once_committed(bootstrap: str, topic: str, group: str,
                                 total: int) -> dict[TopicPartition, int]:
    """The group's committed offsets once they cover `total` events (within 30 s)."""
    deadline = time.monotonic() + 30
    while sum((offsets := await committed_offsets(bootstrap, topic, group)).values()) < total:
        assert time.monotonic() < deadline, offsets
        await asyncio.sleep(0.2)
    assert sum(offsets.values()) == total, offsets
    return offsets


async def commit_offsets(bootstrap: str, topic: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Set the group's committed offsets, as `kafka-consumer-groups --reset-offsets` would,
    by a member that joins the group like any other (the service is stopped)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200, max_records=1)
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()
