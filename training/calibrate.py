"""Confidence calibrations fitted walk-forward on the validation groups, through the
service's own link predictor: each model's (interval width -> hit rate) and the per-link
adaptation's (its confidence blend -> hit rate of what is published).

Every row counts, so each source weighs what its traffic weighs. Fitted on the training
windows' sample instead (capped per source), the confidence came out up to 8 points too
high on the real mix, where the hard sources have most of the rows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from predictor.confidence import Calibration, fit_calibration, hits
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor
from predictor.manifest import ModelSpec
from predictor.modes import mode_code
from predictor.runtime import ModelSet, OnnxModel, SessionSettings, load_models
from training.backtest import replay_traces
from training.traces import Trace

#: score bins of a calibration: about 3,000 of the ~480,000 validation rows each; at 40 the
#: curve had one point below a confidence of 0.2 and that decile was 2.5 points off in sample
#: (160: 0.4; fitted on half the traces and checked on the other, 3.3 -> 2.2 at the worst)
CALIBRATION_BINS = 160


def calibrate(spec: ModelSpec, traces: list[Trace]) -> tuple[Calibration, dict[str, float]]:
    """Interval width -> hit probability, on every row this model serves (its own
    outputs: no per-link adaptation in between)."""
    forecaster = Forecaster(ModelSet({spec.mode: OnnxModel(spec, SessionSettings())}, manifest=None))
    result = replay_traces(traces, LinkPredictor(forecaster, mode=spec.mode, adaptation=None))
    rows, actual = result.scored()
    served = result.label[rows] == mode_code(spec.mode)
    rows, actual = rows[served], actual[served]
    hit = hits(result.predicted[rows], actual)
    calibration = fit_calibration(result.score[rows], hit, "log_interval_width", CALIBRATION_BINS)
    return calibration, {"validation_hit_rate": float(hit.mean()), "calibration_rows": float(rows.size)}


def calibrate_adapted(models_dir: Path, traces: list[Trace]) -> tuple[Calibration, dict[str, float]]:
    """The adaptation's confidence blend -> hit probability of the published prediction,
    on every row (warm-up included), in auto mode where both models are there. Needs
    the models' and the fallback's calibrations in the manifest already (the blend is
    made of them)."""
    models = load_models(models_dir, ("datacenter", "internet"), allow_fallback=True)
    if models.manifest is not None:  # fit on the blend itself, not on an older fit of it
        models = replace(models, manifest=replace(models.manifest, adapted_calibration=None))
    served = tuple(models.models)
    mode = "auto" if len(served) == 2 else served[0]
    result = replay_traces(traces, LinkPredictor(Forecaster(models), mode=mode))
    rows, actual = result.scored()
    hit = hits(result.predicted[rows], actual)
    calibration = fit_calibration(result.score[rows], hit, "one_minus_blend", CALIBRATION_BINS)
    return calibration, {"adapted_validation_hit_rate": float(hit.mean()), "adapted_rows": float(rows.size)}
