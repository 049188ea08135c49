"""Reading a worker's Prometheus figures in a test."""

from __future__ import annotations

from typing import Any


def metric_value(state: Any, prefix: str) -> float:
    """The value of the first Prometheus sample line of a worker's /metrics starting with `prefix` (0 if none)."""
    for line in state.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
