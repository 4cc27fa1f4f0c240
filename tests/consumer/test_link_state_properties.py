"""The per-link state contracts, one suite for every path a prediction can take (in the
manner of river's check_estimator): the service's processor as v3, in a partial rollout,
in shadow and with the kill switch, and the library API.

- predicting is pure: it changes no state until its change is applied;
- a batch predicts as its events would one by one;
- a rebuild (windows replayed, state read back from what was sent) followed by more
  events equals no rebuild, including the predictions re-sent for events that were
  published but not committed before the crash;
- live output is the same with shadow on or off, and across rollout changes for the
  links they do not move;
- one prediction_id, one payload; shadow and live never share an id.

The input (tests/support/link_traffic.py) makes every piece of state move: stream
counts resize and hold, confidence falls on both sides of the gates, links are
datacenter, internet and in between. Each check first asserts that it does.

Real shipped ONNX models throughout.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from link_traffic import link_events, records

from consumer.config import ServiceConfig
from consumer.flags import Flags, rollout_bucket
from consumer.messages import Message
from consumer.metrics import Metrics
from consumer.processor import RecordProcessor
from consumer.rebuild import SentState, restore
from predictor.api import BandwidthPredictor
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor
from predictor.linkstate import ADAPTATION_COLUMNS
from predictor.runtime import ModelSet, load_models

BATCH = 200
PATHS = {
    "v3": [Flags()],
    "rollout-50": [Flags(rollout_percent=50)],
    "shadow": [Flags(shadow=True)],
    "kill-switch": [Flags(kill_switch=True)],
}

Payload = dict[str, Any]


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return load_models(None, ("datacenter", "internet"))


@pytest.fixture(scope="module")
def stream() -> list[ConsumerRecord]:
    return records(link_events(links=40, samples=90))


def processor(models: ModelSet, flags: Flags) -> RecordProcessor:
    p = RecordProcessor(LinkPredictor(Forecaster(models), "auto"), ServiceConfig(), Metrics())
    p.flags = flags
    return p


def published(p: RecordProcessor, recs: Sequence[ConsumerRecord], batch: int = BATCH,
              flags_at: Callable[[int], Flags] | None = None) -> list[Message]:
    """Every message published for recs, fed in batches; flags_at(i) sets the flags
    before the batch starting at record i."""
    out = []
    for i in range(0, len(recs), batch):
        if flags_at is not None:
            p.flags = flags_at(i)
        out += p.process(recs[i:i + batch]).each()
    return out


def run(p: RecordProcessor, recs: Sequence[ConsumerRecord], batch: int = BATCH,
        flags_at: Callable[[int], Flags] | None = None) -> list[Payload]:
    """The payloads of `published`."""
    return [orjson.loads(m.value) for m in published(p, recs, batch, flags_at)]


_CONTINUOUS: dict[str, list[Payload]] = {}


def continuous_run(models: ModelSet, stream: list[ConsumerRecord], path: str) -> list[Payload]:
    """The whole stream through one processor of the path, without a restart (computed
    once per path: several checks compare against it)."""
    if path not in _CONTINUOUS:
        (flags,) = PATHS[path]
        _CONTINUOUS[path] = run(processor(models, flags), stream)
    return _CONTINUOUS[path]


def without_timing(preds: list[Payload]) -> list[Payload]:
    return [{k: v for k, v in p.items() if k != "inference_ms"} for p in preds]


def live(preds: list[Payload]) -> dict[tuple[str, float], Payload]:
    return {(p["link_id"], p["ts"]): p for p in without_timing(preds) if not p["shadow"]}


def by_event(preds: list[Payload]) -> dict[tuple[str, float, bool], Payload]:
    """Each message by its event and role, checking each link's come in event order
    (Kafka orders a key's messages; across links a batch may order them as it likes)."""
    out = {(p["link_id"], p["ts"], p["shadow"]): p for p in without_timing(preds)}
    assert len(out) == len(preds), "one message per event and role"
    for shadow in (False, True):
        ts: dict[str, list[float]] = defaultdict(list)
        for p in preds:
            if p["shadow"] == shadow:
                ts[p["link_id"]].append(p["ts"])
        assert all(t == sorted(t) for t in ts.values())
    return out


def committed_at(offset: float) -> int:
    """The committed offset nearest `offset`: a batch's end, since offsets are committed
    once a batch's outputs are acknowledged (and the adaptation state a rebuild reads
    back rides on each link's last prediction of a batch only)."""
    return BATCH * round(offset / BATCH)


def as_records(messages: list[Message]) -> list[ConsumerRecord]:
    """Published predictions as the predictions topic gives them back, headers and all."""
    return [ConsumerRecord("out", 0, i, 0, 0, m.key, m.value, None, 0, len(m.value), m.headers or [])
            for i, m in enumerate(messages)]


def assert_exercised(preds: list[Payload]) -> None:
    """The input moved what these checks are about."""
    conf = np.array([p["confidence"] for p in preds])
    for low, high in ((0, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.01)):
        assert ((conf >= low) & (conf < high)).sum() > 50, f"too few confidences in [{low}, {high})"
    streams: dict[str, list[int]] = defaultdict(list)
    for p in preds:
        if not p["shadow"]:
            streams[p["link_id"]].append(p["allocation"]["streams"])
    steps = np.concatenate([np.diff(s) for s in streams.values()])
    assert (steps != 0).sum() > 100 and (steps == 0).sum() > 100, "stream counts neither move nor hold"
    assert {p["mode"] for p in preds} >= {"datacenter", "internet"}


# -- the checks, each run on every path -------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_a_batch_predicts_as_its_events_one_by_one(models: ModelSet, stream: list[ConsumerRecord],
                                                   path: str) -> None:
    (flags,) = PATHS[path]
    batched = continuous_run(models, stream, path)
    assert_exercised(batched)
    assert by_event(batched) == by_event(run(processor(models, flags), stream, batch=1))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("committed", [0.4, 0.7])
