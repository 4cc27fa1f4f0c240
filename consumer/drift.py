"""Page-Hinkley test on the online error: flags a sustained rise, not a single bad sample.

While armed, m_t accumulates (x_t - mean_t - delta) and the detector fires when m_t rises
more than `threshold` above its running minimum. Once fired it stays flagged until the
recent error (an exponential average) is back within `delta` of the level before the
change; then it re-arms from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ERROR_CAP = 5.0  # one absurd sample (actual near 0) must not dominate the averages


@dataclass
class PageHinkley:
    delta: float = 0.05  # tolerated rise in mean absolute percentage error
    threshold: float = 50.0
    min_samples: int = 500
    recovery_alpha: float = 0.01
    n: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0
    drifting: bool = False
    baseline: float = 0.0
    recent: float = 0.0

    def update(self, errors: np.ndarray) -> bool:
        """Feed a batch of errors (|pred - actual| / actual); True while drifting."""
        for x in np.minimum(errors, ERROR_CAP).tolist():
            if self.drifting:
                self.recent += self.recovery_alpha * (x - self.recent)
                if self.recent < self.baseline + self.delta:
                    self._rearm()
                continue
            self.n += 1
            self.mean += (x - self.mean) / self.n
            self.cumulative += x - self.mean - self.delta
            self.minimum = min(self.minimum, self.cumulative)
            if self.n >= self.min_samples and self.cumulative - self.minimum > self.threshold:
                self.drifting, self.baseline, self.recent = True, self.mean, x
        return self.drifting

    def _rearm(self) -> None:
        self.drifting = False
        self.n, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0
