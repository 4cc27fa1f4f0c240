"""`pba bench` runs every part against the embedded broker and reports consistent figures
(a small run: the real figures live in docs/BENCHMARKS.md, never in assertions on speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`pba bench ARGS` in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "consumer.cli", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_bench_reports_every_part_with_ratios() -> None:
    done = bench("--mode", "datacenter", "--links", "20", "--events", "1200", "--memory-links", "20000",
                 "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    cores = os.cpu_count() or 1
    assert set(result["ceiling"]) == {"1", "8", "32", "64", "128", "256", "512"}
    assert all(rate > 0 for rate in result["ceiling"].values())
    configured = result["ceiling_configurations"]
    assert {f"1x{cores}", f"{cores}x1"} <= set(configured)  # one session, and one per core
    assert result["ceiling"] == configured[result["ceiling_from"]]
    assert max(result["ceiling"].values()) == max(max(r.values()) for r in configured.values())
    e2e = result["end_to_end"]
    assert e2e["predictions"] >= e2e["events"] and e2e["model_predictions"] > 0
    shapes = result["end_to_end_configurations"]  # members x inference threads
    assert {f"1x{cores}", f"{cores}x1"} <= set(shapes) and e2e == shapes[result["end_to_end_from"]]
    for shape in shapes.values():  # two members rebalance as they join: re-sends, nothing lost
        assert shape["predictions"] >= shape["events"] == e2e["events"] and shape["model_predictions"] > 0
    latency = result["latency_configurations"]  # every shape at half of the best end-to-end rate
    assert set(latency) == set(shapes)
    for name, sweep in latency.items():
        (point,) = sweep["points"]
        lat, floor = point["service"], point["kafka_alone"]
        assert point["rate"] == lat["rate"] == floor["rate"] == e2e["model_predictions_per_s"] / 2
        assert lat["measured"] == lat["events"] > 0 and floor["measured"] == floor["events"] > 0
        assert 0 <= lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
        assert 0 <= floor["p50_ms"] <= floor["p95_ms"] <= floor["p99_ms"]
        assert point["p99_within_budget"] == (lat["p99_ms"] <= 100)
        assert sweep["rate_from"] == "half of the best end to end"
        if point["p99_within_budget"]:
            assert sweep["held_over_end_to_end"] == e2e["model_predictions_per_s"] / 2 / shapes[name][
                "model_predictions_per_s"]
        else:
            assert sweep["max_rate_within_budget"] is None and "held_over_end_to_end" not in sweep
    held = [sweep["max_rate_within_budget"] or 0 for sweep in latency.values()]
    assert result["ratios"]["held_in_budget_over_end_to_end"] == max(held) / e2e["model_predictions_per_s"]
    assert result["ingest_events_per_s"] > 0 and result["memory_bytes_per_link"] > 0
    assert set(result["adaptation_us_per_event"]) == {"with", "without"}
    assert all(us > 0 for us in result["adaptation_us_per_event"].values())
    assert result["ratios"]["end_to_end_over_ceiling"] > 0 and result["ratios"]["naive_over_ceiling"] > 0


def test_latency_at_fixed_rates_runs_without_the_end_to_end_part_and_finds_the_capacity() -> None:
    # --threads 1: one shape, one member with one thread (the run above covers every shape)
    done = bench("--mode", "datacenter", "--links", "20", "--parts", "latency", "--latency-rate", "300,150",
                 "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert "end_to_end" not in result and set(result["latency_configurations"]) == {"1x1"}
    assert "held_in_budget_over_end_to_end" not in result["ratios"]  # no end-to-end rate to hold it to
    result = result["latency_configurations"]["1x1"]
    assert result["rate_from"] == "--latency-rate" and "held_over_end_to_end" not in result
    sweep = result["points"]
    assert [point["rate"] for point in sweep] == [150, 300]
    for point in sweep:
        service, floor = point["service"], point["kafka_alone"]
        assert service["rate"] == floor["rate"] == point["rate"]
        assert service["measured"] == service["events"] > 0 and floor["measured"] == floor["events"] > 0
        assert point["p99_within_budget"] == (service["p99_ms"] <= 100)
    assert result["budget_ms"] == 100
    assert result["max_rate_within_budget"] in (None, 150, 300)
    assert (result["max_rate_within_budget"] is None) == (not sweep[0]["p99_within_budget"])


def test_a_latency_rate_without_the_latency_part_is_refused() -> None:
    done = bench("--parts", "ingest", "--latency-rate", "100", timeout=60)
    assert done.returncode == 2 and "add latency to --parts" in done.stderr


@pytest.mark.parametrize("rates", ["0", "100,-5", "100,100", "fast"])
def test_latency_rates_that_are_not_distinct_positive_numbers_are_refused(rates: str) -> None:
    done = bench("--parts", "latency", "--latency-rate", rates, timeout=60)
    assert done.returncode == 2 and "--latency-rate" in done.stderr
