"""A short, real training run: seeded, exported, parity-checked, loadable by the service path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from predictor.api import BandwidthPredictor
from predictor.confidence import hits, reliability_table
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor
from predictor.manifest import DEFAULT_MODELS_DIR, ManifestError, load_manifest
from predictor.modes import mode_code
from predictor.runtime import ModelSet, OnnxModel, SessionSettings, load_models
from training.backtest import replay_traces
from training.calibrate import calibrate, calibrate_adapted
from training.export import check_parity, export_onnx, import_onnx
from training.fine_tune import FineTuneError
from training.generators import synthetic_set
from training.model import CONFIGS, build_model
from training.traces import load_traces, pack_traces, read_index
from training.train import TrainSettings, collect, fit, run


@pytest.fixture(scope="module")
def small_pack(traces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real traces of every source, packed the way the device runs read them."""
    infos = read_index(traces_dir)
    picked, per_source = [], {}
    for info in infos:
        if per_source.get(info.source, 0) < 4 and info.n_rows < 3000:
            picked.append(info)
            per_source[info.source] = per_source.get(info.source, 0) + 1
    out = tmp_path_factory.mktemp("pack") / "traces.npz"
    pack_traces(picked, out)
    return out


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def exported_random_model(mode: str, out: Path, seed: int) -> tuple[torch.nn.Module, Path]:
    """A freshly initialised model of `mode` and the ONNX file it was exported to."""
    config = CONFIGS[mode]
    torch.manual_seed(seed)
    model = build_model(config).eval()
    path = out / f"{mode}.onnx"
    export_onnx(model, path, config.window)
    return model, path


def small_settings(pack: Path, out: Path) -> TrainSettings:
    return TrainSettings(
        modes=("datacenter",), traces=pack, out=out, epochs=2, patience=5, batch_size=64,
        windows_per_source=80, validation_windows_per_source=60, synthetic_links=3,
        synthetic_length=400, progress=False,
    )


def test_short_training_run_ships_a_model_the_service_path_loads(small_pack: Path, tmp_path: Path) -> None:
    manifest_path = run(small_settings(small_pack, tmp_path))
    manifest = load_manifest(tmp_path)
    spec = manifest.models["datacenter"]
    assert spec.window == 30 and "int8" in spec.variants
    assert np.all(np.diff(spec.calibration.y) <= 1e-12), "calibration must not rise with width"
    assert manifest.fallback_calibration is not None
    assert orjson.loads(manifest_path.read_bytes())["models"]["datacenter"]["training"]["epochs_run"] >= 1

    bp = BandwidthPredictor.load(tmp_path, mode="datacenter")
    for i, value in enumerate(synthetic_set("realistic", "datacenter", 1, 40, seed=3)[0].values[:, 0]):
        bp.add_sample("dc", float(i), float(value), latency_ms=1.0)
    prediction = bp.predict("dc")
    assert prediction.source == "model" and prediction.predicted_mbps > 0
    assert 0 <= prediction.confidence <= 1


def test_training_is_reproducible_with_a_fixed_seed(tmp_path: Path) -> None:
    settings = small_settings(tmp_path / "unused.npz", tmp_path)
    config = CONFIGS["datacenter"]
    series = [("synthetic", t) for t in synthetic_set("realistic", "datacenter", 4, 300, seed=1)]
    data = collect(series, config.window, 400, np.random.default_rng(0))
    again = collect(series, config.window, 400, np.random.default_rng(0))
    np.testing.assert_array_equal(data.x, again.x)
    first, _ = fit(config, data, data, settings)
    second, _ = fit(config, data, data, settings)
    assert_same_weights(first, second)


