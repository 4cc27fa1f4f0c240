"""Synthetic link series: the original i.i.d. generator (for comparison) and a realistic one.

Both return `training.traces.Trace` objects (1 s steps), so they go through the same
windows, features and backtest as the real traces.

The original generator drew every sample independently. Its code is not available; the
distributions below are the ones that reproduce the facts recorded about it
(../shared/seed/reference-facts.md): predicting the mean hits +/-20 % about 95 % of the
time on datacenter data (a normal with 10 % spread) and at best about 41 % on internet
data (a normal of mean 500, sd 200 Mbit/s). The test suite checks both figures.

The realistic generator (`realistic`) gives series with the structure real links have:
  * capacity: uniform in the regime's range (datacenter 1-10 Gbit/s, internet
    100-900 Mbit/s), with *level shifts* (Poisson, about every 2 h of series time)
    that rescale it by 0.6-1.5;
  * cross-traffic utilisation: an AR(1) process (phi 0.97, so autocorrelated over tens of
    seconds) in logit space around a *daily cycle* (peak in the evening, random phase
    per link), plus *bursts* (Poisson arrivals, exponential durations of ~8 s) that take
    a further share of capacity;
  * *degradations* (capacity x 0.2-0.6 for ~1-3 min) and *outages* (bandwidth 0 for a
    few seconds), rare;
  * measurement noise: multiplicative, 8 % (datacenter) / 14 % (internet), which puts
    the last-value baseline near 90 % and 70 % within +/-20 %, as on real capacity traces;
  * latency = base RTT (datacenter 0.5-5 ms, internet 50-300 ms) plus queueing delay that
    grows steeply with utilisation; jitter proportional to queueing; loss near zero
    until utilisation passes ~90 %, then rising; throughput a 60-95 % share of bandwidth.
All draws come from one `numpy.random.Generator` seeded by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.traces import Trace


@dataclass(frozen=True)
class Regime:
    name: str
    capacity_mbps: tuple[float, float]
    base_rtt_ms: tuple[float, float]
    noise: float
    burst_rate_per_s: float
    burst_share: tuple[float, float]
    mean_utilisation: tuple[float, float]


REGIMES = {
    "datacenter": Regime("datacenter", (1000, 10000), (0.5, 5.0), 0.08, 1 / 600, (0.05, 0.3), (0.1, 0.4)),
    "internet": Regime("internet", (100, 900), (50, 300), 0.14, 1 / 180, (0.1, 0.5), (0.2, 0.6)),
}


def iid(regime: str, n: int, rng: np.random.Generator, name: str = "iid") -> Trace:
    """The original generator: every sample independent of every other."""
    if regime == "datacenter":
        bw = rng.normal(5000, 500, n)
        latency = rng.normal(5, 1.5, n)
        loss = rng.uniform(0, 0.001, n)
        jitter = rng.uniform(0.1, 1.0, n)
    elif regime == "internet":
        bw = rng.normal(500, 200, n)
        latency = rng.normal(150, 50, n)
        loss = rng.uniform(0, 0.02, n)
        jitter = rng.uniform(1, 20, n)
    else:
        raise ValueError(f"unknown regime {regime!r}")
    bw = np.maximum(bw, 1.0)
    values = np.stack(
        [bw, np.maximum(latency, 0.1), loss, jitter, bw * rng.uniform(0.6, 0.95, n)], axis=1
    ).astype(np.float32)
    return Trace(f"{name}-{regime}", np.arange(n, dtype=np.float64), values)


def realistic(regime: str, n: int, rng: np.random.Generator, name: str = "synthetic") -> Trace:
    """One link's series of n one-second samples with temporal structure (module doc)."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose datacenter or internet")
    r = REGIMES[regime]
    t = np.arange(n, dtype=np.float64) + rng.uniform(0, 86400)

    capacity = rng.uniform(*r.capacity_mbps) * _level_shifts(n, rng)
    daily = 0.6 * np.sin(2 * np.pi * (t / 86400.0) - np.pi / 2 + rng.normal(0, 0.3))
    mean_logit = _logit(rng.uniform(*r.mean_utilisation))
    ar = _ar1(n, 0.97, 0.25, rng)
    utilisation = _sigmoid(mean_logit + daily + ar)
    utilisation = np.minimum(utilisation + _bursts(n, r, rng), 0.97)

    available = capacity * (1.0 - utilisation) * _degradations(n, rng)
    available *= np.exp(rng.normal(0, r.noise, n))
    available[_outages(n, rng)] = 0.0

    congestion = utilisation**4
    base_rtt = rng.uniform(*r.base_rtt_ms)
    queueing = base_rtt * 3.0 * congestion * np.exp(rng.normal(0, 0.1, n))
    latency = base_rtt + queueing
    jitter = 0.05 * base_rtt + 0.5 * queueing * rng.uniform(0.5, 1.5, n)
    loss = np.clip(1e-5 + 0.05 * np.maximum(utilisation - 0.9, 0) / 0.07, 0, 1)
    throughput = available * rng.uniform(0.6, 0.95, n)
    values = np.stack([available, latency, loss, jitter, throughput], axis=1).astype(np.float32)
    return Trace(f"{name}-{regime}", t - t[0], values)


def _ar1(n: int, phi: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) with marginal standard deviation sd."""
    eps = rng.normal(0, sd * np.sqrt(1 - phi**2), n)
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x


def _level_shifts(n: int, rng: np.random.Generator, every_s: float = 7200) -> np.ndarray:
    factor = np.ones(n)
    for start in np.flatnonzero(rng.uniform(size=n) < 1 / every_s):
        factor[start:] *= rng.uniform(0.6, 1.5)
    return factor


def _bursts(n: int, r: Regime, rng: np.random.Generator) -> np.ndarray:
    extra = np.zeros(n)
    for start in np.flatnonzero(rng.uniform(size=n) < r.burst_rate_per_s):
        length = max(1, int(rng.exponential(8)))
        extra[start:start + length] += rng.uniform(*r.burst_share)
    return extra


def _degradations(n: int, rng: np.random.Generator, every_s: float = 3600) -> np.ndarray:
    factor = np.ones(n)
    for start in np.flatnonzero(rng.uniform(size=n) < 1 / every_s):
        factor[start:start + int(rng.uniform(60, 180))] *= rng.uniform(0.2, 0.6)
    return factor


def _outages(n: int, rng: np.random.Generator, every_s: float = 14400) -> np.ndarray:
    down = np.zeros(n, dtype=bool)
    for start in np.flatnonzero(rng.uniform(size=n) < 1 / every_s):
        down[start:start + int(rng.uniform(2, 15))] = True
    return down


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def synthetic_set(
    generator: str, regime: str, links: int, length: int, seed: int
) -> list[Trace]:
    """`links` independent series from one seed (e.g. the model card's evaluation set)."""
    rng = np.random.default_rng(seed)
    make = realistic if generator == "realistic" else iid
    return [make(regime, length, rng, name=f"{generator}{k:03d}") for k in range(links)]
