"""The adaptation's gate (predictor/gate.py): what it reads of a link, how it turns that
into each expert's hit probability, how the adaptation publishes by it, and how a
models directory ships it (refused when it does not match this code)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from adaptation_support import fresh_state

from predictor.adaptation import MODELS, N_EXPERTS, AdaptationRules, AdaptationState, adapt, learn
from predictor.gate import GATE_FEATURES, Gate, GateError, gate_features
from predictor.manifest import MANIFEST_NAME, ManifestError, load_manifest, sha256_of
from training.export import write_manifest

F = len(GATE_FEATURES)


def linear_gate(weights: np.ndarray, bias: np.ndarray, margin: float = 0.0, members: int = 1) -> Gate:
    """A one-layer gate on the raw features (mean 0, scale 1): logits = x @ weights + bias."""
    return Gate(np.zeros(F, np.float32), np.ones(F, np.float32),
                (np.repeat(weights[None].astype(np.float32), members, axis=0),),
                (np.repeat(bias[None].astype(np.float32), members, axis=0),), margin)


def column(name: str) -> int:
    return GATE_FEATURES.index(name)


def test_the_features_read_the_links_record_and_how_far_the_experts_are_apart() -> None:
    scores = np.array([[3.0, 1.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
    fast = np.array([[0.5, 1.5, 0.2], [0.0, 0.0, 0.0]], np.float32)
    experts = np.array([[120.0, 100.0, 80.0], [np.nan, 0.0, 50.0]], np.float32)
    x = gate_features(scores, fast, np.array([7.0, 0.0]), experts, np.array([0.5, np.nan]),
                      np.array([0.6, 0.3]))
    assert x.shape == (2, F) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :7], [3, 1, 2, 0.5, 1.5, 0.2, 7])
    np.testing.assert_allclose(x[0, column("median_5_vs_last")], abs(np.log(0.8)), rtol=1e-6)
    np.testing.assert_allclose(x[0, column("models_vs_last")], np.log(1.2), rtol=1e-6)
    np.testing.assert_allclose(x[0, column("models_reserve_ratio")], np.log(0.5), rtol=1e-6)
    assert x[0, column("models_absent")] == 0 and x[0, column("last_is_zero")] == 0
    # a window still filling and an idle link: nothing infinite, the flags say so
    assert np.isfinite(x[1]).all()
    assert x[1, column("models_absent")] == 1 and x[1, column("last_is_zero")] == 1
    assert x[1, column("models_vs_last")] == 0 and x[1, column("models_reserve_ratio")] == 0


def test_the_hit_probability_is_the_members_mean_of_a_sigmoid() -> None:
    weights = np.zeros((F, N_EXPERTS))
    weights[column("fast_score_last_value"), 1] = 2.0
    one = linear_gate(weights, np.array([0.5, -1.0, -3.0]))
    x = np.zeros((1, F), np.float32)
    x[0, column("fast_score_last_value")] = 1.0
    np.testing.assert_allclose(one.hit_probability(x)[0], 1 / (1 + np.exp(-np.array([0.5, 1.0, -3.0]))),
                               rtol=1e-6)
    three = linear_gate(weights, np.array([0.5, -1.0, -3.0]), members=3)
    np.testing.assert_allclose(three.hit_probability(x), one.hit_probability(x), rtol=1e-6)


def step(gate: Gate, state: AdaptationState, experts: list[float]) -> int:
    out, _ = adapt(state, np.array([experts], np.float32), np.array([0.9]), np.array([0.5]),
                   np.array([0.0]), AdaptationRules(), gate)
    return int(out.choice[0])


def test_the_adaptation_publishes_the_likeliest_expert_the_models_ahead_by_the_margin() -> None:
    state = fresh_state(1)
    bias = np.array([0.0, 0.1, -5.0])  # the last value a little likelier than the models
    assert step(linear_gate(np.zeros((F, N_EXPERTS)), bias), state, [110, 100, 90]) == 1
    assert step(linear_gate(np.zeros((F, N_EXPERTS)), bias, margin=0.05), state, [110, 100, 90]) == MODELS
    # the models cannot serve while their window fills, however likely the gate finds them
    assert step(linear_gate(np.zeros((F, N_EXPERTS)), np.array([9.0, 0.0, 0.1])), state,
                [np.nan, 100, 90]) == 2


def test_the_gate_reads_the_state_the_link_learnt() -> None:
    """A gate that trusts the last value's recent hits: it moves there once the last
    value has hit a few samples running and the models have not."""
    weights = np.zeros((F, N_EXPERTS))
    weights[column("fast_score_last_value"), 1] = 1.0
    gate = linear_gate(weights, np.array([0.0, -2.0, -9.0]))
    rules = AdaptationRules()
    state = fresh_state(1)
    chosen = []
    for t in range(10):
        state = learn(state, np.array([100.0]), np.array([float(t)]), rules)
        out, state = adapt(state, np.array([[150.0, 100.0, 100.0]], np.float32), np.array([0.9]),
                           np.array([0.5]), np.array([float(t)]), rules, gate)
        chosen.append(int(out.choice[0]))
    assert chosen[:2] == [MODELS, MODELS] and chosen[-1] == 1
    assert state.samples[0] > 0 and state.fast_scores[0, 1] > 2


def test_a_gate_file_round_trips_and_one_for_other_features_is_refused(tmp_path: Path) -> None:
    gate = linear_gate(np.arange(F * N_EXPERTS, dtype=float).reshape(F, N_EXPERTS) / 100, np.ones(3), 0.02, 2)
    gate.save(tmp_path / "gate.npz")
    back = Gate.load(tmp_path / "gate.npz")
    x = np.random.default_rng(0).normal(size=(5, F)).astype(np.float32)
    np.testing.assert_array_equal(back.hit_probability(x), gate.hit_probability(x))
    assert back.margin == pytest.approx(0.02)
    short = Gate(gate.mean[:-1], gate.scale[:-1], (gate.weights[0][:, :-1],), gate.biases, 0.0)
    short.save(tmp_path / "short.npz")
    with pytest.raises(GateError, match="made for 12 features"):
        Gate.load(tmp_path / "short.npz")
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(GateError, match="not a gate file"):
        Gate.load(tmp_path / "junk.npz")


@pytest.fixture
def gated_models(tiny_models: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    shutil.copytree(tiny_models, directory)
    linear_gate(np.zeros((F, N_EXPERTS)), np.zeros(3)).save(directory / "gate.npz")
    data = orjson.loads((directory / MANIFEST_NAME).read_bytes())
    write_manifest(directory, data["models"], None, None, directory / "gate.npz")
    return directory


def test_a_models_directory_ships_its_gate_checked_like_a_model(gated_models: Path) -> None:
    assert load_manifest(gated_models).adaptation_gate is not None
    (gated_models / "gate.npz").write_bytes((gated_models / "gate.npz").read_bytes() + b"x")
    with pytest.raises(ManifestError, match="does not match its sha256"):
        load_manifest(gated_models)


@pytest.mark.parametrize("key, value, message", [
    ("features", ["score_models"], "features .* retrain"),
    ("experts", ["models"], "experts .* retrain"),
    ("file", "../gate.npz", "plain file name"),
])
def test_a_gate_made_for_other_code_is_refused_at_start_up(gated_models: Path, key: str, value: object,
                                                          message: str) -> None:
    path = gated_models / MANIFEST_NAME
    data = orjson.loads(path.read_bytes())
    data["adaptation_gate"][key] = value
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(ManifestError, match=message):
        load_manifest(gated_models)


def test_the_gate_file_is_hashed_as_written(gated_models: Path) -> None:
    entry = orjson.loads((gated_models / MANIFEST_NAME).read_bytes())["adaptation_gate"]
    assert entry["sha256"] == sha256_of(gated_models / "gate.npz")
    assert entry["features"] == list(GATE_FEATURES)
