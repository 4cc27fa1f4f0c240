"""`pba backtest`: replay traces sample by sample through the service's own link predictor.

Each trace is one link. Each round appends the next sample of up to 256 traces and
predicts all of them in one batch (as the service batches across links); the prediction
made after sample i is scored against sample i+1. Output, one row per sample from the
second on: trace, t_s (of sample i+1), actual_mbps, predicted_mbps, confidence, mode
(datacenter / internet / hybrid when a model served it, `fallback` when the heuristic did),
reserve_mbps (the published lower bound, as the service publishes it).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from predictor.baselines import REPORTED_BASELINES, walk_forward
from predictor.confidence import hits
from predictor.forecaster import FALLBACK
from predictor.link_predictor import Forecast, LinkPredictor
from predictor.modes import MODE_NAMES
from training.traces import Trace, read_trace

#: design.md's columns, in its order; reserve_mbps is the published lower bound
OUTPUT_COLUMNS = ("trace", "t_s", "actual_mbps", "predicted_mbps", "confidence", "mode", "reserve_mbps")
_FALLBACK_LABEL = len(MODE_NAMES)
_LABELS = (*MODE_NAMES, "fallback")


@dataclass
class Replay:
    """Predictions for concatenated traces: entry j of trace k predicts its sample j+1."""

    traces: list[Trace]
    offsets: np.ndarray  # start of each trace in the concatenation
    predicted: np.ndarray  # as published
    forecaster: np.ndarray  # the forecaster's own prediction, before the per-link adaptation
    reserve: np.ndarray  # as published
    forecaster_reserve: np.ndarray  # the forecaster's own lower bound (its q10)
    confidence: np.ndarray
    score: np.ndarray  # what the confidence was calibrated from (BatchResult.score)
    label: np.ndarray  # index into _LABELS
    seconds: float

    def scored(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows that have a next sample to score against, and that sample's bandwidth."""
        rows = np.concatenate([np.arange(o, o + len(t) - 1) for o, t in
                               zip(self.offsets, self.traces, strict=True) if len(t) > 1]
                              or [np.empty(0, dtype=np.int64)])
        actual = np.concatenate([t.values[1:, 0] for t in self.traces if len(t) > 1]
                                or [np.empty(0)]).astype(np.float64)
        return rows, actual


