"""Everything kept per link, with one owner.

A link's window, its mode detector, the stream count it was last sent, its rollout
bucket and its placement all live here, as columns beside the window in preallocated
arrays (one row per link). Other modules read the columns (read-only views) and change
them only through the transitions below, so what a link's next prediction depends on
has one place to look and one place to rebuild:

- `observe`: a new sample moves the window and the mode detector;
- `apply`: a published prediction's stream count and adaptation state (what the link's
  own errors taught: predictor/adaptation.py) become the link's (a prediction itself
  only returns its change: predictor.link_predictor);
- `place`, `keep_pending`: where the link was read from, and its latest predictions
  waiting for the next sample to score them (the service's bookkeeping);
- `restore`: after a restart or a rebalance, the windows and detectors come back by
  replaying the input through `observe`, and the stream counts, pending predictions and
  adaptation state from the prediction the link was sent for its newest sample (the
  adaptation state travels in that record's header, ADAPTATION_HEADER;
  docs/RELIABILITY.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from predictor.adaptation import N_EXPERTS, AdaptationRules, AdaptationState
from predictor.modes import DETECTOR_SAMPLES, UNDECIDED, DetectorRules, ModeTracker
from predictor.rollout import PREDICTORS
from predictor.window import WindowStore


@dataclass(frozen=True)
class Column:
    dtype: npt.DTypeLike
    fill: object
    why: str
    width: int = 0  # values per link (0: one)


#: every per-link column, its type, its value for a new link, and what it is for
LINK_COLUMNS: dict[str, Column] = {
    "mode": Column(np.int8, UNDECIDED, "the mode detector's current mode"),
    "candidate": Column(np.int8, UNDECIDED, "the mode the detector sees coming"),
    "streak": Column(np.int16, 0, "samples the candidate has held"),
    "streams": Column(np.int64, 0, "the stream count last published live (0: none yet)"),
    "bucket": Column(np.int8, -1, "rollout bucket 0..99 (-1: not computed yet)"),
    "partition": Column(np.int32, -1, "the input partition the link is read from"),
    "out_partition": Column(np.int32, -1, "the output partition its key maps to (-1: not yet)"),
    **{f"pending_{predictor}": Column(np.float32, np.nan, f"{predictor}'s latest prediction, scored at "
                                      "the next sample") for predictor in PREDICTORS},
    "pending_mode": Column(np.int8, 0, "the mode that latest prediction was made in"),
    # the adaptation's (predictor/adaptation.py), in AdaptationState's order
    "expert_scores": Column(np.float32, 0.0, "each expert's decayed hits on the link", N_EXPERTS),
    "expert_fast_scores": Column(np.float32, 0.0, "the same, with a short memory", N_EXPERTS),
    "expert_samples": Column(np.float32, 0.0, "decayed count of the samples they were scored on"),
    "expert_pending": Column(np.float32, np.nan, "each expert's latest prediction", N_EXPERTS),
    "expert_choice": Column(np.int8, -1, "the expert published last (-1: none yet)"),
    "reserve_offset": Column(np.float32, 0.0, "the reserve's learnt ratio offset"),
    "reserve_pending": Column(np.float32, np.nan, "the reserve published last"),
    "hit_rate": Column(np.float32, np.nan, "decayed hit rate of what the link was published"),
    "pending_ts": Column(np.float64, -np.inf, "the newest sample's time at the latest prediction"),
}
#: the adaptation's columns, in AdaptationState's field order
ADAPTATION_COLUMNS = ("expert_scores", "expert_fast_scores", "expert_samples", "expert_pending",
                      "expert_choice", "reserve_offset", "reserve_pending", "hit_rate", "pending_ts")
#: the header of a published prediction that carries its link's adaptation state
ADAPTATION_HEADER = "pba.adaptation"


#: the mode detector's columns, reset together when the mode changes
_DETECTOR_COLUMNS = ("mode", "candidate", "streak")


@dataclass(frozen=True)
class StateChange:
    """What publishing a prediction changes for its links (one entry per link, the last
    of its rows in the batch): the stream count each was sent last, and what the
    adaptation learnt."""

    slots: npt.NDArray[np.intp]
    #: None: unchanged (predicted beside the live predictor, or without allocations)
    streams: npt.NDArray[np.int64] | None
    adaptation: AdaptationState | None = None  # None: the baseline served, nothing learnt


@dataclass(frozen=True)
class Sent:
    """A prediction a link was sent, as read back from the predictions topic."""

    link_id: str
    ts: float  # of the newest sample it was made from
    predictor: str  # one of PREDICTORS
    shadow: bool
    streams: int
    predicted_mbps: float
    mode: int
    adaptation: bytes | None = None  # the ADAPTATION_HEADER, when the models served


class LinkState(WindowStore):
    """The windows of WindowStore and every other per-link column (LINK_COLUMNS)."""

    def __init__(self, length: int, max_links: int = 1_000_000, fixed_mode: int | None = None,
                 rules: DetectorRules = DetectorRules(),
                 adaptation: AdaptationRules = AdaptationRules()) -> None:
        super().__init__(length=length, max_links=max_links)
        self.tracker = ModeTracker(rules)
        self.adaptation_rules = adaptation
        for name, column in LINK_COLUMNS.items():
            if name not in _DETECTOR_COLUMNS:
                self.add_column(name, column.dtype, column.fill, column.width)
        # a new link trusts the models: their head start (AdaptationRules.prior)
        self.add_column("expert_scores", np.float32, _head_start(adaptation), N_EXPERTS)
        self.fix_mode(fixed_mode)

    def column(self, name: str) -> np.ndarray:
        """A read-only view: columns change only through this class's transitions."""
        view = super().column(name).view()
        view.flags.writeable = False
        return view

    def _writable(self, name: str) -> np.ndarray:
        return super().column(name)

    # -- transitions -------------------------------------------------------------------

    def fix_mode(self, fixed_mode: int | None) -> None:
        """Every link in one mode (None: each detects its own, from undecided): the
        detector's columns start again from LINK_COLUMNS, the mode from fixed_mode."""
        self.fixed_mode = fixed_mode
        for name in _DETECTOR_COLUMNS:
            column = LINK_COLUMNS[name]
            fill = fixed_mode if name == "mode" and fixed_mode is not None else column.fill
            self.add_column(name, column.dtype, fill)

    def observe(self, slots: npt.NDArray[np.intp], ts: npt.NDArray[np.float64],
                values: np.ndarray, now: float = 0.0) -> npt.NDArray[np.bool_]:
        """Append one sample per slot (distinct) and advance the accepted links' mode
        detectors; returns which samples were accepted."""
        accepted = self.append(slots, ts, values, now)
        if self.fixed_mode is None and accepted.any():
            moved = slots[accepted]
            mode, candidate, streak = (self._writable(c) for c in ("mode", "candidate", "streak"))
            m, c, s = mode[moved], candidate[moved], streak[moved]
            self.tracker.update(self.windows(moved, DETECTOR_SAMPLES), m, c, s)
            mode[moved], candidate[moved], streak[moved] = m, c, s
        return accepted

    def apply(self, change: StateChange) -> None:
        """Make a published prediction's stream counts and adaptation the links' own."""
        if change.streams is not None:
            self._writable("streams")[change.slots] = change.streams
        if change.adaptation is not None:
            self._write_adaptation(change.slots, change.adaptation)

    def adaptation(self, slots: npt.NDArray[np.intp]) -> AdaptationState:
        """The links' adaptation state (copies)."""
        return AdaptationState(*(self._writable(name)[slots] for name in ADAPTATION_COLUMNS))

    def place(self, slots: npt.NDArray[np.intp], partitions: list[int]) -> None:
        self._writable("partition")[slots] = partitions

    def buckets(self, slots: npt.NDArray[np.intp], bucket_of: Callable[[str], int]) -> npt.NDArray[np.int8]:
        """Each link's rollout bucket, computed once per link by bucket_of(link_id)."""
        column = self._writable("bucket")
        new = np.flatnonzero(column[slots] < 0)
        if new.size:
            column[slots[new]] = [bucket_of(str(self.link_id(s))) for s in slots[new].tolist()]
        return column[slots]

    def out_partitions(self, slots: npt.NDArray[np.intp],
                       partition_of: Callable[[int], int]) -> npt.NDArray[np.int32]:
        """Each link's output partition, computed once per link by partition_of(row)
        (row: its index in slots)."""
        column = self._writable("out_partition")
        parts = column[slots]
        missing = np.flatnonzero(parts < 0)
        if missing.size:
            parts[missing] = [partition_of(i) for i in missing.tolist()]
            column[slots[missing]] = parts[missing]
        return parts

    def forget_out_partitions(self) -> None:
        self._writable("out_partition").fill(-1)

    def keep_pending(self, predictor: str, slots: npt.NDArray[np.intp], predicted: np.ndarray) -> None:
        self._writable(f"pending_{predictor}")[slots] = predicted

    def keep_pending_mode(self, slots: npt.NDArray[np.intp], modes: np.ndarray) -> None:
        self._writable("pending_mode")[slots] = modes

    def newest(self, link_id: str) -> float | None:
        """The event time of the link's newest sample; None for a link not tracked."""
        slot = self._slot_of.get(link_id)
        return None if slot is None else float(self._newest_ts[slot])

    def restore(self, sent: Iterable[Sent]) -> int:
        """After the windows are replayed: give each link the stream count and pending
        predictions of what it was sent for its newest sample (predictions for later
        samples are for events to be predicted again). A link with no such prediction
        keeps a fresh state, and its next prediction carries an id of its own. Returns
        the links whose stream count was restored."""
        streams, pending_mode = self._writable("streams"), self._writable("pending_mode")
        restored = set()
        for s in sent:
            slot = self._slot_of.get(s.link_id)
            if slot is None or s.ts != self._newest_ts[slot]:
                continue
            self._writable(f"pending_{s.predictor}")[slot] = s.predicted_mbps
            if not s.shadow:
                streams[slot] = s.streams
                pending_mode[slot] = s.mode
                restored.add(slot)
            state = decode_adaptation([s.adaptation]) if s.adaptation is not None else None
            if state is not None:  # the models' prediction, live or shadow
                self._write_adaptation(np.array([slot]), state)
        return len(restored)

    def _write_adaptation(self, slots: npt.NDArray[np.intp], state: AdaptationState) -> None:
        for name, values in zip(ADAPTATION_COLUMNS, _fields(state), strict=True):
            self._writable(name)[slots] = values


