"""The two predictors a link can be served by, and the one place their user-facing
names are spelt.

The flags, the metric labels (`predictor="v3"`) and the per-link state use the original
system's words: "v3" for the models (the LSTMs, and the fallback for a link's first
samples) and "v1" for the baseline (the last value with the fallback's calibrated
confidence, for every row). The code says MODELS and BASELINE.

A prediction says which one made it in `model_version`: the baseline's always read
BASELINE_VERSION; the models' read the model's version, or the forecaster's
FALLBACK_VERSION ("heuristic-fallback") for a row no model could serve yet. The rebuild
reads a link's predictor back from it (`served_by`).
"""

from __future__ import annotations

MODELS, BASELINE = "v3", "v1"
PREDICTORS = (MODELS, BASELINE)
BASELINE_VERSION = "v1-last-value"


def served_by(model_version: str) -> str:
    """The predictor that published a prediction of this model_version."""
    return BASELINE if model_version == BASELINE_VERSION else MODELS
