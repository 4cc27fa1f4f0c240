"""Export trained models to ONNX and write the manifest the service loads them by."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import torch

from predictor.adaptation import EXPERTS
from predictor.confidence import Calibration
from predictor.features import FEATURE_VERSION, FEATURES, N_FEATURES
from predictor.gate import GATE_FEATURES
from predictor.manifest import FORMAT, MANIFEST_NAME, NORMALISATION, OUTPUTS, TARGET, sha256_of
from training.model import BandwidthLSTM, ModelConfig, build_model

OPSET = 13
PARITY_ATOL = 1e-4
#: where each gate's rows sit in ONNX's LSTM weights (i, o, f, c) for PyTorch's order (i, f, g, o)
_TORCH_GATES_FROM_ONNX = (0, 2, 3, 1)


def export_onnx(model: torch.nn.Module, path: Path, window: int) -> None:
    """ONNX with native LSTM ops and a dynamic batch axis.

    The TorchScript exporter is used on purpose: it emits ONNX `LSTM` nodes, which ONNX
    Runtime runs as fused kernels; the torch.export-based one unrolls them.
    """
    model = model.eval()
    example = torch.zeros(2, window, N_FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def import_onnx(path: Path, config: ModelConfig) -> BandwidthLSTM:
    """The PyTorch model an exported file holds: the inverse of export_onnx, so a shipped
    model can be trained further (`pba train --fine-tune`) from the file alone.

    The exporter writes each LSTM as one ONNX `LSTM` node with its gates reordered and
    both biases in one tensor; the head's Linear layers keep their PyTorch names.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    lstms = [node for node in graph.node if node.op_type == "LSTM"]
    model = build_model(config)
    if len(lstms) != 2:
        raise ValueError(f"{path} has {len(lstms)} LSTM nodes, not the 2 of {type(model).__name__}")

    def gates(array: np.ndarray) -> np.ndarray:
        parts = np.split(array, 4, axis=0)
        return np.concatenate([parts[k] for k in _TORCH_GATES_FROM_ONNX], axis=0)

    state: dict[str, np.ndarray] = {}
    for layer, node in enumerate(lstms, start=1):
        w, r, b = (weights[node.input[k]][0] for k in (1, 2, 3))
        bias_ih, bias_hh = np.split(b, 2)
        for name, value in (("weight_ih", w), ("weight_hh", r), ("bias_ih", bias_ih), ("bias_hh", bias_hh)):
            state[f"lstm{layer}.{name}_l0"] = gates(value)
    state.update({k: v for k, v in weights.items() if k.startswith("head.")})
    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    except RuntimeError as exc:  # another architecture than this mode's (sizes, layers)
        raise ValueError(f"{path} is not shaped as the {config.mode} model: {exc}") from exc
    return model.eval()


def check_parity(model: torch.nn.Module, path: Path, windows: np.ndarray) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime on the given inputs;
    raises if it exceeds PARITY_ATOL."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(windows)).numpy()
    (got,) = session.run(["output"], {"input": windows})
    diff = float(np.max(np.abs(got - expected))) if windows.size else 0.0
    if diff > PARITY_ATOL:
        raise AssertionError(f"ONNX and PyTorch disagree on {path.name}: max |diff| {diff:.2e}")
    return diff


def manifest_entry(
    mode: str,
    path: Path,
    version: str,
    window: int,
    calibration: Calibration,
    variants: dict[str, Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "file": path.name,
        "sha256": sha256_of(path),
        "version": version,
        "window": window,
        "features": list(FEATURES),
        "feature_version": FEATURE_VERSION,
        "normalisation": NORMALISATION,
        "input": "input",
        "output": "output",
        "outputs": list(OUTPUTS),
        "target": TARGET,
        "horizon_steps": 1,
        "calibration": calibration.to_dict(),
    }
    if variants:
        entry["variants"] = {
            name: {"file": p.name, "sha256": sha256_of(p)} for name, p in variants.items()
        }
    if extra:
        entry.update(extra)
    return entry


def write_manifest(
    directory: Path,
    entries: dict[str, dict[str, Any]],
    fallback_calibration: Calibration | None = None,
    adapted_calibration: Calibration | None = None,
    adaptation_gate: Path | None = None,
) -> Path:
    """manifest.json (predictor/manifest.py); adaptation_gate: the gate's file in `directory`."""
    manifest: dict[str, Any] = {"format": FORMAT, "models": entries}
    if fallback_calibration is not None:
        manifest["fallback_calibration"] = fallback_calibration.to_dict()
    if adapted_calibration is not None:
        manifest["adapted_calibration"] = adapted_calibration.to_dict()
    if adaptation_gate is not None:
        manifest["adaptation_gate"] = {"file": adaptation_gate.name, "sha256": sha256_of(adaptation_gate),
                                       "features": list(GATE_FEATURES), "experts": list(EXPERTS)}
    path = directory / MANIFEST_NAME
    path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return path
