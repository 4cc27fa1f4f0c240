"""The one path from samples to predictions, shared by the service, the library API and
the backtest: window store -> mode detector -> engine -> allocation.

Callers feed rounds: a batch of samples for distinct links (`observe`), then predictions
for the links that accepted a sample (`predict`). A link that appears several times in
one consumer batch goes into successive rounds, so each event gets its own prediction
from exactly the samples up to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from predictor.allocation import DEFAULT_RTT_MS, Allocations, allocate
from predictor.baselines import last_present
from predictor.engine import BatchResult, Engine
from predictor.features import JITTER, LATENCY, LOSS
from predictor.modes import (
    DETECTOR_SAMPLES,
    HYBRID,
    INTERNET,
    UNDECIDED,
    WINDOW_STEPS,
    DetectorRules,
    ModeTracker,
    mode_code,
)
from predictor.window import WindowStore

MODES = ("auto", "hybrid", "datacenter", "internet")


def window_length(mode: str) -> int:
    """Samples to keep per link: the longest window any model of the mode may need."""
    if mode == "datacenter":
        return WINDOW_STEPS[0]
    return WINDOW_STEPS[INTERNET]


def models_for_mode(mode: str) -> tuple[str, ...]:
    """The model files a mode needs: its own, or both for hybrid and auto."""
    return (mode,) if mode in ("datacenter", "internet") else ("datacenter", "internet")


@dataclass
class Round:
    """Predictions for one round, aligned with `slots`."""

    slots: npt.NDArray[np.intp]
    ts: npt.NDArray[np.float64]
    result: BatchResult
    allocations: Allocations
    raw: np.ndarray  # the windows the predictions were made from (for ids)


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        mode: str = "auto",
        max_links: int = 1_000_000,
        rules: DetectorRules = DetectorRules(),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self.engine = engine
        self.mode = mode
        self.store = WindowStore(length=window_length(mode), max_links=max_links)
        self.tracker = ModeTracker(rules)
        self._fixed_mode = None if mode == "auto" else mode_code(mode)
        self.store.add_column("mode", np.int8, UNDECIDED if mode == "auto" else self._fixed_mode)
        self.store.add_column("candidate", np.int8, UNDECIDED)
        self.store.add_column("streak", np.int16, 0)
        self.store.add_column("streams", np.int64, 0)

    def swap_engine(self, engine: Engine) -> None:
        """Serve with other models from the next prediction on (hot reload)."""
        self.engine = engine

    def set_mode(self, mode: str) -> None:
        """Change the prediction mode at run time; links re-detect (auto) or take the mode."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if window_length(mode) > self.store.length:
            raise ValueError(f"windows hold {self.store.length} samples, {mode} needs {window_length(mode)}")
        self.mode = mode
        self._fixed_mode = None if mode == "auto" else mode_code(mode)
        self.store.add_column("mode", np.int8, UNDECIDED if mode == "auto" else self._fixed_mode)
        self.store.add_column("candidate", np.int8, UNDECIDED)
        self.store.add_column("streak", np.int16, 0)

    def observe(
        self,
        link_ids: Sequence[str],
        ts: npt.NDArray[np.float64],
        values: np.ndarray,
        now: float = 0.0,
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Append one sample per link (ids distinct). Returns (slots, accepted mask)."""
        slots = self.store.slots(link_ids, now)
        return slots, self.observe_slots(slots, ts, values, now)

    def observe_slots(
        self,
        slots: npt.NDArray[np.intp],
        ts: npt.NDArray[np.float64],
        values: np.ndarray,
        now: float = 0.0,
    ) -> npt.NDArray[np.bool_]:
        accepted = self.store.append(slots, ts, values, now)
        if self._fixed_mode is None:
            self._update_modes(slots[accepted])
        return accepted

    def _update_modes(self, slots: npt.NDArray[np.intp]) -> None:
        if slots.size == 0:
            return
        mode, candidate, streak = (self.store.column(c) for c in ("mode", "candidate", "streak"))
        m, c, s = mode[slots], candidate[slots], streak[slots]
        self.tracker.update(self.store.windows(slots, DETECTOR_SAMPLES), m, c, s)
        mode[slots], candidate[slots], streak[slots] = m, c, s

    def predict(
        self, slots: npt.NDArray[np.intp], use_models: bool = True
    ) -> Round:
        """Predictions and allocations for the given links from their current windows."""
        raw, modes, result = self._forecast(slots, use_models)
        rtt = last_present(raw[:, :, LATENCY])
        rtt = np.where(np.isnan(rtt), DEFAULT_RTT_MS[modes], rtt)
        streams = self.store.column("streams")
        allocations = allocate(
            result.predicted_mbps,
            result.confidence,
            rtt,
            last_present(raw[:, :, LOSS]),
            last_present(raw[:, :, JITTER]),
            previous_streams=streams[slots],
        )
        streams[slots] = allocations.streams
        return Round(slots, self.store.newest_ts(slots), result, allocations, raw)

    def forecast(self, slots: npt.NDArray[np.intp]) -> BatchResult:
        """The predictions alone, without allocations: what the backtest scores."""
        return self._forecast(slots, True)[2]

    def _forecast(
        self, slots: npt.NDArray[np.intp], use_models: bool
    ) -> tuple[np.ndarray, npt.NDArray[np.int8], BatchResult]:
        raw = self.store.windows(slots)
        modes = self.store.column("mode")[slots]
        modes = np.where(modes == UNDECIDED, HYBRID, modes).astype(np.int8)
        return raw, modes, self.engine.predict(raw, self.store.counts(slots), modes, use_models)

    def prediction_ids(self, batch: Round) -> list[str]:
        """Deterministic ids: same link, same window (values and newest ts), same model
        version -> same id, so a re-sent prediction repeats its id."""
        n = len(batch.slots)
        raw = np.ascontiguousarray(batch.raw).tobytes()
        ts = np.ascontiguousarray(batch.ts, dtype=np.float64).tobytes()
        row = len(raw) // n if n else 0
        link_of, versions, blake2b = self.store.link_id, batch.result.version, hashlib.blake2b
        return [
            blake2b(b"".join((str(link_of(slot)).encode(), b"\x00", versions[i].encode(), b"\x00",
                              ts[8 * i:8 * i + 8], raw[row * i:row * (i + 1)])), digest_size=16).hexdigest()
            for i, slot in enumerate(batch.slots.tolist())
        ]
