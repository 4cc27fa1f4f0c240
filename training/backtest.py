"""`pba backtest`: replay traces sample by sample through the service's own pipeline.

Each trace is one link. Round i appends sample i of every trace that has one, then
predicts all of them in one batch (as the service batches across links); the prediction
made after sample i is scored against sample i+1. Output, one row per sample from the
second on: trace, t_s (of sample i+1), actual_mbps, predicted_mbps, confidence, mode
(datacenter / internet / hybrid when a model served it, `fallback` when the heuristic did).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.engine import FALLBACK
from predictor.modes import MODE_NAMES
from predictor.pipeline import Pipeline
from training.traces import Trace, read_trace

OUTPUT_COLUMNS = ("trace", "t_s", "actual_mbps", "predicted_mbps", "confidence", "mode")
_FALLBACK_LABEL = len(MODE_NAMES)
_LABELS = (*MODE_NAMES, "fallback")


@dataclass
class Replay:
    """Predictions for concatenated traces: entry j of trace k predicts its sample j+1."""

    traces: list[Trace]
    offsets: np.ndarray  # start of each trace in the concatenation
    predicted: np.ndarray
    confidence: np.ndarray
    label: np.ndarray  # index into _LABELS
    seconds: float


def replay(
    traces: Sequence[Trace],
    pipeline: Pipeline,
    progress: Callable[[int, int], None] | None = None,
) -> Replay:
    lengths = np.array([len(t) for t in traces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    all_t = np.concatenate([t.t_s for t in traces]) if traces else np.empty(0)
    all_v = np.concatenate([t.values for t in traces]) if traces else np.empty((0, 5))
    total = int(lengths.sum())
    predicted = np.full(total, np.nan)
    confidence = np.full(total, np.nan)
    label = np.full(total, -1, dtype=np.int8)

    # one slot per trace; ids are positions, so two traces with one path stay apart
    slots = pipeline.store.slots([f"{k}:{t.path}" for k, t in enumerate(traces)])
    started = time.perf_counter()
    rounds = int(lengths.max()) - 1 if len(lengths) else 0
    for i in range(max(rounds, 0)):
        active = np.flatnonzero(lengths > i + 1)  # traces with a sample i+1 to score against
        rows = offsets[active] + i
        accepted = pipeline.observe_slots(slots[active], all_t[rows], all_v[rows])
        if not accepted.all():
            raise ValueError("trace times must increase strictly")
        batch = pipeline.predict(slots[active])
        predicted[rows] = batch.result.predicted_mbps
        confidence[rows] = batch.result.confidence
        label[rows] = np.where(batch.result.source == FALLBACK, _FALLBACK_LABEL, batch.result.mode)
        if progress and (i % 200 == 0 or i == rounds - 1):
            progress(i + 1, rounds)
    return Replay(list(traces), offsets, predicted, confidence, label,
                  time.perf_counter() - started)


def write_csv(result: Replay, out: Path, names: Sequence[str]) -> int:
    """Write the contract's columns; returns the number of rows written."""
    rows = 0
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(OUTPUT_COLUMNS)
        for k, trace in enumerate(result.traces):
            n = len(trace) - 1
            if n <= 0:
                continue
            sl = slice(result.offsets[k], result.offsets[k] + n)
            t_next = trace.t_s[1:]
            actual = trace.values[1:, 0]
            labels = [_LABELS[j] for j in result.label[sl]]
            writer.writerows(zip(
                [names[k]] * n,
                _fmt(t_next), _fmt(actual), _fmt(result.predicted[sl]), _fmt(result.confidence[sl]),
                labels,
                strict=True,
            ))
            rows += n
    return rows


def _fmt(values: np.ndarray) -> list[str]:
    return [f"{v:.6g}" for v in values.tolist()]


def run_backtest(
    paths: Sequence[str],
    out: Path,
    mode: str = "auto",
    models_dir: Path | None = None,
    allow_fallback: bool = False,
    quiet: bool = False,
) -> int:
    from predictor.api import BandwidthPredictor

    predictor = BandwidthPredictor.load(models_dir, mode=mode, allow_fallback=allow_fallback)
    traces = [read_trace(p) for p in paths]

    def progress(done: int, total: int) -> None:
        print(f"\rbacktest: round {done}/{total}", end="", file=sys.stderr, flush=True)

    result = replay(traces, predictor.pipeline, None if quiet else progress)
    rows = write_csv(result, out, paths)
    if not quiet:
        samples = sum(len(t) for t in traces)
        print(
            f"\nbacktest: {len(traces)} traces, {samples} samples, {rows} predictions in "
            f"{result.seconds:.1f} s ({samples / max(result.seconds, 1e-9):,.0f} samples/s) "
            f"-> {out}",
            file=sys.stderr,
        )
    return rows
