"""Structured logs: one line per event, quiet by default (INFO: start, assignment, stop,
problems; per-event detail only at DEBUG). `text` is logfmt-like, `json` one object a line.

Values a line carries go in `extra=` as fields, not into the message: a log pipeline
then filters on `config.mode` or `partitions` instead of parsing a dict printed in a
sentence. JSON nests them as they are; text writes `name=value`, one level of a
mapping as `name.key=value`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import orjson

#: what every LogRecord has; any other attribute of a record came in as a field
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call gave in `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)r")

    def formatMessage(self, record: logging.LogRecord) -> str:  # before any traceback  # noqa: N802
        pairs = []
        for name, value in record_fields(record).items():
            if isinstance(value, Mapping):
                pairs += [f"{name}.{key}={item!r}" for key, item in value.items()]
            else:
                pairs.append(f"{name}={value!r}")
        return " ".join([super().formatMessage(record), *pairs])


class _Tagged(logging.Filter):
    """Adds the same fields to every line: which worker of `pba run --workers` wrote it."""

    def __init__(self, tags: Mapping[str, Any]) -> None:
        super().__init__()
        self._tags = dict(tags)

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self._tags.items():
            setattr(record, name, value)
        return True


def configure_logging(level: str = "INFO", fmt: str = "text", tags: Mapping[str, Any] | None = None) -> None:
    """Lines to stderr at `level`, each carrying `tags` as fields (e.g. worker=1)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if tags:
        handler.addFilter(_Tagged(tags))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
