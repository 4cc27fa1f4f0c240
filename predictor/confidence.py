"""Confidence that means something: P(actual within +/-20 % of the prediction).

A raw score (the model's predicted interval width, or for the fallback the window's
coefficient of variation) is mapped to a probability by a monotone calibration curve
fitted on validation traces (isotonic regression by pool-adjacent-violators over score
quantile bins). Where no calibration ships for the fallback, it serves the original
system's fixed values (predictor.forecaster.original_fallback_confidence).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

HIT_TOLERANCE = 0.20
CV_SAMPLES = 10

FloatArray = npt.NDArray[np.floating]


def hits(predicted: FloatArray, actual: FloatArray, tolerance: float = HIT_TOLERANCE) -> np.ndarray:
    """The original's accuracy: |predicted - actual| / actual < tolerance (actual > 0)."""
    actual = np.asarray(actual, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (actual > 0) & (np.abs(predicted - actual) < tolerance * actual)


def coefficient_of_variation(bandwidth: FloatArray) -> FloatArray:
    """std/mean over the last CV_SAMPLES samples of each row (n, k); NaN samples ignored."""
    recent = bandwidth[:, -CV_SAMPLES:]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        cv = np.nanstd(recent, axis=1) / np.nanmean(recent, axis=1)
    return np.where(np.isfinite(cv), cv, 10.0)


@dataclass(frozen=True)
class Calibration:
    """Monotone map from a raw score to hit probability (piecewise linear in score)."""

    score: str
    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, score: FloatArray) -> FloatArray:
        s = np.where(np.isfinite(score), score, self.x[-1])
        return np.clip(np.interp(s, self.x, self.y), 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        x, y = data.get("x"), data.get("y")
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y) or not x:
            raise ValueError("calibration needs equal-length, non-empty lists 'x' and 'y'")
        xs = np.asarray(x, dtype=float)
        ys = np.asarray(y, dtype=float)
        if np.any(np.diff(xs) < 0) or np.any((ys < 0) | (ys > 1)):
            raise ValueError("calibration x must be increasing and y within 0..1")
        return cls(str(data.get("score", "")), tuple(x), tuple(y))


def fit_calibration(score: FloatArray, hit: np.ndarray, name: str, bins: int = 20) -> Calibration:
    """Fit a non-increasing score -> hit-rate map (a wider interval never means surer).

    Scores are grouped into equal-count bins; isotonic regression (pool adjacent
    violators, weighted by bin size) makes the bin hit rates non-increasing.
    """
    score = np.asarray(score, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    keep = np.isfinite(score)
    score, hit = score[keep], hit[keep]
    if score.size < bins:
        raise ValueError(f"need at least {bins} scored predictions to calibrate, got {score.size}")
    order = np.argsort(score, kind="stable")
    groups = np.array_split(order, bins)
    centers = np.array([np.median(score[g]) for g in groups])
    rates = np.array([hit[g].mean() for g in groups])
    weights = np.array([len(g) for g in groups], dtype=np.float64)
    fitted = _pool_adjacent_violators(rates, weights, increasing=False)
    centers, fitted = _merge_ties(centers, fitted)
    return Calibration(name, tuple(float(c) for c in centers), tuple(float(v) for v in fitted))


def _pool_adjacent_violators(
    values: np.ndarray, weights: np.ndarray, increasing: bool = True
) -> np.ndarray:
    v = values if increasing else -values
    blocks: list[list[float]] = []  # [mean, weight, count]
    for value, weight in zip(v, weights, strict=True):
        blocks.append([float(value), float(weight), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out = np.concatenate([np.full(int(c), m) for m, _, c in blocks])
    return out if increasing else -out


def _merge_ties(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.interp needs increasing x: average y over repeated bin centres."""
    ux, inverse = np.unique(x, return_inverse=True)
    uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
    return ux, uy


def reliability_table(
    confidence: FloatArray, hit: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Per confidence decile: mean confidence vs observed hit rate (and count)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            table.append({
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "mean_confidence": float(confidence[sel].mean()),
                "hit_rate": float(hit[sel].mean()),
                "count": float(sel.sum()),
            })
    return table
