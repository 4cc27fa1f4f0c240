"""examples/subscriber.py: an allocation is applied once per prediction id, only while
its valid_until is ahead, never from a shadow prediction; for real, on the service's
own predictions through the embedded broker."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import orjson
import pytest
from kafka_support import Topics, produce, read, repo_root, service_process

SCRIPT = repo_root() / "examples" / "subscriber.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("subscriber_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prediction(pid: str, valid_until: float, shadow: bool = False) -> bytes:
    return orjson.dumps({"prediction_id": pid, "link_id": "l", "valid_until": valid_until,
                         "shadow": shadow, "allocation": {"streams": 4}})


def test_duplicates_expired_shadow_and_unreadable_predictions_are_not_applied() -> None:
    applied: list[dict[str, Any]] = []
    subscriber = load_example().Subscriber(applied.append, clock=lambda: 1000.0, remembered=2)
    assert subscriber.handle(prediction("a", 1000.5)) == "applied"
    assert subscriber.handle(prediction("a", 1000.5)) == "duplicate"
    assert subscriber.handle(prediction("b", 1000.0)) == "expired"  # valid until now: no longer
    assert subscriber.handle(prediction("c", 1001.0, shadow=True)) == "shadow"
    assert subscriber.handle(b"{not json") == "unreadable"
    assert subscriber.handle(b'{"prediction_id": "d"}') == "unreadable"
    assert subscriber.handle(prediction("a", 1000.5)) == "applied"  # remembered ids are bounded: b, c
    assert [p["prediction_id"] for p in applied] == ["a", "a"]


@pytest.mark.integration
def test_the_example_applies_the_services_fresh_predictions_once_each(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """The service predicts events stamped an hour ago (expired on arrival) and half a
    minute ahead (valid for a while); every prediction then arrives a second time, as a
    re-send after a crash would. Each fresh one is applied once, nothing else is."""
    with service_process(kafka_bootstrap, topics, "--mode", "datacenter") as service:
        example = subprocess.Popen([sys.executable, str(SCRIPT), "--bootstrap", kafka_bootstrap, "--topic",
                                    topics.output, "--group-id", topics.group + "-subscriber"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert example.stderr is not None
        try:
            assert example.stderr.readline().startswith("listening on")
            old, ahead = time.time() - 3600, time.time() + 30
            events = [(f"l{k}".encode(),
                       orjson.dumps({"link_id": f"l{k}", "ts": t + i, "bandwidth_mbps": 800.0}))
                      for k, t in ((0, old), (1, ahead), (2, ahead)) for i in range(5)]
            asyncio.run(produce(kafka_bootstrap, topics.input, events))
            sent = asyncio.run(read(kafka_bootstrap, topics.output, len(events), timeout=60, settle=0))
            asyncio.run(produce(kafka_bootstrap, topics.output, [(r.key, r.value) for r in sent]))
            time.sleep(2)
        finally:
            example.send_signal(signal.SIGTERM)
            out, err = example.communicate(timeout=30)
            service.send_signal(signal.SIGTERM)
    assert example.returncode == 0, err
    assert err.splitlines()[-1] == "applied 10, duplicate 15, expired 5"
    applied = sorted(line.split(":")[0] for line in out.splitlines())
    assert applied == ["l1"] * 5 + ["l2"] * 5