def replay_traces(
    traces: Sequence[Trace],
    link_predictor: LinkPredictor,
    progress: Callable[[int, int], None] | None = None,
    lanes: int = 256,
    on_round: Callable[[np.ndarray, np.ndarray, Forecast], None] | None = None,
) -> Replay:
    """Replay traces as links, batched across traces the way the service batches links.

    Traces run in `lanes` parallel lanes; when a trace ends, its lane starts the next one
    (longest first), so batches stay full until the end instead of shrinking to the
    longest trace's tail. Each trace has its own window from its first sample, so the
    results are exactly those of replaying it alone. on_round(rows, slots, forecast) sees
    each round's forecast before it is applied (training/gate.py reads the adaptation's).
    """
    lengths = np.array([len(t) for t in traces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    all_t = np.concatenate([t.t_s for t in traces]) if traces else np.empty(0)
    all_v = np.concatenate([t.values for t in traces]) if traces else np.empty((0, 5))
    total = int(lengths.sum())
    predicted = np.full(total, np.nan)
    forecaster = np.full(total, np.nan)
    forecaster_reserve = np.full(total, np.nan)
    reserve = np.full(total, np.nan)
    confidence = np.full(total, np.nan)
    score = np.full(total, np.nan)
    label = np.full(total, -1, dtype=np.int8)

    queue = [int(k) for k in np.argsort(-lengths, kind="stable") if lengths[k] > 1]
    work = int(np.maximum(lengths - 1, 0).sum())
    lane_trace = np.full(min(lanes, len(queue)) or 0, -1, dtype=np.int64)
    lane_pos = np.zeros(len(lane_trace), dtype=np.int64)
    lane_slot = np.zeros(len(lane_trace), dtype=np.intp)
    started = time.perf_counter()
    done = 0
    while True:
        for lane in np.flatnonzero(lane_trace < 0).tolist():
            if not queue:
                break
            k = queue.pop(0)
            lane_trace[lane], lane_pos[lane] = k, 0
            # ids are positions, so two traces with one path stay apart
            lane_slot[lane] = link_predictor.store.slot(f"{k}:{traces[k].path}")
        active = np.flatnonzero(lane_trace >= 0)
        if active.size == 0:
            break
        rows = offsets[lane_trace[active]] + lane_pos[active]
        slots = lane_slot[active]
        accepted = link_predictor.observe_slots(slots, all_t[rows], all_v[rows])
        if not accepted.all():
            raise ValueError("trace times must increase strictly")
        forecast = link_predictor.forecast(slots)
        if on_round is not None:
            on_round(rows, slots, forecast)
        result, own, change = forecast
        if change is not None:  # what the links learn, as if the predictions were published
            link_predictor.store.apply(change)
        forecaster[rows] = own.predicted_mbps
        predicted[rows] = result.predicted_mbps
        # lower bounds as the service publishes them: never above the prediction
        forecaster_reserve[rows] = np.minimum(own.reserve_mbps, own.predicted_mbps)
        reserve[rows] = np.minimum(result.reserve_mbps, result.predicted_mbps)
        confidence[rows] = result.confidence
        score[rows] = result.score
        label[rows] = np.where(result.source == FALLBACK, _FALLBACK_LABEL, result.mode)
        lane_pos[active] += 1
        finished = active[lane_pos[active] >= lengths[lane_trace[active]] - 1]
        if finished.size:
            link_predictor.store.remove(
                [f"{k}:{traces[k].path}" for k in lane_trace[finished].tolist()]
            )
            lane_trace[finished] = -1
        done += active.size
        if progress and (done // 50_000 != (done - active.size) // 50_000 or done == work):
            progress(done, work)
    return Replay(list(traces), offsets, predicted, forecaster, reserve, forecaster_reserve, confidence,
                  score, label,
                  time.perf_counter() - started)


def write_csv(result: Replay, out: TextIO, names: Sequence[str]) -> int:
    """Write the contract's columns; returns the number of rows written."""
    rows = 0
    writer = csv.writer(out)
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
            labels, _fmt(result.reserve[sl]),
            strict=True,
        ))
        rows += n
    return rows


def summary(result: Replay) -> list[str]:
    """The replay's accuracy, as the model card measures it: the share of predictions
    within +/-20 % of the actual, overall and by what served them, beside the simple
    baselines on exactly the same rows (each from samples 0..i only)."""
    rows, actual = result.scored()
    if not len(rows):
        return ["backtest: no trace has two samples: nothing to score"]
    hit = {"model": hits(result.predicted[rows], actual, 0.20)}
    for name in REPORTED_BASELINES:
        hit[name] = hits(np.concatenate([walk_forward(t.values[:, 0], name)
                                         for t in result.traces if len(t) > 1]), actual, 0.20)
    labels = result.label[rows]
    groups = [("all", np.ones(len(rows), dtype=bool))] + [
        (_LABELS[k], labels == k) for k in np.unique(labels).tolist()]
    width = max(len(name) for name in hit)
    lines = [f"backtest: predictions within +/-20 % of the actual next sample ({len(rows):,} scored)",
             f"  {'served by':<12}{'rows':>10}  " + "  ".join(f"{name:>{width}}" for name in hit)]
    for label, members in groups:
        lines.append(f"  {label:<12}{int(members.sum()):>10,}  " + "  ".join(
            f"{100 * float(h[members].mean()):>{width - 2}.1f} %" for h in hit.values()))
    covered = float(np.mean(actual >= result.reserve[rows]))
    lines.append(f"backtest: the actual at or above reserve_mbps {100 * covered:.1f} % of the time "
                 "(promised: 90 %)")
    return lines


def _fmt(values: np.ndarray) -> list[str]:
    return [f"{v:.6g}" for v in values.tolist()]


def run_backtest(
    paths: Sequence[str],
    out: Path,
    mode: str = "auto",
    models_dir: Path | None = None,
    allow_fallback: bool = False,
    quiet: bool = False,
    precision: str = "float",
) -> int:
    from predictor.api import BandwidthPredictor
    from predictor.runtime import SessionSettings

    predictor = BandwidthPredictor.load(models_dir, mode=mode, allow_fallback=allow_fallback,
                                        settings=SessionSettings(precision=precision))
    traces = [read_trace(p) for p in paths]

    def progress(done: int, total: int) -> None:
        print(f"\rbacktest: {done:,}/{total:,} predictions", end="", file=sys.stderr, flush=True)

    # opened before the replay, which can take many minutes: an unwritable path fails at once
    with open(out, "w", newline="") as fh:
        result = replay_traces(traces, predictor.link_predictor, None if quiet else progress)
        rows = write_csv(result, fh, paths)
    if not quiet:
        samples = sum(len(t) for t in traces)
        print(
            f"\nbacktest: {len(traces)} traces, {samples} samples, {rows} predictions in "
            f"{result.seconds:.1f} s ({samples / max(result.seconds, 1e-9):,.0f} samples/s) "
            f"-> {out}",
            file=sys.stderr,
        )
    print("\n".join(summary(result)))
    return rows
