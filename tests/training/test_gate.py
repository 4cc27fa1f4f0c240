"""Fitting the adaptation's gate (training/gate.py): the rows it learns from are what the
service's gate reads, and what it learns picks the expert that hits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from predictor.adaptation import MODELS, N_EXPERTS
from predictor.gate import GATE_FEATURES, Gate
from predictor.manifest import MANIFEST_NAME
from training.export import write_manifest
from training.gate import choose, gate_rows, train_gate
from training.traces import read_trace

F = len(GATE_FEATURES)


@pytest.fixture
def gated_models(tiny_models: Path, tmp_path: Path) -> Path:
    """The tiny models with a gate of random weights: it picks every expert somewhere."""
    directory = tmp_path / "models"
    shutil.copytree(tiny_models, directory)
    rng = np.random.default_rng(5)
    shapes = [(F, 8), (8, N_EXPERTS)]
    Gate(np.zeros(F, np.float32), np.ones(F, np.float32),
         tuple(rng.normal(0, 1, (1, *s)).astype(np.float32) for s in shapes),
         tuple(rng.normal(0, 0.5, (1, s[1])).astype(np.float32) for s in shapes), 0.02,
         ).save(directory / "gate.npz")
    data = orjson.loads((directory / MANIFEST_NAME).read_bytes())
    write_manifest(directory, data["models"], None, None, directory / "gate.npz")
    return directory


def test_the_rows_a_gate_learns_from_are_what_the_service_gate_reads(
        gated_models: Path, sample_traces: list[Path]) -> None:
    """Replayed with a gate, each published prediction is the expert that gate chooses
    from the training rows' features: training and serving read the same thing."""
    traces = [read_trace(p) for p in sample_traces]
    rows = gate_rows(gated_models, traces)
    assert len(rows.actual) == sum(len(t) - 1 for t in traces)
    gate = Gate.load(gated_models / "gate.npz")
    chosen = choose(gate, rows.features)
    assert len(set(chosen.tolist())) == N_EXPERTS  # the check covers every expert
    expected = rows.experts[np.arange(len(chosen)), chosen]
    np.testing.assert_allclose(rows.published, np.nan_to_num(expected), rtol=1e-6)
    assert not np.isfinite(rows.experts[chosen != MODELS, MODELS]).all()  # warm-up rows too


def test_a_trained_gate_publishes_the_expert_that_hits() -> None:
    """Rows where the last value hits whenever its fast score is high and the models
    hit 60 % of the time otherwise: the gate learns to switch, and publishes more hits
    than either expert alone on rows it has not seen."""
    rng = np.random.default_rng(11)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, F)).astype(np.float32)
        x[:, GATE_FEATURES.index("models_absent")] = 0
        high = x[:, GATE_FEATURES.index("fast_score_last_value")] > 0.5
        y = np.column_stack([rng.random(n) < np.where(high, 0.3, 0.6), high, rng.random(n) < 0.2])
        return x, y.astype(np.float32)

    x, y = rows(20_000)
    gate = train_gate(x, y, seed=1, members=2, epochs=2)
    x, y = rows(5_000)
    chosen = choose(gate, x)
    published = y[np.arange(len(y)), chosen].mean()
    assert published > max(y.mean(axis=0)) + 0.1
    assert (chosen[x[:, GATE_FEATURES.index("fast_score_last_value")] > 1] == 1).mean() > 0.9
