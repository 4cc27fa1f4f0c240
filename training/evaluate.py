"""Walk-forward evaluation and the model card (docs/MODEL_CARD.md).

    python -m training.evaluate [--traces DIR] [--out docs/MODEL_CARD.md]

Every figure comes from a replay through the service's link predictor (training.backtest):
the prediction after sample i is scored against sample i+1, warm-up rows included
(the fallback serves them). Baselines are scored on exactly the same rows, from the
same samples 0..i.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from predictor.api import BandwidthPredictor
from predictor.baselines import REPORTED_BASELINES, walk_forward
from predictor.confidence import hits, reliability_table
from predictor.features import build_features, from_log_ratio
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor
from predictor.manifest import DEFAULT_MODELS_DIR, FLOAT, INT8, PRECISIONS, load_manifest
from predictor.modes import MODEL_MIN_SAMPLES
from predictor.runtime import OnnxModel, SessionSettings, cpu_description, load_models
from training.backtest import _LABELS, replay_traces
from training.calibrate import CALIBRATION_BINS
from training.generators import synthetic_set
from training.traces import Trace, cut, default_traces_dir, load_traces, split_traces


@dataclass
class Scores:
    n: int
    hit20: float
    hit10: float
    mae: float
    wmape: float

    @classmethod
    def of(cls, predicted: np.ndarray, actual: np.ndarray) -> Scores:
        err = np.abs(predicted - actual)
        return cls(
            n=len(actual),
            hit20=float(hits(predicted, actual, 0.20).mean()),
            hit10=float(hits(predicted, actual, 0.10).mean()),
            mae=float(err.mean()),
            wmape=float(err.sum() / max(actual.sum(), 1e-12)),
        )


@dataclass
class Evaluation:
    model: Scores
    baselines: dict[str, Scores]
    confidence: np.ndarray
    predicted: np.ndarray
    actual: np.ndarray
    baseline_predicted: dict[str, np.ndarray]  # per row, like predicted
    served: dict[str, float]  # share of rows per label (mode or fallback)
    seconds: float
    models_alone: Scores  # the forecaster's own predictions, before the per-link adaptation
    coverage: float  # share of rows whose actual is at or above the published reserve
    models_alone_coverage: float  # the same for the forecaster's own q10


def evaluate(traces: Sequence[Trace], predictor: BandwidthPredictor) -> Evaluation:
    traces = [t for t in traces if len(t) > 1]
    result = replay_traces(traces, predictor.link_predictor)
    keep, actual = result.scored()
    predicted = result.predicted[keep]
    labels = result.label[keep]
    baseline_predicted = {
        name: np.concatenate([walk_forward(t.values[:, 0], name) for t in traces])
        for name in REPORTED_BASELINES
    }
    baselines = {name: Scores.of(p, actual) for name, p in baseline_predicted.items()}
    served = {_LABELS[k]: float(np.mean(labels == k)) for k in np.unique(labels)}
    own = result.forecaster[keep]
    coverage = float(np.mean(actual >= result.reserve[keep]))
    own_coverage = float(np.mean(actual >= result.forecaster_reserve[keep]))
    return Evaluation(Scores.of(predicted, actual), baselines, result.confidence[keep], predicted,
                      actual, baseline_predicted, served, result.seconds, Scores.of(own, actual),
                      coverage, own_coverage)


def adaptation_cost(models_dir: Path | None, regime: str = "internet", links: int = 256,
                    repeats: int = 100, settings: SessionSettings = SessionSettings()) -> tuple[float, float]:
    """Microseconds per event of a forecast with and without the per-link adaptation:
    the same forecaster on the same full windows of `regime`-like links (auto mode), in
    one process, interleaved, in alternating order (`pba bench` and the model card).

    On one inference lane whatever `settings` says: the adaptation's cost does not depend
    on the lanes, and two lanes' thread hand-offs on two cores moved each forecast by tens
    of us from one run to the next, more than the adaptation costs."""
    one_lane = replace(settings, intra_op_threads=1)
    forecaster = Forecaster(load_models(models_dir, ("datacenter", "internet"), one_lane))
    series = synthetic_set("realistic", regime, links, 80, seed=3)
    predictors = [LinkPredictor(forecaster, "auto"), LinkPredictor(forecaster, "auto", adaptation=None)]
    ids = [f"link-{j}" for j in range(links)]
    for lp in predictors:
        slots = lp.store.slots(ids)
        for i in range(80):
            lp.observe_slots(slots, np.array([t.t_s[i] for t in series]),
                             np.stack([t.values[i] for t in series]))
    times: list[list[float]] = [[], []]
    for repeat in range(repeats):
        # each goes first every other time: on two cores, whichever ran second waited on
        # the model's lane threads longer, by up to 80 us an event either way
        for which in (0, 1) if repeat % 2 == 0 else (1, 0):
            lp = predictors[which]
            slots = lp.store.slots(ids)
            started = time.perf_counter()
            lp.forecast(slots)
            times[which].append((time.perf_counter() - started) / links * 1e6)
    return float(np.median(times[0])), float(np.median(times[1]))


def hit_rate_gap_interval(ev: Evaluation, baseline: str, block: int = 50, draws: int = 2000,
                          seed: int = 0) -> tuple[float, float]:
    """95 % interval of (model hit rate - baseline hit rate), moving-block bootstrap.

    Rows next to each other are correlated (a calm stretch is easy for both), so blocks
    of consecutive rows are resampled, not single rows. It says whether a gap of a point
    on a small source is a difference or noise.
    """
    diff = (hits(ev.predicted, ev.actual).astype(np.float64)
            - hits(ev.baseline_predicted[baseline], ev.actual).astype(np.float64))
    n = diff.size
    block = max(1, min(block, n))
    starts = n - block + 1
    sums = np.concatenate([[0.0], np.cumsum(diff)])
    block_means = (sums[block:] - sums[:starts]) / block
    picks = np.random.default_rng(seed).integers(0, starts, size=(draws, max(1, n // block)))
    means = block_means[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _variant_row(source: str, ev: Evaluation, other: Evaluation) -> str:
    """One source's hit rate under the other model variant, against this one and the last value."""
    low, high = hit_rate_gap_interval(other, "last_value")
    last = other.baselines["last_value"].hit20
    return (f"| {source} | {other.model.n} | {100 * ev.model.hit20:.1f} | {100 * other.model.hit20:.1f} | "
            f"{100 * (other.model.hit20 - ev.model.hit20):+.1f} | {100 * (other.model.hit20 - last):+.1f} | "
            f"{100 * low:+.1f} to {100 * high:+.1f} |")


