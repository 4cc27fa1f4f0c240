"""Reading a service's metrics the way Prometheus sees them, through the public API."""

from __future__ import annotations

from consumer.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The value of one exported sample (`pba_..._total` for a counter), 0 when absent."""
    return metrics.registry.get_sample_value(name, labels) or 0.0
