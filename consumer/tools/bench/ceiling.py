"""The ceiling: ONNX Runtime alone on the shipped model, the best this machine does.

One session with every core's thread is not always that: on two cores, two processes of
one thread each, side by side, ran 13 % more datacenter predictions per second (issue
#21). So the ceiling is the best of the (sessions x threads) configurations that use
every core once: 1 x cores, cores x 1 and the splits between; sessions run in processes
of their own, at the same time, their rates summed. A session of T threads is the
model as the service runs it, T lanes in one process (predictor/runtime.py).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from predictor.features import build_features
from predictor.modes import WINDOW_STEPS, mode_code
from predictor.runtime import SessionSettings, load_models
from training.dataset import sliding_windows
from training.generators import realistic

BATCHES = (1, 8, 32, 64, 128, 256, 512)
#: seconds for every spawned session to load its model before they all start timing
START_DELAY_S = 5.0


def rate(fn: Any, items: int, seconds: float, repeats: int) -> float:
    """Median items/s of `fn()` over `repeats` timed runs of about `seconds` each."""
    fn()
    rates = []
    for _ in range(repeats):
        started, calls = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            fn()
            calls += 1
        rates.append(calls * items / (time.perf_counter() - started))
    return statistics.median(rates)


def one_session(mode: str, settings: SessionSettings, seconds: float = 1.0, repeats: int = 3,
                start_at: float = 0.0, batches: tuple[int, ...] = BATCHES,
                single_call: bool = False) -> dict[int, float]:
    """Predictions/s of one model with settings' threads, by batch size, as the service
    runs a batch (its lanes, its calls' size; single_call: each batch as one ONNX Runtime
    call on one lane, to choose the calls' size). From start_at, a time.time(), so that
    sessions in several processes time the same stretch."""
    model = load_models(None, (mode,), settings).models[mode]
    steps = WINDOW_STEPS[mode_code(mode)]
    trace = realistic(mode, 2000, np.random.default_rng(0))
    windows, _ = sliding_windows(trace, steps)
    features, _ = build_features(windows[: max(batches)], steps)
    time.sleep(max(0.0, start_at - time.time()))
    run = model.run_call if single_call else model.run
    return {b: rate(lambda b=b: run(features[:b]), b, seconds, repeats) for b in batches}


def configurations(cores: int) -> list[tuple[int, int]]:
    """(sessions, threads each) that use every core once."""
    return [(sessions, cores // sessions) for sessions in range(1, cores + 1) if cores % sessions == 0]


def ceilings(mode: str, settings: SessionSettings, cores: int | None = None,
             seconds: float = 1.0, repeats: int = 3) -> dict[str, dict[int, float]]:
    """Predictions/s by batch size for each configuration, named "SESSIONSxTHREADS"."""
    cores = cores or os.cpu_count() or 1
    out = {}
    for sessions, threads in configurations(cores):
        each = replace(settings, intra_op_threads=threads)
        if sessions == 1:
            out[f"1x{threads}"] = one_session(mode, each, seconds, repeats)
            continue
        start_at = time.time() + START_DELAY_S
        with ProcessPoolExecutor(sessions, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = [pool.submit(one_session, mode, each, seconds, repeats, start_at) for _ in range(sessions)]
            rates = [run.result() for run in runs]
        out[f"{sessions}x{threads}"] = {b: sum(r[b] for r in rates) for b in BATCHES}
    return out


def best(rates: dict[str, float]) -> str:
    """The configuration of the highest rate (the ceiling's, and end to end's)."""
    return max(rates, key=lambda name: rates[name])
