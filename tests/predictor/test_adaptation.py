"""Per-link online adaptation (predictor/adaptation.py): which expert publishes, a reserve
that keeps its coverage on any kind of link, a confidence that follows the link's own
hit rate, and a state that survives the trip through a record header exactly."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from adaptation_support import fresh_state
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from predictor.adaptation import (
    MODELS,
    N_EXPERTS,
    AdaptationRules,
    AdaptationState,
    _median_of_present,
    adapt,
    learn,
)
from predictor.gate import Gate
from predictor.linkstate import decode_adaptation, encode_adaptation
from predictor.manifest import DEFAULT_MODELS_DIR, load_manifest

RULES = AdaptationRules()


def walk(actual: np.ndarray, experts: np.ndarray, ratio: float = 0.9, confidence: float = 0.5,
         gate: Gate | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One link through a series: experts[t] predict actual[t + 1]. Returns what was
    published, the reserves, the confidence blends and the experts chosen."""
    state = fresh_state(1)
    published, reserves, blends, chosen = [], [], [], []
    for t in range(len(actual) - 1):
        state = learn(state, actual[t:t + 1], np.array([float(t)]), RULES)
        out, state = adapt(state, experts[t:t + 1].astype(np.float32), np.array([ratio]),
                           np.array([confidence]), np.array([float(t)]), RULES, gate)
        published.append(out.predicted[0])
        reserves.append(out.reserve[0])
        blends.append(out.blend[0])
        chosen.append(out.choice[0])
    return np.array(published), np.array(reserves), np.array(blends), np.array(chosen)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.just(5)),
              elements=st.one_of(st.just(np.nan), st.floats(0, 1e4))))
