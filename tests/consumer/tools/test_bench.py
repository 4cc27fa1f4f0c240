"""What `pba bench` concludes from latency measured at several rates."""

from __future__ import annotations

from consumer.tools.bench import latency_sweep


def measured(rate: float, p99_ms: float) -> tuple[dict[str, float], dict[str, float]]:
    service = {"rate": rate, "p50_ms": p99_ms / 2, "p95_ms": p99_ms * 0.9, "p99_ms": p99_ms}
    return service, {"rate": rate, "p50_ms": 5.0, "p95_ms": 8.0, "p99_ms": 10.0}


def test_the_capacity_is_the_highest_rate_below_the_first_one_over_the_budget() -> None:
    # a lucky p99 at 3,000/s after 2,000/s broke the budget does not count
    sweep = latency_sweep("datacenter", [measured(3000, 95), measured(500, 40), measured(2000, 120),
                                         measured(1000, 100)])
    assert sweep["budget_ms"] == 100
    assert [p["rate"] for p in sweep["points"]] == [500, 1000, 2000, 3000]
    assert [p["p99_within_budget"] for p in sweep["points"]] == [True, True, False, True]
    assert sweep["max_rate_within_budget"] == 1000


def test_each_mode_is_held_to_its_own_budget() -> None:
    sweep = latency_sweep("internet", [measured(300, 120), measured(600, 149)])
    assert sweep["budget_ms"] == 150 and sweep["max_rate_within_budget"] == 600


def test_no_capacity_when_even_the_lowest_rate_is_over_the_budget() -> None:
    sweep = latency_sweep("datacenter", [measured(100, 101), measured(200, 90)])
    assert sweep["max_rate_within_budget"] is None
