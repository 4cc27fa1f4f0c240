"""Which predictor serves which link: the feature flags' rollout, kill switch and shadow
mode. Only what a link is sent live changes its state: the live predictions' state
changes are applied, a shadow prediction starts each row from the state the live one
had before it and changes nothing."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from consumer.flags import Flags, rollout_bucket
from predictor.pipeline import Captured, Pipeline, Round


class Made(NamedTuple):
    """One predictor's predictions for some rows of a batch."""

    predictor: str  # "v3" (the models) or "v1" (the baseline)
    shadow: bool
    rows: npt.NDArray[np.intp]  # rows of the batch
    predicted: Round


def route(pipeline: Pipeline, flags: Flags, batch: Captured) -> list[Made]:
    """Predict each row of the batch with the predictor the flags give its link (live),
    applying the live state changes, and in shadow mode v3 beside v1 (shadow)."""
    if flags.shadow or flags.kill_switch:
        v3 = np.zeros(len(batch), dtype=bool)
    else:
        v3 = pipeline.store.buckets(batch.slots, rollout_bucket) < flags.rollout_percent
    made: list[Made] = []
    for predictor, rows in (("v3", np.flatnonzero(v3)), ("v1", np.flatnonzero(~v3))):
        if rows.size:
            live = pipeline.predict_captured(batch.take(rows), use_models=predictor == "v3")
            pipeline.apply(live)  # only what is published live changes a link's state
            made.append(Made(predictor, False, rows, live))
    if flags.shadow:  # v3 beside v1, each row from the state v1 had before it
        (_, _, every, v1), = made
        made.append(Made("v3", True, every, pipeline.predict_captured(batch, prior_streams=v1.prior_streams)))
    return made
