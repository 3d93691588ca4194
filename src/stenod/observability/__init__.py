"""Logs, metrics and health: what operators see."""

from stenod.observability.logging import configure_logging
from stenod.observability.metrics import Metrics

__all__ = ["Metrics", "configure_logging"]
