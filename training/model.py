"""The LSTM models of the design: two stacked LSTMs, dropout, a dense head.

Outputs three numbers per window, all about the next sample's log-ratio to the window
scale (predictor.features): its 10th percentile (the reserve), a point prediction, and
its 90th percentile; the spread is the raw confidence score (predictor.manifest.OUTPUTS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from predictor.features import N_FEATURES
from predictor.manifest import OUTPUTS
from predictor.modes import WINDOW_STEPS_BY_NAME as STEPS


@dataclass(frozen=True)
class ModelConfig:
    mode: str
    window: int
    lstm_units: tuple[int, int]
    dropout: float
    learning_rate: float
    max_epochs: int


CONFIGS = {
    "datacenter": ModelConfig("datacenter", STEPS["datacenter"], (128, 64), 0.2, 1e-3, 30),
    "internet": ModelConfig("internet", STEPS["internet"], (256, 128), 0.3, 5e-4, 50),
}


class BandwidthLSTM(nn.Module):
    def __init__(
        self,
        lstm_units: tuple[int, int],
        dropout: float,
        n_features: int = N_FEATURES,
        n_outputs: int = len(OUTPUTS),
    ) -> None:
        super().__init__()
        first, second = lstm_units
        self.lstm1 = nn.LSTM(n_features, first, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.lstm2 = nn.LSTM(first, second, batch_first=True)
        self.drop2 = nn.Dropout(dropout)
        self.head = nn.Sequential(
            nn.Linear(second, 32), nn.ReLU(),
            nn.Linear(32, 16), nn.ReLU(),
            nn.Linear(16, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm1(x)
        h, _ = self.lstm2(self.drop1(h))
        return self.head(self.drop2(h[:, -1, :]))


def build_model(config: ModelConfig) -> BandwidthLSTM:
    return BandwidthLSTM(config.lstm_units, config.dropout)