#: ADAPTATION_HEADER's layout: the adaptation's columns for one link as stored,
#: little-endian whatever the machine (61 bytes)
_PACKED = np.dtype([(name, np.dtype(LINK_COLUMNS[name].dtype).newbyteorder("<"),
                     (LINK_COLUMNS[name].width,) if LINK_COLUMNS[name].width else ())
                    for name in ADAPTATION_COLUMNS])


def encode_adaptation(state: AdaptationState) -> list[bytes]:
    """Each row's state as ADAPTATION_HEADER bytes (exact: the floats as stored)."""
    packed = np.empty(len(state.choice), dtype=_PACKED)
    for name, values in zip(ADAPTATION_COLUMNS, _fields(state), strict=True):
        packed[name] = values
    blob, size = packed.tobytes(), _PACKED.itemsize
    return [blob[i * size:(i + 1) * size] for i in range(len(packed))]


def decode_adaptation(blobs: list[bytes]) -> AdaptationState | None:
    """The rows of encode_adaptation's bytes; None when any is not such bytes."""
    if any(len(b) != _PACKED.itemsize for b in blobs):
        return None
    packed = np.frombuffer(b"".join(blobs), dtype=_PACKED)
    return AdaptationState(*(packed[name].copy() for name in ADAPTATION_COLUMNS))


def _fields(state: AdaptationState) -> tuple[np.ndarray, ...]:
    """The state's arrays, in ADAPTATION_COLUMNS' order."""
    return tuple(getattr(state, f.name) for f in fields(state))


def _head_start(rules: AdaptationRules) -> np.ndarray:
    scores = np.zeros(N_EXPERTS, dtype=np.float32)
    scores[0] = rules.prior
    return scores
