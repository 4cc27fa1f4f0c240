"""Which predictor serves which link: the feature flags' rollout, kill switch and shadow
mode. Only what a link is sent live changes what the live predictor reads: the live
predictions' state changes are applied, a shadow prediction starts each row from the
stream count the live one had before it and keeps only what the models' own adaptation
learnt (which the live baseline never reads)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from consumer.flags import Flags, rollout_bucket
from predictor.link_predictor import LinkPredictor, Round, WindowSnapshot
from predictor.rollout import BASELINE, MODELS


class Made(NamedTuple):
    """One predictor's predictions for some rows of a batch."""

    predictor: str  # MODELS or BASELINE
    shadow: bool
    rows: npt.NDArray[np.intp]  # rows of the batch
    predicted: Round


def route(link_predictor: LinkPredictor, flags: Flags, batch: WindowSnapshot) -> list[Made]:
    """Predict each row of the batch with the predictor the flags give its link (live),
    applying the live state changes, and in shadow mode the models beside the baseline
    (shadow)."""
    if flags.shadow or flags.kill_switch:
        models = np.zeros(len(batch), dtype=bool)
    else:
        models = link_predictor.store.buckets(batch.slots, rollout_bucket) < flags.rollout_percent
    made: list[Made] = []
    for predictor, rows in ((MODELS, np.flatnonzero(models)), (BASELINE, np.flatnonzero(~models))):
        if rows.size:
            live = link_predictor.predict_snapshot(batch.take(rows), use_models=predictor == MODELS)
            link_predictor.apply(live)  # only what is published live changes a link's state
            made.append(Made(predictor, False, rows, live))
    if flags.shadow:  # the models beside the baseline, each row from the state the baseline had before it
        (_, _, every, baseline), = made
        shadow = link_predictor.predict_snapshot(batch, prior_streams=baseline.prior_streams)
        link_predictor.apply(shadow)  # what the models learn; the baseline reads none of it
        made.append(Made(MODELS, True, every, shadow))
    return made
