"""Per-link online adaptation: what each link's own errors teach, on top of the global
models. Pure numpy, one round of links at a time; the state lives in the per-link state
(predictor/linkstate.py) and comes back from here as a change to apply.

Three parts, each measured walk-forward on the traces' validation groups before it was
kept (scripts/adaptation-experiments.py, docs/MODEL_CARD.md):

* **Which expert publishes.** The models' point prediction, the last value and the median
  of the last five samples each keep decayed counts of their +/-20 % hits on the link, a
  slow and a fast memory. A gate trained on the validation groups (predictor/gate.py)
  reads those and how far the experts now disagree, and gives each expert's probability
  of hitting the next sample; the likeliest publishes, the models ahead by a margin.
  Without a gate (a models directory made before it), the Network Weather Service's
  selection by decayed score: the models start with a head start and keep the link
  unless another expert is ahead by a margin. More experts (EWMAs, the harmonic mean,
  a log-space residual correction of the models) and Hedge weights were tried and lost
  on the validation groups.
* **A reserve that keeps its promise** (adaptive conformal inference). The reserve is the
  published prediction times a ratio: the models' own q10 / point (the fallback's
  min-of-five / last value), plus a per-link offset that moves down after every sample
  that fell below the reserve and up after every other, by `reserve_step` x (miss -
  10 %). However the link behaves, its share of samples below the reserve then tends to
  10 %, where the models' q10 alone left it 73-90 % covered by source.
* **A confidence for what is published.** A blend of the models' calibrated confidence
  and the link's own decayed hit rate of the published output, mapped by a calibration
  fitted walk-forward on the validation groups (manifest `adapted_calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from predictor.baselines import last_present
from predictor.confidence import hits
from predictor.gate import Gate, gate_features

#: the experts, in order of precedence on a tie; the models first
EXPERTS = ("models", "last_value", "median_5")
MODELS = 0
N_EXPERTS = len(EXPERTS)
MEDIAN_SAMPLES = 5

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AdaptationRules:
    """The adaptation's constants (validation groups, walk-forward)."""

    decay: float = 0.95  # per sample, for each expert's hit score: a memory of about 20 samples
    fast_decay: float = 0.7  # the same for the gate's fast memory (predictor/gate.py): about 3
    prior: float = 3.0  # a new link's head start for the models, in hits
    margin: float = 1.0  # hits another expert must be ahead by to publish instead of the models
    coverage: float = 0.90  # share of samples at or above the reserve
    reserve_step: float = 0.02  # the reserve offset's step per sample (a ratio of the prediction)
    offset_limit: float = 1.0  # the offset stays within +/- this ratio
    hit_decay: float = 0.95  # of the link's hit rate of what it was published
    link_weight: float = 0.7  # that hit rate's weight in the confidence, against the models'


@dataclass
class AdaptationState:
    """The adaptation's per-link columns for some rows (one per row)."""

    scores: FloatArray  # (n, N_EXPERTS) decayed hits
    fast_scores: FloatArray  # (n, N_EXPERTS) the same, decayed faster (the gate reads both)
    samples: FloatArray  # decayed count of the samples learnt from, at `decay`
    pending: FloatArray  # (n, N_EXPERTS) each expert's prediction for the next sample (NaN: none)
    choice: npt.NDArray[np.int8]  # the expert published last (-1: none yet)
    offset: FloatArray  # the reserve's per-link ratio offset
    pending_reserve: FloatArray  # the reserve published last (NaN: none yet)
    hit_rate: FloatArray  # decayed hit rate of the published output (NaN: none yet)
    pending_ts: npt.NDArray[np.float64]  # the newest sample's time when the pending were made

    def take(self, rows: npt.NDArray[np.intp]) -> AdaptationState:
        return AdaptationState(*(getattr(self, f.name)[rows] for f in fields(AdaptationState)))

    def put(self, rows: npt.NDArray[np.intp], part: AdaptationState) -> None:
        for f in fields(AdaptationState):
            getattr(self, f.name)[rows] = getattr(part, f.name)


@dataclass
class Adapted:
    """What a round publishes after adaptation, one entry per row."""

    predicted: npt.NDArray[np.float64]
    reserve: npt.NDArray[np.float64]
    blend: npt.NDArray[np.float64]  # the confidence before its calibration (1 - score)
    choice: npt.NDArray[np.int8]


def simple_experts(bandwidth: np.ndarray) -> FloatArray:
    """(n, N_EXPERTS) from (n, T) windows, oldest first; the models' column NaN (the
    caller fills it where a model served)."""
    out = np.full((bandwidth.shape[0], N_EXPERTS), np.nan, dtype=np.float32)
    out[:, 1] = last_present(bandwidth)
    out[:, 2] = _median_of_present(bandwidth[:, -MEDIAN_SAMPLES:])
    return out