def test_onnx_export_matches_pytorch_on_random_and_generated_windows(tmp_path: Path) -> None:
    config = CONFIGS["internet"]
    model, path = exported_random_model("internet", tmp_path, seed=0)
    random_windows = np.random.default_rng(0).normal(size=(16, 60, 11)).astype(np.float32)
    assert check_parity(model, path, random_windows) < 1e-4
    series = [("s", t) for t in synthetic_set("realistic", "internet", 2, 200, seed=2)]
    real = collect(series, config.window, 32, np.random.default_rng(1)).x
    assert check_parity(model, path, real) < 1e-4
    assert check_parity(model, path, real[:1]) < 1e-4  # batch axis is dynamic


def test_calibration_is_fitted_on_every_row_the_model_serves_on_the_given_traces(small_pack: Path) -> None:
    infos, read = load_traces(small_pack)
    traces = [read(info) for info in infos]
    shipped = load_manifest(DEFAULT_MODELS_DIR).models["datacenter"]
    calibration, stats = calibrate(shipped, traces)

    calibrated = dataclasses.replace(shipped, calibration=calibration)
    forecaster = Forecaster(ModelSet({"datacenter": OnnxModel(calibrated, SessionSettings())}, manifest=None))
    result = replay_traces(traces, LinkPredictor(forecaster, mode="datacenter", adaptation=None))
    rows, actual = result.scored()
    served = result.label[rows] == mode_code("datacenter")
    assert stats["calibration_rows"] == served.sum() > 5_000
    hit = hits(result.predicted[rows[served]], actual[served])
    for decile in reliability_table(result.confidence[rows[served]], hit):
        if decile["count"] >= 300:  # in-sample, every populated decile is close to its hit rate
            assert abs(decile["hit_rate"] - decile["mean_confidence"]) < 0.05, decile


@pytest.mark.timeout(600)  # three replays of the small pack through the gated adaptation
def test_the_adapted_output_is_calibrated_on_every_row_it_publishes(small_pack: Path) -> None:
    """The confidence of what a link publishes after its adaptation: fitted on the
    adaptation's blend over every row of the replay, in-sample within 5 points per
    populated decile and a quarter of the blend's own worst gap, which is several points."""
    infos, read = load_traces(small_pack)
    traces = [read(info) for info in infos]
    calibration, stats = calibrate_adapted(DEFAULT_MODELS_DIR, traces)
    models = load_models(None, ("datacenter", "internet"))
    assert models.manifest is not None
    uncalibrated = dataclasses.replace(models, manifest=dataclasses.replace(models.manifest,
                                                                            adapted_calibration=None))
    gaps = {}
    for name, chosen in (("blend", uncalibrated), ("calibrated", dataclasses.replace(
            models, manifest=dataclasses.replace(models.manifest, adapted_calibration=calibration)))):
        result = replay_traces(traces, LinkPredictor(Forecaster(chosen), mode="auto"))
        rows, actual = result.scored()
        assert stats["adapted_rows"] == len(rows)
        hit = hits(result.predicted[rows], actual)
        gaps[name] = max(abs(d["hit_rate"] - d["mean_confidence"])
                         for d in reliability_table(result.confidence[rows], hit) if d["count"] >= 300)
    assert gaps["blend"] > 0.03, gaps  # the data exercises the calibration: the blend alone is off
    assert gaps["calibrated"] < min(0.05, gaps["blend"] / 4), gaps


def test_a_mode_trained_alone_is_the_model_a_run_of_both_trains(small_pack: Path, tmp_path: Path) -> None:
    """Seeds used to follow the mode's place in the list (and `--mode both` trains
    internet first), so `pba train --mode datacenter` could not reproduce its model."""
    alone = small_settings(small_pack, tmp_path / "alone")
    both = dataclasses.replace(alone, modes=("internet", "datacenter"), out=tmp_path / "both", epochs=1)
    run(dataclasses.replace(alone, epochs=1))
    run(both)
    alone_dc = load_manifest(tmp_path / "alone").models["datacenter"]
    both_dc = load_manifest(tmp_path / "both").models["datacenter"]
    assert alone_dc.sha256 == both_dc.sha256  # the exported file, byte for byte


