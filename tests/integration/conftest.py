"""Fixtures for tests against the real broker."""

from __future__ import annotations

import json

import jsonschema
import pytest

from schemas import PREDICTION_SCHEMA_PATH


@pytest.fixture(scope="session")
def prediction_schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(PREDICTION_SCHEMA_PATH.read_text()))
