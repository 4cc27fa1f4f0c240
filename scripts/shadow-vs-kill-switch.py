"""Shadow mode against the kill switch, at issue #22's scale: 120 internet-like links
(150-800 Mbit/s, 60-300 ms), 90 samples each, through the service's processor with the
shipped models, once with shadow = true (v3 beside live v1) and once with
kill_switch = true (v1 alone). Prints the live predictions that differ between the two
runs (0 expected: shadow must not touch live output) and the messages of the shadow
run: distinct payloads under a prediction_id that carries more than one (0 expected).

    .venv/bin/python scripts/shadow-vs-kill-switch.py
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import orjson
from aiokafka.structs import ConsumerRecord

from consumer.config import ServiceConfig
from consumer.flags import Flags
from consumer.metrics import Metrics
from consumer.processor import RecordProcessor
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor
from predictor.runtime import load_models

LINKS, SAMPLES, BATCH = 120, 90, 256


def stream(seed: int = 22) -> list[ConsumerRecord]:
    rng = np.random.default_rng(seed)
    events = []
    for k in range(LINKS):
        level, latency = rng.uniform(150, 800), rng.uniform(60, 300)
        bw = level * np.exp(np.cumsum(rng.normal(0, 0.08, SAMPLES)))
        for i in range(SAMPLES):
            events.append({"link_id": f"l{k}", "ts": 1.764e9 + i, "bandwidth_mbps": float(bw[i]),
                           "latency_ms": float(latency * rng.uniform(0.8, 1.2))})
    events.sort(key=lambda e: e["ts"])
    return [ConsumerRecord("in", 0, i, 0, 0, str(e["link_id"]).encode(), orjson.dumps(e), None, 0, 0, [])
            for i, e in enumerate(events)]


def published(records: list[ConsumerRecord], flags: Flags) -> list[dict[str, Any]]:
    forecaster = Forecaster(load_models(None, ("datacenter", "internet")))
    processor = RecordProcessor(LinkPredictor(forecaster, "auto"), ServiceConfig(), Metrics())
    processor.flags = flags
    return [{k: v for k, v in orjson.loads(m.value).items() if k != "inference_ms"}
            for i in range(0, len(records), BATCH) for m in processor.process(records[i:i + BATCH]).each()]


def main() -> None:
    records = stream()
    shadowed, alone = published(records, Flags(shadow=True)), published(records, Flags(kill_switch=True))

    def live(preds: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
        return {(p["link_id"], p["ts"]): p for p in preds if not p["shadow"]}

    a, b = live(shadowed), live(alone)
    print(f"live predictions: {len(b)}; differing between shadow and kill switch: "
          f"{sum(a.get(k) != b[k] for k in b)}")
    payloads: dict[str, set[bytes]] = defaultdict(set)
    for p in shadowed:
        payloads[p["prediction_id"]].add(orjson.dumps(p, option=orjson.OPT_SORT_KEYS))
    print("messages of the shadow run: distinct payloads under an id that carries more than one:",
          sum(len(v) for v in payloads.values() if len(v) > 1))


if __name__ == "__main__":
    main()
