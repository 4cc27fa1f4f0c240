"""Scoring what was published: each link's previous prediction against the sample that
arrives next, per mode and predictor (hit rate within +/-20 %, absolute percentage
error), the last value's hit rate on the same events as the models' (what a link would
have got from the simplest predictor), and drift of the models' error (Page-Hinkley,
per mode)."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from consumer.drift import PageHinkley
from consumer.metrics import Metrics
from consumer.routing import Made
from predictor.confidence import HIT_TOLERANCE
from predictor.features import BANDWIDTH
from predictor.link_predictor import WindowSnapshot
from predictor.linkstate import LinkState
from predictor.modes import MODE_NAMES
from predictor.rollout import MODELS, PREDICTORS

log = logging.getLogger(__name__)


class Scoring:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.drift = {mode: PageHinkley() for mode in MODE_NAMES}

    def score(self, store: LinkState, batch: WindowSnapshot, actual: np.ndarray, made: list[Made]) -> None:
        """Score each link's previous prediction now that its next sample has arrived: the
        one kept from an earlier batch, or the one made for the round before in this one.
        Afterwards each link's latest prediction is kept for its next sample."""
        n = len(batch)
        previous, last = previous_rows(batch.slots, batch.rounds)
        first = previous < 0
        mode_now = np.zeros(n, dtype=np.int8)  # the link's mode, whichever predictor served it
        for _, _, rows, predicted in made:
            mode_now[rows] = predicted.result.mode
        pending_mode = store.column("pending_mode")
        modes = np.where(first, pending_mode[batch.slots], mode_now[previous])
        for predictor in PREDICTORS:
            now_predicted = np.full(n, np.nan, dtype=np.float32)
            for name, _, rows, predicted in made:
                if name == predictor:
                    now_predicted[rows] = predicted.result.predicted_mbps
            pending = store.column(f"pending_{predictor}")
            before = np.where(first, pending[batch.slots], now_predicted[previous])
            store.keep_pending(predictor, batch.slots[last], now_predicted[last])
            scored = ~np.isnan(before) & (actual > 0)
            if not scored.any():
                continue
            error = np.abs(before[scored] - actual[scored]) / actual[scored]
            if predictor == MODELS:  # the sample before this one, as a prediction of it
                last_value = batch.raw[scored, -2, BANDWIDTH]
                last_hit = np.abs(last_value - actual[scored]) < HIT_TOLERANCE * actual[scored]
            for code in np.unique(modes[scored]).tolist():
                mode = MODE_NAMES[code]
                sel = modes[scored] == code
                self.metrics.scored.labels(mode, predictor).inc(int(sel.sum()))
                self.metrics.hits.labels(mode, predictor).inc(int((error[sel] < HIT_TOLERANCE).sum()))
                self.metrics.abs_pct_error.observe((mode, predictor), error[sel])
                if predictor == MODELS:
                    self.metrics.last_value_hits.labels(mode).inc(int(last_hit[sel].sum()))
                    self._update_drift(mode, error[sel])
        store.keep_pending_mode(batch.slots[last], mode_now[last])

    def _update_drift(self, mode: str, errors: np.ndarray) -> None:
        detector = self.drift[mode]
        was = detector.drifting
        now = detector.update(errors)
        self.metrics.drift.labels(mode).set(1 if now else 0)
        if now and not was:
            log.warning("drift: %s prediction error rose and stays high (baseline mean APE %.3f); "
                        "check the links or retrain", mode, detector.baseline)
        elif was and not now:
            log.warning("drift: %s prediction error is back to its earlier level", mode)


def previous_rows(slots: npt.NDArray[np.intp], rounds: npt.NDArray[np.intp],
                  ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """For each row, the row of the same link in the round before (-1 for its first row
    in the batch), and whether the row is the link's last in the batch."""
    order = np.lexsort((rounds, slots))  # by link, then round
    same = slots[order][1:] == slots[order][:-1]
    previous = np.full(len(slots), -1, dtype=np.intp)
    previous[order[1:][same]] = order[:-1][same]
    last = np.ones(len(slots), dtype=bool)
    last[order[:-1][same]] = False
    return previous, last
