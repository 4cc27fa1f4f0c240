"""Latency of `pba run --mode auto` when datacenter and internet links share it.

    .venv/bin/python scripts/latency-mixed.py RATE [RATE ...]

`pba bench` measures one kind of link at a time. In auto mode a batch holds both kinds,
and every event in it waits for both models, so the datacenter links' latency is set by
the internet links beside them (docs/SCALING.md). This runs the bench's latency set-up
with 200 links, half datacenter-like (1 ms, Gbit/s) and half internet-like (80 ms), and
prints p50 / p95 / p99 per mode that served the prediction, at each rate.
"""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import orjson

from consumer.tools.bench import load
from consumer.tools.broker import EmbeddedBroker
from predictor.modes import BUDGET_S, INTERNET, MODE_CODES, WINDOW_STEPS
from predictor.runtime import SessionSettings

LINKS = 200
SECONDS = 10.0


def mixed_events(rate: float) -> list[tuple[bytes, bytes]]:
    """Full windows' worth of history, then SECONDS of live events at `rate`, the two
    kinds interleaved."""
    per_link = WINDOW_STEPS[INTERNET] + int(rate * SECONDS / LINKS) + 1
    datacenter = load.events(LINKS // 2, per_link, "datacenter")
    internet = [(k.replace(b"bench-", b"inet-"), v.replace(b'"bench-', b'"inet-'))
                for k, v in load.events(LINKS // 2, per_link, "internet")]
    return [message for pair in zip(datacenter, internet, strict=True) for message in pair]


async def measure(bootstrap: str, rate: float) -> dict[str, np.ndarray]:
    messages = mixed_events(rate)
    warm = LINKS * WINDOW_STEPS[INTERNET]
    run = f"mixed-{int(time.time())}-{int(rate)}"
    inp, out = await load.topics(bootstrap, run)
    await load.produce(bootstrap, inp, messages[:warm])
    with load.service(bootstrap, run, "auto", SessionSettings()) as service:
        await load.collect(bootstrap, out, warm, 300, service)
        sent = await load.produce_at(bootstrap, inp, messages[warm:], rate)
        records = await load.collect(bootstrap, out, len(messages), 120, service)
    by_mode: dict[str, list[int]] = {}
    for record in records:
        prediction = orjson.loads(record.value)
        arrived = sent.get((record.key, prediction["ts"]))
        if arrived is not None:
            by_mode.setdefault(prediction["mode"], []).append(record.timestamp - arrived)
    return {mode: np.array(ms) for mode, ms in by_mode.items()}


def main(rates: list[float]) -> None:
    with EmbeddedBroker() as broker:
        for rate in rates:
            for mode, ms in sorted(asyncio.run(measure(broker.bootstrap, rate)).items()):
                p50, p95, p99 = np.percentile(ms, (50, 95, 99))
                budget = BUDGET_S[MODE_CODES[mode]] * 1000
                print(f"{rate:,.0f} events/s, {mode} ({len(ms)} predictions): p50 {p50:.0f}, p95 {p95:.0f}, "
                      f"p99 {p99:.0f} ms (budget {budget:.0f} ms)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main([float(rate) for rate in sys.argv[1:]])