def _fmt(s: Scores) -> str:
    return f"{100 * s.hit20:.1f} | {100 * s.hit10:.1f} | {s.mae:.4g} | {100 * s.wmape:.1f}"


def int8_comparison(models_dir: Path, traces: Sequence[Trace]) -> list[str]:
    """Accuracy (same windows) and speed (batch 64, same threads) of int8 against float."""
    manifest = load_manifest(models_dir)
    lines = ["| model | hit +/-20 % float | hit +/-20 % int8 | predictions/s float | int8 | speed-up |",
             "|---|---|---|---|---|---|"]
    from training.dataset import sliding_windows

    for mode, spec in manifest.models.items():
        if INT8 not in spec.variants:
            continue
        windows, nxt = [], []
        for t in traces:
            w, n = sliding_windows(t, spec.window)
            windows.append(w[::5])
            nxt.append(n[::5])
        x, scale = build_features(np.concatenate(windows), spec.window)
        actual = np.concatenate(nxt).astype(np.float64)
        row = [mode]
        rates = []
        accuracy = []
        for precision in PRECISIONS:
            model = OnnxModel(spec, SessionSettings(precision=precision))
            out = np.concatenate([model.run(x[i:i + 4096]) for i in range(0, len(x), 4096)])
            point = from_log_ratio(out[:, 1], scale)
            accuracy.append(f"{100 * hits(point, actual).mean():.1f}")
            batch = x[:64]
            model.run(batch)
            started, runs = time.perf_counter(), 0
            while time.perf_counter() - started < 2.0:
                model.run(batch)
                runs += 1
            rates.append(runs * 64 / (time.perf_counter() - started))
        row += accuracy + [f"{rates[0]:,.0f}", f"{rates[1]:,.0f}", f"{rates[1] / rates[0]:.2f}x"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def model_card(traces_location: Path, models_dir: Path, out: Path, log: Callable[[str], None],
               precision: str = "float") -> None:
    infos, read = load_traces(traces_location)
    roles = split_traces(infos)
    test: dict[str, list[Trace]] = {}
    for segment in roles["test"]:
        test.setdefault(segment.info.source, []).append(cut(read(segment.info), segment))
    manifest = load_manifest(models_dir)
    settings = SessionSettings(precision=precision)
    lines = [
        "# Model card",
        "",
        "Regenerate with `make model-card` (`python -m training.evaluate`). All figures are",
        "walk-forward: the prediction made after sample i, from samples 0..i only, scored",
        "against sample i+1, through the service's own link predictor (`training.backtest.replay_traces`);",
        f"warm-up rows count too (the fallback serves a link's first {MODEL_MIN_SAMPLES - 1} samples, the",
        "models from the next on, on a window its history is repeated to fill). Baselines are scored",
        "on the same rows. Hit = |predicted - actual| < 20 % (10 %) of actual;",
        "WMAPE = sum |error| / sum actual.",
        f"Models served in their {precision} variant (`pba run --precision {precision}`).",
        "",
        "## Models",
        "",
    ]
    for mode, spec in manifest.models.items():
        lines.append(f"- **{mode}** `{spec.path.name}` version `{spec.version}`, window {spec.window}, "
                     f"sha256 `{spec.sha256[:16]}...`")
    lines += ["", "Training settings and data: see `training` in `predictor/models/manifest.json` and",
              "`training/train.py` (data: real traces' train groups, capped per source, plus the",
              "realistic generator; validation groups for early stopping and calibration; the",
              "test groups below were never used in training or calibration). A model whose",
              "`training` names `fine_tuned_from` was trained further from that version on the same",
              "data (`pba train --fine-tune`: a learning rate decaying to zero).", ""]

    lines += ["## Real traces, held-out test groups, `--mode auto`", "",
              "Published: what the service publishes, the models' forecast after each link's online "
              "adaptation (predictor/adaptation.py); models alone: the forecast before it.", "",
              "| source | rows | published hit20 | models alone hit20 | hit10 | MAE Mbit/s | WMAPE % | "
              "best baseline | its hit20 | published - best (points) | 95 % interval | last value hit20 | "
              "EWMA hit20 | harmonic-5 hit20 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    coverage_rows = []
    over_last, alone_over_last = [], []
    all_conf, all_pred, all_act = [], [], []
    deltas = []
    other = INT8 if precision == FLOAT else FLOAT
    compare = all(other in spec.variants for spec in manifest.models.values())
    other_rows = []
    for source in sorted(test):
        log(f"evaluating {source} ({len(test[source])} traces)")
        ev = evaluate(test[source], BandwidthPredictor.load(models_dir, mode="auto", settings=settings))
        if compare:
            other_rows.append(_variant_row(source, ev, evaluate(test[source], BandwidthPredictor.load(
                models_dir, mode="auto", settings=SessionSettings(precision=other)))))
        best_name = max(ev.baselines, key=lambda k: ev.baselines[k].hit20)
        best = ev.baselines[best_name]
        delta = 100 * (ev.model.hit20 - best.hit20)
        low, high = hit_rate_gap_interval(ev, best_name)
        deltas.append(delta)
        all_conf.append(ev.confidence)
        all_pred.append(ev.predicted)
        all_act.append(ev.actual)
        m = ev.model
        over_last.append(100 * (m.hit20 - ev.baselines["last_value"].hit20))
        alone_over_last.append(100 * (ev.models_alone.hit20 - ev.baselines["last_value"].hit20))
        coverage_rows.append(f"| {source} | {m.n} | {100 * ev.coverage:.1f} | "
                             f"{100 * ev.models_alone_coverage:.1f} |")
        lines.append(
            f"| {source} | {m.n} | {100 * m.hit20:.1f} | {100 * ev.models_alone.hit20:.1f} | "
            f"{100 * m.hit10:.1f} | {m.mae:.4g} | "
            f"{100 * m.wmape:.1f} | {best_name} | {100 * best.hit20:.1f} | {delta:+.1f} | "
            f"{100 * low:+.1f} to {100 * high:+.1f} | "
            + " | ".join(f"{100 * ev.baselines[b].hit20:.1f}" for b in REPORTED_BASELINES) + " |"
        )
    lines += ["", f"Average over sources: published minus best baseline = {np.mean(deltas):+.2f} points "
              f"(worst source {min(deltas):+.1f}, best {max(deltas):+.1f}); published minus the last "
              f"value {np.mean(over_last):+.2f} (models alone {np.mean(alone_over_last):+.2f}).", ""]
    lines += ["## Reserve coverage (test groups)", "",
              "Share of rows whose actual next sample is at or above `reserve_mbps` (promised: 90 %): "
              "as published, a per-link online correction of the models' 10th percentile (adaptive "
              "conformal inference); and the models' 10th percentile alone.", "",
              "| source | rows | published reserve | models' q10 alone |", "|---|---|---|---|",
              *coverage_rows, ""]

    lines += ["## Generators", "",
              "40 links x 2,000 one-second samples per set, seed 7 (never seen in training: the "
              "training series use other seeds).", "",
              "| generator | regime | mode | published hit20 | hit10 | MAE | WMAPE % | last value hit20 | "
              "EWMA hit20 | harmonic-5 hit20 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for generator in ("realistic", "iid"):
        for regime in ("datacenter", "internet"):
            series = synthetic_set(generator, regime, 40, 2000, seed=7)
            for mode in (regime, "auto"):
                ev = evaluate(series, BandwidthPredictor.load(models_dir, mode=mode, settings=settings))
                lines.append(f"| {generator} | {regime} | {mode} | {_fmt(ev.model)} | "
                             + " | ".join(f"{100 * ev.baselines[b].hit20:.1f}" for b in REPORTED_BASELINES)
                             + " |")
    lines += [""]

    conf, pred, act = (np.concatenate(a) for a in (all_conf, all_pred, all_act))
    lines += ["## Confidence calibration (test groups, all sources)", "",
              "The confidence published: a blend of the models' calibrated confidence (interval "
              "width -> hit rate, fitted per model on every walk-forward row it serves on the "
              "validation groups; the fallback's on the recent coefficient of variation) and the "
              "link's own decayed hit rate, calibrated against the hit rate of the published "
              "prediction on every validation row (`pba train --calibrate-only`, isotonic over "
              f"{CALIBRATION_BINS} equal-count bins). Deciles holding under 1 % of the rows are marked.", "",
              "| confidence bin | predictions | mean confidence | hit rate | gap (points) |",
              "|---|---|---|---|---|"]
    for row in reliability_table(conf, hits(pred, act)):
        small = " (under 1 %)" if row["count"] < 0.01 * len(conf) else ""
        lines.append(f"| {row['bin_low']:.1f}-{row['bin_high']:.1f}{small} | {int(row['count'])} | "
                     f"{100 * row['mean_confidence']:.1f} | {100 * row['hit_rate']:.1f} | "
                     f"{100 * (row['hit_rate'] - row['mean_confidence']):+.1f} |")
    lines += [""]
    lines += ["Per source (a source's rows can sit in every decile; its mean confidence should",
              "still be near its hit rate):", "",
              "| source | rows | mean confidence | hit rate | gap (points) |", "|---|---|---|---|---|"]
    for source, confidence, predicted, actual in zip(sorted(test), all_conf, all_pred, all_act,
                                                     strict=True):
        rate, mean = hits(predicted, actual).mean(), confidence.mean()
        lines.append(f"| {source} | {len(confidence)} | {100 * mean:.1f} | {100 * rate:.1f} | "
                     f"{100 * (rate - mean):+.1f} |")
    lines += [""]

    with_it, without = adaptation_cost(models_dir)
    machine = cpu_description()
    lines += ["## The adaptation's cost", "",
              f"A forecast of 256 internet-like links (auto mode, windows full, one inference thread), "
              f"median of 100 on this machine ({machine}): {without:.1f} us per event without the "
              "per-link adaptation, "
              f"{with_it:.1f} us with it ({with_it - without:+.1f} us). `pba bench` measures what it "
              "costs end to end (docs/BENCHMARKS.md).", ""]
    lines += ["## int8 against float", ""]
    if compare:
        lines += [f"Walk-forward on the test groups as above, the same rows served by the {precision} "
                  f"and the {other} variant (`--mode auto`):", "",
                  f"| source | rows | {precision} hit20 | {other} hit20 | {other} - {precision} (points) | "
                  f"{other} - last value (points) | 95 % interval |",
                  "|---|---|---|---|---|---|---|", *other_rows, ""]
    lines += ["Accuracy on every 5th test window; speed as ONNX Runtime predictions/s at batch 64 "
              f"on this machine ({machine}), same threads, one run.", ""]
    lines += int8_comparison(models_dir, [t for ts in test.values() for t in ts])
    lines += [""]
    out.write_text("\n".join(lines) + "\n")
    log(f"model card written: {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=Path, default=None,
                        help="traces folder with index.csv (default: PBA_TRACES_DIR, or "
                             "../shared/traces beside the checkout)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--out", type=Path, default=Path("docs/MODEL_CARD.md"))
    parser.add_argument("--precision", choices=PRECISIONS, default=FLOAT,
                        help="model variant the predictions are made with")
    args = parser.parse_args(argv)
    model_card(args.traces or default_traces_dir(), args.models, args.out,
               lambda msg: print(msg, flush=True), args.precision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
