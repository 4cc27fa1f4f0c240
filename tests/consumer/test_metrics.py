"""An ArrayHistogram is exposed exactly like prometheus_client's Histogram fed one value
at a time, so dashboards, alerts and histogram_quantile() read it the same way."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from consumer.metrics import LATENCY_BUCKETS, ArrayHistogram


def test_array_histogram_exposes_what_a_histogram_fed_one_by_one_exposes() -> None:
    rng = np.random.default_rng(7)
    batches = [rng.exponential(0.05, size=n) for n in (1, 17, 300)]
    batches.append(np.array([0.001, 0.0025, 0.1, 2.5, 99.0]))  # on the bounds, and past the last

    expected_registry, actual_registry = CollectorRegistry(), CollectorRegistry()
    expected = Histogram("x_seconds", "doc", ["mode"], buckets=LATENCY_BUCKETS, registry=expected_registry)
    actual = ArrayHistogram("x_seconds", "doc", ["mode"], LATENCY_BUCKETS, actual_registry)
    for i, batch in enumerate(batches):
        mode = "internet" if i % 2 else "datacenter"
        for value in batch.tolist():
            expected.labels(mode).observe(value)
        actual.observe((mode,), batch)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}

    got, want = samples(actual_registry), samples(expected_registry)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert np.isclose(got[key], value), key
    assert b'x_seconds_bucket{le="+Inf",mode="datacenter"}' in generate_latest(actual_registry)


def test_array_histogram_skips_values_that_are_not_finite() -> None:
    registry = CollectorRegistry()
    histogram = ArrayHistogram("y", "doc", ["mode"], (1.0,), registry)
    histogram.observe(("m",), np.array([0.5, np.nan, np.inf, 2.0]))
    values = {s.name: s.value for f in registry.collect() for s in f.samples if s.labels.get("le") != "1.0"}
    assert values["y_count"] == 2 and values["y_sum"] == 2.5


def test_the_error_ratio_is_named_for_its_unit_and_its_former_name_lasts_one_release() -> None:
    from consumer.metrics import Metrics

    metrics = Metrics()
    metrics.abs_pct_error.observe(("internet", "v3"), np.array([0.05, 0.3, 1.5]))
    text = generate_latest(metrics.registry).decode()
    new = [line for line in text.splitlines() if line.startswith("pba_absolute_percentage_error_ratio_")]
    old = [line for line in text.splitlines() if line.startswith("pba_absolute_percentage_error_")
           and not line.startswith("pba_absolute_percentage_error_ratio")]
    assert new and [line.replace("_ratio", "", 1) for line in new] == old
    assert 'pba_absolute_percentage_error_ratio_count{mode="internet",predictor="v3"} 3.0' in new
    assert "# HELP pba_absolute_percentage_error Deprecated: use pba_absolute_percentage_error_ratio." in text
