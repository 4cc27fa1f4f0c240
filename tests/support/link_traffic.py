"""Input that exercises every per-link state: stream counts that move and hold, modes
on both sides of the detector's thresholds, confidence on both sides of the gates.

Links run at hundreds of Mbit/s (a stream per 10 Mbit/s, so counts move with them),
with level shifts big enough to resize (> 20 %) and noise small enough to hold; their
latency sits below 20 ms, between 20 and 100 ms, or above 100 ms (the stream-count
factors), some crossing 50 ms (the detector), a quarter are datacenter links (above
1 Gbit/s at 2 ms), and some links are quiet, others noisy (confidence above and below
0.6 / 0.7 / 0.8).
"""

from __future__ import annotations

import numpy as np
import orjson
from aiokafka.structs import ConsumerRecord


def link_events(links: int, samples: int, seed: int = 7, first_ts: float = 1_764_000_000.0,
                ) -> list[dict[str, object]]:
    """Events of `links` links, `samples` each, interleaved in time order."""
    rng = np.random.default_rng(seed)
    events = []
    for k in range(links):
        datacenter = k % 4 == 0
        level = rng.uniform(1100, 1900) if datacenter else rng.uniform(150, 800)
        latency = 2.0 if datacenter else rng.choice([4.0, 45.0, 60.0, 160.0])
        noise = rng.choice([0.02, 0.08, 0.3])
        shifts = np.ones(samples)
        for at in rng.integers(5, samples, size=3):
            shifts[at:] *= rng.choice([0.6, 0.8, 1.3, 1.7])
        bw = level * shifts * np.exp(rng.normal(0, noise, samples))
        lat = latency * np.exp(rng.normal(0, 0.25, samples))
        loss = np.where(rng.random(samples) < 0.3, rng.uniform(0.011, 0.03, samples), 0.001)
        for i in range(samples):
            events.append({"link_id": f"link-{k:03d}", "ts": first_ts + i + k * 1e-3,
                           "bandwidth_mbps": round(float(bw[i]), 3), "latency_ms": round(float(lat[i]), 3),
                           "packet_loss": round(float(loss[i]), 4), "jitter_ms": 1.5})
    events.sort(key=lambda e: e["ts"])  # type: ignore[arg-type,return-value]
    return events


def records(events: list[dict[str, object]], topic: str = "in", partitions: int = 4) -> list[ConsumerRecord]:
    """The events as consumed records, keyed by link, each link in one partition."""
    out = []
    next_offset = [0] * partitions
    for e in events:
        key = str(e["link_id"]).encode()
        p = int(str(e["link_id"])[-3:]) % partitions
        value = orjson.dumps(e)
        out.append(ConsumerRecord(topic, p, next_offset[p], 0, 0, key, value, None, len(key), len(value), []))
        next_offset[p] += 1
    return out
