"""The training objective, on log-ratios to the window scale (predictor.features).

Pinball loss for the 10th and 90th percentiles, and for the point output the +/-20 %
hit itself, made smooth: a prediction p hits an actual a when 0.8 a < p < 1.2 a, so
d = log p - log a must lie in log(0.8)..log(1.2), and the loss is 1 minus a box over that
window with sigmoid edges 0.02 wide, plus a small |d - centre| term so far-off points
still get a gradient. The window is not symmetric about the actual (its centre is
log(0.96) / 2, 2 % under it). The kernel this replaced, 1 - exp(-d^2 / 2 sigma^2) with
sigma 0.1 centred on the actual, sought the mode of the next sample rather than the
densest 40 %-wide window, and 2 % high. Three epochs of fine-tuning on each loss, from the
same model, ranked walk-forward on the validation groups (docs/ADAPTATION.md): the box,
then the kernel moved to the window's centre, then the kernel as it was.
"""

from __future__ import annotations

import math

import torch

from predictor.confidence import HIT_TOLERANCE

#: where a point hits, in log-ratio to the actual; its centre; the width of its soft edges
HIT_WINDOW = (math.log(1.0 - HIT_TOLERANCE), math.log(1.0 + HIT_TOLERANCE))
HIT_CENTRE = sum(HIT_WINDOW) / 2
HIT_EDGE = 0.02


def loss_terms(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    q10, point, q90 = out[:, 0], out[:, 1], out[:, 2]
    pinball = _pinball(q10, y, 0.1) + _pinball(q90, y, 0.9)
    d = point - y
    low, high = HIT_WINDOW
    hit = torch.sigmoid((d - low) / HIT_EDGE) - torch.sigmoid((d - high) / HIT_EDGE)
    return pinball + (1.0 - hit) + 0.1 * (d - HIT_CENTRE).abs()


def _pinball(q: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    diff = y - q
    return torch.maximum(tau * diff, (tau - 1) * diff)
