"""What the service serves with: the model set (loaded at start-up, and again on SIGHUP
or when the models directory settles after a change) and the mode the feature flags
ask for. Loading and checking happen here; the service swaps a checked set in between
two batches."""

from __future__ import annotations

import logging

from consumer.config import ServiceConfig
from consumer.flags import Flags
from consumer.metrics import Metrics
from predictor.link_predictor import LinkPredictor, models_for_mode
from predictor.runtime import ModelSet, SessionSettings, load_models

log = logging.getLogger(__name__)


def load_model_set(config: ServiceConfig, allow_fallback: bool) -> ModelSet:
    """The models the configured mode needs. Start-up may fall back per the config; a
    reload must be complete or is refused."""
    return load_models(
        config.models,
        models_for_mode(config.mode),
        SessionSettings(intra_op_threads=config.inference_threads, precision=config.precision),
        allow_fallback=allow_fallback,
    )


def versions(models: ModelSet) -> dict[str, str]:
    return {mode: model.version for mode, model in models.models.items()}


def report_models(models: ModelSet, config: ServiceConfig, metrics: Metrics) -> None:
    """The loaded versions, and which modes serve the fallback because their model failed."""
    metrics.model_info.info(versions(models) or {"none": "fallback"})
    for mode in models_for_mode(config.mode):
        failed = mode in models.unavailable
        metrics.fallback_active.labels(mode).set(1 if failed else 0)
        if failed:
            metrics.model_load_failures.inc()


def apply_flags(flags: Flags, config: ServiceConfig, models: ModelSet, link_predictor: LinkPredictor) -> None:
    """Switch the link predictor to the mode the flags ask for, if its models are loaded (or
    the fallback may serve); a mode that cannot be served is refused with the reason."""
    mode = flags.mode or config.mode
    if mode == link_predictor.mode:
        return
    missing = set(models_for_mode(mode)) - set(models.models)
    try:
        if missing and not config.allow_fallback:
            raise ValueError(f"no {', '.join(sorted(missing))} model loaded")
        link_predictor.set_mode(mode)
        log.warning("mode switched to %s by the flags file", mode)
    except ValueError as exc:
        log.error("flags ask for mode %s, refused: %s", mode, exc)
