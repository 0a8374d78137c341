"""Exporters of delivery stats: Prometheus and DogStatsD.

    from modules.eventbus.exporters import PrometheusCollector            # prometheus_client
    from modules.eventbus.exporters import DatadogStatsdExporter, DatadogExporterConfig

Each name is imported on first use, so that only the client library you use must be
installed (``modular-eventbus[prometheus]`` or ``modular-eventbus[datadog]``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..metrics import DatadogExporterConfig

if TYPE_CHECKING:
    from .datadog import DatadogExporter, DatadogStatsdExporter
    from .prometheus import EventBusCollector, PrometheusCollector

__all__ = [
    "DatadogExporter",
    "DatadogExporterConfig",
    "DatadogStatsdExporter",
    "EventBusCollector",
    "PrometheusCollector",
]

_LAZY = {
    "PrometheusCollector": ("prometheus", "prometheus"),
    "EventBusCollector": ("prometheus", "prometheus"),
    "DatadogStatsdExporter": ("datadog", "datadog"),
    "DatadogExporter": ("datadog", "datadog"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, extra = _LAZY[name]
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise ImportError(
            f"{name} needs {exc.name}, which is not installed; "
            f"install it with: pip install 'modular-eventbus[{extra}]'"
        ) from exc
    return getattr(module, name)
