"""The model manifest: what each shipped ONNX file is and how to feed and read it.

manifest.json in a models directory:

    {
      "format": 1,
      "models": {
        "datacenter": {
          "file": "datacenter.onnx", "sha256": "...", "version": "datacenter-...",
          "window": 30, "features": [...], "feature_version": "rel-mean-v1",
          "normalisation": "window_mean_bandwidth",
          "input": "input", "output": "output",
          "outputs": ["q10", "point", "q90"], "target": "log_ratio_to_scale",
          "horizon_steps": 1,
          "calibration": {"score": "log_interval_width", "x": [...], "y": [...]},
          "variants": {"int8": {"file": "datacenter.int8.onnx", "sha256": "..."}}
        },
        "internet": {...}
      },
      "fallback_calibration": {"score": "cv", "x": [...], "y": [...]},
      "adapted_calibration": {"score": "one_minus_blend", "x": [...], "y": [...]},
      "adaptation_gate": {"file": "adaptation-gate.npz", "sha256": "...",
                          "features": [...], "experts": [...]}
    }

Any disagreement with this code (another feature list, window, output meaning) is a
ManifestError at start-up, never a silently wrong prediction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from predictor.adaptation import EXPERTS
from predictor.confidence import Calibration
from predictor.features import FEATURE_VERSION, FEATURES
from predictor.gate import GATE_FEATURES, Gate, GateError
from predictor.modes import WINDOW_STEPS_BY_NAME

MANIFEST_NAME = "manifest.json"
FORMAT = 1
#: Model outputs, log-ratios to the window scale: the 10th percentile (-> reserve_mbps),
#: the point prediction (trained to land within +/-20 % as often as possible), and the
#: 90th percentile. The q90 - q10 spread is the raw score that calibration maps to
#: confidence.
OUTPUTS = ("q10", "point", "q90")
TARGET = "log_ratio_to_scale"
NORMALISATION = "window_mean_bandwidth"
DEFAULT_MODELS_DIR = Path(__file__).parent / "models"
#: The model variants a manifest may list: the exported float model and its int8
#: quantisation (faster, a little less accurate: docs/MODEL_CARD.md). The flags'
#: choices, the configuration's check and training's export all read these.
FLOAT, INT8 = "float", "int8"
PRECISIONS = (FLOAT, INT8)


class ManifestError(ValueError):
    """The models directory cannot be used as it is; the message says what to fix."""


@dataclass(frozen=True)
class ModelSpec:
    mode: str
    path: Path
    sha256: str
    version: str
    window: int
    input_name: str
    output_name: str
    calibration: Calibration
    variants: dict[str, tuple[Path, str]] = field(default_factory=dict)

    def file_for(self, precision: str) -> tuple[Path, str]:
        """(path, sha256) of the float model or of a named variant such as int8."""
        if precision == FLOAT:
            return self.path, self.sha256
        if precision not in self.variants:
            raise ManifestError(
                f"{self.mode} model has no {precision!r} variant "
                f"(available: float{''.join(', ' + v for v in self.variants)})"
            )
        return self.variants[precision]


@dataclass(frozen=True)
class Manifest:
    directory: Path
    models: dict[str, ModelSpec]
    fallback_calibration: Calibration | None
    #: the per-link adaptation's confidence (predictor/adaptation.py); None: uncalibrated
    adapted_calibration: Calibration | None = None
    #: which expert publishes on a link (predictor/gate.py); None: selection by decayed score
    adaptation_gate: Gate | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: Path | str) -> Manifest:
    """Read and check manifest.json; model files are checked when loaded (runtime)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"no {MANIFEST_NAME} in {directory}: point --models at a directory made by "
            "`pba train`, or enable fallback to serve heuristics"
        )
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from None
    except OSError as exc:  # e.g. permissions: refused like any other bad models directory
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{path}: expected an object with \"format\": {FORMAT}")
    entries = data.get("models")
    if not isinstance(entries, dict):
        raise ManifestError(f"{path}: \"models\" must be an object keyed by mode")
    models = {}
    for mode, entry in entries.items():
        if mode not in WINDOW_STEPS_BY_NAME:
            raise ManifestError(f"{path}: unknown model mode {mode!r} (known: datacenter, internet)")
        models[mode] = _spec(directory, mode, entry)
    fallback, adapted = (_calibration(path, name, data.get(name))
                         for name in ("fallback_calibration", "adapted_calibration"))
    return Manifest(directory, models, fallback, adapted, _gate(directory, data.get("adaptation_gate")))


