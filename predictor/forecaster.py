"""Batched prediction: raw windows of many links in, predictions for all of them out.

One ONNX call per model per batch. A model serves a link from its MODEL_MIN_SAMPLES-th
sample on, on a window its history is repeated to fill until it is full
(features.repeat_history). Rows the models cannot serve (too few samples, model
unavailable) get the fallback: the last value, with a confidence calibrated from
the window's recent spread, marked source "fallback". A hybrid row combines both models
by their confidence. Never a time budget: the same window must give the same prediction
after a restart (docs/RELIABILITY.md).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from predictor.baselines import last_value
from predictor.confidence import Calibration, coefficient_of_variation
from predictor.features import BANDWIDTH, build_features, from_log_ratio, repeat_history
from predictor.gate import Gate
from predictor.modes import DATACENTER, HYBRID, INTERNET, MODE_NAMES, MODEL_MIN_SAMPLES, WINDOW_STEPS
from predictor.runtime import ModelSet, OnnxModel

MODEL, FALLBACK = 0, 1
SOURCE_NAMES = ("model", "fallback")
FALLBACK_VERSION = "heuristic-fallback"
FALLBACK_SAMPLES = 5

FloatArray = npt.NDArray[np.float64]


@dataclass
class BatchResult:
    """Predictions for a batch of windows; entry i belongs to input row i."""

    predicted_mbps: FloatArray
    reserve_mbps: FloatArray
    confidence: FloatArray
    score: FloatArray  # what confidence was calibrated from; NaN for blended hybrid rows
    mode: npt.NDArray[np.int8]
    source: npt.NDArray[np.int8]
    version: list[str]
    #: wall time in each model's call for this batch, by model (datacenter, internet)
    model_seconds: dict[str, float]

    def __len__(self) -> int:
        return len(self.predicted_mbps)

    @property
    def inference_s(self) -> float:
        """Wall time spent in model calls for this batch, all models together."""
        return sum(self.model_seconds.values())


@dataclass
class _ModelOutput:
    rows: npt.NDArray[np.intp]
    predicted: FloatArray
    reserve: FloatArray
    confidence: FloatArray
    score: FloatArray


class Forecaster:
    """Turns raw windows into predictions with the loaded models and the fallback."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models
        fallback = models.manifest.fallback_calibration if models.manifest else None
        self.fallback_calibration: Calibration | None = fallback
        adapted = models.manifest.adapted_calibration if models.manifest else None
        #: maps the per-link adaptation's confidence blend (predictor/adaptation.py)
        self.adapted_calibration: Calibration | None = adapted
        #: which expert publishes on a link (predictor/gate.py); None: by decayed score
        self.adaptation_gate: Gate | None = models.manifest.adaptation_gate if models.manifest else None

    def predict(
        self,
        raw: np.ndarray,
        counts: npt.NDArray[np.int64],
        modes: npt.NDArray[np.int8],
        use_models: bool = True,
    ) -> BatchResult:
        """raw: (n, T, 6) windows oldest first; counts: samples seen; modes: per-row mode.

        A row is served by a model whenever one is loaded and its link has MODEL_MIN_SAMPLES
        samples (a window not yet full is filled by repeating them), never
        by a time budget: a re-prediction after a restart must repeat the first one
        (deterministic prediction ids, docs/RELIABILITY.md). use_models=False serves
        every row with the fallback: the baseline predictor (predictor/rollout.py).
        """
        n = raw.shape[0]
        predicted, reserve, confidence, score = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        source = np.full(n, FALLBACK, dtype=np.int8)
        outputs: dict[int, _ModelOutput] = {}
        spent: dict[str, float] = {}
        for mode, name in ((DATACENTER, "datacenter"), (INTERNET, "internet")):
            model = self.models.models.get(name) if use_models else None
            steps = WINDOW_STEPS[mode]
            if model is None or raw.shape[1] < steps:
                continue
            rows = np.flatnonzero(((modes == mode) | (modes == HYBRID)) & (counts >= MODEL_MIN_SAMPLES))
            if rows.size == 0:
                continue
            started = time.perf_counter()
            outputs[mode] = self._run(model, repeat_history(raw[rows, -steps:], counts[rows]), rows, steps)
            spent[name] = time.perf_counter() - started

        for out in outputs.values():
            predicted[out.rows] = out.predicted
            reserve[out.rows] = out.reserve
            confidence[out.rows] = out.confidence
            score[out.rows] = out.score
            source[out.rows] = MODEL
        if DATACENTER in outputs and INTERNET in outputs:
            self._combine_hybrid(modes, outputs[DATACENTER], outputs[INTERNET],
                                 predicted, reserve, confidence, score)
        rest = np.flatnonzero(source == FALLBACK)  # the heuristic only where no model served
        if rest.size:
            predicted[rest], reserve[rest], confidence[rest], score[rest] = self._fallback(
                raw[rest, :, BANDWIDTH], counts[rest], modes[rest])
        return BatchResult(
            predicted_mbps=predicted,
            reserve_mbps=reserve,
            confidence=confidence,
            score=score,
            mode=modes.astype(np.int8, copy=True),
            source=source,
            version=self._versions(modes, source, outputs),
            model_seconds=spent,
        )

    def _run(self, model: OnnxModel, raw: np.ndarray, rows: np.ndarray, steps: int) -> _ModelOutput:
        features, scale = build_features(raw, steps)
        out = model.run(features)
        point = out[:, 1]
        q10 = np.minimum(out[:, 0], point)  # the interval always contains the point
        q90 = np.maximum(out[:, 2], point)
        width = (q90 - q10).astype(np.float64)
        return _ModelOutput(
            rows=rows,
            predicted=from_log_ratio(point, scale).astype(np.float64),
            reserve=from_log_ratio(q10, scale).astype(np.float64),
            confidence=model.spec.calibration(width).astype(np.float64),
            score=width,
        )

    @staticmethod
    def _combine_hybrid(
        modes: np.ndarray,
        dc: _ModelOutput,
        inet: _ModelOutput,
        predicted: FloatArray,
        reserve: FloatArray,
        confidence: FloatArray,
        score: FloatArray,
    ) -> None:
        """Rows served by both models: weight each by conf_i / (conf_dc + conf_inet).

        Confidence is the same weighted mean rather than the original's max: the max of
        two calibrated probabilities overstates how often the blend hits.
        """
        both, dc_at, inet_at = np.intersect1d(dc.rows, inet.rows, return_indices=True)
        both_hybrid = modes[both] == HYBRID
        both, dc_at, inet_at = both[both_hybrid], dc_at[both_hybrid], inet_at[both_hybrid]
        if both.size == 0:
            return
        c_dc, c_inet = dc.confidence[dc_at], inet.confidence[inet_at]
        total = c_dc + c_inet
        w_dc = np.where(total > 0, c_dc / np.where(total > 0, total, 1.0), 0.5)
        w_inet = 1.0 - w_dc
        predicted[both] = w_dc * dc.predicted[dc_at] + w_inet * inet.predicted[inet_at]
        reserve[both] = w_dc * dc.reserve[dc_at] + w_inet * inet.reserve[inet_at]
        confidence[both] = w_dc * c_dc + w_inet * c_inet
        score[both] = np.nan  # two widths, no single calibrated score

    def _fallback(
        self, bandwidth: np.ndarray, counts: np.ndarray, modes: np.ndarray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """The last value, min of the last 5 as reserve, and confidence from the recent
        coefficient of variation (the score).

        The original used the mean of the last <= 5; on every source of the real traces
        the last value hits +/-20 % more often (docs/MODEL_CARD.md), so it serves instead.
        """
        predicted = np.nan_to_num(last_value(bandwidth), nan=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reserve = np.nan_to_num(np.nanmin(bandwidth[:, -FALLBACK_SAMPLES:], axis=1), nan=0.0)
        cv = coefficient_of_variation(bandwidth).astype(np.float64)
        if self.fallback_calibration is not None:
            confidence = self.fallback_calibration(cv)
        else:
            confidence = original_fallback_confidence(counts, modes)
        return (predicted.astype(np.float64), reserve.astype(np.float64),
                confidence.astype(np.float64), cv)

    def _versions(
        self, modes: np.ndarray, source: np.ndarray, outputs: dict[int, _ModelOutput]
    ) -> list[str]:
        names = {mode: self.models.models[MODE_NAMES[mode]].version for mode in outputs}
        if DATACENTER in names and INTERNET in names:
            names[HYBRID] = f"{names[DATACENTER]}+{names[INTERNET]}"
        served = np.full(len(modes), FALLBACK_VERSION, dtype=object)
        for mode in (DATACENTER, INTERNET):
            if mode in outputs:
                served[outputs[mode].rows] = names[mode]
        if HYBRID in names:
            hybrid_both = (modes == HYBRID) & (source == MODEL)
            dc_rows, inet_rows = outputs[DATACENTER].rows, outputs[INTERNET].rows
            both = np.zeros(len(modes), dtype=bool)
            both[np.intersect1d(dc_rows, inet_rows)] = True
            served[hybrid_both & both] = names[HYBRID]
        return served.tolist()


def original_fallback_confidence(counts: np.ndarray, modes: np.ndarray) -> FloatArray:
    """The original's fallback confidence: 0.45 (datacenter) or 0.35, +0.02 per sample to +0.2."""
    base = np.where(modes == DATACENTER, 0.45, 0.35)
    return base + np.minimum(0.2, 0.02 * counts)
