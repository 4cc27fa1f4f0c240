"""The models shipped in predictor/models load, match their manifest, and are small."""

from __future__ import annotations

from predictor.manifest import DEFAULT_MODELS_DIR, load_manifest
from predictor.runtime import SessionSettings, load_models


def test_shipped_models_load_in_float_and_int8() -> None:
    for precision in ("float", "int8"):
        models = load_models(settings=SessionSettings(precision=precision))
        assert set(models.models) == {"datacenter", "internet"}
        assert not models.fallback_active


def test_shipped_models_are_a_few_megabytes_and_named_for_their_mode() -> None:
    manifest = load_manifest(DEFAULT_MODELS_DIR)
    for mode, spec in manifest.models.items():
        assert mode in spec.path.name
        assert spec.path.stat().st_size < 4_000_000
        for path, _ in spec.variants.values():
            assert "int8" in path.name and mode in path.name
    assert manifest.fallback_calibration is not None
    assert manifest.adaptation_gate is not None  # fitted with the models (training/gate.py)