def test_a_rebuild_then_more_events_equals_no_rebuild(models: ModelSet, stream: list[ConsumerRecord],
                                                      path: str, committed: float) -> None:
    """A crash after publishing up to 60 % (or 80 %) of the stream with offsets committed
    up to 40 % (70 %), at the end of a batch, where the service commits: the new owner
    replays the committed input, reads back what was sent, and predicts from the
    committed offset on. Its predictions, re-sent ones included, are those of a service
    that never crashed."""
    (flags,) = PATHS[path]
    continuous = continuous_run(models, stream, path)
    cut, sent_upto = committed_at(len(stream) * committed), int(len(stream) * (committed + 0.2))
    crashed = processor(models, flags)
    messages = published(crashed, stream[:sent_upto])
    sent = [orjson.loads(m.value) for m in messages]
    restarted = processor(models, flags)
    restarted.observe_history(stream[:cut])
    assert restore(restarted.link_predictor.store, as_records(messages)) == len({r.key for r in stream[:cut]})
    after = run(restarted, stream[cut:])
    assert_exercised(continuous)
    from_cut = {(e["link_id"], e["ts"]) for e in map(orjson.loads, (r.value for r in stream[cut:]))}
    assert by_event(after) == {k: v for k, v in by_event(continuous).items() if k[:2] in from_cut}
    resent = live(after).keys() & live(sent).keys()
    assert resent and all(live(after)[k] == live(sent)[k] for k in resent)


@pytest.mark.parametrize("path", PATHS)
def test_reading_back_from_the_newest_in_spans_restores_what_reading_everything_does(
    models: ModelSet, stream: list[ConsumerRecord], path: str
) -> None:
    """The rebuild reads the predictions topic from its end back, span by span, and
    stops once every replayed link is settled: it reads a fraction of what was sent,
    and the predictions that follow are those after a read of everything."""
    (flags,) = PATHS[path]
    cut, sent_upto = committed_at(len(stream) * 0.7), int(len(stream) * 0.9)
    sent = as_records(published(processor(models, flags), stream[:sent_upto]))
    whole, in_spans = processor(models, flags), processor(models, flags)
    for restarted in (whole, in_spans):
        restarted.observe_history(stream[:cut])
    restored = restore(whole.link_predictor.store, sent)
    state = SentState(in_spans.link_predictor.store, {r.key for r in stream[:cut] if r.key})
    upper = len(sent)
    while upper > 0 and not state.complete():
        state.take(sent[max(0, upper - 200):upper])
        upper = max(0, upper - 200)
    assert state.restore() == restored
    assert upper > len(sent) / 2, f"read {len(sent) - upper} of {len(sent)} predictions"
    assert by_event(run(in_spans, stream[cut:])) == by_event(run(whole, stream[cut:]))


