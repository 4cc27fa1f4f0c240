"""The adaptation's gate (predictor/gate.py), fitted on the validation groups walk-forward.

The validation traces are replayed through the service's link predictor in auto mode,
as the adapted calibration is; each row gives the gate's features as the link stood
when it published, and whether each expert's prediction then hit the next sample. The
features do not depend on which expert was chosen (each expert is scored on every
sample), so one replay is the whole training set, whatever gate, if any, served it.

Each member: two hidden layers of 32, binary cross-entropy on the three hits, Adam, a
few epochs; members differ only in their seed. Chosen on the validation groups split
in two by trace (docs/ADAPTATION.md); a larger network, more epochs or more features
(the window's variability, the previous sample's hits) did no better there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.adaptation import MODELS, N_EXPERTS, select
from predictor.confidence import hits
from predictor.forecaster import Forecaster
from predictor.gate import GATE_FEATURES, Gate, gate_features
from predictor.link_predictor import Forecast, LinkPredictor
from predictor.runtime import load_models
from training.backtest import replay_traces
from training.traces import Trace

#: the gate's file in a models directory, beside the models
GATE_FILE = "adaptation-gate.npz"
MEMBERS = 5
HIDDEN = 32
EPOCHS = 6
BATCH = 1024
LEARNING_RATE = 3e-3
#: the models' lead in hit probability before another expert publishes (the new link's
#: trust in the models); 0.01 and 0.02 were level on the validation halves, 0.04 lower
MARGIN = 0.02


@dataclass
class GateRows:
    """Every scored row of a replay: what the gate read, what each expert predicted, the
    sample that followed, and what was published."""

    features: np.ndarray  # (m, GATE_FEATURES)
    experts: np.ndarray  # (m, N_EXPERTS), NaN where one could not serve
    actual: np.ndarray  # (m,)
    published: np.ndarray  # (m,)

    def hits(self) -> np.ndarray:
        return hits(self.experts, self.actual[:, None])


def gate_rows(models_dir: Path, traces: list[Trace]) -> GateRows:
    """The traces replayed in auto mode through the models in `models_dir` (and their gate,
    if they have one: it changes what is published, not what the gate reads)."""
    models = load_models(models_dir, ("datacenter", "internet"), allow_fallback=True)
    served = tuple(models.models)
    predictor = LinkPredictor(Forecaster(models), mode="auto" if len(served) == 2 else served[0])
    total = sum(len(t) for t in traces)
    features = np.zeros((total, len(GATE_FEATURES)), dtype=np.float32)
    pending = np.full((total, N_EXPERTS), np.nan, dtype=np.float32)

    def keep(rows: np.ndarray, slots: np.ndarray, forecast: Forecast) -> None:
        assert forecast.change is not None and forecast.change.adaptation is not None
        state = forecast.change.adaptation.take(np.searchsorted(forecast.change.slots, slots))
        own = forecast.forecaster
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = own.reserve_mbps / own.predicted_mbps
        features[rows] = gate_features(state.scores, state.fast_scores, state.samples, state.pending,
                                       ratio, own.confidence)
        pending[rows] = state.pending

    replay = replay_traces(traces, predictor, on_round=keep)
    rows, actual = replay.scored()
    return GateRows(features[rows], pending[rows], actual, replay.predicted[rows])


def fit_gate(models_dir: Path, traces: list[Trace], seed: int) -> tuple[Gate, dict[str, float]]:
    """The gate for the models in `models_dir`, and what it was fitted on."""
    rows = gate_rows(models_dir, traces)
    x, y = rows.features, rows.hits()
    gate = train_gate(x, y.astype(np.float32), seed)
    chosen = choose(gate, x)
    published = y[np.arange(len(y)), chosen]
    return gate, {"gate_rows": float(len(y)), "gate_validation_hit_rate": float(published.mean()),
                  "last_value_validation_hit_rate": float(y[:, 1].mean())}


def choose(gate: Gate, x: np.ndarray) -> np.ndarray:
    """The expert the gate publishes for each row, as the adaptation chooses."""
    usable = np.ones((len(x), N_EXPERTS), dtype=bool)
    usable[:, MODELS] = x[:, GATE_FEATURES.index("models_absent")] == 0
    return select(gate.hit_probability(x), usable, gate.margin)


def train_gate(x: np.ndarray, y: np.ndarray, seed: int, members: int = MEMBERS,
               epochs: int = EPOCHS) -> Gate:
    """An ensemble of `members` networks from seeds seed, seed + 1, ...; deterministic on CPU."""
    import torch

    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    inputs = torch.from_numpy((x - mean) / scale)
    targets = torch.from_numpy(y)
    layers: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for member in range(members):
        torch.manual_seed(seed + member)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(),
                                  torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                                  torch.nn.Linear(HIDDEN, y.shape[1]))
        optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        generator = torch.Generator().manual_seed(seed + member)
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(order), BATCH):
                batch = order[start:start + BATCH]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(inputs[batch]),
                                                                            targets[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        layers.append([(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linear])
    weights = tuple(np.stack([member[i][0] for member in layers]).astype(np.float32) for i in range(3))
    biases = tuple(np.stack([member[i][1] for member in layers]).astype(np.float32) for i in range(3))
    return Gate(mean.astype(np.float32), scale.astype(np.float32), weights, biases, MARGIN)

