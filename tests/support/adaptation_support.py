"""The adaptation state of links never seen, as the per-link state starts them."""

from __future__ import annotations

import numpy as np

from predictor.adaptation import AdaptationState
from predictor.linkstate import LinkState


def fresh_state(n: int) -> AdaptationState:
    store = LinkState(length=60, max_links=n)
    return store.adaptation(np.array([store.slot(f"link-{k}") for k in range(n)]))