@pytest.mark.parametrize("path", PATHS)
def test_predicting_is_pure_until_the_change_is_applied(models: ModelSet, stream: list[ConsumerRecord],
                                                        path: str) -> None:
    (flags,) = PATHS[path]
    p = processor(models, flags)
    half = len(stream) // 2
    run(p, stream[:half])
    p.observe_history(stream[half:half + 40 * 10])  # ten samples per link, not predicted yet
    store = p.link_predictor.store
    slots = store.slots([f"link-{k:03d}" for k in range(40)])
    columns = {name: store.column(name).copy()
               for name in ("streams", "mode", "candidate", "streak", *ADAPTATION_COLUMNS)}
    first = p.link_predictor.predict(slots, use_models=flags == Flags())
    second = p.link_predictor.predict(slots, use_models=flags == Flags())
    for name, before in columns.items():
        np.testing.assert_array_equal(store.column(name), before, err_msg=name)
    assert p.link_predictor.prediction_ids(first) == p.link_predictor.prediction_ids(second)
    np.testing.assert_array_equal(first.allocations.streams, second.allocations.streams)
    assert first.change is not None
    moved = first.change.streams != columns["streams"][first.change.slots]
    assert moved.any(), "the data should resize some links' stream counts"
    p.link_predictor.apply(first)
    np.testing.assert_array_equal(store.column("streams")[first.change.slots], first.change.streams)
    # made beside the live predictor (shadow): applying it keeps the live stream counts
    streams = store.column("streams").copy()
    beside = p.link_predictor.predict_snapshot(p.link_predictor.capture(slots),
                                               prior_streams=first.prior_streams)
    assert beside.change is not None and beside.change.streams is None
    p.link_predictor.apply(beside)
    np.testing.assert_array_equal(store.column("streams"), streams)


# -- live output against the flags -----------------------------------------------------


def test_live_output_is_the_same_with_shadow_on_as_with_the_kill_switch(
        models: ModelSet, stream: list[ConsumerRecord]) -> None:
    """v1 is live in both; in shadow mode v3 runs beside it and must not touch it. Also
    with shadow switched on and off again mid-stream."""
    alone = continuous_run(models, stream, "kill-switch")
    assert_exercised(alone)
    shadowed = continuous_run(models, stream, "shadow")
    assert sum(p["shadow"] for p in shadowed) == len(alone)
    toggled = run(processor(models, Flags()), stream,
                  flags_at=lambda i: Flags(shadow=True) if (i // BATCH) % 2 else Flags(kill_switch=True))
    assert live(shadowed) == live(alone) == live(toggled)


def test_a_rollout_change_leaves_the_links_it_does_not_move_untouched(
        models: ModelSet, stream: list[ConsumerRecord]) -> None:
    full = continuous_run(models, stream, "v3")
    assert_exercised(full)
    half = len(stream) // 2
    shrunk = run(processor(models, Flags()), stream,
                 flags_at=lambda i: Flags() if i < half else Flags(rollout_percent=50))
    kept = {link for link, _ in live(full) if rollout_bucket(link) < 50}
    moved = {link for link, _ in live(full)} - kept
    assert kept and moved
    assert {k: v for k, v in live(shrunk).items() if k[0] in kept} == \
        {k: v for k, v in live(full).items() if k[0] in kept}
    later = [k for k in live(shrunk) if k[0] in moved and live(shrunk)[k]["model_version"] == "v1-last-value"]
    assert later, "the links moved out of the rollout are served by v1"


def test_one_prediction_id_means_one_payload_and_shadow_never_shares_an_id(
        models: ModelSet, stream: list[ConsumerRecord]) -> None:
    payloads: dict[str, set[bytes]] = defaultdict(set)
    roles: dict[str, set[bool]] = defaultdict(set)
    for path in PATHS:
        for p in without_timing(continuous_run(models, stream, path)):
            payloads[p["prediction_id"]].add(orjson.dumps(p, option=orjson.OPT_SORT_KEYS))
            roles[p["prediction_id"]].add(p["shadow"])
    assert len(payloads) > len(stream)  # the paths differ, so ids differ too
    assert all(len(v) == 1 for v in payloads.values())
    assert all(len(v) == 1 for v in roles.values())


# -- the library API -------------------------------------------------------------------


def test_the_library_predicts_a_batch_as_its_links_one_by_one_and_stays_pure() -> None:
    events = link_events(links=12, samples=80)
    batched, single = BandwidthPredictor.load(), BandwidthPredictor.load()
    together, alone = [], []
    by_ts: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_ts[round(float(e["ts"]))].append(e)  # type: ignore[arg-type]
    for step in sorted(by_ts):
        for bp in (batched, single):
            for e in by_ts[step]:
                bp.add_sample(str(e["link_id"]), float(e["ts"]), float(e["bandwidth_mbps"]),  # type: ignore[arg-type]
                              latency_ms=float(e["latency_ms"]), packet_loss=float(e["packet_loss"]),  # type: ignore[arg-type]
                              jitter_ms=1.5)
        links = [str(e["link_id"]) for e in by_ts[step]]
        together += batched.predict_batch(links)
        alone += [single.predict(link) for link in links]
    assert together == alone
    streams = [p.allocation.streams for p in together]
    assert len(set(streams)) > 10
