"""Ring-buffer windows: order, late samples, eviction, the link cap."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.features import BANDWIDTH, DT
from predictor.window import WindowStore


def feed(store: WindowStore, link: str, values: list[float], t0: float = 0.0, now: float = 0.0) -> None:
    slot = np.array([store.slot(link, now)])
    for i, v in enumerate(values):
        row = np.array([[v, np.nan, np.nan, np.nan, np.nan]], dtype=np.float32)
        store.append(slot, np.array([t0 + i]), row, now)


def bandwidth(store: WindowStore, link: str, steps: int | None = None) -> np.ndarray:
    return store.windows(np.array([store.slot(link)]), steps)[0, :, BANDWIDTH]


def test_window_holds_the_last_samples_oldest_first() -> None:
    store = WindowStore(length=5)
    feed(store, "a", [1, 2, 3, 4, 5, 6, 7])
    assert bandwidth(store, "a").tolist() == [3, 4, 5, 6, 7]
    assert bandwidth(store, "a", 3).tolist() == [5, 6, 7]
    assert store.counts(np.array([store.slot("a")])).tolist() == [7]


def test_unfilled_steps_are_nan_and_dt_is_derived_from_ts() -> None:
    store = WindowStore(length=4)
    feed(store, "a", [1, 2])
    window = store.windows(np.array([store.slot("a")]))[0]
    assert np.isnan(window[:2, BANDWIDTH]).all() and window[2:, BANDWIDTH].tolist() == [1, 2]
    assert np.isnan(window[2, DT]) and window[3, DT] == 1.0


def test_late_and_duplicate_samples_are_refused() -> None:
    store = WindowStore(length=4)
    feed(store, "a", [1, 2, 3], t0=10)  # ts 10, 11, 12
    slots = np.array([store.slot("a")])
    row = np.array([[9.0, np.nan, np.nan, np.nan, np.nan]], dtype=np.float32)
    assert not store.append(slots, np.array([12.0]), row)[0]
    assert not store.append(slots, np.array([5.0]), row)[0]
    assert store.append(slots, np.array([13.0]), row)[0]
    assert bandwidth(store, "a").tolist() == [1, 2, 3, 9]


def test_batched_append_keeps_links_apart() -> None:
    store = WindowStore(length=3)
    slots = store.slots(["a", "b", "c"])
    for t in range(4):
        values = np.full((3, 5), np.nan, dtype=np.float32)
        values[:, 0] = [t, 10 + t, 100 + t]
        store.append(slots, np.full(3, float(t)), values)
    windows = store.windows(slots)[:, :, BANDWIDTH]
    assert windows.tolist() == [[1, 2, 3], [11, 12, 13], [101, 102, 103]]


def test_windows_are_copies() -> None:
    store = WindowStore(length=3)
    feed(store, "a", [1, 2, 3])
    before = store.windows(np.array([store.slot("a")]))
    feed(store, "a", [4], t0=10)
    assert before[0, :, BANDWIDTH].tolist() == [1, 2, 3]


def test_idle_links_are_evicted_and_their_slot_reused_clean() -> None:
    store = WindowStore(length=3)
    store.add_column("mode", np.int8, -1)
    feed(store, "old", [1, 2, 3], now=0.0)
    store.column("mode")[store.slot("old")] = 1
    feed(store, "fresh", [5], now=100.0)
    assert store.evict_idle(now=100.0, idle_s=50.0) == ["old"]
    assert "old" not in store and len(store) == 1
    feed(store, "new", [7], now=101.0)
    slot = store.slot("new")
    assert store.counts(np.array([slot])).tolist() == [1]
    assert store.column("mode")[slot] == -1
    assert bandwidth(store, "new").tolist()[-1] == 7 and np.isnan(bandwidth(store, "new")[0])


def test_link_cap_evicts_least_recently_seen_links() -> None:
    store = WindowStore(length=2, capacity=2, max_links=100)
    for i in range(100):
        feed(store, f"l{i}", [1.0], now=float(i))
    assert len(store) == 100 and store.capacity == 100
    feed(store, "one-more", [1.0], now=1000.0)
    assert len(store) == 100  # the 1 % least recently seen made room
    assert "l0" not in store and "l99" in store and "one-more" in store
    assert store.cap_evictions_total == 1


def test_a_call_never_evicts_its_own_links_and_the_next_one_restores_the_cap() -> None:
    store = WindowStore(length=2, capacity=2, max_links=100)
    store.slots([f"old{i}" for i in range(90)], now=1.0)
    burst = [f"old{i}" for i in range(40)] + [f"new{i}" for i in range(80)]
    slots = store.slots(burst, now=2.0)
    assert len(set(slots.tolist())) == len(burst)  # 120 links, each its own slot
    assert all(link in store for link in burst)  # older links made room first ...
    assert "old89" not in store
    assert len(store) == 120  # ... and when none was left, the store went over the cap
    store.slots(["later"], now=3.0)
    assert len(store) <= 100 and "later" in store


def test_memory_per_link_stays_small() -> None:
    """What a tracked link costs, measured by adding links (it used to divide an empty
    store's preallocated arrays): its rows in the arrays, its entry in the id map and
    its id. 16,384 links fill the arrays exactly (they double from 16); 1,604 bytes a
    link measured, of which 1,465 in the arrays."""
    import tracemalloc

    store = WindowStore(length=60, capacity=16, max_links=100_000)
    links = 16_384
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, links, 1024):
            ids = [f"host-{i:06d}:eth0->gateway" for i in range(start, start + 1024)]
            slots = store.slots(ids, now=1.0)
            store.append(slots, np.full(1024, 1.0), np.ones((1024, 5), dtype=np.float32))
        del ids, slots
        per_link = (tracemalloc.get_traced_memory()[0] - before) / links
    finally:
        tracemalloc.stop()
    assert len(store) == links and store.capacity == links
    assert store.nbytes() / links < per_link < 1800


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="window length"):
        WindowStore(length=0)
    with pytest.raises(ValueError, match="max_links"):
        WindowStore(max_links=0)
