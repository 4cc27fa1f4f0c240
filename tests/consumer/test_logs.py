"""Log lines carry their values as fields: JSON objects with them as keys, text as
name=value pairs, never a dict printed inside the message."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import orjson

from consumer.logs import JsonFormatter, TextFormatter


def logged(formatter: logging.Formatter, **call: object) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    log = logging.getLogger("test.logs")
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.INFO)
    try:
        log.info("starting", **call)  # type: ignore[arg-type]
    finally:
        log.handlers.clear()
    return out.getvalue()


def test_json_lines_carry_the_fields_as_keys_nested_as_given() -> None:
    entry = orjson.loads(logged(JsonFormatter(), extra={"config": {"mode": "auto", "models": Path("/m")},
                                                        "partitions": 4}))
    assert entry["msg"] == "starting" and entry["level"] == "info"
    assert entry["config"] == {"mode": "auto", "models": "/m"} and entry["partitions"] == 4


def test_text_lines_carry_the_fields_as_pairs_before_a_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = logged(TextFormatter(), extra={"config": {"mode": "auto"}, "partitions": 4}, exc_info=True)
    first = line.splitlines()[0]
    assert first.endswith("msg='starting' config.mode='auto' partitions=4")
    assert "Traceback" in line and "ValueError: boom" in line


def test_a_line_without_fields_is_just_the_message() -> None:
    assert logged(TextFormatter()).rstrip().endswith("msg='starting'")
    assert set(orjson.loads(logged(JsonFormatter()))) == {"ts", "level", "logger", "msg"}
