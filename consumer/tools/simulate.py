"""`pba simulate`: publish metric events for N links at about R events/s.

Series come from the realistic generator (training.generators) or, with --traces, from
real trace files replayed sample by sample (optionally rescaled). Timestamps are the
simulation's own event time, starting now, one sample per link every N/R seconds. With
--bad-rate some events are replaced by malformed ones, to show the dead-letter path.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from predictor.modes import MODEL_MIN_SAMPLES
from training.generators import realistic
from training.traces import Trace, load_traces, read_trace

REGIMES = ("datacenter", "internet", "mixed")
TICK_S = 0.05


@dataclass(frozen=True)
class SimulationPlan:
    links: int
    rate: float
    duration: float
    regime: str = "mixed"
    traces: Path | None = None
    scale: float = 1.0
    bad_rate: float = 0.0
    seed: int = 1

    @property
    def total_events(self) -> int:
        return max(1, round(self.rate * self.duration))

    def check(self) -> list[str]:
        problems = []
        if self.links < 1:
            problems.append("--links must be at least 1")
        if self.rate <= 0:
            problems.append("--rate must be > 0 events/s")
        if self.duration <= 0:
            problems.append("--duration must be > 0 s")
        if self.regime not in REGIMES:
            problems.append(f"--regime must be one of {', '.join(REGIMES)}")
        if not 0 <= self.bad_rate <= 1:
            problems.append("--bad-rate must be a fraction 0..1")
        if self.scale <= 0:
            problems.append("--scale must be > 0")
        if self.traces is not None and not self.traces.exists():
            problems.append(f"--traces {self.traces} does not exist")
        return problems


def window_note(plan: SimulationPlan) -> str | None:
    """What a newcomer should know when the run is too short for the models: a link is
    served by the fallback until its MODEL_MIN_SAMPLES-th sample, by its model from then on."""
    per_link = plan.total_events // plan.links
    if per_link >= MODEL_MIN_SAMPLES:
        return None
    needed = math.ceil(MODEL_MIN_SAMPLES * plan.links / plan.rate)
    return (f"note: each link gets {per_link} samples in this run, and the models serve a link from "
            f"its {MODEL_MIN_SAMPLES}th sample on; until then the fallback does. --duration {needed} "
            "(or a higher --rate, or fewer --links) lets every link reach its model.")


def link_series(plan: SimulationPlan) -> list[tuple[str, Trace]]:
    """One series per link, long enough for the whole run."""
    per_link = math.ceil(plan.total_events / plan.links) + 1
    rng = np.random.default_rng(plan.seed)
    if plan.traces is not None:
        paths = _trace_paths(plan.traces)
        if not paths:
            raise ValueError(f"no trace CSV files under {plan.traces}")
        chosen = [paths[i] for i in rng.choice(len(paths), plan.links, replace=len(paths) < plan.links)]
        out = []
        for k, path in enumerate(chosen):
            trace = read_trace(path)
            values = trace.values.copy()
            values[:, 0] *= plan.scale
            values[:, 4] *= plan.scale
            out.append((f"trace-{k:04d}-{path.stem[:40]}", Trace(trace.path, trace.t_s, values)))
        return out
    regimes = ["datacenter", "internet"] if plan.regime == "mixed" else [plan.regime]
    return [
        (f"sim-{regime[:2]}-{k:04d}", realistic(regime, per_link, rng, name=f"sim{k}"))
        for k, regime in zip(range(plan.links), itertools.cycle(regimes), strict=False)
    ]


def _trace_paths(location: Path) -> list[Path]:
    if location.is_file():
        return [location]
    if (location / "index.csv").is_file():
        infos, _ = load_traces(location)
        return [info.path for info in infos]
    return sorted(location.rglob("*.csv"))


def events(plan: SimulationPlan, start: float) -> Iterator[tuple[float, bytes, bytes, bool]]:
    """(send at, key, value, bad) in send order: links round-robin, one sample each per step."""
    series = link_series(plan)
    rng = np.random.default_rng(plan.seed + 1)
    step = plan.links / plan.rate  # seconds between two samples of one link
    for n in range(plan.total_events):
        i, k = divmod(n, plan.links)
        link, trace = series[k]
        row = trace.values[i % len(trace)]
        at = start + n / plan.rate
        if plan.bad_rate and rng.uniform() < plan.bad_rate:
            yield at, link.encode(), _bad_event(link, rng), True
            continue
        event = {"link_id": link, "ts": round(start + i * step, 3), "bandwidth_mbps": _short(row[0])}
        for name, value in zip(("latency_ms", "packet_loss", "jitter_ms", "throughput_mbps"), row[1:],
                               strict=True):
            if not math.isnan(value):
                event[name] = _short(value)
        yield at, link.encode(), orjson.dumps(event), False


def _short(value: float) -> float:
    """Six significant digits: float32 series printed without binary noise."""
    return float(f"{float(value):.6g}")


def _bad_event(link: str, rng: np.random.Generator) -> bytes:
    kinds = [
        b"this is not json",
        orjson.dumps({"link_id": link, "ts": time.time(), "bandwidth_mbps": -1.0}),
        orjson.dumps({"ts": time.time(), "bandwidth_mbps": 10.0}),
        orjson.dumps({"link_id": link, "ts": "yesterday", "bandwidth_mbps": 10.0}),
        orjson.dumps({"link_id": link, "ts": time.time(), "bandwidth_mbps": 10.0, "packet_loss": 7}),
        b'{"link_id": "' + link.encode() + b'", "ts": 1',
    ]
    return kinds[int(rng.integers(len(kinds)))]


async def simulate(plan: SimulationPlan, bootstrap: str, topic: str, progress: bool = True,
                   security: dict[str, object] | None = None,
                   stop: asyncio.Event | None = None) -> tuple[int, int]:
    """Publish the plan in real time until done or `stop` is set; returns (sent, of which bad)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **(security or {}))
    sent = bad = 0
    last_report = 0.0
    pending = []
    try:
        await producer.start()  # inside the try: a producer that failed to start is stopped too
        start = time.time()
        for at, key, value, is_bad in events(plan, start):
            if stop is not None and stop.is_set():
                break
            delay = at - time.time()
            if delay > TICK_S:
                await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            bad += is_bad
            if progress and sys.stderr.isatty() and time.time() - last_report > 0.5:
                last_report = time.time()
                _report(sent, bad, plan, time.time() - start, end="\r")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    if progress:
        _report(sent, bad, plan, time.time() - start, end="\n")
    return sent, bad


def _report(sent: int, bad: int, plan: SimulationPlan, elapsed: float, end: str) -> None:
    print(f"simulate: {sent}/{plan.total_events} events ({bad} bad) over {plan.links} links, "
          f"{elapsed:.1f} s, {sent / max(elapsed, 1e-9):.0f}/s", end=end, file=sys.stderr, flush=True)
