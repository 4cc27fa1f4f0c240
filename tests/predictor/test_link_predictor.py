"""The shared path from samples to predictions: batching, causality, warm-up, hybrid,
fallback, ids. Uses small real ONNX models exported by the tiny_models fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from predictor.api import BandwidthPredictor
from predictor.features import BANDWIDTH, DT
from predictor.forecaster import FALLBACK_VERSION, MODEL, Forecaster
from predictor.modes import INTERNET, MODEL_MIN_SAMPLES
from predictor.runtime import load_models
from training.backtest import replay_traces
from training.traces import Trace


def series(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    return level * np.exp(np.cumsum(rng.normal(0, 0.05, n)))


def feed(bp: BandwidthPredictor, link: str, bw: np.ndarray, latency: float) -> None:
    for i, value in enumerate(bw):
        assert bp.add_sample(link, 1000.0 + i, float(value), latency_ms=latency)


def test_batched_and_one_by_one_predictions_are_equal(
    tiny_models: Path, rng: np.random.Generator
) -> None:
    links = {f"l{i}": (series(rng, 80, 10 ** rng.uniform(0, 4)), rng.choice([1.0, 30.0, 90.0]))
             for i in range(12)}
    batched, single = (BandwidthPredictor.load(tiny_models) for _ in range(2))
    for bp in (batched, single):
        for link, (bw, lat) in links.items():
            feed(bp, link, bw, lat)
    together = batched.predict_batch(list(links))
    alone = [single.predict(link) for link in links]
    for a, b in zip(together, alone, strict=True):
        assert a.source == b.source == "model"
        assert a.predicted_mbps == pytest.approx(b.predicted_mbps, rel=1e-5)
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
        assert a.prediction_id == b.prediction_id


def test_changing_the_future_changes_no_earlier_prediction(
    tiny_models: Path, rng: np.random.Generator
) -> None:
    n, cut = 150, 100
    t = np.arange(n, dtype=np.float64)
    values = np.full((n, 5), np.nan, dtype=np.float32)
    values[:, 0] = series(rng, n, 50)
    values[:, 1] = 80
    altered = values.copy()
    altered[cut:, 0] *= rng.uniform(0.1, 10, n - cut)
    other = values.copy()
    runs = []
    for trace_values in (values, altered):
        traces = [Trace("a", t, trace_values), Trace("b", t[:120], other[:120])]
        runs.append(replay_traces(traces, BandwidthPredictor.load(tiny_models).link_predictor))
    first, second = runs
    # entry i predicts sample i+1 from samples 0..i: entries before `cut` must match
    np.testing.assert_array_equal(first.predicted[:cut], second.predicted[:cut])
    np.testing.assert_array_equal(first.confidence[:cut], second.confidence[:cut])
    assert not np.array_equal(first.predicted[cut:n - 1], second.predicted[cut:n - 1])
    np.testing.assert_array_equal(first.predicted[n:], second.predicted[n:])  # trace b


@pytest.mark.parametrize(("mode", "window"), [("internet", 60), ("datacenter", 30)])
def test_fallback_serves_a_new_link_until_its_tenth_sample_then_the_model(
    tiny_models: Path, mode: str, window: int, rng: np.random.Generator
) -> None:
    bp = BandwidthPredictor.load(tiny_models, mode=mode)
    sources = []
    for i, value in enumerate(series(rng, window + 5, 100)):
        bp.add_sample("x", float(i), float(value))
        prediction = bp.predict("x")
        sources.append(prediction.source)
        if prediction.source == "fallback":
            assert prediction.model_version == FALLBACK_VERSION
    assert sources == ["fallback"] * (MODEL_MIN_SAMPLES - 1) + ["model"] * (window + 6 - MODEL_MIN_SAMPLES)


def test_a_short_history_is_forecast_as_if_it_had_repeated_all_along(
    tiny_models: Path, rng: np.random.Generator
) -> None:
    """A link with 10..59 samples gets the model's forecast of a full window made of its
    own samples repeated back in time, the same as a link that really sent them."""
    own = 17
    short = np.full((1, 60, 6), np.nan, dtype=np.float32)
    short[0, -own:, BANDWIDTH] = series(rng, own, 40)
    short[0, -own:, DT] = 1.0
    short[0, -own, DT] = np.nan  # its first sample
    repeated = short.copy()
    repeated[0, :, :] = np.concatenate([short[0, -own:]] * 4)[-60:]
    repeated[0, :, DT] = 1.0
    forecaster = Forecaster(load_models(tiny_models, ("internet",)))
    modes = np.array([INTERNET], dtype=np.int8)
    got = forecaster.predict(short, np.array([own]), modes)
    full = forecaster.predict(repeated, np.array([600]), modes)
    assert got.source[0] == full.source[0] == MODEL
    assert got.predicted_mbps[0] == pytest.approx(full.predicted_mbps[0], rel=1e-6)
    assert got.reserve_mbps[0] == pytest.approx(full.reserve_mbps[0], rel=1e-6)
    assert got.confidence[0] == pytest.approx(full.confidence[0], abs=1e-6)
    fewer = short.copy()
    fewer[0, :-(MODEL_MIN_SAMPLES - 1)] = np.nan
    assert forecaster.predict(fewer, np.array([MODEL_MIN_SAMPLES - 1]), modes).source[0] != MODEL


def test_hybrid_blends_both_models_by_confidence(
    tiny_models: Path, rng: np.random.Generator
) -> None:
    bw = series(rng, 70, 800)
    preds = {}
    for mode in ("datacenter", "internet", "hybrid"):
        bp = BandwidthPredictor.load(tiny_models, mode=mode)
        feed(bp, "h", bw, 20.0)
        preds[mode] = bp.predict("h")
    dc, inet, hyb = preds["datacenter"], preds["internet"], preds["hybrid"]
    w_dc = dc.confidence / (dc.confidence + inet.confidence)
    expected = w_dc * dc.predicted_mbps + (1 - w_dc) * inet.predicted_mbps
    assert hyb.mode == "hybrid" and hyb.source == "model"
    assert hyb.predicted_mbps == pytest.approx(expected, rel=1e-5)
    assert min(dc.confidence, inet.confidence) <= hyb.confidence <= max(dc.confidence, inet.confidence)
    assert hyb.model_version == f"{dc.model_version}+{inet.model_version}"


def test_auto_mode_routes_each_link_by_its_measurements(
    tiny_models: Path, rng: np.random.Generator
) -> None:
    bp = BandwidthPredictor.load(tiny_models, mode="auto")
    feed(bp, "dc", series(rng, 70, 5000), 1.0)
    feed(bp, "wan", series(rng, 70, 200), 120.0)
    feed(bp, "mid", series(rng, 70, 3000), 25.0)
    got = {p.link_id: p.mode for p in bp.predict_batch(["dc", "wan", "mid"])}
    assert got == {"dc": "datacenter", "wan": "internet", "mid": "hybrid"}
    assert bp.metrics()["predictions_by_mode"] == {"datacenter": 1, "internet": 1, "hybrid": 1}


def test_without_models_the_fallback_serves_and_says_so(tmp_path: Path, rng: np.random.Generator) -> None:
    bp = BandwidthPredictor.load(tmp_path, mode="internet", allow_fallback=True)
    feed(bp, "x", np.array([10.0, 20, 30, 40, 50, 60, 70]), 50.0)
    p = bp.predict("x")
    assert p.source == "fallback" and p.model_version == FALLBACK_VERSION
    assert p.predicted_mbps == pytest.approx(70.0)  # the last value
    assert p.reserve_mbps == pytest.approx(30.0)  # the lowest of the last 5
    assert 0 < p.confidence < 1
    assert bp.metrics()["fallback_active"] is True


def test_prediction_ids_are_deterministic(tiny_models: Path, rng: np.random.Generator) -> None:
    bw = series(rng, 70, 100)
    first, second = BandwidthPredictor.load(tiny_models), BandwidthPredictor.load(tiny_models)
    feed(first, "x", bw, 50.0)
    feed(second, "x", bw, 50.0)
    a, b = first.predict("x"), second.predict("x")
    assert a.prediction_id == b.prediction_id and len(a.prediction_id) == 32
    assert first.predict("x").prediction_id == a.prediction_id  # same window, same id
    first.add_sample("x", 5000.0, 10.0, latency_ms=50.0)
    assert first.predict("x").prediction_id != a.prediction_id


def test_library_metrics_report_latency_and_switches(tiny_models: Path, rng: np.random.Generator) -> None:
    bp = BandwidthPredictor.load(tiny_models)
    feed(bp, "x", series(rng, 40, 100), 50.0)
    for _ in range(3):
        bp.predict("x")
    m = bp.metrics()
    assert m["predictions_total"] == 3
    assert 0 < m["latency_s"]["p50"] <= m["latency_s"]["p99"] <= m["latency_s"]["max"]
    assert m["mode_switches_total"] == 0
    with pytest.raises(KeyError, match="no samples"):
        bp.predict("unknown")
