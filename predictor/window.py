"""Per-link sliding windows in preallocated numpy ring buffers.

One row per link ("slot"), not one Python object per event: appending a batch of samples
and gathering a batch of windows are a few vectorised numpy operations whatever the
number of links. The service, the library API and the backtest all use this class, so
they see exactly the same windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from predictor.features import DT, RAW_CHANNELS

N_CHANNELS = len(RAW_CHANNELS)
MEASURED_CHANNELS = N_CHANNELS - 1  # everything but dt, which the store derives from ts


class WindowStore:
    """Sliding windows of the last `length` samples of up to `max_links` links.

    A sample whose event time is not newer than the link's newest is refused (late or
    duplicate), so every window is strictly in event-time order. When the link cap is
    reached, the least recently seen links are evicted to make room: memory stays bounded
    and a new link is never refused. A link is never evicted for another of the same
    `slots` call (the caller is about to read all their windows); a call with more links
    than the cap takes the store over it until the next call.
    """

    def __init__(
        self, length: int = 60, capacity: int = 1024, max_links: int = 1_000_000
    ) -> None:
        if not 1 <= length <= 127:
            raise ValueError(f"window length must be 1..127, got {length}")
        if max_links < 1:
            raise ValueError(f"max_links must be >= 1, got {max_links}")
        self.length = length
        self.max_links = max_links
        capacity = max(1, min(capacity, max_links))
        self._values = np.full((capacity, length, N_CHANNELS), np.nan, dtype=np.float32)
        self._newest_ts = np.full(capacity, -np.inf, dtype=np.float64)
        self._count = np.zeros(capacity, dtype=np.int64)
        self._head = np.zeros(capacity, dtype=np.int8)
        self._last_seen = np.zeros(capacity, dtype=np.float64)
        self._columns: dict[str, tuple[np.ndarray, object]] = {}
        self._slot_of: dict[str, int] = {}
        self._link_of: list[str | None] = [None] * capacity
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self.evicted_total = 0
        self.cap_evictions_total = 0

    # -- links and slots -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, link_id: object) -> bool:
        return link_id in self._slot_of

    @property
    def capacity(self) -> int:
        return len(self._link_of)

    def slot(self, link_id: str, now: float = 0.0) -> int:
        """The slot of a link, allocating an empty window for a new one."""
        slot = self._slot_of.get(link_id)
        if slot is not None:
            return slot
        self._make_room(1)
        return self._allocate(link_id, now)

    def slots(self, link_ids: Sequence[str], now: float = 0.0) -> npt.NDArray[np.intp]:
        """The slots of these links, allocating new ones. Room for the new ones is made
        first, among the other links: none of these is evicted for another of them (the
        caller is about to read all their windows). When they alone are more than the
        cap, the store goes over it until a later call can evict."""
        found = [self._slot_of.get(link) for link in link_ids]
        missing = found.count(None)
        if missing:
            self._make_room(missing, keep=[slot for slot in found if slot is not None])
        allocate = self._allocate
        return np.fromiter(
            (allocate(link, now) if slot is None else slot
             for link, slot in zip(link_ids, found, strict=True)),
            dtype=np.intp, count=len(link_ids))

    def _allocate(self, link_id: str, now: float) -> int:
        slot = self._slot_of.get(link_id)  # a link given twice in one call
        if slot is not None:
            return slot
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slot_of[link_id] = slot
        self._link_of[slot] = link_id
        self._last_seen[slot] = now
        return slot

    def link_id(self, slot: int) -> str | None:
        return self._link_of[slot]

    def add_column(self, name: str, dtype: npt.DTypeLike, fill: object, width: int = 0) -> None:
        """Per-link state kept beside the window (mode, last allocation...), reset on reuse;
        `width` values per link when > 0 (fill: one value, or one per position)."""
        column = np.full((self.capacity, width) if width else self.capacity, fill, dtype=dtype)
        self._columns[name] = (column, fill)

    def column(self, name: str) -> np.ndarray:
        return self._columns[name][0]

    # -- samples ---------------------------------------------------------------------

    def append(
        self,
        slots: npt.NDArray[np.intp],
        ts: npt.NDArray[np.float64],
        values: npt.NDArray[np.floating],
        now: float = 0.0,
    ) -> npt.NDArray[np.bool_]:
        """Append one sample to each given slot; returns which were accepted (in order).

        slots must be distinct within one call (split a batch into rounds otherwise).
        values: (n, 5) measured channels in RAW_CHANNELS order, NaN = not measured.
        """
        accepted = ts > self._newest_ts[slots]
        if not accepted.all():
            slots, ts, values = slots[accepted], ts[accepted], values[accepted]
        head = self._head[slots].astype(np.intp)
        row = self._values[slots, head]  # copy, (n, channels)
        row[:, :MEASURED_CHANNELS] = values
        previous = self._newest_ts[slots]
        row[:, DT] = np.where(np.isfinite(previous), ts - previous, np.nan)
        self._values[slots, head] = row
        self._head[slots] = (head + 1) % self.length
        self._newest_ts[slots] = ts
        self._count[slots] += 1
        self._last_seen[slots] = now
        return accepted

    def windows(self, slots: npt.NDArray[np.intp], steps: int | None = None) -> np.ndarray:
        """Copies of the last `steps` samples of each slot, oldest first: (n, steps, 6).

        Steps before a link's first sample are NaN.
        """
        steps = self.length if steps is None else steps
        order = (self._head[slots].astype(np.intp)[:, None] + np.arange(-steps, 0)) % self.length
        # one take over (slot, step) rows: 2-3x faster than indexing with two arrays
        rows = (slots.astype(np.intp) * self.length)[:, None] + order
        return self._values.reshape(-1, N_CHANNELS).take(rows, axis=0)

    def counts(self, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
        """Samples seen per slot (not capped at the window length)."""
        return self._count[slots]

    def newest_ts(self, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        return self._newest_ts[slots]

    # -- eviction --------------------------------------------------------------------

    def evict_idle(self, now: float, idle_s: float) -> list[str]:
        """Forget links not seen for `idle_s` (in the same clock as `now`)."""
        active = np.fromiter(self._slot_of.values(), dtype=np.intp, count=len(self._slot_of))
        stale = active[self._last_seen[active] < now - idle_s]
        return self._release(stale)

    def remove(self, link_ids: Iterable[str]) -> list[str]:
        slots = [self._slot_of[link] for link in link_ids if link in self._slot_of]
        return self._release(np.asarray(slots, dtype=np.intp))

    def _make_room(self, new: int, keep: list[int] | None = None) -> None:
        """Before `new` links are added: evict what would go over the cap, at least 1 % of
        it at a time, none of the slots in keep."""
        over = len(self._slot_of) + new - self.max_links
        if over > 0:
            self._evict_least_recent(max(over, self.max_links // 100), keep)

    def _evict_least_recent(self, n: int, keep: list[int] | None = None) -> None:
        """Evict up to n of the least recently seen links, none of the slots in keep."""
        active = np.fromiter(self._slot_of.values(), dtype=np.intp, count=len(self._slot_of))
        if keep:
            active = active[~np.isin(active, keep)]
        n = min(n, active.size)
        if n <= 0:
            return
        oldest = active[np.argpartition(self._last_seen[active], n - 1)[:n]]
        self.cap_evictions_total += len(self._release(oldest))

    def _release(self, slots: npt.NDArray[np.intp]) -> list[str]:
        released = []
        for slot in slots.tolist():
            link = self._link_of[slot]
            if link is None:
                continue
            del self._slot_of[link]
            self._link_of[slot] = None
            self._free.append(slot)
            released.append(link)
        if len(slots):
            self._reset(slots)
        self.evicted_total += len(released)
        return released

    def _reset(self, slots: npt.NDArray[np.intp]) -> None:
        self._values[slots] = np.nan
        self._newest_ts[slots] = -np.inf
        self._count[slots] = 0
        self._head[slots] = 0
        for column, fill in self._columns.values():
            column[slots] = fill

    def _grow(self) -> None:
        old = self.capacity
        # up to the cap by doubling; past it (only while one call holds every tracked
        # link) by an eighth
        new = min(self.max_links, old * 2) if old < self.max_links else old + max(64, old // 8)
        extra = new - old

        def grown(array: np.ndarray, fill: object) -> np.ndarray:
            pad = np.full((extra, *array.shape[1:]), fill, dtype=array.dtype)
            return np.concatenate([array, pad])

        self._values = grown(self._values, np.nan)
        self._newest_ts = grown(self._newest_ts, -np.inf)
        self._count = grown(self._count, 0)
        self._head = grown(self._head, 0)
        self._last_seen = grown(self._last_seen, 0.0)
        for name, (column, fill) in self._columns.items():
            self._columns[name] = (grown(column, fill), fill)
        self._link_of.extend([None] * extra)
        self._free.extend(range(new - 1, old - 1, -1))

    def nbytes(self) -> int:
        """Bytes held in arrays (the per-link dict and ids come on top)."""
        arrays: list[np.ndarray] = [
            self._values, self._newest_ts, self._count, self._head, self._last_seen,
        ]
        arrays += [column for column, _ in self._columns.values()]
        return sum(a.nbytes for a in arrays)
