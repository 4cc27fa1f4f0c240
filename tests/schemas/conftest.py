from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from schemas import EVENT_SCHEMA_PATH, PREDICTION_SCHEMA_PATH


def _validator(path: Any) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.fixture(scope="session")
def event_validator() -> jsonschema.Draft202012Validator:
    return _validator(EVENT_SCHEMA_PATH)


@pytest.fixture(scope="session")
def prediction_validator() -> jsonschema.Draft202012Validator:
    return _validator(PREDICTION_SCHEMA_PATH)