def test_the_median_of_the_present_samples_is_numpys(recent: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(recent, axis=1)
    np.testing.assert_allclose(_median_of_present(recent), expected, equal_nan=True)


def test_a_new_link_publishes_the_models_and_keeps_them_while_they_hit() -> None:
    actual = np.full(200, 100.0)
    experts = np.column_stack([np.full(200, 101.0), np.full(200, 100.0), np.full(200, 100.0)])
    _, _, _, chosen = walk(actual, experts)
    assert (chosen == MODELS).all()  # a tie goes to the models, and so does a new link


def test_a_link_where_the_models_miss_moves_to_the_expert_that_hits_and_back() -> None:
    """The models 40 % high for 300 samples (a level the global models misjudge on
    this link), then right again: the last value takes over within the margin's few
    samples and hands back once its lead has decayed under the margin: a memory of
    about 20 samples, so within about 60 of the models hitting again."""
    actual = np.full(900, 100.0)
    models = np.where(np.arange(900) < 300, 140.0, 100.0)
    experts = np.column_stack([models, np.full(900, 100.0), np.full(900, 150.0)])
    _, _, _, chosen = walk(actual, experts)
    assert (chosen[:3] == MODELS).all()  # the head start
    assert (chosen[10:300] == 1).all()  # the last value, which hits
    assert (chosen[300 + 65:] == MODELS).all()  # ties again: the models


def noisy_link(models_level_first_300: float) -> tuple[np.ndarray, np.ndarray]:
    """A link at 100 Mbit/s with 15 % noise: the models predict the level (after their
    60-sample warm-up), which hits about 80 % of the time, the median of five about
    75 %, the last value 65 %; for the first 300 samples the models may be off."""
    rng = np.random.default_rng(1)
    actual = 100 * np.exp(rng.normal(0, 0.15, 900))
    recent = np.lib.stride_tricks.sliding_window_view(np.r_[np.full(4, np.nan), actual], 5)
    median = _median_of_present(recent)
    models = np.where(np.arange(900) < 300, models_level_first_300, 100.0)
    models[:60] = np.nan
    return actual, np.column_stack([models, actual, median])


def test_the_shipped_gate_keeps_the_models_where_they_hit_most() -> None:
    gate = load_manifest(DEFAULT_MODELS_DIR).adaptation_gate
    assert gate is not None
    _, _, _, chosen = walk(*noisy_link(100.0), confidence=0.7, gate=gate)
    assert (chosen[60:] == MODELS).mean() > 0.85


def test_the_shipped_gate_moves_where_the_models_keep_missing_and_back() -> None:
    """The models 40 % high for the first 300 samples (a level they misjudge on this
    link): the gate publishes the simple experts, the median of five (which hits most)
    most of the time, until the models are right again, and then the models."""
    gate = load_manifest(DEFAULT_MODELS_DIR).adaptation_gate
    assert gate is not None
    _, _, _, chosen = walk(*noisy_link(140.0), confidence=0.7, gate=gate)
    assert (chosen[60:300] == MODELS).mean() < 0.15
    assert (chosen[60:300] == 2).mean() > max(0.7, 2 * (chosen[60:300] == 1).mean())
    assert (chosen[400:] == MODELS).mean() > 0.9


@pytest.mark.parametrize("kind", ["steady", "noisy", "on-off", "drifting", "heavy-tailed"])
def test_the_reserve_covers_90_percent_on_every_kind_of_link(kind: str) -> None:
    """Adaptive conformal inference: whatever the link does, and however wrong the
    models' own interval (here a fixed 0.95 of the prediction, far too tight for most),
    the share of samples at or above the reserve comes within 2 points of 90 %."""
    rng = np.random.default_rng(7)
    n = 3000
    actual = {
        "steady": 100 * np.exp(rng.normal(0, 0.02, n)),
        "noisy": 100 * np.exp(rng.normal(0, 0.5, n)),
        "on-off": np.where(rng.uniform(size=n) < 0.44, 0.0, rng.uniform(5, 50, n)),  # uccmisl-like
        "drifting": np.linspace(10, 1000, n) * np.exp(rng.normal(0, 0.2, n)),
        "heavy-tailed": 100 / rng.pareto(1.5, n).clip(0.05),
    }[kind]
    experts = np.column_stack([np.r_[actual[0], actual[:-1]]] * 3)  # every expert: the last value
    _, reserves, _, _ = walk(actual, experts, ratio=0.95)
    covered = np.mean(actual[1:] >= reserves)
    assert abs(covered - 0.90) <= 0.02, f"{kind}: {100 * covered:.1f} %"


def test_the_confidence_starts_from_the_models_and_follows_the_links_own_hits() -> None:
    """The blend: the models' confidence weighed against the link's decayed hit rate,
    which starts at the models' confidence and moves to what happens."""
    actual = np.full(400, 100.0)
    experts = np.column_stack([np.full(400, 200.0)] * 3)  # never within +/-20 %
    _, _, blends, _ = walk(actual, experts, confidence=0.8)
    assert blends[0] == pytest.approx(0.8)
    assert blends[-1] == pytest.approx((1 - RULES.link_weight) * 0.8, abs=0.01)  # its hit rate near 0


def test_the_same_window_predicted_again_learns_nothing() -> None:
    state = fresh_state(1)
    experts = np.array([[120.0, 100.0, 100.0]], np.float32)
    _, once = adapt(learn(state, np.array([100.0]), np.array([1.0]), RULES), experts, np.array([0.9]),
                    np.array([0.5]), np.array([1.0]), RULES)
    again = learn(once, np.array([100.0]), np.array([1.0]), RULES)  # no new sample: ts 1.0 again
    for name in ("scores", "fast_scores", "samples", "offset", "hit_rate"):
        np.testing.assert_array_equal(getattr(again, name), getattr(once, name))
    later = learn(once, np.array([100.0]), np.array([2.0]), RULES)
    assert not np.array_equal(later.scores, once.scores)


def test_the_state_survives_its_header_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    state = fresh_state(4)
    for t in range(50):
        experts = rng.uniform(50, 150, (4, N_EXPERTS)).astype(np.float32)
        state = learn(state, rng.uniform(50, 150, 4), np.full(4, float(t)), RULES)
        _, state = adapt(state, experts, rng.uniform(0.5, 1, 4), rng.uniform(0, 1, 4), np.full(4, float(t)),
                         RULES)
    back = decode_adaptation(encode_adaptation(state))
    assert back is not None
    for field in dataclasses.fields(AdaptationState):
        name = field.name
        np.testing.assert_array_equal(getattr(back, name), getattr(state, name), err_msg=name)
    assert decode_adaptation([b"not a state"]) is None
