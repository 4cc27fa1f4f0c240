"""Topic creation: what the broker answered, per topic, in the log."""

from __future__ import annotations

import logging

import pytest

from consumer.topics import report_created


def test_each_refused_topic_is_named_with_the_brokers_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "consumer.topics")
    created = report_created([
        {"topic": "in", "error_code": 0, "error_message": None},
        {"topic": "out", "error_code": 36, "error_message": "Topic with this name already exists."},
        {"topic": "dlq", "error_code": 38, "error_message": None},
        {"topic": "shadow", "error_code": 44, "error_message": "policy forbids 4 partitions"},
    ], partitions=4, replication=3)

    assert created == ["in"]
    info, warning = (r.getMessage() for r in caplog.records)
    assert info == "created topics in (4 partitions, replication factor 3)"
    assert warning == ("could not create topics (dlq: InvalidReplicationFactorError; shadow: policy "
                       "forbids 4 partitions); create them yourself or allow auto-creation")


def test_nothing_to_report_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "consumer.topics")
    assert report_created([{"topic": "x", "error_code": 36, "error_message": None}], 4, 1) == []
    assert caplog.records == []