def test_an_exported_model_imports_back_to_the_very_same_weights(tmp_path: Path) -> None:
    config = CONFIGS["datacenter"]
    model, path = exported_random_model("datacenter", tmp_path, seed=3)
    back = import_onnx(path, config)
    assert_same_weights(model, back)
    with pytest.raises(ValueError, match="is not shaped as the internet model"):
        import_onnx(path, CONFIGS["internet"])


def test_the_shipped_models_import_with_parity() -> None:
    windows = {mode: np.random.default_rng(0).normal(size=(32, CONFIGS[mode].window, 11)).astype(np.float32)
               for mode in CONFIGS}
    for mode, spec in load_manifest(DEFAULT_MODELS_DIR).models.items():
        assert check_parity(import_onnx(spec.path, CONFIGS[mode]), spec.path, windows[mode]) < 1e-4


def test_a_fine_tune_starts_from_the_models_in_out_and_anneals_its_rate(
        small_pack: Path, tmp_path: Path) -> None:
    settings = small_settings(small_pack, tmp_path)
    run(dataclasses.replace(settings, epochs=1))
    base = load_manifest(tmp_path).models["datacenter"]
    run(dataclasses.replace(settings, fine_tune=True, epochs=3, learning_rate=2e-4))
    entry = orjson.loads((tmp_path / "manifest.json").read_bytes())["models"]["datacenter"]
    assert entry["training"]["fine_tuned_from"]["sha256"] == base.sha256
    assert entry["training"]["fine_tuned_from"]["version"] == base.version
    assert entry["training"]["learning_rate"] == 2e-4
    history = orjson.loads((tmp_path / "training-history.json").read_bytes())["datacenter"]
    assert [(h["epoch"], h["fine_tune"]) for h in history] == [(1, False), (2, True), (3, True), (4, True)]
    rates = [h["learning_rate"] for h in history[1:]]
    assert rates[0] < 2e-4 and rates == sorted(rates, reverse=True) and rates[-1] < 1e-9


def test_a_fine_tune_that_only_makes_it_worse_keeps_the_model_it_started_from(
        small_pack: Path, tmp_path: Path) -> None:
    settings = small_settings(small_pack, tmp_path)
    run(dataclasses.replace(settings, epochs=1))
    start = import_onnx(load_manifest(tmp_path).models["datacenter"].path, CONFIGS["datacenter"])
    entry = orjson.loads((tmp_path / "manifest.json").read_bytes())["models"]["datacenter"]
    history = (tmp_path / "training-history.json").read_bytes()
    run(dataclasses.replace(settings, fine_tune=True, epochs=1, learning_rate=50.0))  # diverges
    kept = import_onnx(load_manifest(tmp_path).models["datacenter"].path, CONFIGS["datacenter"])
    assert_same_weights(start, kept)
    # and says so: the same file, version and training, not a fine-tune that did not happen
    again = orjson.loads((tmp_path / "manifest.json").read_bytes())["models"]["datacenter"]
    same = ("sha256", "version", "training")
    assert {k: again[k] for k in same} == {k: entry[k] for k in same}
    assert (tmp_path / "training-history.json").read_bytes() == history


def test_a_fine_tune_without_a_model_to_start_from_names_what_to_do(small_pack: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json"):
        run(dataclasses.replace(small_settings(small_pack, tmp_path), fine_tune=True))
    run(dataclasses.replace(small_settings(small_pack, tmp_path), epochs=1))
    with pytest.raises(FineTuneError, match="no internet model to start from"):
        run(dataclasses.replace(small_settings(small_pack, tmp_path), modes=("internet",), fine_tune=True))


@pytest.mark.parametrize(("args", "message"), [
    (["--fine-tune", "--calibrate-only"], "choose one"),
    (["--learning-rate", "0"], "must be > 0"),
    (["--fine-tune"], "no manifest.json in"),
])
def test_train_argument_errors_are_clear(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "consumer.cli", "train", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr
