"""Fixtures for tests against the real broker."""

from __future__ import annotations

import json

import jsonschema
import pytest
from kafka_support import Topics

from schemas import PREDICTION_SCHEMA_PATH


@pytest.fixture
def topics(unique_name: str) -> Topics:
    return Topics(f"in-{unique_name}", f"out-{unique_name}", f"dlq-{unique_name}", f"g-{unique_name}")


@pytest.fixture(scope="session")
def prediction_schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(PREDICTION_SCHEMA_PATH.read_text()))
