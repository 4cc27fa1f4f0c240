"""The demo's live view: one row per link, updated in place, and how the predictions do.

It reads the service's three topics: each prediction becomes its link's row (predicted
value, reserve, confidence, action, source); each metric event scores the prediction
made before it, and the last value beside it, within +/-20 % (the model card's
measure); each dead letter is counted with its reason. Rendered with rich, which the
demo uses only when its output is a terminal.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiokafka.structs import ConsumerRecord
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from consumer.tools.tail import PREDICTION_COLUMNS, dead_letter_headers, prediction_cells
from predictor.confidence import hits


@dataclass
class _Link:
    prediction: dict[str, Any] | None = None
    # (ts, bandwidth) of its latest events, and the predictions not scored yet, by ts
    events: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=8))
    unscored: dict[float, float] = field(default_factory=dict)


@dataclass
class Scores:
    scored: int = 0
    model: int = 0
    last_value: int = 0


class LiveView:
    def __init__(self, predictions_topic: str, input_topic: str, dlq_topic: str, rows: int = 40) -> None:
        self._topics = predictions_topic, input_topic, dlq_topic
        self._rows = rows
        self._links: dict[str, _Link] = {}
        self.scores = Scores()
        self.sources: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.lag: float | None = None

    def take(self, record: ConsumerRecord) -> None:
        predictions, events, dead = self._topics
        if record.topic == dead:
            headers = dead_letter_headers(record) or {}
            self.dead_letters[headers.get("error.reason", "?")] += 1
            return
        try:
            value = orjson.loads(record.value or b"")
            link = self._links.setdefault(str(value["link_id"]), _Link())
            ts = float(value["ts"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        if record.topic == predictions and not value.get("shadow"):
            link.prediction = value
            self.sources[str(value.get("source"))] += 1
            link.unscored[ts] = float(value["predicted_bandwidth_mbps"])
        elif record.topic == events:
            link.events.append((ts, float(value["bandwidth_mbps"])))
        self._score(link)

    def _score(self, link: _Link) -> None:
        """Each prediction made after event i against event i+1, and event i's own value
        (the last value) beside it, once both have arrived."""
        for ts in sorted(link.unscored):
            here = [bw for t, bw in link.events if t == ts]
            later = [bw for t, bw in link.events if t > ts]
            if not later:
                continue
            predicted = link.unscored.pop(ts)
            if here and later[0] > 0:
                model, last_value = hits(np.array([predicted, here[0]]), np.array([later[0], later[0]]))
                self.scores.scored += 1
                self.scores.model += bool(model)
                self.scores.last_value += bool(last_value)
        for ts in [t for t in link.unscored if link.events and t < link.events[0][0]]:
            del link.unscored[ts]  # its events are gone from the short memory: never scored

    def render(self, now: float | None = None) -> RenderableType:
        now = time.time() if now is None else now
        table = Table(box=None, header_style="bold", pad_edge=False)
        for name, width, align in PREDICTION_COLUMNS:
            # on a narrow terminal only the link column gives way (ellipsis), not the figures
            table.add_column(name, justify="right" if align == ">" else "left", no_wrap=True,
                             overflow="ellipsis", max_width=width if name == "link" else None,
                             min_width=None if name == "link" else width)
        shown = sorted((k, v.prediction) for k, v in self._links.items() if v.prediction)[:self._rows]
        for _, prediction in shown:
            table.add_row(*prediction_cells(prediction, now))
        return Group(table, Text(self.summary()))

    def summary(self) -> str:
        s = self.scores
        hit = (f"within +/-20 %: model {100 * s.model / s.scored:.1f} %, last value "
               f"{100 * s.last_value / s.scored:.1f} % of {s.scored:,} scored" if s.scored
               else "within +/-20 %: nothing scored yet")
        served = sum(self.sources.values())
        model = (f"{100 * self.sources['model'] / served:.0f} % from the models" if served
                 else "no predictions yet")
        dead = sum(self.dead_letters.values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.dead_letters.most_common(3))
        lag = "?" if self.lag is None else f"{self.lag:,.0f}"
        return (f"{len(self._links)} links, {served:,} predictions, {model}; {hit}; "
                f"dead letters {dead}{f' ({reasons})' if reasons else ''}; consumer lag {lag}")