def _calibration(path: Path, name: str, entry: Any) -> Calibration | None:
    try:
        return Calibration.from_dict(entry) if entry is not None else None
    except ValueError as exc:
        raise ManifestError(f"{path}: {name}: {exc}") from None


def _gate(directory: Path, entry: Any) -> Gate | None:
    """The trained selection, checked like a model file: its hash, and the features and
    experts it was made for."""
    if entry is None:
        return None
    where = f"{directory / MANIFEST_NAME}: adaptation_gate"
    if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
        raise ManifestError(f"{where} needs \"file\" and \"sha256\"")
    _expect(where, "features", tuple(entry.get("features", ())), GATE_FEATURES)
    _expect(where, "experts", tuple(entry.get("experts", ())), EXPERTS)
    path = _inside(directory, entry["file"], where)
    if not path.is_file():
        raise ManifestError(f"{where}: {path} is missing")
    if sha256_of(path) != entry["sha256"]:
        raise ManifestError(f"{where}: {path} does not match its sha256 in the manifest")
    try:
        return Gate.load(path)
    except GateError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _spec(directory: Path, mode: str, entry: Any) -> ModelSpec:
    where = f"{directory / MANIFEST_NAME}: models.{mode}"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where} must be an object")
    required = ("file", "sha256", "version", "window", "features", "feature_version",
                "normalisation", "outputs", "target", "calibration")
    missing = [key for key in required if key not in entry]
    if missing:
        raise ManifestError(f"{where} lacks {', '.join(missing)}")
    _expect(where, "window", entry["window"], WINDOW_STEPS_BY_NAME[mode])
    _expect(where, "features", tuple(entry["features"]), FEATURES)
    _expect(where, "feature_version", entry["feature_version"], FEATURE_VERSION)
    _expect(where, "normalisation", entry["normalisation"], NORMALISATION)
    _expect(where, "outputs", tuple(entry["outputs"]), OUTPUTS)
    _expect(where, "target", entry["target"], TARGET)
    if entry.get("horizon_steps", 1) != 1:
        raise ManifestError(f"{where}: only horizon_steps 1 is supported")
    try:
        calibration = Calibration.from_dict(entry["calibration"])
    except ValueError as exc:
        raise ManifestError(f"{where}.calibration: {exc}") from None
    variants = {}
    for name, variant in (entry.get("variants") or {}).items():
        if not isinstance(variant, dict) or "file" not in variant or "sha256" not in variant:
            raise ManifestError(f"{where}.variants.{name} needs \"file\" and \"sha256\"")
        variants[name] = (_inside(directory, variant["file"], where), str(variant["sha256"]))
    return ModelSpec(
        mode=mode,
        path=_inside(directory, entry["file"], where),
        sha256=str(entry["sha256"]),
        version=str(entry["version"]),
        window=int(entry["window"]),
        input_name=str(entry.get("input", "input")),
        output_name=str(entry.get("output", "output")),
        calibration=calibration,
        variants=variants,
    )


def _expect(where: str, key: str, got: Any, want: Any) -> None:
    if got != want:
        raise ManifestError(
            f"{where}.{key} is {got!r} but this version of pba needs {want!r}: "
            "the model was made for another feature set; retrain or use matching models"
        )


def _inside(directory: Path, name: Any, where: str) -> Path:
    """Model files must sit in the models directory (no path tricks in a manifest)."""
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ManifestError(f"{where}: file {name!r} must be a plain file name in {directory}")
    return directory / name
