"""The one path from samples to predictions, shared by the service, the library API and
the backtest: window store -> mode detector -> forecaster -> per-link adaptation ->
allocation.

Callers feed rounds: a batch of samples for distinct links (`observe`), then predictions
for the links that accepted a sample (`predict`). A link that appears several times in
one consumer batch goes into successive rounds, so each event gets its own prediction
from exactly the samples up to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from xxhash import xxh3_128_hexdigest

from predictor.adaptation import MODELS, AdaptationRules, AdaptationState, adapt, learn, simple_experts
from predictor.allocation import DEFAULT_RTT_MS, Allocations, allocate_streams, kept_streams, stream_count
from predictor.baselines import last_present
from predictor.features import BANDWIDTH, JITTER, LATENCY, LOSS
from predictor.forecaster import MODEL, BatchResult, Forecaster
from predictor.linkstate import LinkState, StateChange
from predictor.modes import DATACENTER, HYBRID, INTERNET, UNDECIDED, WINDOW_STEPS, DetectorRules, mode_code

MODES = ("auto", "hybrid", "datacenter", "internet")


def window_length(mode: str) -> int:
    """Samples to keep per link: the longest window any model of the mode may need."""
    if mode == "datacenter":
        return WINDOW_STEPS[DATACENTER]
    return WINDOW_STEPS[INTERNET]


def models_for_mode(mode: str) -> tuple[str, ...]:
    """The model files a mode needs: its own, or both for hybrid and auto."""
    return (mode,) if mode in ("datacenter", "internet") else ("datacenter", "internet")


@dataclass
class Round:
    """Predictions for one round, aligned with `slots`, and what publishing them would
    change: nothing is written until the caller applies `change` (the live predictor
    does; a shadow one does not)."""

    slots: npt.NDArray[np.intp]
    ts: npt.NDArray[np.float64]
    result: BatchResult
    allocations: Allocations
    raw: np.ndarray  # the windows the predictions were made from (for ids)
    prior_streams: npt.NDArray[np.int64]  # the stream count each row started from
    #: what publishing these changes; for predictions made beside the live ones (shadow)
    #: what the adaptation learnt only, and None when that is nothing
    change: StateChange | None
    #: each row's link adaptation after it (published with it: linkstate.ADAPTATION_HEADER);
    #: None where the baseline served
    adaptation: AdaptationState | None = None


class Forecast(NamedTuple):
    """A forecast without allocations (LinkPredictor.forecast)."""

    published: BatchResult  # after the per-link adaptation
    forecaster: BatchResult  # the forecaster's own, before it
    change: StateChange | None  # what the adaptation learnt (None without one)


@dataclass
class WindowSnapshot:
    """Windows and per-link state captured for a later prediction, one row per event."""

    slots: npt.NDArray[np.intp]
    raw: np.ndarray
    counts: npt.NDArray[np.int64]
    modes: npt.NDArray[np.int8]  # undecided links as hybrid
    ts: npt.NDArray[np.float64]
    rounds: npt.NDArray[np.intp]  # the round each row was captured in

    def __len__(self) -> int:
        return len(self.slots)

    def take(self, rows: npt.NDArray[np.intp]) -> WindowSnapshot:
        """The given rows (distinct, in order); all of them without a copy."""
        if len(rows) == len(self):
            return self
        return WindowSnapshot(self.slots[rows], self.raw[rows], self.counts[rows], self.modes[rows],
                        self.ts[rows], self.rounds[rows])

    @staticmethod
    def concatenate(parts: Sequence[WindowSnapshot]) -> WindowSnapshot:
        if len(parts) == 1:
            return parts[0]
        columns = (np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(WindowSnapshot))
        return WindowSnapshot(*columns)


class LinkPredictor:
    """Windows in, predictions out. Predicting is pure: it reads the link state and
    returns the predictions with their state change; `apply` makes the change."""

    def __init__(
        self,
        forecaster: Forecaster,
        mode: str = "auto",
        max_links: int = 1_000_000,
        rules: DetectorRules = DetectorRules(),
        adaptation: AdaptationRules | None = AdaptationRules(),
    ) -> None:
        """adaptation: None publishes the forecaster's predictions as they are (what
        calibrating a model needs: its own outputs, not what a link made of them)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self.adaptation = adaptation
        self.forecaster = forecaster
        self.mode = mode
        self.store = LinkState(window_length(mode), max_links, _fixed_mode(mode), rules,
                               adaptation or AdaptationRules())
        self.tracker = self.store.tracker

    def swap_forecaster(self, forecaster: Forecaster) -> None:
        """Serve with other models from the next prediction on (hot reload)."""
        self.forecaster = forecaster

    def set_mode(self, mode: str) -> None:
        """Change the prediction mode at run time; links re-detect (auto) or take the mode."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if window_length(mode) > self.store.length:
            raise ValueError(f"windows hold {self.store.length} samples, {mode} needs {window_length(mode)}")
        self.mode = mode
        self.store.fix_mode(_fixed_mode(mode))

    def observe(
        self,
        link_ids: Sequence[str],
        ts: npt.NDArray[np.float64],
        values: np.ndarray,
        now: float = 0.0,
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Append one sample per link (ids distinct). Returns (slots, accepted mask)."""
        slots = self.store.slots(link_ids, now)
        return slots, self.store.observe(slots, ts, values, now)

    def observe_slots(
        self,
        slots: npt.NDArray[np.intp],
        ts: npt.NDArray[np.float64],
        values: np.ndarray,
        now: float = 0.0,
    ) -> npt.NDArray[np.bool_]:
        return self.store.observe(slots, ts, values, now)

    def capture(self, slots: npt.NDArray[np.intp], round_index: int = 0) -> WindowSnapshot:
        """What a prediction for these links needs, as of now: a batch captures each
        round right after observing it, then predicts all rounds in one forecaster call."""
        modes = self.store.column("mode")[slots]
        return WindowSnapshot(
            slots=slots,
            raw=self.store.windows(slots),
            counts=self.store.counts(slots),
            modes=np.where(modes == UNDECIDED, HYBRID, modes).astype(np.int8),
            ts=self.store.newest_ts(slots),
            rounds=np.full(len(slots), round_index, dtype=np.intp),
        )

    def predict(
        self, slots: npt.NDArray[np.intp], use_models: bool = True
    ) -> Round:
        """Predictions and allocations for the given links from their current windows."""
        return self.predict_snapshot(self.capture(slots), use_models)

    def apply(self, batch: Round) -> None:
        """Publishing these predictions: their stream counts and what their adaptation
        learnt become the links' own."""
        if batch.change is not None:
            self.store.apply(batch.change)

    def predict_snapshot(self, captured: WindowSnapshot, use_models: bool = True,
                         prior_streams: npt.NDArray[np.int64] | None = None) -> Round:
        """Predictions and allocations for captured windows, all rounds in one forecaster
        call and one allocation; only the stream counts go round by round, since each
        keeps the one the link was sent before (a batch of one chatty link has a round
        per event: a whole allocation per round took 40 % of such a batch).

        The stream counts start from the links' own, or, given prior_streams (one per
        row), from those: a shadow predictor starts each row from what the live one
        sent before it, and applying its predictions changes only what its own
        adaptation learnt (the live baseline reads none of that)."""
        raw = captured.raw
        _, result, adapted, learnt = self._forecast(captured, use_models)
        rtt = last_present(raw[:, :, LATENCY])
        rtt = np.where(np.isnan(rtt), DEFAULT_RTT_MS[captured.modes], rtt)
        loss, jitter = last_present(raw[:, :, LOSS]), last_present(raw[:, :, JITTER])
        wanted = stream_count(result.predicted_mbps, rtt, loss)
        change: StateChange | None
        if prior_streams is None:
            prior_streams, streams, kept = self._streams_by_round(captured, wanted, result.confidence)
            change = StateChange(kept.slots, kept.streams, learnt.adaptation if learnt else None)
        else:
            streams = kept_streams(wanted, result.confidence, prior_streams)
            change = StateChange(learnt.slots, None, learnt.adaptation) if learnt else None
        allocations = allocate_streams(result.predicted_mbps, result.confidence, rtt, loss, jitter, streams)
        return Round(captured.slots, captured.ts, result, allocations, raw, prior_streams, change, adapted)

    def _forecast(self, captured: WindowSnapshot, use_models: bool,
                  ) -> tuple[BatchResult, BatchResult, AdaptationState | None, StateChange | None]:
        """The forecaster's predictions, and the same adapted per link where the models
        serve: the result as published, each row's adaptation state after it, and the
        links'."""
        forecast = self.forecaster.predict(captured.raw, captured.counts, captured.modes, use_models)
        if not use_models or self.adaptation is None:  # the baseline: as it is, nothing learnt
            return forecast, forecast, None, None
        return (forecast, *self._adapt_by_round(captured, forecast))

    def _adapt_by_round(self, captured: WindowSnapshot, forecast: BatchResult,
                        ) -> tuple[BatchResult, AdaptationState, StateChange]:
        """Round by round, as each row's link state stands after its previous row: learn
        from the sample just observed, then publish (predictor/adaptation.py)."""
        rules = self.store.adaptation_rules
        bandwidth = captured.raw[:, :, BANDWIDTH]
        experts = simple_experts(bandwidth)
        experts[:, MODELS] = np.where(forecast.source == MODEL, forecast.predicted_mbps, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = forecast.reserve_mbps / forecast.predicted_mbps
        actual = bandwidth[:, -1]
        links, at = np.unique(captured.slots, return_inverse=True)
        state = self.store.adaptation(links)
        n = len(captured)
        rows_after = state.take(at)  # each row's link before it, overwritten round by round
        predicted, reserve, blend = np.empty(n), np.empty(n), np.empty(n)
        for rows in _by_round(captured.rounds):
            ts = captured.ts[rows]
            learnt = learn(state.take(at[rows]), actual[rows], ts, rules)
            out, after = adapt(learnt, experts[rows], ratio[rows], forecast.confidence[rows], ts, rules,
                               self.forecaster.adaptation_gate)
            state.put(at[rows], after)
            rows_after.put(rows, after)
            predicted[rows], reserve[rows], blend[rows] = out.predicted, out.reserve, out.blend
        calibration = self.forecaster.adapted_calibration
        score = 1.0 - blend  # what the calibration maps (a higher score, a lower hit rate)
        confidence = np.asarray(calibration(score), dtype=np.float64) if calibration is not None else blend
        result = replace(forecast, predicted_mbps=predicted, reserve_mbps=reserve, score=score,
                         confidence=confidence)
        return result, rows_after, StateChange(links, None, state)

    def _streams_by_round(
        self, captured: WindowSnapshot, wanted: npt.NDArray[np.int64], confidence: npt.NDArray[np.float64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], StateChange]:
        """Each row's stream count from the one its link had before it (the link's own
        for its first row, its previous row's after), and the counts the links end with."""
        links, at = np.unique(captured.slots, return_inverse=True)
        sent = self.store.column("streams")[links]  # a copy: the store is not written
        prior = np.empty_like(wanted)
        streams = np.empty_like(wanted)
        for rows in _by_round(captured.rounds):
            prior[rows] = sent[at[rows]]
            streams[rows] = sent[at[rows]] = kept_streams(wanted[rows], confidence[rows], prior[rows])
        return prior, streams, StateChange(links, sent)

    def forecast(self, slots: npt.NDArray[np.intp]) -> Forecast:
        """The predictions as published, without allocations, the forecaster's own
        beside them, and what publishing them teaches the links (for `store.apply`):
        what the backtest and the model card score."""
        forecast, result, _, change = self._forecast(self.capture(slots), use_models=True)
        return Forecast(result, forecast, change)

    def prediction_ids(self, batch: Round, versions: Sequence[str] | None = None,
                       shadow: bool = False) -> list[str]:
        """Ids that identify content: a hash of everything a prediction's payload is made
        from (link, window values and newest ts, served mode, the published model version,
        whether it is a shadow prediction) and of the parts that also depend on the
        link's past: its stream count, and the prediction, reserve and confidence its
        adaptation published. The same id then always means the same payload,
        and a re-sent prediction repeats its id exactly when it repeats its payload.
        versions: as published (default: the forecaster's). XXH3-128: a 128-bit fingerprint
        for de-duplication, not a secret, at a tenth of BLAKE2b's cost on a window (~0.2
        against ~2.5 us per datacenter window, docs/BENCHMARKS.md)."""
        n = len(batch.slots)
        raw = np.ascontiguousarray(batch.raw).tobytes()
        row = len(raw) // n if n else 0
        # ts, mode, streams, and what the link's adaptation made of the window: exact in float64
        state = np.empty((n, HEAD), dtype=np.float64)
        state[:, 0] = batch.ts
        state[:, 1] = batch.result.mode
        state[:, 2] = batch.allocations.streams
        state[:, 3] = batch.result.predicted_mbps
        state[:, 4] = batch.result.reserve_mbps
        state[:, 5] = batch.result.confidence
        head = state.tobytes()
        size = 8 * HEAD
        role = b"\x01" if shadow else b"\x00"
        link_of = self.store.link_id
        versions = batch.result.version if versions is None else versions
        return [
            xxh3_128_hexdigest(b"".join((str(link_of(slot)).encode(), b"\x00", versions[i].encode(), role,
                                         head[size * i:size * (i + 1)], raw[row * i:row * (i + 1)])))
            for i, slot in enumerate(batch.slots.tolist())
        ]


#: the numbers beside the window that a prediction id hashes (prediction_ids)
HEAD = 6


def _fixed_mode(mode: str) -> int | None:
    return None if mode == "auto" else mode_code(mode)


def _by_round(rounds: npt.NDArray[np.intp]) -> list[npt.NDArray[np.intp]]:
    """Row indices of each round, in round order (one slice when there is one round)."""
    if len(rounds) == 0 or rounds[0] == rounds[-1]:
        return [np.arange(len(rounds))]
    order = np.argsort(rounds, kind="stable")
    starts = np.flatnonzero(np.diff(rounds[order])) + 1
    return np.split(order, starts)
