"""Where `pba train --fine-tune` starts: the model already in the output directory.

A training from scratch at a constant learning rate ends wherever its last noisy steps
left the weights; a few more epochs from those weights, at a rate decaying to zero,
settle them (docs/ADAPTATION.md has what three such epochs gained walk-forward). The
model to start from is read back from its ONNX file, so the shipped files are all it
needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from predictor.manifest import MANIFEST_NAME, load_manifest
from predictor.runtime import verified_file
from training.export import import_onnx
from training.model import CONFIGS, BandwidthLSTM

#: the defaults: a tenth of the internet model's rate, a few epochs
FINE_TUNE_EPOCHS = 3
FINE_TUNE_LEARNING_RATE = 1e-4


class FineTuneError(ValueError):
    """Nothing to fine-tune from."""


def starting_point(out: Path, mode: str) -> tuple[BandwidthLSTM, dict[str, Any]]:
    """The model in `out` a fine-tune starts from, and what the manifest says of it
    (kept in the new entry, so a fine-tuned model says what it was trained from)."""
    spec = load_manifest(out).models.get(mode)
    if spec is None:
        raise FineTuneError(f"--fine-tune: {out} has no {mode} model to start from; "
                            "train one first (pba train without --fine-tune)")
    path = verified_file(spec)
    entry = orjson.loads((out / MANIFEST_NAME).read_bytes())["models"][mode]
    base = {"version": spec.version, "sha256": spec.sha256, "training": entry.get("training", {})}
    return import_onnx(path, CONFIGS[mode]), base
