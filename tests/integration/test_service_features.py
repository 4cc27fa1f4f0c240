"""Feature flags (rollout, kill switch, shadow), model hot reload, health and metrics
endpoints, on the real broker with the service running in this process."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka_support import (
    Topics,
    link_events,
    predictions,
    produce,
    read,
    running_service,
    service_config,
)
from metrics_support import sample

from consumer.service import Service
from consumer.tools.broker import free_port
from predictor.manifest import DEFAULT_MODELS_DIR, MANIFEST_NAME
from predictor.rollout import BASELINE_VERSION

pytestmark = pytest.mark.integration


async def test_rollout_zero_serves_every_link_with_v1(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    flags = tmp_path / "flags.toml"
    flags.write_text("rollout_percent = 0\n")
    events = link_events(3, 65)
    await produce(kafka_bootstrap, topics.input, events)
    async with running_service(service_config(kafka_bootstrap, topics, flags_file=flags)):
        preds = predictions(await read(kafka_bootstrap, topics.output, len(events)))
    assert len(preds) == len(events)
    assert {p["model_version"] for p in preds} == {BASELINE_VERSION}
    assert not any(p["shadow"] for p in preds)


async def test_shadow_mode_publishes_v3_beside_live_v1(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    flags = tmp_path / "flags.toml"
    flags.write_text("shadow = true\n")
    shadow_topic = topics.output + "-shadow"
    events = link_events(2, 65)
    await produce(kafka_bootstrap, topics.input, events)
    config = service_config(kafka_bootstrap, topics, flags_file=flags, shadow_topic=shadow_topic)
    async with running_service(config) as service:
        live = predictions(await read(kafka_bootstrap, topics.output, len(events)))
        shadow = predictions(await read(kafka_bootstrap, shadow_topic, len(events)))
        await asyncio.sleep(0.5)
        scored = {p: sample(service.metrics, "pba_accuracy_scored_total", mode="internet", predictor=p)
                  for p in ("v3", "v1")}
    assert len(live) == len(shadow) == len(events)
    assert all(not p["shadow"] and p["model_version"] == BASELINE_VERSION for p in live)
    assert all(p["shadow"] for p in shadow)
    assert {p["source"] for p in shadow} == {"fallback", "model"}
    assert scored["v3"] > 0 and scored["v1"] > 0  # both compared in metrics


async def test_kill_switch_flips_to_v1_while_running(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    flags = tmp_path / "flags.toml"
    flags.write_text("kill_switch = false\n")
    events = link_events(2, 80)
    half = len(events) // 2
    await produce(kafka_bootstrap, topics.input, events[:half])
    async with running_service(service_config(kafka_bootstrap, topics, flags_file=flags)):
        await read(kafka_bootstrap, topics.output, half, settle=0.2)
        flags.write_text("kill_switch = true\n")
        await asyncio.sleep(2.5)  # the flags file is polled every second
        await produce(kafka_bootstrap, topics.input, events[half:])
        preds = predictions(await read(kafka_bootstrap, topics.output, len(events)))
    later = [p for p in preds if p["ts"] >= orjson.loads(events[half][1])["ts"]]
    assert later and {p["model_version"] for p in later} == {BASELINE_VERSION}


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Look a few times a second until `condition` holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.25)
    return True


def serving_shipped_models(service: Service) -> bool:
    internet = service.models.models.get("internet")
    return internet is not None and "tiny" not in internet.version


async def assert_the_rest_is_served_by_the_shipped_models(
    bootstrap: str, topics: Topics, events: list[tuple[bytes, bytes]], served: int
) -> None:
    await produce(bootstrap, topics.input, events[served:])
    preds = predictions(await read(bootstrap, topics.output, len(events)))
    assert len(preds) == len(events), "events were dropped during the reload"
    last = max(preds, key=lambda p: p["ts"])
    assert last["source"] == "model" and "tiny" not in last["model_version"]


async def test_models_are_hot_reloaded_when_the_manifest_changes(
    kafka_bootstrap: str, topics: Topics, tiny_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    events = link_events(2, 70)
    await produce(kafka_bootstrap, topics.input, events[:100])
    async with running_service(service_config(kafka_bootstrap, topics, models=models)) as service:
        first = predictions(await read(kafka_bootstrap, topics.output, 100, settle=0.2))
        assert {p["model_version"] for p in first if p["source"] == "model"} <= {"internet-tiny-test"}

        (models / MANIFEST_NAME).write_text("{ not json")  # a bad deployment is refused
        assert not await service.reload_models()

        for item in DEFAULT_MODELS_DIR.iterdir():  # a good one is taken
            if item.is_file():
                shutil.copy(item, models / item.name)
        await until(lambda: serving_shipped_models(service))
        await assert_the_rest_is_served_by_the_shipped_models(kafka_bootstrap, topics, events, 100)
    assert sample(service.metrics, "pba_model_load_failures_total") == 1


async def test_a_model_set_copied_manifest_first_is_taken_once_its_files_have_landed(
    kafka_bootstrap: str, topics: Topics, tiny_models: Path, tmp_path: Path
) -> None:
    """The manifest alone settles first and is refused (its files are not there yet);
    the files that follow are a change of their own, and the complete set is taken."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    events = link_events(2, 70)
    await produce(kafka_bootstrap, topics.input, events[:100])
    async with running_service(service_config(kafka_bootstrap, topics, models=models)) as service:
        await read(kafka_bootstrap, topics.output, 100, settle=0.2)
        def failures() -> float:
            return sample(service.metrics, "pba_model_load_failures_total")

        shutil.copy(DEFAULT_MODELS_DIR / MANIFEST_NAME, models / MANIFEST_NAME)
        assert await until(lambda: failures() == 1), "the half-copied set was not looked at"
        assert not serving_shipped_models(service)
        for item in DEFAULT_MODELS_DIR.iterdir():  # the models and the adaptation's gate
            if item.is_file() and item.name != MANIFEST_NAME:
                shutil.copy(item, models / item.name)
        await until(lambda: serving_shipped_models(service))
        await assert_the_rest_is_served_by_the_shipped_models(kafka_bootstrap, topics, events, 100)
    assert failures() == 1


async def test_health_readiness_and_metrics_are_served(kafka_bootstrap: str, topics: Topics) -> None:
    port = free_port()
    events = link_events(2, 10)
    await produce(kafka_bootstrap, topics.input, events + [(b"k", b"bad")])
    async with running_service(service_config(kafka_bootstrap, topics, metrics_port=port,
                                              metrics_bind="127.0.0.1")):
        base = f"http://127.0.0.1:{port}"
        for _ in range(50):  # the server starts with the service task
            try:
                assert _get(base + "/healthz") == (200, "ok: moving\n")
                break
            except urllib.error.URLError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("/healthz never answered")
        await read(kafka_bootstrap, topics.output, len(events), settle=0.5)
        status, body = _get(base + "/readyz")
        assert status == 200 and body.startswith("ready")
        status, metrics = _get(base + "/metrics")
        assert status == 200
        # ten samples a link: the fallback serves the first nine, the model the tenth
        assert 'pba_predictions_total{mode="internet",source="fallback"} 18.0' in metrics
        assert 'pba_predictions_total{mode="internet",source="model"} 2.0' in metrics
        assert 'pba_events_invalid_total{reason="invalid_json"} 1.0' in metrics
        assert "pba_end_to_end_seconds_bucket" in metrics
        assert "pba_consumer_lag" in metrics
    with pytest.raises(urllib.error.URLError):
        _get(base + "/healthz")


async def test_liveness_fails_while_the_event_loop_or_the_inference_thread_is_stuck(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """/healthz used to answer 200 whatever happened, so a stuck process was never
    restarted. Here the service's own event loop is blocked, then its inference thread
    held with a batch waiting: each fails liveness, and it passes again once they move."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/healthz"
    await produce(kafka_bootstrap, topics.input, link_events(2, 10))
    async with running_service(service_config(kafka_bootstrap, topics, metrics_port=port,
                                              metrics_bind="127.0.0.1", liveness_timeout_s=1.0)) as service:
        await read(kafka_bootstrap, topics.output, 20, settle=0.5)
        assert _get(base)[0] == 200
        answers: list[tuple[int, str]] = []

        def probe() -> None:
            for _ in range(10):
                answers.append(_get(base))
                time.sleep(0.25)

        prober = threading.Thread(target=probe)
        prober.start()
        time.sleep(2.5)  # a blocking call on the event loop: the loop does not move
        prober.join()
        assert any(status == 503 and body.startswith("stuck: the event loop has not moved for")
                   for status, body in answers), answers
        assert await until(lambda: _get(base)[0] == 200), "alive again once the loop moves"

        release = threading.Event()
        service._worker.submit(release.wait, 20)  # the inference thread held
        await produce(kafka_bootstrap, topics.input, link_events(2, 10, t0=1_700_000_100.0))
        assert await until(lambda: _get(base)[0] == 503), "a held inference thread went unseen"
        assert "the poll loop has not moved" in _get(base)[1]
        release.set()
        assert await until(lambda: _get(base)[0] == 200), "alive again once inference moves"
        await read(kafka_bootstrap, topics.output, 40, settle=0.2)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
