"""The training objective: the point's loss is the +/-20 % hit, made smooth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.loss import loss_terms


def test_the_point_loss_is_the_hit_window_made_smooth() -> None:
    # p hits a when 0.8 a < p < 1.2 a: in log-ratio to a, log 0.8 .. log 1.2, centred 2 % low
    y = torch.full((2001,), 0.3)
    d = torch.linspace(-0.5, 0.5, 2001)
    out = torch.stack([y - 1.0, y + d, y + 1.0], dim=1)  # the quantiles' terms the same on every row
    loss = loss_terms(out, y)
    at = {round(float(k), 4): float(v) for k, v in zip(d, loss, strict=True)}
    assert float(d[int(torch.argmin(loss))]) == pytest.approx(np.log(0.96) / 2, abs=1e-3)
    # inside the window nearly a hit, outside it nearly a miss, on either side
    assert at[0.1] - at[-0.02] < 0.05 and at[-0.3] - at[-0.02] > 0.9 and at[0.3] - at[-0.02] > 0.9
    edges = loss_terms(torch.tensor([[-0.7, 0.3 + np.log(0.8), 1.3], [-0.7, 0.3 + np.log(1.2), 1.3]]),
                       torch.tensor([0.3, 0.3]))
    assert float(edges[0]) == pytest.approx(float(edges[1]), rel=1e-4)
