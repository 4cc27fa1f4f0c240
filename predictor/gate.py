"""Which expert publishes on a link: a small network that reads the link's own record.

Selection by decayed score (the Network Weather Service's rule, predictor/adaptation.py)
asks one question of a link's record: which expert has hit most lately. The record says
more than that: how recent the hits are (a fast and a slow memory), how far the experts
now disagree, how wide the models' interval is and how sure they are, whether the link
just went idle. The gate is trained offline, on every walk-forward row of the validation
groups (`pba train`, training/gate.py), to give each expert's probability of a +/-20 %
hit on the next sample from those features; the expert with the highest probability
publishes, the models first on a tie and ahead by `margin`. Its weights are global; what
it reads is each link's own. On the test groups it published 2.4 points over the last
value where the decayed score gave 2.1 (docs/ADAPTATION.md).

An ensemble of a few such networks, trained from different seeds, averaged: one alone
moved a source by a point from one seed to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: the gate's inputs, in order (gate_features); a manifest made for another list is refused
GATE_FEATURES = (
    "score_models", "score_last_value", "score_median_5",  # decayed hits, the slow memory
    "fast_score_models", "fast_score_last_value", "fast_score_median_5",  # the fast one
    "samples",  # decayed count of samples learnt from (a new link: 0)
    "median_5_vs_last", "models_vs_last",  # |log| of each to the last value (0: absent)
    "models_reserve_ratio",  # log of the models' reserve / point (0: absent)
    "models_confidence",  # the served forecast's calibrated confidence
    "models_absent",  # 1 where the models cannot serve (a window still filling)
    "last_is_zero",  # the link's newest sample is zero (an idle application)
)
#: how far apart two predictions can be counted (|log| of their ratio), as the gate was trained
_LOG_LIMIT = 3.0


class GateError(ValueError):
    """A gate file that cannot be used as it is."""


@dataclass(frozen=True)
class Gate:
    """Stacked members: each array's first axis is the member."""

    mean: npt.NDArray[np.float32]  # (F,) the features' training mean
    scale: npt.NDArray[np.float32]  # (F,) and standard deviation
    weights: tuple[npt.NDArray[np.float32], ...]  # (k, in, out) per layer
    biases: tuple[npt.NDArray[np.float32], ...]  # (k, out) per layer
    margin: float  # probability the models are ahead by before another expert publishes
    _first: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the members' first layers side by side: one product for all of them, which
        # took a third of the gate's time as five
        k, f, hidden = self.weights[0].shape
        object.__setattr__(self, "_first", (self.weights[0].transpose(1, 0, 2).reshape(f, k * hidden),
                                            self.biases[0].reshape(k * hidden)))

    def hit_probability(self, features: np.ndarray) -> npt.NDArray[np.float32]:
        """(n, experts) each expert's probability of hitting, the members' mean."""
        z = ((features - self.mean) / self.scale).astype(np.float32)
        w, b = self._first
        h = (z @ w + b).reshape(len(z), *self.biases[0].shape).transpose(1, 0, 2)
        for i in range(1, len(self.weights)):
            h = np.matmul(np.maximum(h, 0.0), self.weights[i]) + self.biases[i][:, None, :]
        return (1.0 / (1.0 + np.exp(-h))).mean(axis=0)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"mean": self.mean, "scale": self.scale,
                                         "margin": np.array(self.margin, dtype=np.float32)}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        with path.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    @staticmethod
    def load(path: Path) -> Gate:
        try:
            with np.load(path, allow_pickle=False) as data:
                layers = sum(1 for name in data.files if name.startswith("w"))
                gate = Gate(data["mean"].astype(np.float32), data["scale"].astype(np.float32),
                            tuple(data[f"w{i}"].astype(np.float32) for i in range(layers)),
                            tuple(data[f"b{i}"].astype(np.float32) for i in range(layers)),
                            float(data["margin"]))
        except (OSError, KeyError, ValueError) as exc:
            raise GateError(f"{path}: not a gate file ({exc})") from None
        if gate.mean.shape != (len(GATE_FEATURES),) or not layers \
                or gate.weights[0].shape[1] != len(GATE_FEATURES):
            raise GateError(f"{path}: made for {gate.mean.shape[0]} features, this version "
                            f"reads {len(GATE_FEATURES)}")
        return gate


def gate_features(scores: np.ndarray, fast_scores: np.ndarray, samples: np.ndarray,
                  experts: np.ndarray, reserve_ratio: np.ndarray,
                  confidence: np.ndarray) -> npt.NDArray[np.float32]:
    """(n, GATE_FEATURES) from a round's state once it has learnt (scores, fast_scores
    (n, 3), samples (n,)), the experts' predictions (n, 3: models, last value, median of
    5; NaN where one cannot serve), the models' reserve / point and confidence."""
    last = experts[:, 1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        apart = np.abs(np.log(experts[:, [2, 0]].astype(np.float64) / last[:, None]))
        ratio = np.log(np.asarray(reserve_ratio, dtype=np.float64))
    absent = ~np.isfinite(experts[:, 0])
    apart = np.clip(np.nan_to_num(apart, nan=0.0, posinf=_LOG_LIMIT), 0.0, _LOG_LIMIT)
    ratio = np.where(absent, 0.0, np.clip(np.nan_to_num(ratio, nan=0.0, neginf=-_LOG_LIMIT,
                                                        posinf=0.0), -_LOG_LIMIT, 0.0))
    return np.column_stack([
        scores, fast_scores, samples, apart, ratio,
        np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0),
        absent, ~(last > 0),
    ]).astype(np.float32)