def _median_of_present(recent: np.ndarray) -> np.ndarray:
    """Each row's median over its non-NaN values (NaN for none): np.sort puts NaN last,
    so the middle of the k present values is at k // 2. A tenth of np.nanmedian's cost
    on five columns, which took half of the adaptation's time."""
    ordered = np.sort(recent, axis=1)
    k = (~np.isnan(recent)).sum(axis=1)
    high = np.take_along_axis(ordered, np.maximum(k // 2, 0)[:, None], axis=1)[:, 0]
    low = np.take_along_axis(ordered, np.maximum((k - 1) // 2, 0)[:, None], axis=1)[:, 0]
    return np.where(k > 0, (low + high) / 2, np.nan)


def learn(state: AdaptationState, actual: np.ndarray, ts: np.ndarray,
          rules: AdaptationRules) -> AdaptationState:
    """The state once each row's pending predictions meet the sample that followed them
    (actual, at ts); rows whose newest sample is the one they were made at (the same
    window predicted again) learn nothing."""
    actual = np.asarray(actual, dtype=np.float64)
    new = np.asarray(ts) > state.pending_ts
    seen = np.isfinite(state.pending) & new[:, None]
    hit = seen & hits(state.pending, actual[:, None])
    scores = np.where(seen, rules.decay * state.scores + hit, state.scores).astype(np.float32)
    fast = np.where(seen, rules.fast_decay * state.fast_scores + hit, state.fast_scores).astype(np.float32)
    samples = np.where(new & seen.any(axis=1), rules.decay * state.samples + 1.0, state.samples)
    had = np.isfinite(state.pending_reserve) & new
    miss = actual < state.pending_reserve
    offset = np.where(had, state.offset - rules.reserve_step * (miss - (1.0 - rules.coverage)), state.offset)
    offset = np.clip(offset, -rules.offset_limit, rules.offset_limit).astype(np.float32)
    published = (state.choice >= 0) & np.isfinite(state.hit_rate) & new
    was_hit = hit[np.arange(len(actual)), np.maximum(state.choice, 0)]
    rate = rules.hit_decay * state.hit_rate + (1.0 - rules.hit_decay) * was_hit
    hit_rate = np.where(published, rate, state.hit_rate).astype(np.float32)
    return AdaptationState(scores, fast, samples.astype(np.float32), state.pending, state.choice, offset,
                           state.pending_reserve, hit_rate, state.pending_ts)


def select(ranked: np.ndarray, usable: np.ndarray, margin: float) -> npt.NDArray[np.int8]:
    """The expert ranked highest among the usable ones, the models ahead by `margin` and
    first on a tie."""
    ranked = np.where(usable, ranked.astype(np.float64), -np.inf)
    ranked[:, MODELS] += margin  # -inf stays -inf where the models cannot serve
    return np.argmax(ranked, axis=1).astype(np.int8)


def adapt(state: AdaptationState, experts: FloatArray, reserve_ratio: np.ndarray,
          confidence: np.ndarray, ts: np.ndarray, rules: AdaptationRules,
          gate: Gate | None = None) -> tuple[Adapted, AdaptationState]:
    """What each row publishes, and the state that remembers it.

    experts: (n, N_EXPERTS) predictions, NaN where one cannot serve (the models during
    a window's warm-up); reserve_ratio: the served forecast's own reserve / prediction;
    confidence: its calibrated confidence; ts: the newest sample's time. gate: the
    trained selection (predictor/gate.py); None selects by decayed score."""
    if gate is None:
        ranked, margin = state.scores, rules.margin
    else:
        features = gate_features(state.scores, state.fast_scores, state.samples, experts,
                                 reserve_ratio, confidence)
        ranked, margin = gate.hit_probability(features), gate.margin
    choice = select(ranked, np.isfinite(experts), margin)
    rows = np.arange(len(choice))
    predicted = np.nan_to_num(experts[rows, choice].astype(np.float64), nan=0.0)
    ratio = np.clip(np.nan_to_num(np.asarray(reserve_ratio, dtype=np.float64), nan=1.0), 0.0, 1.0)
    reserve = predicted * np.clip(ratio + state.offset, 0.0, 1.0)
    confidence = np.asarray(confidence, dtype=np.float64)
    # a link's own hit rate starts from the models' confidence in its first prediction
    own = np.where(np.isnan(state.hit_rate), confidence, state.hit_rate)
    blend = (1.0 - rules.link_weight) * confidence + rules.link_weight * own
    after = AdaptationState(state.scores, state.fast_scores, state.samples, experts, choice,
                            state.offset, reserve.astype(np.float32), own.astype(np.float32),
                            np.asarray(ts, dtype=np.float64))
    return Adapted(predicted, reserve, blend, choice), after
